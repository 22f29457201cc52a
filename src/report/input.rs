//! Finds a run's summary in what the user has: the `--summary` JSON file
//! itself, or a log (a coordinator's stdout, `kubectl logs`) in which one
//! line is `{"walplayerSummary": {...}}` among other text.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The key of the summary line a coordinator prints last on stdout.
pub use walplayer_klio::output::SUMMARY_KEY;

/// Largest input read: a summary is kilobytes, a long log megabytes.
const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Reads the summary from `path`: a summary file, or a log whose last
/// summary line counts.
pub fn read_summary(path: &Path) -> Result<Value> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_INPUT_BYTES {
        bail!(
            "{} is {size} bytes, more than the {MAX_INPUT_BYTES} a summary or log may be here: give the --summary file, or only the end of the log",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    summary_in(&text).with_context(|| {
        format!(
            "{} holds no walplayer summary: give the file written by --summary, or a log with the {{\"{SUMMARY_KEY}\": ...}} line the coordinator prints last",
            path.display()
        )
    })
}

/// The summary in `text`, if any: the last summary line of a log, or the
/// whole text as one summary object (possibly wrapped in the summary
/// line's key). Lines that are not JSON are skipped.
pub fn summary_in(text: &str) -> Result<Value> {
    walplayer_klio::output::summary_from_log(text).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_summary_is_found_alone_wrapped_or_inside_a_log() {
        let s = json!({"filesOk": 3, "mode": "play"});
        assert_eq!(summary_in(&s.to_string()).unwrap(), s);
        assert_eq!(
            summary_in(&serde_json::to_string_pretty(&s).unwrap()).unwrap(),
            s
        );
        let line = json!({ SUMMARY_KEY: s }).to_string();
        assert_eq!(summary_in(&line).unwrap(), s);
        let older = json!({ SUMMARY_KEY: {"filesOk": 1} }).to_string();
        let log = format!(
            "2026-11-28T10:00:00Z INFO starting\n{older}\n{{not json\n{{\"filesOk\": 9}}\nwarning: x\n{line}\ntrailing text\n"
        );
        assert_eq!(summary_in(&log).unwrap(), s, "the last summary line counts");
    }

    #[test]
    fn text_without_a_summary_is_an_error() {
        for text in [
            "",
            "just a log\n",
            "{\"walFullPath\": \"/wal/1\", \"error\": \"\"}\n",
            "[1, 2]",
            "{\"walplayerSummary\": 3}",
        ] {
            let e = summary_in(text).unwrap_err().to_string();
            assert!(
                e.contains("no walplayerSummary line") || e.contains("holds no object"),
                "{text:?}: {e}"
            );
        }
    }
}
