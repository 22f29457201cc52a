//! A simulation's workload, validated: how many clusters, how fast each
//! writes WAL and how it streams it, for how long, and what it must meet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use walplayer_wal::generate::SegmentShape;

use crate::pace::{Arrival, Pace, Recording};
use crate::rate::{fmt_bytes, RateSpec};
use crate::slo::Slo;

/// Where rates come from: `--wal-rate`, or a recorded pace.
#[derive(Debug, Clone)]
pub enum Rates {
    Spec(RateSpec),
    Recorded(Arc<Recording>),
}

/// `--template`: a WAL segment whose records fill the simulated segments.
#[derive(Debug, Clone)]
pub struct Template {
    /// Where it was read from (or the name a coordinator gave it).
    pub path: PathBuf,
    /// Its bytes as read (gzip or plain).
    pub data: bytes::Bytes,
}

/// `--find-max-clusters`: add `step` clusters every `step_duration` while
/// every objective holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    pub step: u64,
    pub step_duration: Duration,
    pub max_clusters: u64,
}

impl Search {
    /// Steps until `max_clusters` is reached.
    pub fn steps(&self) -> u32 {
        u32::try_from(self.max_clusters.div_ceil(self.step.max(1))).unwrap_or(u32::MAX)
    }

    /// Clusters of the whole run in step `k` (0 for the first).
    pub fn clusters_in_step(&self, k: u32) -> u64 {
        (u64::from(k) + 1)
            .saturating_mul(self.step)
            .min(self.max_clusters)
    }
}

/// Everything a simulation runs, already checked.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Cluster names are `<prefix>-<i>`.
    pub prefix: String,
    /// A lone cluster is named `<prefix>` (as an agent names its one
    /// cluster).
    pub bare_single: bool,
    /// Index of the first cluster (a distributed run's agents take turns).
    pub first_index: u64,
    pub clusters: u64,
    pub rates: Rates,
    pub arrival: Arrival,
    pub shape: SegmentShape,
    pub timeline: u32,
    pub start_lsn: u64,
    pub template: Option<Template>,
    pub flush_interval: Duration,
    pub flush_bytes: u64,
    /// How long each cluster produces WAL (fixed runs).
    pub duration: Duration,
    /// After that, how long unanswered whole segments may take.
    pub drain: Duration,
    /// Connections shared by all clusters; `None`: one per cluster.
    pub connections: Option<usize>,
    /// Start every cluster at once instead of spread over one interval.
    pub aligned: bool,
    pub seed: u64,
    pub timeout: Duration,
    pub slos: Vec<Slo>,
    pub abort_on_breach: bool,
    pub search: Option<Search>,
}

impl Workload {
    /// The schedule and mean rate of cluster `index`.
    pub fn pace(&self, index: u64) -> (Pace, f64) {
        let seed = self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        match &self.rates {
            Rates::Spec(spec) => {
                let rate = spec.for_cluster(index, self.seed);
                (Pace::new(self.arrival, rate, seed), rate)
            }
            Rates::Recorded(recording) => {
                // Each cluster replays from its own point in the recording.
                let offset = recording.length() * walplayer_wal::rng::Rng::new(seed).unit();
                let rate = recording.mean_rate();
                let pace = Pace::Recorded {
                    recording: recording.clone(),
                    offset,
                };
                (pace, rate)
            }
        }
    }

    /// The cluster name of index `index`.
    pub fn cluster_name(&self, index: u64) -> String {
        if self.bare_single && self.clusters == 1 {
            return self.prefix.clone();
        }
        format!("{}-{}", self.prefix, index - self.first_index)
    }

    /// What the summary says the workload was.
    pub fn describe(&self) -> WorkloadDoc {
        WorkloadDoc {
            clusters: self.clusters,
            wal_rate: match &self.rates {
                Rates::Spec(s) => s.to_string(),
                Rates::Recorded(r) => format!("recorded, mean {}/s", fmt_bytes(r.mean_rate())),
            },
            arrival: self.arrival,
            wal_size_bytes: self.shape.segment_bytes,
            flush_interval_ms: self.flush_interval.as_millis() as u64,
            flush_bytes: self.flush_bytes,
            duration_seconds: self.duration.as_secs_f64(),
            connections: self.connections,
            aligned: self.aligned,
            seed: self.seed,
            slos: self.slos.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The workload as the summary records it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadDoc {
    pub clusters: u64,
    pub wal_rate: String,
    pub arrival: Arrival,
    pub wal_size_bytes: u64,
    pub flush_interval_ms: u64,
    pub flush_bytes: u64,
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    pub aligned: bool,
    pub seed: u64,
    pub slos: Vec<String>,
}
