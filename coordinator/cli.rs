//! Flags of `walplayer coordinator`, and their validation into options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::plan::{Length, Workload};
use crate::{
    Coordinator, CoordinatorMetrics, CoordinatorOptions, RunOutcome, Simulation, DEFAULT_LISTEN,
};
use walplayer_klio::flags::{parse_duration, MetricsArgs, OutputArgs, UploadArgs};
use walplayer_klio::metrics::{self, Registry};
use walplayer_klio::progress::Progress;
use walplayer_proto::control::SimulateSpec;
use walplayer_proto::control::{Source, Split};
use walplayer_simulate::flags::WorkloadArgs;
use walplayer_wal::walname::segment_bytes_from_mib;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// Every agent generates its shard with the core generator
    Generate,
    /// Every agent plays the files of its own data directory
    Dir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// Each file is played by exactly one agent
    Shard,
    /// Every agent plays every file, as its own clusters
    Replicate,
}

/// Flags of `walplayer coordinator`.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    /// Control address agents dial (loopback unless told otherwise)
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Number of agents the run waits for
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agents: u32,
    /// How long to wait for every agent to register
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub register_timeout: Duration,
    /// How long agents may take to prepare their shard (generate, connect)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// An agent silent this long during the run is marked lost
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub agent_timeout: Duration,
    /// Agents not finished this long after the start instant are lost (exit
    /// 3), their results kept [default: the longer of 30m and 5s per planned
    /// file, reckoned when every agent is ready]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub run_timeout: Option<Duration>,
    /// Delay between releasing the start barrier and the common start instant
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub barrier_delay: Duration,
    /// Where agents take their WAL from
    #[arg(long, value_enum, default_value = "generate")]
    pub source: SourceArg,
    /// Files in total, split across agents (--source generate)
    #[arg(long, conflicts_with = "length_per_agent")]
    pub length: Option<u64>,
    /// Files on every agent (--source generate)
    #[arg(long)]
    pub length_per_agent: Option<u64>,
    /// Size of each generated WAL file in MB
    #[arg(long, value_name = "MB", default_value_t = 16)]
    pub wal_size: u64,
    /// Generate NAME.gz files
    #[arg(long)]
    pub gzip: bool,
    /// With --source dir: each file played once, or by every agent
    #[arg(long, value_enum, default_value = "shard")]
    pub split: SplitArg,
    /// Postgres clusters each agent simulates, each with its own WAL sequence
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub clusters_per_agent: u32,
    #[command(flatten)]
    pub upload: UploadArgs,
    /// Klio address every agent uses instead of its own (each agent must allow it with --allow-address)
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// After the run, keep serving /metrics this long, so the last scrape sees the final counts (Ctrl-C ends it)
    #[arg(long, value_name = "DURATION", requires = "metrics_listen", value_parser = parse_duration)]
    pub metrics_hold: Option<Duration>,
    /// Certificate for the control channel's mutual TLS
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA that agents' certificates must be signed by
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Simulate PostgreSQL clusters streaming WAL (the workload flags of `walplayer simulate`; --clusters is the total, split across agents)
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub sim: WorkloadArgs,
}

/// Most segments a distributed search may plan: the coordinator keeps a
/// bit for each (128 MiB at this bound).
pub const MAX_SEARCH_SEGMENTS: u64 = 1 << 30;

impl CoordinatorArgs {
    /// A simulation's options: its share template and what the summary
    /// needs. Refuses what a distributed simulation cannot do yet.
    fn simulation(&self) -> Result<(SimulateSpec, Simulation)> {
        if self.length.is_some()
            || self.length_per_agent.is_some()
            || self.source != SourceArg::Generate
        {
            bail!("--simulate sets its length with --duration and its clusters with --clusters; leave out --length, --length-per-agent and --source");
        }
        let agents = u64::from(self.agents);
        let workload = self
            .sim
            .workload("cluster", 0, self.wal_size, self.upload.timeout)
            .map_err(anyhow::Error::msg)?;
        let (clusters, what) = match workload.search {
            Some(s) => (s.max_clusters, "--max-clusters"),
            None => (self.sim.clusters, "--clusters"),
        };
        if clusters < agents {
            bail!(
                "{what} {clusters} is fewer than --agents {agents}: give every agent at least one cluster"
            );
        }
        let mut spec = walplayer_simulate::wire::spec(&self.sim, &workload, clusters, 0);
        walplayer_simulate::wire::check_sendable(&spec).map_err(anyhow::Error::msg)?;
        // How long clusters may produce: the duration, or for a search
        // every step up to --max-clusters and one more while the last is
        // judged.
        let producing = match workload.search {
            Some(s) => s.step_duration.saturating_mul(s.steps().saturating_add(1)),
            None => self.sim.duration,
        };
        spec.duration_ms = u64::try_from(producing.as_millis()).unwrap_or(u64::MAX);
        if workload.search.is_some() {
            let per_cluster =
                walplayer_simulate::wire::most_bytes(&spec) / workload.shape.segment_bytes;
            let planned = per_cluster.saturating_mul(clusters);
            if planned > MAX_SEARCH_SEGMENTS {
                bail!(
                    "a search up to --max-clusters {clusters} for {} may plan {planned} segments, more than the {MAX_SEARCH_SEGMENTS} the coordinator tracks: lower --max-clusters or --step-duration, or raise --step",
                    humantime::format_duration(producing)
                );
            }
        }
        let simulation = Simulation {
            slos: workload.slos.clone(),
            doc: workload.describe(),
            seconds: (producing + self.sim.drain).as_secs() + 60,
            search: workload.search,
        };
        Ok((spec, simulation))
    }

