//! Finds a run's summary in what the user has: the `--summary` JSON file
//! itself, or a log (a coordinator's stdout, `kubectl logs`) in which one
//! line is `{"walplayerSummary": {...}}` among other text.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The key of the summary line a coordinator prints last on stdout.
pub const SUMMARY_KEY: &str = "walplayerSummary";

/// A key every summary has, to tell a summary from other JSON.
const TOTALS_KEY: &str = "filesOk";

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

/// The summary in `text`, if any: the whole text as one summary object
/// (possibly wrapped in the summary line's key), else the last line that
/// is a summary line. Lines that are not JSON are skipped.
pub fn summary_in(text: &str) -> Result<Value> {
    if let Ok(whole) = serde_json::from_str::<Value>(text) {
        if let Some(summary) = as_summary(whole) {
            return Ok(summary);
        }
    }
    let found = text
        .lines()
        .rev()
        .filter(|line| line.trim_start().starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|v| match v {
            Value::Object(mut o) => o.remove(SUMMARY_KEY).and_then(as_summary),
            _ => None,
        });
    match found {
        Some(summary) => Ok(summary),
        None => bail!("no summary object and no {SUMMARY_KEY} line found"),
    }
}

/// `v` if it is a summary object, or the summary under the summary line's
/// key.
fn as_summary(v: Value) -> Option<Value> {
    match v {
        Value::Object(mut o) => match o.remove(SUMMARY_KEY) {
            Some(inner) => as_summary(inner),
            None if o.contains_key(TOTALS_KEY) => Some(Value::Object(o)),
            None => None,
        },
        _ => None,
    }
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
            assert!(e.contains("no summary"), "{text:?}: {e}");
        }
    }
}
