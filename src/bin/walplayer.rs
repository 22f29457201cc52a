//! `walplayer`: generate WAL, play it to Klio, run a sink, mint
//! certificates, coordinate agents. Parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use walplayer::cli::{error_text, parse_args, with_signals};
use walplayer::klio::console;
use walplayer::klio::exit::Exit;
use walplayer::klio::flags::{KlioArgs, MetricsArgs, OutputArgs, UploadArgs};
use walplayer::klio::metrics;
use walplayer::logs::{self, LogArgs};
use walplayer::wal::{generate, walname};
use walplayer::{certs, play, quickstart, sink};

#[derive(Parser)]
#[command(
    name = "walplayer",
    version,
    about = "Benchmark Klio WAL servers with real-looking PostgreSQL WAL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic WAL segments with valid page headers
    Generate(GenerateArgs),
    /// Send a directory of WAL files (plain or .gz) to a Klio server
    Play(PlayArgs),
    /// Simulate PostgreSQL clusters streaming WAL at their own pace: archive lag, backlog, SLOs, capacity
    Simulate(walplayer::simulate::SimulateArgs),
    /// Run a Klio-compatible WAL server (tests, demos, calibration)
    Sink(SinkArgs),
    /// Mint a development CA, server and client certificates and a config file
    Certs(CertsArgs),
    /// Demo with nothing configured: certificates, sink, WAL, play, summary
    Quickstart(quickstart::QuickstartArgs),
    /// Drive a distributed run: wait for agents, split the work, start them together, merge results
    Coordinator(walplayer::coordinator::cli::CoordinatorArgs),
    /// Join coordinator runs (the same as the walplayer-agent binary)
    Agent(walplayer::agent::cli::AgentArgs),
    /// Make the HTML report of a run from its --summary file or a log holding the summary line
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The --summary JSON file, or a log (e.g. `kubectl logs` of the coordinator) with its {"walplayerSummary": ...} line
    input: PathBuf,
    /// Where to write the report (one self-contained HTML file)
    #[arg(long, short, value_name = "FILE.html")]
    output: PathBuf,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Directory to write into (created if missing)
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Number of WAL files to write
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    length: u64,
    /// Size of each WAL file in MB: a power of two from 1 to 1024
    #[arg(long, value_name = "MB", default_value_t = 16)]
    wal_size: u64,
    /// Timeline of the generated segments
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    timeline: u32,
    /// LSN where the first segment starts (e.g. 0/0 or 1/FF000000)
    #[arg(long, value_name = "LSN", default_value = "0/0", value_parser = walname::parse_lsn)]
    start_lsn: u64,
    /// PostgreSQL major version whose page magic the headers carry
    #[arg(long, value_enum, default_value = "16")]
    pg_version: generate::PgVersion,
    /// Take the payload from this real WAL segment, so the load compresses like yours
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// Write NAME.gz files
    #[arg(long)]
    gzip: bool,
    /// No line per file on stderr
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct PlayArgs {
    /// Directory holding the WAL files (symbolic links in it are followed: they are yours)
    dir: PathBuf,
    #[command(flatten)]
    upload: UploadArgs,
    /// Refuse a run whose jobs × block size would need more memory than this (e.g. 2GiB; default: the cgroup's limit, if any)
    #[arg(long, value_name = "SIZE", value_parser = walplayer::klio::memory::parse_size)]
    max_memory: Option<u64>,
    #[command(flatten)]
    klio: KlioArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// After the run, keep serving /metrics this long, so the last scrape sees the final counts (Ctrl-C ends it)
    #[arg(long, value_name = "DURATION", requires = "metrics_listen", value_parser = walplayer::klio::flags::parse_duration)]
    metrics_hold: Option<std::time::Duration>,
}

