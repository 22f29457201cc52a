//! What a simulation measured, as parts that merge exactly: one agent's
//! are added to the coordinator's (histograms add, counts sum, the
//! timeline adds up second by second).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use hdrhistogram::Histogram;

use walplayer_klio::stats::{new_histogram, Errors};

use crate::record::{ClusterRow, Point};
use crate::run::Sim;

#[derive(Debug, Clone)]
pub struct Parts {
    pub clusters: u64,
    pub lag: Histogram<u64>,
    pub ttfb: Histogram<u64>,
    pub schedule: Histogram<u64>,
    pub timeline: Vec<Point>,
    pub rows: Vec<ClusterRow>,
    pub produced: u64,
    pub sent: u64,
    pub acked: u64,
    /// Bytes of whole segments the schedules produced.
    pub whole: u64,
    pub segments_acked: u64,
    pub segments_unacknowledged: u64,
    pub backlog_max: u64,
    pub errors: Errors,
    pub aborted: Option<String>,
}

impl Parts {
    /// Nothing measured (no agent sent its results).
    pub fn empty() -> Parts {
        Parts {
            clusters: 0,
            lag: new_histogram(),
            ttfb: new_histogram(),
            schedule: new_histogram(),
            timeline: Vec::new(),
            rows: Vec::new(),
            produced: 0,
            sent: 0,
            acked: 0,
            whole: 0,
            segments_acked: 0,
            segments_unacknowledged: 0,
            backlog_max: 0,
            errors: Errors::default(),
            aborted: None,
        }
    }

    /// What `sim` measured by `end`, with the lag so far of whole segments
    /// never acknowledged counted in (so a server that stops answering
    /// cannot hide its lag).
    pub fn of(sim: &Sim, end: Instant) -> Parts {
        let rec = sim.recorder();
        let seg = sim.workload.shape.segment_bytes;
        let unacked = rec.pending(end, &sim.clusters, seg, true);
        let run = rec.run();
        Parts {
            clusters: sim.clusters.len() as u64,
            lag: run.lag,
            ttfb: rec.ttfb(),
            schedule: rec.schedule_error(),
            timeline: rec.timeline(),
            rows: sim.clusters.iter().map(|c| c.row()).collect(),
            produced: sim.clusters.iter().map(|c| c.produced(end)).sum(),
            sent: rec.sent.load(Relaxed),
            acked: rec.acked.load(Relaxed),
            whole: sim.whole_segments_produced(end),
            segments_acked: run.segments,
            segments_unacknowledged: unacked,
            backlog_max: run.backlog_max,
            errors: rec.errors(),
            aborted: None,
        }
    }

    /// Adds another process's parts to these.
    pub fn merge(&mut self, other: &Parts) {
        self.clusters += other.clusters;
        for (mine, theirs) in [
            (&mut self.lag, &other.lag),
            (&mut self.ttfb, &other.ttfb),
            (&mut self.schedule, &other.schedule),
        ] {
            mine.add(theirs)
                .expect("histograms share walplayer's bounds");
        }
        self.timeline = merge_timelines(&self.timeline, &other.timeline);
        self.rows.extend(other.rows.iter().cloned());
        self.produced += other.produced;
        self.sent += other.sent;
        self.acked += other.acked;
        self.whole += other.whole;
        self.segments_acked += other.segments_acked;
        self.segments_unacknowledged += other.segments_unacknowledged;
        self.backlog_max = self.backlog_max.max(other.backlog_max);
        self.errors += &other.errors;
        if self.aborted.is_none() {
            self.aborted.clone_from(&other.aborted);
        }
    }

    /// Acknowledged over whole segments produced (1 when none was).
    pub fn ack_rate(&self) -> f64 {
        if self.whole == 0 {
            1.0
        } else {
            (self.acked as f64 / self.whole as f64).min(1.0)
        }
    }
}

/// Two timelines added second by second: bytes, segments, errors, streams
/// and backlogs sum, the largest one-cluster backlog is the larger; a
/// second's lag p50 is the segment-weighted mean of the two and its p99
/// the larger (exact percentiles are in the merged histograms). Memory is
/// one point per second whatever the number of agents.
pub fn merge_timelines(a: &[Point], b: &[Point]) -> Vec<Point> {
    let mut by_t: BTreeMap<u64, Point> = a.iter().map(|p| (p.t, p.clone())).collect();
    for p in b {
        let m = by_t.entry(p.t).or_insert_with(|| Point {
            t: p.t,
            ..Point::default()
        });
        let files = m.files + p.files;
        if files > 0 {
            m.p50_ns = ((m.p50_ns as u128 * m.files as u128 + p.p50_ns as u128 * p.files as u128)
                / files as u128) as u64;
        }
        m.p99_ns = m.p99_ns.max(p.p99_ns);
        m.files = files;
        m.produced_bytes += p.produced_bytes;
        m.sent_bytes += p.sent_bytes;
        m.acked_bytes += p.acked_bytes;
        m.errors += p.errors;
        m.open_streams += p.open_streams;
        m.backlog_bytes += p.backlog_bytes;
        m.backlog_max_bytes = m.backlog_max_bytes.max(p.backlog_max_bytes);
    }
    by_t.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: u64, acked: u64, files: u64, p50: u64, p99: u64) -> Point {
        Point {
            t,
            acked_bytes: acked,
            files,
            p50_ns: p50,
            p99_ns: p99,
            backlog_max_bytes: acked,
            ..Point::default()
        }
    }

    #[test]
    fn timelines_add_up_second_by_second() {
        let a = [point(1, 10, 1, 100, 100), point(2, 20, 3, 200, 900)];
        let b = [point(2, 5, 1, 600, 700), point(3, 7, 0, 0, 0)];
        let m = merge_timelines(&a, &b);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].acked_bytes, 25);
        assert_eq!(m[1].files, 4);
        assert_eq!(m[1].p50_ns, 300);
        assert_eq!(m[1].p99_ns, 900);
        assert_eq!(m[1].backlog_max_bytes, 20);
        assert_eq!(m[2].acked_bytes, 7);
        // 100 agents x one hour stays one point per second.
        let hour: Vec<Point> = (1..=3600).map(|t| point(t, 1, 1, 1, 1)).collect();
        let mut all = Vec::new();
        for _ in 0..100 {
            all = merge_timelines(&all, &hour);
        }
        assert_eq!(all.len(), 3600);
        assert_eq!(all[0].acked_bytes, 100);
    }
}
