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
