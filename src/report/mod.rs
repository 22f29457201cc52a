//! `walplayer report` and `--report FILE.html`: a run's summary as one
//! self-contained HTML page (configuration, totals, throughput and latency
//! over time, histograms, agents, worst clusters, errors, SLOs).
//!
//! The page carries the summary as JSON and a small script that draws it
//! into SVG when the page is opened: no network, no library, nothing to
//! install to view it.
//!
//! - [`input`]: the summary out of a `--summary` file or a log holding the
//!   `{"walplayerSummary": ...}` line.
//! - [`html`]: the page itself, with `report.js` and `report.css` inlined.

pub mod html;
pub mod input;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

pub use html::render;
pub use input::read_summary;

/// Writes the report of `summary` (any summary document) to `path`.
pub fn write(path: &Path, summary: &impl Serialize) -> Result<()> {
    // Through text, as `walplayer report` reads the summary file: JSON's
    // float parsing may differ from the value in the last digit, and the
    // two pages must be the same.
    let text =
        serde_json::to_string(summary).context("cannot encode the summary for the report")?;
    let value: serde_json::Value =
        serde_json::from_str(&text).context("cannot encode the summary for the report")?;
    std::fs::write(path, render(&value))
        .with_context(|| format!("cannot write --report file {}", path.display()))
}

/// `walplayer report INPUT -o OUTPUT`: errors are the usage kind (exit
/// status 2).
pub fn run(input: &Path, output: &Path) -> Result<()> {
    let summary = read_summary(input)?;
    std::fs::write(output, render(&summary))
        .with_context(|| format!("cannot write the report to {}", output.display()))
}