#[derive(clap::Args)]
struct SinkArgs {
    /// Address to listen on (port 0 picks a free one, printed on stdout)
    #[arg(long, default_value = certs::DEFAULT_SINK_ADDRESS)]
    listen: std::net::SocketAddr,
    /// Directory to store WAL in, one subdirectory per cluster
    #[arg(long, required_unless_present = "discard")]
    data: Option<PathBuf>,
    /// Validate and count, store nothing
    #[arg(long, conflicts_with = "data")]
    discard: bool,
    /// Server certificate, PEM
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// Server private key, PEM
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// CA that client certificates must be signed by
    #[arg(long, value_name = "FILE")]
    client_ca: PathBuf,
    /// When to fsync received WAL: after every block (like Klio) or never
    #[arg(long, value_enum, default_value = "block")]
    fsync: sink::Fsync,
    /// Refuse every upload with FAILED_PRECONDITION, as a read-only Klio does
    #[arg(long)]
    read_only: bool,
    /// Refuse a Put stream that sends nothing for this long (a client's default --timeout)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = walplayer::klio::flags::parse_duration)]
    idle_timeout: std::time::Duration,
    /// Close a connection that holds no stream for this long, HTTP/2 PINGs or not (GOAWAY, then close)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = walplayer::klio::flags::parse_duration)]
    idle_connection_timeout: std::time::Duration,
    /// Write one JSON line per Put stream here: cluster, WAL, messages, bytes, open and close times
    #[arg(long, value_name = "FILE")]
    put_log: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9465; port 0 picks a free one)
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Most connections held at once; one more is closed at once and logged (default: half the open-files limit less 256, at least 16)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..1_000_000_000))]
    max_connections: Option<u64>,
    #[command(flatten)]
    faults: sink::FaultArgs,
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Directory to write the certificates into
    dir: PathBuf,
    /// Host names and addresses the server certificate is valid for
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    hosts: Vec<String>,
    /// Cluster name: the client certificate's CN is klio@NAME
    #[arg(long, default_value = "walplayer")]
    cluster: String,
    /// Sink address written into klio-config.yaml
    #[arg(long, default_value = certs::DEFAULT_SINK_ADDRESS)]
    address: String,
    /// Overwrite existing files
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    walplayer::alloc::tune();
    let cli: Cli = parse_args();
    logs::init(
        &cli.log,
        matches!(
            cli.command,
            Command::Sink(_) | Command::Coordinator(_) | Command::Agent(_)
        ),
    );
    walplayer::limits::raise_open_files();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let shutdown = CancellationToken::new();
    let exit = runtime.block_on(with_signals(
        shutdown.clone(),
        exit_now,
        run(cli.command, shutdown.clone()),
    ));
    exit.into()
}

/// A second signal: stop at once, keeping what was already written.
fn exit_now() -> ! {
    std::process::exit(Exit::Interrupted.code().into())
}

/// Prints an up-front error with its causes: exit status 2.
fn usage_error(e: impl Into<anyhow::Error>) -> Exit {
    console::error(&format!("walplayer: error: {}", error_text(&e.into())));
    Exit::Usage
}

async fn run(command: Command, shutdown: CancellationToken) -> Exit {
    match command {
        Command::Generate(args) => run_generate(args, shutdown).await,
        Command::Play(args) => run_play(args, shutdown).await,
        Command::Simulate(args) => match walplayer::simulate::run(args, shutdown).await {
            Ok(exit) => exit,
            Err(e) => usage_error(e),
        },
        Command::Sink(args) => run_sink(args, shutdown).await,
        Command::Certs(args) => run_certs(args),
        Command::Coordinator(args) => run_coordinator(args, shutdown).await,
        Command::Report(args) => match walplayer::report::run(&args.input, &args.output) {
            Ok(()) => Exit::Ok,
            Err(e) => usage_error(e),
        },
        Command::Agent(args) => walplayer::agent::cli::run(args, shutdown).await,
        Command::Quickstart(args) => match quickstart::run(args, shutdown).await {
            Ok(exit) => exit,
            Err(e) => usage_error(e),
        },
    }
}

async fn run_coordinator(
    args: walplayer::coordinator::cli::CoordinatorArgs,
    shutdown: CancellationToken,
) -> Exit {
    let report = args.output.report.clone();
    if let Err(e) = walplayer::klio::output::check_writable(report.as_deref(), "--report") {
        return usage_error(e);
    }
    let progress = Box::new(walplayer::progress::Progress::new(args.output.quiet, 0, 0));
    let outcome = match walplayer::coordinator::cli::run(args, shutdown, progress).await {
        Ok(outcome) => outcome,
        Err(e) => return usage_error(e),
    };
    if let Some(path) = &report {
        if let Err(e) = walplayer::report::write(path, &outcome.document()) {
            return usage_error(e);
        }
    }
    outcome.exit
}

async fn run_generate(args: GenerateArgs, shutdown: CancellationToken) -> Exit {
    let segment_bytes = match walname::segment_bytes_from_mib(args.wal_size) {
        Ok(bytes) => bytes,
        Err(e) => return usage_error(anyhow::anyhow!("--wal-size: {e}")),
    };
    // create_dir_all would only say "File exists".
    if let Err(e) = dir_or_absent(&args.dir, "generate DIR") {
        return usage_error(e);
    }
    let payload = match &args.template {
        Some(path) => match generate::Payload::from_template(path) {
            Ok(p) => p,
            Err(e) => return usage_error(e),
        },
        None => generate::Payload::synthetic(),
    };
    let spec = generate::GenerateSpec {
        dir: args.dir,
        count: args.length,
        segment_bytes,
        timeline: args.timeline,
        start_lsn: args.start_lsn,
        pg_version: args.pg_version,
        gzip: args.gzip,
        system_id: generate::DEFAULT_SYSTEM_ID,
    };
    let quiet = args.quiet;
    // The generator sees the token between batches of pages: a signal ends
    // it within one batch, removing the segment it was writing.
    let stop = shutdown.clone();
    let task = tokio::task::spawn_blocking(move || {
        generate::generate(&spec, &payload, &stop, &mut |path, _| {
            if !quiet {
                console::say(&path.display().to_string());
            }
        })
    });
    match task.await {
        Ok(Ok(_)) if shutdown.is_cancelled() => Exit::Interrupted,
        Ok(Ok(_)) => Exit::Ok,
        Ok(Err(e)) => usage_error(e),
        Err(e) => usage_error(e),
    }
}

