//! Running a simulation: connect, start clusters (staggered over one flush
//! interval unless aligned), sample every second, and stop.
//!
//! [`Sim`] is the engine both a fixed run ([`fixed`]) and the capacity
//! search (`search`) drive: clusters can be added while it runs.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use walplayer_klio::endpoint::{Client, KlioEndpoint};
use walplayer_klio::metrics::SimulationMetrics;
use walplayer_wal::generate::Payload;
use walplayer_wal::walname::SegmentName;

use crate::cluster::{self, Shared};
use crate::record::{Cluster, Point, Recorder};
use crate::segments::Segments;
use crate::workload::Workload;

/// Connections opened at once while clusters start.
const CONNECT_CONCURRENCY: usize = 64;

/// What the live display is told every second.
pub struct Live<'a> {
    pub point: &'a Point,
    pub clusters: usize,
    /// The cluster with the largest backlog now, and that backlog.
    pub worst: Option<(&'a str, u64)>,
    /// Lag p99 over the last second, nanoseconds.
    pub lag_p99_ns: u64,
}

/// A running simulation.
pub struct Sim {
    pub workload: Workload,
    pub shared: Arc<Shared>,
    endpoint: KlioEndpoint,
    /// Shared connections (`--connections N`), used round-robin.
    pool: Vec<Client>,
    pub clusters: Vec<Arc<Cluster>>,
    tasks: JoinSet<()>,
    pub stop: CancellationToken,
    pub started: Instant,
}

impl Sim {
    /// Checks the server once (a fault that would fail every Put is found
    /// up front) and opens the shared connections, if any.
    pub async fn new(
        workload: Workload,
        endpoint: KlioEndpoint,
        segments: Segments,
    ) -> Result<Sim> {
        let payload = match &workload.template {
            Some(t) => Payload::from_template_bytes(&t.path, &t.data)?,
            None => Payload::synthetic(),
        };
        let probe = endpoint.probe().await.map_err(anyhow::Error::msg)?;
        let mut pool = Vec::new();
        if let Some(n) = workload.connections {
            pool.push(probe);
            for _ in 1..n {
                pool.push(endpoint.connect().await.map_err(anyhow::Error::msg)?);
            }
        }
        let started = Instant::now();
        let shared = Arc::new(Shared {
            shape: workload.shape,
            payload,
            first: SegmentName::containing(
                workload.timeline,
                workload.start_lsn,
                workload.shape.segment_bytes,
            ),
            flush_interval: workload.flush_interval,
            flush_bytes: workload.flush_bytes,
            timeout: workload.timeout,
            recorder: Arc::new(Recorder::new(started, None)),
            segments,
        });
        Ok(Sim {
            workload,
            shared,
            endpoint,
            pool,
            clusters: Vec::new(),
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
            started,
        })
    }

    /// Starts the run's clock now (a distributed run connects long before
    /// its start instant), sends segment reports to `segments` and records
    /// into `metrics`, if served. Before any cluster is added.
    pub fn begin(&mut self, segments: Segments, metrics: Option<SimulationMetrics>) {
        let now = Instant::now();
        let shared =
            Arc::get_mut(&mut self.shared).expect("a run begins before any cluster starts");
        shared.segments = segments;
        shared.recorder = Arc::new(Recorder::new(now, metrics));
        self.started = now;
    }

