//! `walplayer play`: one directory, N jobs, one Klio server.
//!
//! Everything that would fail every file is checked first and reported once
//! (settings, directory, output files, certificates, the server itself);
//! then the shared report loop runs and each report is written the moment
//! it exists.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use walplayer_klio::buckets::{self, Bucket};
use walplayer_klio::config::KlioConfig;
use walplayer_klio::console;
use walplayer_klio::driver::{drive, Destination, Uploads};
use walplayer_klio::endpoint::KlioEndpoint;
use walplayer_klio::exit::Exit;
use walplayer_klio::memory::{self, MemoryLimit};
use walplayer_klio::metrics::{self, ClientMetrics, Registry};
use walplayer_klio::output::{check_writable, open_output, print_summary_line, write_summary};
use walplayer_klio::progress::Progress as _;
use walplayer_klio::report::{FileReport, JsonLines};
use walplayer_klio::settings::Jobs;
use walplayer_klio::stats::{Stats, Totals};
use walplayer_klio::timeline::Point;
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
    /// Write the HTML report of the run here.
    pub report: Option<PathBuf>,
    pub quiet: bool,
    /// Serve `/metrics` here during the run.
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_cluster_labels: bool,
    /// Keep serving `/metrics` this long after the run (a stop signal ends it).
    pub metrics_hold: Option<Duration>,
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
    /// `play`: one process, one cluster.
    mode: &'static str,
    #[serde(flatten)]
    totals: &'a Totals,
    interrupted: bool,
    /// Files a stop kept from starting: with the others, every file found.
    files_not_started: u64,
    address: &'a str,
    cluster: &'a str,
    jobs: usize,
    block_size_kib: u32,
    /// The run second by second.
    timeline: Vec<Point>,
    /// Time per file, in log-spaced buckets.
    latency_histogram: Vec<Bucket>,
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
/// are in the outcome. With `--metrics-listen`, the endpoint is up before
/// anything else is checked, so a taken port is reported first.
pub async fn play(opts: PlayOptions, shutdown: CancellationToken) -> Result<PlayOutcome> {
    let (client_metrics, server) = match opts.metrics_listen {
        Some(addr) => {
            let mut registry = Registry::default();
            let m = ClientMetrics::register(&mut registry, opts.metrics_cluster_labels);
            (
                m,
                Some(metrics::serve(addr, registry, "--metrics-listen").await?),
            )
        }
        None => (ClientMetrics::unregistered(), None),
    };
    let outcome = run(&opts, &client_metrics, &shutdown).await;
    if let Some(server) = server {
        let hold = opts.metrics_hold.filter(|_| outcome.is_ok());
        server.hold_then_stop(hold, &shutdown).await;
    }
    outcome
}

async fn run(
    opts: &PlayOptions,
    client_metrics: &ClientMetrics,
    shutdown: &CancellationToken,
) -> Result<PlayOutcome> {
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
    check_writable(opts.report.as_deref(), "--report")?;
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
    tracing::debug!(
        jobs = clients.len(),
        address = endpoint.address(),
        "connected to Klio, one connection per job"
    );
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
    let uploads = Uploads {
        work,
        clients,
        settings: opts.upload.clone(),
        metrics: client_metrics.clone(),
    };
    let driven = drive(
        uploads,
        shutdown.child_token(),
        &mut lines,
        std::future::pending::<()>(),
        skipped,
    )
    .await;
    lines.progress.finish();
    // The timeline's clock: its seconds and the wall time agree.
    let totals = Totals::new(&driven.stats, driven.wall);
    let interrupted = shutdown.is_cancelled();
    let not_started = found.saturating_sub(driven.stats.files_done());
    console::say(&totals.to_text());
    if not_started > 0 {
        console::say(&format!(
            "{not_started} files not started: the run was stopped first"
        ));
    }
    let doc = SummaryFile {
        mode: "play",
        totals: &totals,
        interrupted,
        files_not_started: not_started,
        address: &opts.klio.address,
        cluster: &opts.klio.cluster_name,
        jobs: opts.jobs.get(),
        block_size_kib: opts.upload.block.kib(),
        timeline: driven.timeline.points(),
        latency_histogram: buckets::of_histogram(&driven.stats.latency),
    };
    if let Some(path) = &opts.summary {
        write_summary(path, &doc)?;
    }
    if let Some(path) = &opts.report {
        crate::report::write(path, &doc)?;
    }
    // The last stdout line: after the per-file lines, which the seed's jq
    // recipes select by `error`, a field the summary does not have.
    let printed = print_summary_line(&doc);
    if let Some(e) = driven.undeliverable {
        anyhow::bail!(e);
    }
    printed?;
    Ok(PlayOutcome {
        totals,
        interrupted,
    })
}
