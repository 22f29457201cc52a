//! `walplayer play`: one directory, N jobs, one Klio server.
//!
//! Everything that would fail every file is checked first and reported once
//! (settings, directory, output files, certificates, the server itself);
//! then the pipeline runs and each report is written the moment it exists.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::common::config::KlioConfig;
use crate::common::klio::{Client, KlioEndpoint};
use crate::common::pipeline::Pipeline;
use crate::common::progress::Progress;
use crate::common::report::{FileReport, JsonLines};
use crate::common::stats::{Stats, Totals};
use crate::common::upload::{UploadSettings, Work};
use crate::common::{source, tls};

/// Everything `play` needs, already validated.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    pub dir: PathBuf,
    pub jobs: usize,
    pub upload: UploadSettings,
    pub klio: KlioConfig,
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub quiet: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct PlayOutcome {
    pub totals: Totals,
    pub interrupted: bool,
}

impl PlayOutcome {
    /// 0 every file stored, 1 some failed, 130 stopped by a signal.
    pub fn exit_code(&self) -> i32 {
        exit_code(&self.totals, self.interrupted)
    }
}

/// The documented exit status of a finished run.
pub fn exit_code(totals: &Totals, interrupted: bool) -> i32 {
    if interrupted {
        130
    } else if totals.files_failed > 0 {
        1
    } else {
        0
    }
}

/// The `--summary FILE` document: the totals and what the run was.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryFile<'a> {
    #[serde(flatten)]
    totals: &'a Totals,
    interrupted: bool,
    address: &'a str,
    cluster: &'a str,
    jobs: usize,
    block_size_kib: usize,
}

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

/// Connects `jobs` clients; the first one probes the server.
pub async fn connect_jobs(endpoint: &KlioEndpoint, jobs: usize) -> Result<Vec<Client>> {
    let first = endpoint.probe().await.map_err(anyhow::Error::msg)?;
    let mut clients = vec![first];
    let rest = futures_util::future::join_all((1..jobs).map(|_| endpoint.connect())).await;
    for client in rest {
        clients.push(client.map_err(anyhow::Error::msg)?);
    }
    Ok(clients)
}

/// Runs `play`. Errors are the up-front kind (exit status 2); failed files
/// are in the outcome.
pub async fn play(opts: PlayOptions, shutdown: CancellationToken) -> Result<PlayOutcome> {
    let listing = source::list(&opts.dir)?;
    for skipped in &listing.skipped {
        tracing::warn!("skipping {}: {}", skipped.path.display(), skipped.reason);
    }
    if listing.segments.is_empty() {
        tracing::warn!("no WAL files in {}: nothing to send", opts.dir.display());
    }
    check_writable(opts.output.as_deref(), "--output")?;
    check_writable(opts.summary.as_deref(), "--summary")?;
    let tls = tls::client_config(
        &opts.klio.server_ca,
        &opts.klio.client_cert,
        &opts.klio.client_key,
    )?;
    let endpoint = KlioEndpoint::new(&opts.klio.address, tls).map_err(anyhow::Error::msg)?;
    let clients = tokio::select! {
        clients = connect_jobs(&endpoint, opts.jobs) => clients?,
        _ = shutdown.cancelled() => anyhow::bail!("interrupted while connecting to {}", endpoint.address()),
    };
    // Everything that would fail every file is checked: this run starts,
    // and only now replaces the previous run's results.
    let mut output = JsonLines::new(open_output(opts.output.as_deref())?);

    let mut stats = Stats {
        files_skipped: listing.skipped.len() as u64,
        ..Stats::default()
    };
    let mut progress = Progress::new(opts.quiet, listing.segments.len() as u64, listing.bytes());
    let work = listing
        .segments
        .into_iter()
        .map(|segment| Work {
            segment,
            cluster: opts.klio.cluster_name.clone(),
        })
        .collect();
    let started = Instant::now();
    let cancel = shutdown.child_token();
    let mut pipeline = Pipeline::start(work, clients, opts.upload.clone(), cancel.clone());
    let mut write_error = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            report = pipeline.reports.recv() => {
                let Some(report) = report else { break };
                record(&report, &mut stats, &mut progress);
                if write_error.is_none() {
                    if let Err(e) = output.write(&report) {
                        write_error = Some(format!("cannot write results: {e}"));
                        cancel.cancel();
                    }
                }
            }
            _ = ticker.tick() => progress.tick(),
        }
    }
    pipeline.join().await;
    progress.finish();
    let totals = Totals::new(&stats, started.elapsed());
    let interrupted = shutdown.is_cancelled();
    eprint!("{}", totals.to_text());
    if let Some(path) = &opts.summary {
        let doc = SummaryFile {
            totals: &totals,
            interrupted,
            address: &opts.klio.address,
            cluster: &opts.klio.cluster_name,
            jobs: opts.jobs,
            block_size_kib: opts.upload.block_bytes / 1024,
        };
        write_summary(path, &doc)?;
    }
    if let Some(e) = write_error {
        anyhow::bail!(e);
    }
    Ok(PlayOutcome {
        totals,
        interrupted,
    })
}

fn record(report: &FileReport, stats: &mut Stats, progress: &mut Progress) {
    stats.record(report);
    progress.file_done(report.bytes, !report.ok());
    if !report.ok() {
        tracing::warn!("{}: {}", report.wal_full_path, report.error);
    }
}
