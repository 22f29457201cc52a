//! What a command has to say on stderr besides its logs (the end-of-run
//! summary, progress lines, usage errors): events of the `console`
//! target, which the binary's log format prints as bare lines of text or
//! as JSON records, so that with JSON logs stderr holds only JSON.

/// The target of console events.
pub const TARGET: &str = "console";

/// Says `text`, one event per line (blank lines left out).
pub fn say(text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(target: "console", "{line}");
    }
}

/// Says `text` as a warning, one event per line (blank lines left out).
pub fn warn(text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(target: "console", "{line}");
    }
}

/// Says `text` as an error: one event, whatever its lines, so that a JSON
/// log holds an error as one record.
pub fn error(text: &str) {
    tracing::error!(target: "console", "{}", text.trim_end());
}
