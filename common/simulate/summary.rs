//! The `--summary` document of a simulation, and its text form.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use walplayer_klio::exit::Exit;
use walplayer_klio::stats::{ErrorCount, Latency};

use crate::parts::Parts;
use walplayer_klio::buckets::{self, Bucket};

use crate::record::{quantiles, ClusterRow, Point};
use crate::run::Sim;
use crate::slo::{check_all, Measured, Slo, Verdict};
use crate::workload::WorkloadDoc;

/// Clusters listed in `worstClusters`.
const WORST: usize = 20;

/// One step of a capacity search.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRow {
    pub clusters: u64,
    pub produced_mib_per_second: f64,
    pub acked_mib_per_second: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub backlog_max_bytes: u64,
    pub errors: u64,
    pub pass: bool,
    pub slos: Vec<Verdict>,
}

/// What a capacity search found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchDoc {
    /// The largest cluster count whose step met every objective.
    pub max_clusters: Option<u64>,
    pub steps: Vec<StepRow>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub mode: &'static str,
    pub address: String,
    pub workload: WorkloadDoc,
    pub wall_seconds: f64,
    pub clusters: u64,
    pub segments_acked: u64,
    /// Segments produced whole but never acknowledged by the end.
    pub segments_unacknowledged: u64,
    pub produced_bytes: u64,
    pub sent_bytes: u64,
    pub acked_bytes: u64,
    /// Acknowledged over bytes of whole segments produced.
    pub ack_rate: f64,
    /// Segment lag: from the instant a segment's last byte was produced to
    /// its PutResult (unanswered segments count with their lag so far).
    pub lag: Latency,
    /// From opening a Put to its first block going out.
    pub ttfb: Latency,
    /// How late blocks went out against their schedule.
    pub schedule_error: Latency,
    pub backlog_max_bytes: u64,
    pub errors_total: u64,
    pub errors: Vec<ErrorCount>,
    pub slos: Vec<Verdict>,
    pub slo_pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchDoc>,
    pub interrupted: bool,
    /// A distributed run's agents and run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<serde_json::Value>,
    pub worst_clusters: Vec<ClusterRow>,
    pub cluster_stats: Vec<ClusterRow>,
    pub lag_histogram: Vec<Bucket>,
    pub timeline: Vec<Point>,
}

impl Summary {
    /// The summary of `sim` at `end`.
    pub fn of(sim: &Sim, end: Instant, address: &str) -> Summary {
        let wall = end.saturating_duration_since(sim.started).as_secs_f64();
        Summary::from_parts(
            Parts::of(sim, end),
            sim.workload.describe(),
            &sim.workload.slos,
            address,
            wall,
        )
    }

    /// The summary of what one process, or several merged, measured.
    pub fn from_parts(
        parts: Parts,
        workload: WorkloadDoc,
        slos: &[Slo],
        address: &str,
        wall_seconds: f64,
    ) -> Summary {
        let measured = Measured {
            lag_ns: quantiles(&parts.lag),
            backlog_max: parts.backlog_max,
            errors: parts.errors.total(),
            ack_rate: parts.ack_rate(),
        };
        let (slos, slo_pass) = check_all(slos, &measured);
        let mut rows = parts.rows;
        let mut worst = rows.clone();
        worst.sort_by(|a, b| {
            (b.lag_p99_ms, b.backlog_max_bytes, b.errors).cmp(&(
                a.lag_p99_ms,
                a.backlog_max_bytes,
                a.errors,
            ))
        });
        worst.truncate(WORST);
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Summary {
            mode: "simulate",
            address: address.to_string(),
            workload,
            wall_seconds,
            clusters: parts.clusters,
            segments_acked: parts.segments_acked,
            segments_unacknowledged: parts.segments_unacknowledged,
            produced_bytes: parts.produced,
            sent_bytes: parts.sent,
            acked_bytes: parts.acked,
            ack_rate: measured.ack_rate,
            lag: Latency::of(&parts.lag),
            ttfb: Latency::of(&parts.ttfb),
            schedule_error: Latency::of(&parts.schedule),
            backlog_max_bytes: parts.backlog_max,
            errors_total: measured.errors,
            errors: parts.errors.counts(),
            slos,
            slo_pass,
            aborted: parts.aborted,
            search: None,
            interrupted: false,
            distributed: None,
            worst_clusters: worst,
            cluster_stats: rows,
            lag_histogram: buckets::of_histogram(&parts.lag),
            timeline: parts.timeline,
        }
    }