async fn run_play(args: PlayArgs, shutdown: CancellationToken) -> Exit {
    let klio = match args.klio.resolve() {
        Ok(k) => k,
        Err(e) => return usage_error(e),
    };
    let opts = play::PlayOptions {
        dir: args.dir,
        jobs: args.upload.jobs,
        upload: args.upload.settings(),
        klio,
        output: args.output.output,
        summary: args.output.summary,
        report: args.output.report,
        quiet: args.output.quiet,
        metrics_listen: args.metrics.metrics_listen,
        metrics_cluster_labels: args.metrics.metrics_cluster_labels,
        metrics_hold: args.metrics_hold,
        max_memory: walplayer::klio::memory::limit(args.max_memory),
    };
    match play::play(opts, shutdown).await {
        Ok(outcome) => outcome.exit(),
        Err(e) => usage_error(e),
    }
}

async fn run_sink(args: SinkArgs, shutdown: CancellationToken) -> Exit {
    // Otherwise the sink would listen and then fail every upload.
    if let Some(data) = args.data.as_deref().filter(|_| !args.discard) {
        if let Err(e) = dir_or_absent(data, "--data") {
            return usage_error(e);
        }
    }
    let tls =
        match walplayer::klio::tls::server_config(&args.tls_cert, &args.tls_key, &args.client_ca) {
            Ok(t) => t,
            Err(e) => return usage_error(e),
        };
    let settings = sink::SinkSettings {
        tls,
        storage: sink::storage(if args.discard { None } else { args.data }, args.fsync),
        read_only: args.read_only,
    };
    let put_log = match &args.put_log {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(log) => Some(log),
            Err(e) => {
                return usage_error(anyhow::anyhow!(
                    "cannot create --put-log file {}: {e}",
                    path.display()
                ))
            }
        },
    };
    let (metrics, metrics_server) = match args.metrics_listen {
        Some(addr) => {
            let mut registry = metrics::Registry::default();
            let m = sink::SinkMetrics::register(&mut registry);
            match metrics::serve(addr, registry, "--metrics-listen").await {
                Ok(server) => (m, Some(server)),
                Err(e) => return usage_error(e),
            }
        }
        None => (sink::SinkMetrics::default(), None),
    };
    let bound = match sink::Sink::bind(args.listen, settings).await {
        Ok(s) => s
            .with_faults(args.faults.plan())
            .with_idle_timeout(args.idle_timeout)
            .with_idle_connection_timeout(args.idle_connection_timeout)
            .with_put_log(put_log)
            .with_metrics(metrics)
            .with_max_connections(
                args.max_connections
                    .map_or_else(default_max_connections, |n| n as usize),
            ),
        Err(e) => {
            if let Some(server) = metrics_server {
                server.stop().await;
            }
            return usage_error(anyhow::anyhow!("cannot listen on {}: {e}", args.listen));
        }
    };
    println!("listening on {}", bound.local_addr());
    tracing::info!("sink listening on {}", bound.local_addr());
    let totals = bound.serve(shutdown).await;
    if let Some(server) = metrics_server {
        server.stop().await;
    }
    tracing::info!("sink stopped: {}", totals.to_text());
    Exit::Ok
}

fn run_certs(args: CertsArgs) -> Exit {
    // The address goes into klio-config.yaml; play would refuse it later.
    if let Err(e) = walplayer::klio::config::split_address(&args.address) {
        return usage_error(anyhow::anyhow!("--address: {e}"));
    }
    if let Err(e) = dir_or_absent(&args.dir, "certs DIR") {
        return usage_error(e);
    }
    let spec = certs::CertSpec {
        hosts: args.hosts,
        cluster: args.cluster,
        sink_address: args.address,
        force: args.force,
        ..certs::CertSpec::default()
    };
    match certs::mint(&args.dir, &spec) {
        Ok(minted) => {
            println!("{}", minted.klio_config.display());
            Exit::Ok
        }
        Err(e) => usage_error(e),
    }
}

/// Half the open-files limit, less a reserve for the files being written:
/// each connection holds a descriptor, and its streams hold more.
fn default_max_connections() -> usize {
    let open_files = walplayer::limits::raise_open_files().unwrap_or(1024);
    usize::try_from(open_files.saturating_sub(256) / 2)
        .unwrap_or(usize::MAX)
        .max(16)
}

/// A directory walplayer will create or write into must not be a file.
fn dir_or_absent(path: &std::path::Path, what: &str) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => anyhow::bail!(
            "{what} {} is a file, not a directory: give a directory (it is created if missing)",
            path.display()
        ),
        _ => Ok(()),
    }
}