    /// Validates the flags into options.
    pub fn options(&self) -> Result<CoordinatorOptions> {
        let source = match self.source {
            SourceArg::Generate => Source::Generate,
            SourceArg::Dir => Source::Dir,
        };
        if self.length == Some(0) || self.length_per_agent == Some(0) {
            bail!("a run of zero files measures nothing: give --length or --length-per-agent of at least 1");
        }
        let simulation = if self.simulate {
            Some(self.simulation()?)
        } else {
            None
        };
        let length = match (source, self.length, self.length_per_agent) {
            _ if simulation.is_some() => Length::Total(0),
            (Source::Generate, Some(n), None) => Length::Total(n),
            (Source::Generate, None, Some(n)) => Length::PerAgent(n),
            (Source::Generate, None, None) => bail!("--source generate needs --length (files in total) or --length-per-agent"),
            (Source::Dir, None, None) => Length::Total(0),
            (Source::Dir, _, _) => bail!("--length and --length-per-agent apply to --source generate; a directory run plays the files it finds"),
            _ => bail!("give either --length or --length-per-agent"),
        };
        if source == Source::Generate {
            segment_bytes_from_mib(self.wal_size)
                .map_err(|e| anyhow::anyhow!("--wal-size: {e}"))?;
        }
        if let Some(a) = &self.address {
            walplayer_klio::config::split_address(a)
                .map_err(|e| anyhow::anyhow!("--address: {e}"))?;
        }
        let tls = match (&self.tls_cert, &self.tls_key, &self.client_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(walplayer_klio::tls::control_server_config(cert, key, ca)?)
            }
            _ => None,
        };
        Ok(CoordinatorOptions {
            agents: self.agents as usize,
            register_timeout: self.register_timeout,
            ready_timeout: self.ready_timeout,
            agent_timeout: self.agent_timeout,
            barrier_delay: self.barrier_delay,
            run_timeout: self.run_timeout,
            workload: Workload {
                source,
                length,
                wal_size_mib: self.wal_size,
                gzip: self.gzip,
                split: match self.split {
                    SplitArg::Shard => Split::Shard,
                    SplitArg::Replicate => Split::Replicate,
                },
                clusters_per_agent: self.clusters_per_agent,
                jobs: self.upload.jobs,
                upload: self.upload.settings(),
                address: self.address.clone(),
                simulate: simulation.as_ref().map(|(spec, _)| spec.clone()),
            },
            simulation: simulation.map(|(_, s)| s),
            output: self.output.output.clone(),
            summary: self.output.summary.clone(),
            tls,
        })
    }
}

/// `walplayer coordinator`: returns how the run ended (its exit status and
/// summary). `progress` is the display the CLI chose (`--quiet` is
/// [`OutputArgs::quiet`]).
pub async fn run(
    args: CoordinatorArgs,
    shutdown: CancellationToken,
    progress: Box<dyn Progress>,
) -> Result<RunOutcome> {
    let opts = args.options()?;
    let (metrics, server) = match args.metrics.metrics_listen {
        Some(addr) => {
            let mut registry = Registry::default();
            let m =
                CoordinatorMetrics::register(&mut registry, args.metrics.metrics_cluster_labels);
            (
                m,
                Some(metrics::serve(addr, registry, "--metrics-listen").await?),
            )
        }
        None => (CoordinatorMetrics::unregistered(), None),
    };
    let outcome = run_bound(args.listen, opts, metrics, &shutdown, progress).await;
    if let Some(server) = server {
        let hold = args.metrics_hold.filter(|_| outcome.is_ok());
        server.hold_then_stop(hold, &shutdown).await;
    }
    outcome
}

async fn run_bound(
    listen: SocketAddr,
    opts: CoordinatorOptions,
    metrics: CoordinatorMetrics,
    shutdown: &CancellationToken,
    progress: Box<dyn Progress>,
) -> Result<RunOutcome> {
    let coordinator = Coordinator::bind(listen, opts).await?.with_metrics(metrics);
    // Stdout carries only JSON lines; scripts read the address from here.
    tracing::info!("coordinator listening on {}", coordinator.local_addr());
    coordinator.run(shutdown.clone(), progress).await
}
