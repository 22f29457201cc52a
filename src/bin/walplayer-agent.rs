//! `walplayer-agent`: a long-lived member of distributed runs. Parses
//! arguments and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use walplayer::agent::{self, health, shard::Limits, AgentOptions};
use walplayer::common::cli::{self, KlioArgs};
use walplayer::common::tls;
use walplayer::common::transport::ClientTls;

#[derive(Parser)]
#[command(name = "walplayer-agent", version, about = "Join walplayer coordinator runs: generate or read a shard of WAL and play it to Klio")]
struct Args {
    /// Coordinator control address, host:port
    #[arg(long, env = "WALPLAYER_COORDINATOR", value_name = "HOST:PORT")]
    coordinator: String,
    /// Agent name [default: the host name, the pod name in a StatefulSet]
    #[arg(long, env = "WALPLAYER_AGENT_NAME")]
    name: Option<String>,
    /// Directory for generated WAL and, for --source dir runs, the WAL to play
    #[arg(long, value_name = "DIR", default_value = "walplayer-data")]
    data_dir: PathBuf,
    /// Exit after one run instead of waiting for the next
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    klio: KlioArgs,
    /// Serve gRPC health (services "liveness" and "readiness") here, for Kubernetes probes
    #[arg(long, value_name = "ADDR")]
    health_listen: Option<SocketAddr>,
    /// CA that signed the coordinator's certificate (mutual TLS on the control channel)
    #[arg(long, value_name = "FILE", requires_all = ["control_cert", "control_key"])]
    control_ca: Option<PathBuf>,
    /// This agent's certificate for the control channel
    #[arg(long, value_name = "FILE", requires = "control_ca")]
    control_cert: Option<PathBuf>,
    /// Private key of --control-cert
    #[arg(long, value_name = "FILE", requires = "control_ca")]
    control_key: Option<PathBuf>,
    /// Most files this agent accepts in one run
    #[arg(long, default_value_t = Limits::default().max_files)]
    max_files: u64,
    /// Most bytes this agent generates into its data directory (also at most 90% of its free space)
    #[arg(long, default_value_t = Limits::default().max_generate_bytes)]
    max_generate_bytes: u64,
    /// Most parallel uploads this agent accepts
    #[arg(long, default_value_t = Limits::default().max_jobs)]
    max_jobs: u32,
    /// Most clusters this agent simulates
    #[arg(long, default_value_t = Limits::default().max_clusters)]
    max_clusters: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(true);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    ExitCode::from(runtime.block_on(run(args)) as u8)
}

fn usage_error(e: impl std::fmt::Display) -> i32 {
    eprintln!("walplayer-agent: error: {e:#}");
    2
}

async fn run(args: Args) -> i32 {
    let Some(name) = args.name.clone().or_else(agent::host_name) else {
        return usage_error("no --name given and the host name cannot be read");
    };
    if let Err(e) = agent::check_name(&name) {
        return usage_error(e);
    }
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        return usage_error(format!("cannot create --data-dir {}: {e}", args.data_dir.display()));
    }
    // Reports name files by absolute path, wherever the agent was started.
    let data_dir = match args.data_dir.canonicalize() {
        Ok(d) => d,
        Err(e) => return usage_error(format!("--data-dir {}: {e}", args.data_dir.display())),
    };
    if let Err(e) = walplayer::common::config::split_address(&args.coordinator) {
        return usage_error(format!("--coordinator: {e}"));
    }
    let control_tls = match (&args.control_ca, &args.control_cert, &args.control_key) {
        (Some(ca), Some(cert), Some(key)) => {
            match tls::client_config(ca, cert, key).map_err(|e| e.to_string()).and_then(|c| ClientTls::for_address(&args.coordinator, c)) {
                Ok(t) => Some(t),
                Err(e) => return usage_error(e),
            }
        }
        _ => None,
    };
    let health = match args.health_listen {
        Some(addr) => match health::serve(addr).await {
            Ok(h) => Some(h),
            Err(e) => return usage_error(format!("cannot serve health on {addr}: {e}")),
        },
        None => None,
    };
    let opts = AgentOptions {
        coordinator: args.coordinator,
        name,
        data_dir,
        once: args.once,
        klio: args.klio,
        control_tls,
        limits: Limits {
            max_files: args.max_files,
            max_generate_bytes: args.max_generate_bytes,
            max_jobs: args.max_jobs,
            max_clusters: args.max_clusters,
            ..Limits::default()
        },
        health,
    };
    // A configuration that cannot work is an error now, not at the first run.
    if let Err(e) = agent::resolve_klio(&opts) {
        if opts.once {
            return usage_error(e);
        }
        tracing::error!("{e}; will retry before each run");
    }
    let shutdown = CancellationToken::new();
    cli::cancel_on_signal(shutdown.clone());
    tracing::info!("agent {} starting; coordinator {}", opts.name, opts.coordinator);
    agent::run(opts, shutdown).await
}
