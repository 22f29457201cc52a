//! `walplayer play`: one directory, N jobs, one Klio server.
//!
//! Everything that would fail every file is checked first and reported once
//! (settings, directory, output files, certificates, the server itself);
//! then the shared report loop runs and each report is written the moment
//! it exists.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use walplayer_klio::config::KlioConfig;
use walplayer_klio::driver::{drive, Destination};
use walplayer_klio::endpoint::KlioEndpoint;
use walplayer_klio::exit::Exit;
use walplayer_klio::memory::{self, MemoryLimit};
use walplayer_klio::output::{check_writable, open_output, write_summary};
use walplayer_klio::progress::Progress as _;
use walplayer_klio::report::{FileReport, JsonLines};
use walplayer_klio::settings::Jobs;
use walplayer_klio::stats::{Stats, Totals};
use walplayer_klio::tls;
use walplayer_klio::upload::{UploadSettings, Work};
use walplayer_wal::source;

use crate::progress::Progress;

/// Everything `play` needs, already validated.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    pub dir: PathBuf,
    pub jobs: Jobs,
    pub upload: UploadSettings,
    pub klio: KlioConfig,
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub quiet: bool,
    /// `--max-memory`, or the cgroup's limit, or none.
    pub max_memory: Option<MemoryLimit>,
}

/// How a run ended.
#[derive(Debug)]
pub struct PlayOutcome {
    pub totals: Totals,
    pub interrupted: bool,
}

impl PlayOutcome {
    /// Every file stored, some failed, or stopped by a signal.
    pub fn exit(&self) -> Exit {
        Exit::of_run(self.totals.files_failed, self.interrupted)
    }
}

/// The `--summary FILE` document: the totals and what the run was.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryFile<'a> {
    #[serde(flatten)]
    totals: &'a Totals,
    interrupted: bool,
    /// Files a stop kept from starting: with the others, every file found.
    files_not_started: u64,
    address: &'a str,
    cluster: &'a str,
    jobs: usize,
    block_size_kib: u32,
}

/// Where `play`'s reports go: JSON lines, the progress display and a
/// warning per failed file.
struct Lines {
    out: JsonLines<Box<dyn Write + Send>>,
    progress: Progress,
}

impl Destination for Lines {
    async fn report(&mut self, report: &FileReport) -> Result<(), String> {
        self.progress.file_done(report.bytes, !report.ok());
        if !report.ok() {
            tracing::warn!("{}: {}", report.wal_full_path, report.outcome.error_text());
        }
        self.out
            .write(report)
            .map_err(|e| format!("cannot write results: {e}"))
    }

    async fn tick(&mut self, _stats: &Stats) -> Result<(), String> {
        self.progress.tick();
        Ok(())
    }
}

/// Runs `play`. Errors are the up-front kind (exit status 2); failed files
/// are in the outcome.
pub async fn play(opts: PlayOptions, shutdown: CancellationToken) -> Result<PlayOutcome> {
    memory::check(
        opts.jobs.get(),
        opts.upload.block.bytes(),
        opts.max_memory.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    // Listing reads every `.gz` through to measure it: off the runtime.
    let dir = opts.dir.clone();
    let listing =
        tokio::task::spawn_blocking(move || source::list(&dir, source::Links::Follow)).await??;
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
        clients = endpoint.connect_jobs(opts.jobs.get()) => clients.map_err(anyhow::Error::msg)?,
        _ = shutdown.cancelled() => anyhow::bail!("interrupted while connecting to {}", endpoint.address()),
    };
    // Everything that would fail every file is checked: this run starts,
    // and only now replaces the previous run's results.
    let mut lines = Lines {
        out: JsonLines::new(open_output(opts.output.as_deref())?),
        progress: Progress::new(opts.quiet, listing.segments.len() as u64, listing.bytes()),
    };
    let found = listing.segments.len() as u64;
    let skipped = Stats {
        files_skipped: listing.skipped.len() as u64,
        ..Stats::default()
    };
    let work = listing
        .segments
        .into_iter()
        .map(|segment| Work {
            segment,
            cluster: opts.klio.cluster_name.clone(),
        })
        .collect();
    let started = Instant::now();
    let driven = drive(
        work,
        clients,
        opts.upload.clone(),
        shutdown.child_token(),
        &mut lines,
        std::future::pending::<()>(),
        skipped,
    )
    .await;
    lines.progress.finish();
    let totals = Totals::new(&driven.stats, started.elapsed());
    let interrupted = shutdown.is_cancelled();
    let not_started = found.saturating_sub(driven.stats.files_done());
    eprint!("{}", totals.to_text());
    if not_started > 0 {
        eprintln!("{not_started} files not started: the run was stopped first");
    }
    if let Some(path) = &opts.summary {
        let doc = SummaryFile {
            totals: &totals,
            interrupted,
            files_not_started: not_started,
            address: &opts.klio.address,
            cluster: &opts.klio.cluster_name,
            jobs: opts.jobs.get(),
            block_size_kib: opts.upload.block.kib(),
        };
        write_summary(path, &doc)?;
    }
    if let Some(e) = driven.undeliverable {
        anyhow::bail!(e);
    }
    Ok(PlayOutcome {
        totals,
        interrupted,
    })
}
