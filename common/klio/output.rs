//! Result and summary files: checked before a run, replaced only when the
//! run really starts, written so that nothing finished is lost.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Checks now, without emptying it, that `path` can be written, so a bad
/// `flag` path fails before any upload while the previous run's file stays
/// as it was until this run really starts.
pub fn check_writable(path: Option<&Path>, flag: &str) -> Result<()> {
    if let Some(p) = path {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .with_context(|| format!("cannot create {flag} file {}", p.display()))?;
    }
    Ok(())
}

/// Opens (emptying) where JSON lines go: a file, or stdout.
pub fn open_output(path: Option<&Path>) -> Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(p) => Box::new(
            File::create(p)
                .with_context(|| format!("cannot create --output file {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    })
}

/// Writes a summary document to `path` as pretty JSON.
pub fn write_summary(path: &Path, doc: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(doc)?;
    text.push('\n');
    std::fs::write(path, text)
        .with_context(|| format!("cannot write --summary file {}", path.display()))
}

/// The key of the one-line summary a run prints last on stdout.
pub const SUMMARY_KEY: &str = "walplayerSummary";

/// `{"walplayerSummary": doc}` on one line (no newline).
pub fn summary_line(doc: &impl Serialize) -> Result<String> {
    let mut map = serde_json::Map::new();
    map.insert(SUMMARY_KEY.to_string(), serde_json::to_value(doc)?);
    Ok(serde_json::Value::Object(map).to_string())
}

/// Prints the summary line on stdout and flushes it: the last line of a
/// run's stdout, so `kubectl logs` of a finished Job ends with it.
pub fn print_summary_line(doc: &impl Serialize) -> Result<()> {
    let line = summary_line(doc)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .context("cannot write the summary line on stdout")
}

/// The summary in `text`: the last `walplayerSummary` line of a log
/// (stdout and stderr merged, as `kubectl logs` shows them; lines that are
/// not JSON, and text before a line's first `{` such as a `--timestamps`
/// prefix, are skipped), or `text` itself when it is one summary object
/// (a `--summary` file).
pub fn summary_from_log(text: &str) -> std::result::Result<serde_json::Value, String> {
    for line in text.lines().rev() {
        let Some(start) = line.find('{') else {
            continue;
        };
        if let Ok(serde_json::Value::Object(mut map)) =
            serde_json::from_str::<serde_json::Value>(&line[start..])
        {
            if let Some(summary) = map.remove(SUMMARY_KEY) {
                return checked_summary(summary);
            }
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut map)) => match map.remove(SUMMARY_KEY) {
            Some(summary) => checked_summary(summary),
            // Every summary has `mode`; older ones (and play's) `filesOk`.
            None if map.contains_key("filesOk") || map.contains_key("mode") => {
                Ok(serde_json::Value::Object(map))
            }
            None => Err(no_summary()),
        },
        _ => Err(no_summary()),
    }
}

fn checked_summary(summary: serde_json::Value) -> std::result::Result<serde_json::Value, String> {
    if summary.is_object() {
        Ok(summary)
    } else {
        Err(format!(
            "the {SUMMARY_KEY} line holds no object; the log is damaged"
        ))
    }
}

fn no_summary() -> String {
    format!(
        "no {SUMMARY_KEY} line found and the text is not a summary object: give the log of a \
         finished run (kubectl logs of the coordinator Job, or play's stdout) or a --summary file"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_line_is_one_line_with_the_key() {
        let line = summary_line(&json!({"filesOk": 3, "mode": "play"})).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v[SUMMARY_KEY]["filesOk"], 3);
        assert_eq!(
            summary_from_log(&line).unwrap(),
            json!({"filesOk": 3, "mode": "play"})
        );
    }

    #[test]
    fn the_last_summary_line_of_a_merged_log_is_found() {
        let log = [
            "2026-11-28T10:00:00Z INFO coordinator waiting for 2 agents",
            r#"{"walFullPath":"/w/1","error":""}"#,
            r#"{"walplayerSummary":{"filesOk":1}}"#,
            r#"{"level":"info","msg":"not the summary"}"#,
            "not json {at all",
            r#"2026-11-28T10:00:05.1Z {"walplayerSummary":{"filesOk":2}}"#,
            r#"{"level":"info","msg":"after the summary: stderr interleaved"}"#,
            "",
        ]
        .join("\n");
        assert_eq!(summary_from_log(&log).unwrap(), json!({"filesOk": 2}));
    }

    #[test]
    fn a_plain_summary_object_is_accepted() {
        let file = "{\n  \"filesOk\": 5,\n  \"filesFailed\": 0\n}\n";
        assert_eq!(summary_from_log(file).unwrap()["filesOk"], 5);
        let wrapped = "{\n  \"walplayerSummary\": {\"filesOk\": 7}\n}";
        assert_eq!(summary_from_log(wrapped).unwrap()["filesOk"], 7);
    }

    #[test]
    fn text_without_a_summary_is_refused_by_name() {
        for text in [
            "",
            "hello\nworld",
            r#"{"walFullPath":"/w/1","error":""}"#,
            "[1,2]",
        ] {
            let e = summary_from_log(text).unwrap_err();
            assert!(e.contains("no walplayerSummary line"), "{text:?}: {e}");
        }
        let e = summary_from_log(r#"{"walplayerSummary": 3}"#).unwrap_err();
        assert!(e.contains("holds no object"), "{e}");
    }
}
