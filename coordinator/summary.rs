//! Summary of a distributed run: the same totals as `play`, plus a
//! breakdown per agent and per cluster, the start skew and the files no
//! agent reported.

use serde::Serialize;

use crate::track::Unreported;
use walplayer_klio::buckets::Bucket;
use walplayer_klio::report::{FileReport, Outcome};
use walplayer_klio::stats::{ErrorCount, Errors, Latency, Totals};
use walplayer_klio::timeline::Point;

/// Counts of some files, without a histogram (latency comes from the
/// agent's own histogram when it finishes).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub files_ok: u64,
    pub files_failed: u64,
    pub bytes: u64,
    pub errors: Errors,
    pub first_start_ns: i64,
    pub last_end_ns: i64,
}

impl Tally {
    pub fn record(&mut self, r: &FileReport, start_ns: i64, end_ns: i64) {
        if r.ok() {
            self.files_ok += 1;
            self.bytes += r.bytes;
        } else {
            self.files_failed += 1;
            if let Outcome::Failed { kind, message } = &r.outcome {
                self.errors.record(*kind, message);
            }
        }
        if self.first_start_ns == 0 || start_ns < self.first_start_ns {
            self.first_start_ns = start_ns;
        }
        self.last_end_ns = self.last_end_ns.max(end_ns);
    }

    fn mib_per_second(&self) -> f64 {
        let secs = (self.last_end_ns - self.first_start_ns) as f64 / 1e9;
        if secs > 0.0 {
            self.bytes as f64 / (1u64 << 20) as f64 / secs
        } else {
            0.0
        }
    }

    fn errors(&self) -> Vec<ErrorCount> {
        self.errors.counts()
    }
}

/// One agent's line of the summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    pub name: String,
    /// `finished`, or `lost: <why>`.
    pub state: String,
    pub files_ok: u64,
    pub files_failed: u64,
    pub files_unreported: u64,
    pub bytes: u64,
    pub mib_per_second: f64,
    /// From the agent's own histogram; absent if it was lost first.
    pub latency: Option<Latency>,
    pub errors: Vec<ErrorCount>,
    pub unreported: Vec<UnreportedFiles>,
    /// Messages of this agent that broke the control protocol (results for
    /// files never assigned to it, say); none of them is counted.
    pub protocol_violations: u64,
}

/// Files of one cluster that no report covered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreportedFiles {
    pub cluster: String,
    pub count: u64,
    pub first_wal_names: Vec<String>,
}

impl From<Unreported> for UnreportedFiles {
    fn from(u: Unreported) -> Self {
        UnreportedFiles {
            cluster: u.cluster,
            count: u.count,
            first_wal_names: u.first_names,
        }
    }
}

impl AgentSummary {
    pub fn new(
        name: &str,
        state: String,
        t: &Tally,
        latency: Option<Latency>,
        unreported: Vec<Unreported>,
        protocol_violations: u64,
    ) -> Self {
        AgentSummary {
            name: name.to_string(),
            state,
            files_ok: t.files_ok,
            files_failed: t.files_failed,
            files_unreported: unreported.iter().map(|u| u.count).sum(),
            bytes: t.bytes,
            mib_per_second: t.mib_per_second(),
            latency,
            errors: t.errors(),
            unreported: unreported.into_iter().map(Into::into).collect(),
            protocol_violations,
        }
    }
}

/// One cluster's line of the summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    pub cluster: String,
    pub agent: String,
    pub files_ok: u64,
    pub files_failed: u64,
    pub bytes: u64,
    pub mib_per_second: f64,
    pub latency: Option<Latency>,
    pub errors: Vec<ErrorCount>,
}

impl ClusterSummary {
    pub fn new(cluster: &str, agent: &str, t: &Tally, latency: Option<Latency>) -> Self {
        ClusterSummary {
            cluster: cluster.to_string(),
            agent: agent.to_string(),
            files_ok: t.files_ok,
            files_failed: t.files_failed,
            bytes: t.bytes,
            mib_per_second: t.mib_per_second(),
            latency,
            errors: t.errors(),
        }
    }
}

/// The `--summary FILE` document of a coordinator run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// `distributed`: a coordinator and its agents.
    pub mode: &'static str,
    #[serde(flatten)]
    pub totals: Totals,
    pub run_id: String,
    pub interrupted: bool,
    pub files_unreported: u64,
    /// Spread of the agents' actual start instants, in ns.
    pub start_skew_ns: u64,
    pub agents: Vec<AgentSummary>,
    pub clusters: Vec<ClusterSummary>,
    /// The Klio address every agent was told to use, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Uploads in parallel on each agent.
    pub jobs_per_agent: usize,
    pub block_size_kib: u32,
    pub clusters_per_agent: u32,
    /// The run second by second, from the start instant, each file in the
    /// second its agent says it ended. The coordinator sees only finished
    /// files, so `sentBytes` equals `ackedBytes` here: the bytes of the
    /// files stored that second.
    pub timeline: Vec<Point>,
    /// Time per file, in log-spaced buckets, of the same histogram as
    /// `latency`.
    pub latency_histogram: Vec<Bucket>,
}

impl RunSummary {
    /// The human-readable form, for stderr.
    pub fn to_text(&self) -> String {
        let mut t = self.totals.to_text();
        let lost: Vec<_> = self
            .agents
            .iter()
            .filter(|a| a.state != "finished")
            .collect();
        t.push_str(&format!(
            "{} agents ({} lost), {} clusters, start skew {:.3} ms\n",
            self.agents.len(),
            lost.len(),
            self.clusters.len(),
            self.start_skew_ns as f64 / 1e6
        ));
        for a in &self.agents {
            t.push_str(&format!(
                "  agent {}: {}, {} stored, {} failed, {:.1} MiB/s{}\n",
                a.name,
                a.state,
                a.files_ok,
                a.files_failed,
                a.mib_per_second,
                if a.files_unreported > 0 {
                    format!(", {} never reported", a.files_unreported)
                } else {
                    String::new()
                }
            ));
            if a.protocol_violations > 0 {
                t.push_str(&format!(
                    "    {} protocol violations, not counted\n",
                    a.protocol_violations
                ));
            }
            for u in &a.unreported {
                t.push_str(&format!(
                    "    {} unreported in {}: {}{}\n",
                    u.count,
                    u.cluster,
                    u.first_wal_names.join(", "),
                    if u.count > u.first_wal_names.len() as u64 {
                        ", ..."
                    } else {
                        ""
                    }
                ));
            }
        }
        t
    }
}
