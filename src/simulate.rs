//! `walplayer simulate`: many PostgreSQL clusters streaming WAL to one
//! Klio server at their own pace, from this process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use walplayer_klio::console;
use walplayer_klio::endpoint::KlioEndpoint;
use walplayer_klio::exit::Exit;
use walplayer_klio::flags::{parse_duration, KlioArgs, DEFAULT_TIMEOUT};
use walplayer_klio::metrics::{serve, Registry, SimulationMetrics};
use walplayer_klio::output::{check_writable, open_output, print_summary_line, write_summary};
use walplayer_klio::tls;
use walplayer_simulate::drive;
use walplayer_simulate::flags::WorkloadArgs;
use walplayer_simulate::run::{Live, Sim};
use walplayer_simulate::segments::Segments;
use walplayer_simulate::summary::Summary;

use crate::logs::{self, LogFormat};
use crate::progress::LINE_EVERY;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Segment size in MB: a power of two from 1 to 1024
    #[arg(long, value_name = "MB", default_value_t = 16)]
    pub wal_size: u64,
    /// Longest a block may wait for the server, or a finished segment for its answer
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub klio: KlioArgs,
    /// Write one JSON line per acknowledged segment here
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the run's summary as JSON here (with the per-second timeline)
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Write the run's HTML report here
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// No live display on stderr
    #[arg(long, short)]
    pub quiet: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics during the run (segment lag, backlog, open streams, WAL produced)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Keep serving /metrics this long after the run, for a last scrape (a stop signal ends the wait)
    #[arg(long, value_name = "DURATION", requires = "metrics_listen", value_parser = parse_duration)]
    pub metrics_hold: Option<std::time::Duration>,
}

/// Runs `simulate`. Errors are the up-front kind (exit status 2).
pub async fn run(args: SimulateArgs, shutdown: CancellationToken) -> Result<Exit> {
    let klio = args.klio.resolve()?;
    let workload = args
        .workload
        .workload(&klio.cluster_name, 0, args.wal_size, args.timeout)
        .map_err(anyhow::Error::msg)?;
    check_writable(args.output.as_deref(), "--output")?;
    check_writable(args.summary.as_deref(), "--summary")?;
    check_writable(args.report.as_deref(), "--report")?;
    let (metrics, server) = match args.metrics_listen {
        Some(addr) => {
            let mut registry = Registry::default();
            let m = SimulationMetrics::register(&mut registry);
            (
                Some(m),
                Some(serve(addr, registry, "--metrics-listen").await?),
            )
        }
        None => (None, None),
    };
    let tls = tls::client_config(&klio.server_ca, &klio.client_cert, &klio.client_key)?;
    let endpoint = KlioEndpoint::new(&klio.address, tls).map_err(anyhow::Error::msg)?;
    let mut sim = tokio::select! {
        sim = Sim::new(workload.clone(), endpoint, Segments::default()) => sim?,
        _ = shutdown.cancelled() => anyhow::bail!("interrupted while connecting to {}", klio.address),
    };
    // The server answered: this run starts, and replaces earlier results.
    let segments = match &args.output {
        Some(_) => Segments::to_writer(open_output(args.output.as_deref())?),
        None => Segments::default(),
    };
    sim.begin(segments, metrics);
    let mut display = Display::new(args.quiet);
    let mut live = |l: &Live<'_>| display.show(l);
    let mut summary = match workload.search {
        None => {
            let ended = drive::fixed(&mut sim, &shutdown, &mut live).await?;
            let mut s = Summary::of(&sim, ended.at, &klio.address);
            s.aborted = ended.aborted;
            s
        }
        Some(search) => {
            let (doc, at) = drive::search(&mut sim, search, &shutdown, &mut live).await?;
            let mut s = Summary::of(&sim, at, &klio.address);
            // The run's objectives are judged per step; the verdict is the
            // search's.
            s.slos.clear();
            s.slo_pass = true;
            s.search = Some(doc);
            s
        }
    };
    display.finish();
    summary.interrupted = shutdown.is_cancelled();
    console::say(&summary.to_text());
    if let Some(path) = &args.summary {
        write_summary(path, &summary)?;
    }
    if let Some(path) = &args.report {
        crate::report::write(path, &summary)?;
    }
    // The last stdout line, for `walplayer report` and jq on a log.
    print_summary_line(&summary)?;
    if let Some(server) = server {
        server.hold_then_stop(args.metrics_hold, &shutdown).await;
    }
    Ok(summary.exit())
}

/// The live display: a status line on a terminal, a plain line every few
/// seconds otherwise, nothing with `--quiet`.
struct Display {
    bar: Option<ProgressBar>,
    quiet: bool,
    last: Instant,
}

impl Display {
    fn new(quiet: bool) -> Display {
        let terminal = std::io::stderr().is_terminal() && logs::format() == LogFormat::Text;
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
                    .expect("constant template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Display {
            bar,
            quiet,
            last: Instant::now(),
        }
    }

    fn show(&mut self, l: &Live<'_>) {
        if self.quiet {
            return;
        }
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let worst = match l.worst {
            Some((name, backlog)) => format!("; worst {name}: {:.2} MiB behind", mib(backlog)),
            None => String::new(),
        };
        let text = format!(
            "{} clusters, {} streams open; produced {:.2} MiB/s, acknowledged {:.2} MiB/s; lag p99 {:.3} s{worst}",
            l.clusters,
            l.point.open_streams,
            mib(l.point.produced_bytes),
            mib(l.point.acked_bytes),
            l.lag_p99_ns as f64 / 1e9,
        );
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None if self.last.elapsed() >= LINE_EVERY => {
                self.last = Instant::now();
                console::say(&format!("progress: {text}"));
            }
            None => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
