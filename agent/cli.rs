//! Flags of `walplayer-agent` (also `walplayer agent`), and startup.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::{health, spec::Limits, AgentOptions};
use walplayer_klio::exit::Exit;
use walplayer_klio::flags::{KlioArgs, MetricsArgs};
use walplayer_klio::metrics::{self, ClientMetrics, Registry};
use walplayer_klio::tls;
use walplayer_klio::transport::ClientTls;

/// Flags of an agent.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Coordinator control address, host:port
    #[arg(long, env = "WALPLAYER_COORDINATOR", value_name = "HOST:PORT")]
    pub coordinator: String,
    /// Agent name [default: the host name, the pod name in a StatefulSet]
    #[arg(long, env = "WALPLAYER_AGENT_NAME")]
    pub name: Option<String>,
    /// Directory for generated WAL and, for --source dir runs, the WAL to play
    #[arg(long, value_name = "DIR", default_value = "walplayer-data")]
    pub data_dir: PathBuf,
    /// Exit after one run instead of waiting for the next
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub klio: KlioArgs,
    /// Serve gRPC health (services "liveness" and "readiness") here, for Kubernetes probes
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// CA that signed the coordinator's certificate (mutual TLS on the control channel)
    #[arg(long, value_name = "FILE", requires_all = ["control_cert", "control_key"])]
    pub control_ca: Option<PathBuf>,
    /// This agent's certificate for the control channel
    #[arg(long, value_name = "FILE", requires = "control_ca")]
    pub control_cert: Option<PathBuf>,
    /// Private key of --control-cert
    #[arg(long, value_name = "FILE", requires = "control_ca")]
    pub control_key: Option<PathBuf>,
    /// Most files this agent accepts in one run
    #[arg(long, default_value_t = Limits::default().max_files, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_files: u64,
    /// Most bytes this agent generates into its data directory (also at most 90% of its free space)
    #[arg(long, default_value_t = Limits::default().max_generate_bytes, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_generate_bytes: u64,
    /// Most parallel uploads this agent accepts
    #[arg(long, default_value_t = Limits::default().max_jobs, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs: u32,
    /// Klio addresses a coordinator may send this agent to instead of its own (repeat, or comma-separated)
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub allow_address: Vec<String>,
    /// Most clusters this agent simulates
    #[arg(long, default_value_t = Limits::default().max_clusters, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clusters: u32,
    /// Refuse runs whose jobs × block size would need more memory than this (e.g. 2GiB; default: the cgroup's limit, if any)
    #[arg(long, value_name = "SIZE", value_parser = walplayer_klio::memory::parse_size)]
    pub max_memory: Option<u64>,
}

fn usage_error(e: impl std::fmt::Display) -> Exit {
    walplayer_klio::console::error(&format!("walplayer-agent: error: {e:#}"));
    Exit::Usage
}

/// Runs an agent until `shutdown` (or one run with `--once`); returns the
/// exit status.
pub async fn run(args: AgentArgs, shutdown: CancellationToken) -> Exit {
    let Some(name) = args.name.clone().or_else(crate::host_name) else {
        return usage_error("no --name given and the host name cannot be read");
    };
    if let Err(e) = walplayer_wal::walname::check_agent_name(&name) {
        return usage_error(e);
    }
    if args.data_dir.exists() && !args.data_dir.is_dir() {
        return usage_error(format!(
            "--data-dir {} is a file, not a directory: give a directory (it is created if missing)",
            args.data_dir.display()
        ));
    }
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        return usage_error(format!(
            "cannot create --data-dir {}: {e}",
            args.data_dir.display()
        ));
    }
    // Reports name files by absolute path, wherever the agent was started.
    let data_dir = match args.data_dir.canonicalize() {
        Ok(d) => d,
        Err(e) => return usage_error(format!("--data-dir {}: {e}", args.data_dir.display())),
    };
    if let Err(e) = walplayer_klio::config::split_address(&args.coordinator) {
        return usage_error(format!("--coordinator: {e}"));
    }
    // A coordinator's override is compared with these; a malformed one
    // could never match, and the refusal would come only at run time.
    for allowed in &args.allow_address {
        if let Err(e) = walplayer_klio::config::split_address(allowed) {
            return usage_error(format!("--allow-address: {e}"));
        }
    }
    let control_tls = match (&args.control_ca, &args.control_cert, &args.control_key) {
        (Some(ca), Some(cert), Some(key)) => {
            match tls::control_client_config(ca, cert, key)
                .map_err(|e| e.to_string())
                .and_then(|c| ClientTls::for_address(&args.coordinator, c))
            {
                Ok(t) => Some(t),
                Err(e) => return usage_error(e),
            }
        }
        _ => None,
    };
    // Bound before health, so a taken port is one error and nothing runs.
    let (client_metrics, metrics_server) = match args.metrics.metrics_listen {
        Some(addr) => {
            let mut registry = Registry::default();
            let m = ClientMetrics::register(&mut registry, args.metrics.metrics_cluster_labels);
            match metrics::serve(addr, registry, "--metrics-listen").await {
                Ok(server) => (m, Some(server)),
                Err(e) => return usage_error(e),
            }
        }
        None => (ClientMetrics::unregistered(), None),
    };
    let (health, health_server) = match args.health_listen {
        Some(addr) => match health::serve(addr).await {
            Ok((health, server)) => (Some(health), Some(server)),
            Err(e) => {
                if let Some(server) = metrics_server {
                    server.stop().await;
                }
                return usage_error(format!("cannot serve health on {addr}: {e}"));
            }
        },
        None => (None, None),
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
            allowed_addresses: args.allow_address.clone(),
            max_memory: walplayer_klio::memory::limit(args.max_memory),
            ..Limits::default()
        },
        health,
        metrics: client_metrics,
    };
    // A configuration that cannot work is an error now, not at the first run.
    if let Err(e) = crate::resolve_klio(&opts) {
        if opts.once {
            if let Some(server) = health_server {
                server.stop().await;
            }
            if let Some(server) = metrics_server {
                server.stop().await;
            }
            return usage_error(e);
        }
        tracing::error!("{e}; will retry before each run");
    }
    tracing::info!(
        "agent {} starting; coordinator {}",
        opts.name,
        opts.coordinator
    );
    let exit = crate::run(opts, shutdown).await;
    if let Some(server) = health_server {
        server.stop().await;
    }
    if let Some(server) = metrics_server {
        server.stop().await;
    }
    exit
}