    pub fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }

    /// Connects and starts `n` more clusters; each produces for `produce`
    /// (or until the run stops). Stopped early by `shutdown`.
    pub async fn add_clusters(
        &mut self,
        n: u64,
        produce: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let first = self.workload.first_index + self.clusters.len() as u64;
        let indexes = first..first + n;
        let clients: Vec<Client> = if self.pool.is_empty() {
            let endpoint = self.endpoint.clone();
            let connecting = futures_util::stream::iter(indexes.clone())
                .map(|_| {
                    let e = endpoint.clone();
                    async move { e.connect().await }
                })
                .buffered(CONNECT_CONCURRENCY)
                .collect::<Vec<_>>();
            let connected = tokio::select! {
                c = connecting => c,
                _ = shutdown.cancelled() => anyhow::bail!("interrupted while connecting {n} clusters"),
            };
            connected
                .into_iter()
                .collect::<Result<_, String>>()
                .map_err(anyhow::Error::msg)?
        } else {
            indexes
                .clone()
                .map(|i| self.pool[i as usize % self.pool.len()].clone())
                .collect()
        };
        let now = Instant::now();
        let interval = self.workload.flush_interval;
        for (index, client) in indexes.zip(clients) {
            let (pace, rate) = self.workload.pace(index);
            // Spread over one flush interval, so clusters do not flush in
            // lock-step (evenly, by index, repeatable).
            let offset = if self.workload.aligned {
                Duration::ZERO
            } else {
                interval.mul_f64((index % 1000) as f64 / 1000.0)
            };
            let start = now + offset;
            let limit = produce.map(|d| pace.produced(d.as_secs_f64()));
            let system_id = walplayer_wal::generate::DEFAULT_SYSTEM_ID.wrapping_add(index);
            let cluster = Arc::new(Cluster::new(
                index,
                self.workload.cluster_name(index),
                rate,
                pace,
                start,
                limit,
                system_id,
            ));
            self.clusters.push(cluster.clone());
            let (shared, stop) = (self.shared.clone(), self.stop.clone());
            self.tasks
                .spawn(cluster::run(cluster, client, shared, stop));
        }
        Ok(())
    }

    /// Samples every cluster: one timeline point, and what the display is
    /// told.
    pub fn tick(&self, at: Instant, live: &mut dyn FnMut(&Live<'_>)) -> Point {
        let point = self.recorder().tick(at, &self.clusters);
        let worst = self
            .clusters
            .iter()
            .map(|c| (c, c.produced(at).saturating_sub(c.acked.load(Relaxed))))
            .max_by_key(|(_, b)| *b)
            .filter(|(_, b)| *b > 0)
            .map(|(c, b)| (c.name.as_str(), b));
        live(&Live {
            point: &point,
            clusters: self.clusters.len(),
            worst,
            lag_p99_ns: point.p99_ns,
        });
        point
    }

    /// Runs for `length`, sampling every second; returns early (false)
    /// when `shutdown` is cancelled or `check` says to stop.
    pub async fn run_for(
        &mut self,
        length: Duration,
        shutdown: &CancellationToken,
        live: &mut dyn FnMut(&Live<'_>),
        check: &mut dyn FnMut(&Point) -> bool,
    ) -> bool {
        let end = Instant::now() + length;
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            let wake = next.min(end);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.cancelled() => return false,
            }
            if wake == next {
                let point = self.tick(next, live);
                next += Duration::from_secs(1);
                if !check(&point) {
                    return false;
                }
            }
            if Instant::now() >= end {
                return true;
            }
        }
    }

    /// Waits up to `drain` for every cluster task to finish (each ends once
    /// its schedule is over and its last whole segment answered).
    pub async fn drain(
        &mut self,
        drain: Duration,
        shutdown: &CancellationToken,
        live: &mut dyn FnMut(&Live<'_>),
    ) {
        let end = Instant::now() + drain;
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            tokio::select! {
                done = self.tasks.join_next() => if done.is_none() { return },
                _ = tokio::time::sleep_until(next.min(end).into()) => {
                    if Instant::now() >= end {
                        return;
                    }
                    self.tick(next, live);
                    next += Duration::from_secs(1);
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Stops every cluster (open Puts are cancelled, as a stopped server's
    /// would be) and waits for them.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Bytes of whole segments the schedules produced by `at`.
    pub fn whole_segments_produced(&self, at: Instant) -> u64 {
        let seg = self.workload.shape.segment_bytes;
        self.clusters
            .iter()
            .map(|c| c.produced(at) / seg * seg)
            .sum()
    }
}
