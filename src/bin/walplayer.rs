//! `walplayer`: generate WAL, play it to Klio, run a sink, mint
//! certificates, coordinate agents. Parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use walplayer::cli::{error_text, init_logging, with_signals};
use walplayer::klio::exit::Exit;
use walplayer::klio::flags::{KlioArgs, OutputArgs, UploadArgs};
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
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic WAL segments with valid page headers
    Generate(GenerateArgs),
    /// Send a directory of WAL files (plain or .gz) to a Klio server
    Play(PlayArgs),
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
    let cli = Cli::parse();
    init_logging(matches!(
        cli.command,
        Command::Sink(_) | Command::Coordinator(_) | Command::Agent(_)
    ));
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
    eprintln!("walplayer: error: {}", error_text(&e.into()));
    Exit::Usage
}

async fn run(command: Command, shutdown: CancellationToken) -> Exit {
    match command {
        Command::Generate(args) => run_generate(args, shutdown).await,
        Command::Play(args) => run_play(args, shutdown).await,
        Command::Sink(args) => run_sink(args, shutdown).await,
        Command::Certs(args) => run_certs(args),
        Command::Coordinator(args) => {
            let progress = Box::new(walplayer::progress::Progress::new(args.output.quiet, 0, 0));
            match walplayer::coordinator::cli::run(args, shutdown, progress).await {
                Ok(exit) => exit,
                Err(e) => usage_error(e),
            }
        }
        Command::Agent(args) => walplayer::agent::cli::run(args, shutdown).await,
        Command::Quickstart(args) => match quickstart::run(args, shutdown).await {
            Ok(exit) => exit,
            Err(e) => usage_error(e),
        },
    }
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
                eprintln!("{}", path.display());
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
        quiet: args.output.quiet,
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
    let bound = match sink::Sink::bind(args.listen, settings).await {
        Ok(s) => s
            .with_faults(args.faults.plan())
            .with_idle_timeout(args.idle_timeout)
            .with_max_connections(
                args.max_connections
                    .map_or_else(default_max_connections, |n| n as usize),
            ),
        Err(e) => return usage_error(anyhow::anyhow!("cannot listen on {}: {e}", args.listen)),
    };
    println!("listening on {}", bound.local_addr());
    tracing::info!("sink listening on {}", bound.local_addr());
    match bound.serve(shutdown).await {
        Ok(totals) => {
            tracing::info!("sink stopped: {}", totals.to_text());
            Exit::Ok
        }
        Err(e) => {
            eprintln!("walplayer: sink failed: {}", error_text(&e.into()));
            Exit::FilesFailed
        }
    }
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
