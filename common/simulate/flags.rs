//! The workload flags of `walplayer simulate` (the coordinator takes the
//! same), and their validation into a [`Workload`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use walplayer_klio::endpoint::MAX_BLOCK_BYTES;
use walplayer_klio::flags::parse_duration;
use walplayer_wal::generate::{PgVersion, SegmentShape, DEFAULT_SYSTEM_ID};
use walplayer_wal::walname::{self, check_cluster_name};

use crate::pace::{Arrival, Recording};
use crate::rate::{parse_bytes, RateSpec};
use crate::slo::Slo;
use crate::workload::{Rates, Search, Template, Workload};

#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Clusters to simulate, each with its own WAL and (by default) its own connection
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub clusters: u64,
    /// WAL each cluster writes per second (B, KiB, MiB), or a range A..B spread log-uniformly over the clusters
    #[arg(
        long,
        value_name = "RATE",
        default_value = "1MiB/s",
        conflicts_with = "rate_file"
    )]
    pub wal_rate: RateSpec,
    /// Replay a recorded pace instead: CSV rows `seconds,bytes` (e.g. `find ARCHIVE -type f -printf '%T@,%s\n' | sort -n`)
    #[arg(long, value_name = "CSV")]
    pub rate_file: Option<PathBuf>,
    /// How WAL appears: evenly, or as 8 KiB records at Poisson arrivals
    #[arg(long, value_enum, default_value = "constant")]
    pub arrival: Arrival,
    /// Timeline of every cluster's segments
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub timeline: u32,
    /// LSN where every cluster's WAL starts (a segment boundary)
    #[arg(long, value_name = "LSN", default_value = "0/1000000", value_parser = walname::parse_lsn)]
    pub start_lsn: u64,
    /// PostgreSQL major version whose page magic the segments carry
    #[arg(long, value_enum, default_value = "16")]
    pub pg_version: PgVersion,
    /// Take the payload from this real WAL segment
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// Send what has built up at least this often (Klio's WAL sender: 200ms)
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Send a block as soon as this much has built up (Klio's WAL sender: 2MiB; at most 8MiB)
    #[arg(long, value_name = "SIZE", default_value = "2MiB")]
    pub flush_bytes: String,
    /// How long each cluster writes WAL
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub duration: Duration,
    /// After the duration, how long whole segments still unanswered may take
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Share N connections among all clusters instead of one connection per cluster
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connections: Option<u64>,
    /// Start every cluster at the same instant instead of spread over one flush interval
    #[arg(long)]
    pub aligned: bool,
    /// Seed for rates in a range, Poisson arrivals and recorded-pace offsets
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// An objective, e.g. 'lag.p99<5s', 'backlog.max<64MiB', 'errors==0', 'ack.rate>=0.999' (repeatable; a breach exits 4)
    #[arg(long, value_name = "EXPR")]
    pub slo: Vec<Slo>,
    /// Stop once a backlog objective has been broken for 10 s without a break
    #[arg(long)]
    pub abort_on_breach: bool,
    /// Find the most clusters the server takes within every --slo: add --step clusters every --step-duration
    #[arg(long)]
    pub find_max_clusters: bool,
    /// Clusters added per step of --find-max-clusters (and the first step's count)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub step: u64,
    /// How long each step of --find-max-clusters runs
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Where --find-max-clusters stops even if every SLO still holds
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_clusters: u64,
}

impl WorkloadArgs {
    /// Checks the flags; `prefix` is the cluster name (distributed: with
    /// the agent's name), `first_index` the index of its first cluster;
    /// `wal_size_mib` and `timeout` are the command's `--wal-size` and
    /// `--timeout`.
    pub fn workload(
        &self,
        prefix: &str,
        first_index: u64,
        wal_size_mib: u64,
        timeout: Duration,
    ) -> Result<Workload, String> {
        let segment_bytes = walname::segment_bytes_from_mib(wal_size_mib)
            .map_err(|e| format!("--wal-size: {e}"))?;
        if !self.start_lsn.is_multiple_of(segment_bytes) {
            return Err(format!(
                "--start-lsn is not at a segment boundary for {wal_size_mib} MiB segments"
            ));
        }
        let flush_bytes =
            parse_bytes(&self.flush_bytes).map_err(|e| format!("--flush-bytes: {e}"))? as u64;
        if flush_bytes == 0 || flush_bytes > MAX_BLOCK_BYTES as u64 {
            return Err(format!(
                "--flush-bytes {} is outside 1 byte..8MiB, the largest block Klio accepts",
                self.flush_bytes
            ));
        }
        let search = self.find_max_clusters.then_some(Search {
            step: self.step,
            step_duration: self.step_duration,
            max_clusters: self.max_clusters,
        });
        if search.is_some() && self.slo.is_empty() {
            return Err(
                "--find-max-clusters needs at least one --slo to search against, e.g. --slo 'lag.p99<2s'".into(),
            );
        }
        let clusters = if search.is_some() {
            self.max_clusters
        } else {
            self.clusters
        };
        let last = first_index.saturating_add(clusters.saturating_sub(1));
        check_cluster_name(&format!("{prefix}-{last}")).map_err(|e| format!("simulated {e}"))?;
        let rates = match &self.rate_file {
            Some(path) => Rates::Recorded(Arc::new(Recording::read(path)?)),
            None => Rates::Spec(self.wal_rate),
        };
        Ok(Workload {
            prefix: prefix.to_string(),
            bare_single: false,
            first_index,
            clusters: self.clusters,
            rates,
            arrival: self.arrival,
            shape: SegmentShape {
                segment_bytes,
                pg_version: self.pg_version,
                system_id: DEFAULT_SYSTEM_ID,
            },
            timeline: self.timeline,
            start_lsn: self.start_lsn,
            template: match &self.template {
                Some(path) => Some(Template {
                    path: path.clone(),
                    data: std::fs::read(path)
                        .map_err(|e| format!("cannot read --template {}: {e}", path.display()))?
                        .into(),
                }),
                None => None,
            },
            flush_interval: self.flush_interval,
            flush_bytes,
            duration: self.duration,
            drain: self.drain,
            connections: self.connections.map(|n| n as usize),
            aligned: self.aligned,
            seed: self.seed,
            timeout,
            slos: self.slo.clone(),
            abort_on_breach: self.abort_on_breach,
            search,
        })
    }
}