    /// The exit status of a finished simulation: interrupted (130); an
    /// objective missed, or a search where not even the first step met
    /// them (4); whole segments never acknowledged (1); or all well (0).
    pub fn exit(&self) -> Exit {
        if self.interrupted {
            return Exit::Interrupted;
        }
        if let Some(search) = &self.search {
            // Stopping a search leaves segments unanswered by design.
            return match search.max_clusters {
                Some(_) => Exit::Ok,
                None => Exit::SloBreach,
            };
        }
        if !self.slo_pass || self.aborted.is_some() {
            Exit::SloBreach
        } else if self.segments_unacknowledged > 0 {
            Exit::FilesFailed
        } else {
            Exit::Ok
        }
    }

    /// The text printed at the end of a run.
    pub fn to_text(&self) -> String {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let secs = |ns: u64| ns as f64 / 1e9;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{} clusters: {:.1} MiB produced, {:.1} MiB acknowledged ({} segments, ack rate {:.4}) in {:.1} s",
            self.clusters,
            mib(self.produced_bytes),
            mib(self.acked_bytes),
            self.segments_acked,
            self.ack_rate,
            self.wall_seconds
        );
        let l = &self.lag;
        let _ = writeln!(
            t,
            "segment lag: p50 {:.3} s  p90 {:.3} s  p99 {:.3} s  p99.9 {:.3} s  max {:.3} s; backlog max {:.2} MiB",
            secs(l.p50_ns),
            secs(l.p90_ns),
            secs(l.p99_ns),
            secs(l.p999_ns),
            secs(l.max_ns),
            mib(self.backlog_max_bytes)
        );
        let _ = writeln!(
            t,
            "schedule error p99 {:.1} ms; time to first block p99 {:.1} ms",
            secs(self.schedule_error.p99_ns) * 1e3,
            secs(self.ttfb.p99_ns) * 1e3
        );
        if self.segments_unacknowledged > 0 && self.search.is_none() {
            let _ = writeln!(
                t,
                "{} whole segments were never acknowledged (their lag so far is counted)",
                self.segments_unacknowledged
            );
        }
        for e in &self.errors {
            let _ = writeln!(t, "  {} failed Put(s) ({}): {}", e.count, e.kind, e.message);
        }
        if let Some(s) = &self.search {
            let _ = writeln!(
                t,
                "{:>9} {:>10} {:>10} {:>10} {:>10} {:>12}  pass",
                "clusters", "MiB/s", "acked", "lag p50", "lag p99", "backlog max"
            );
            for r in &s.steps {
                let _ = writeln!(
                    t,
                    "{:>9} {:>10.2} {:>10.2} {:>8.0}ms {:>8.0}ms {:>10.2}MiB  {}",
                    r.clusters,
                    r.produced_mib_per_second,
                    r.acked_mib_per_second,
                    r.lag_p50_ms,
                    r.lag_p99_ms,
                    mib(r.backlog_max_bytes),
                    if r.pass { "yes" } else { "NO" }
                );
            }
            match s.max_clusters {
                Some(n) => {
                    let _ = writeln!(t, "largest cluster count that met every SLO: {n}");
                }
                None => {
                    let _ = writeln!(t, "no step met every SLO, not even the first");
                }
            }
        }
        for v in &self.slos {
            let _ = writeln!(
                t,
                "SLO {}: measured {} -> {}",
                v.expr,
                v.measured,
                if v.pass { "pass" } else { "BREACH" }
            );
        }
        if let Some(why) = &self.aborted {
            let _ = writeln!(t, "stopped early: {why}");
        }
        t
    }
}
