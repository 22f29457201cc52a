//! One step of a capacity search: what it measured in one process (a
//! [`StepWindow`], which adds up across agents), and the row the summary
//! shows once it is judged against the objectives.

use std::time::Duration;

use hdrhistogram::Histogram;

use walplayer_klio::stats::{decode_histogram, encode_histogram, new_histogram};
use walplayer_proto::control::StepResult;

use crate::record::quantiles;
use crate::slo::{check_all, Measured, Slo};
use crate::summary::StepRow;

/// What one step measured: in one process, or several added up.
#[derive(Debug, Clone)]
pub struct StepWindow {
    /// Clusters running in the step.
    pub clusters: u64,
    /// The measuring window (the longest, once added up).
    pub window: Duration,
    /// Lag of the segments acknowledged in the window, and of those whole
    /// but unanswered at its end.
    pub lag: Histogram<u64>,
    pub backlog_max: u64,
    pub errors: u64,
    pub produced: u64,
    pub acked: u64,
    /// Bytes of whole segments produced in the window.
    pub whole: u64,
}

impl StepWindow {
    /// A step nobody measured yet, to add windows to.
    pub fn empty() -> StepWindow {
        StepWindow {
            clusters: 0,
            window: Duration::ZERO,
            lag: new_histogram(),
            backlog_max: 0,
            errors: 0,
            produced: 0,
            acked: 0,
            whole: 0,
        }
    }

    /// Adds another process's window of the same step.
    pub fn add(&mut self, other: &StepWindow) {
        self.clusters += other.clusters;
        self.window = self.window.max(other.window);
        // Both come from `new_histogram`, so the bounds agree.
        let _ = self.lag.add(&other.lag);
        self.backlog_max = self.backlog_max.max(other.backlog_max);
        self.errors += other.errors;
        self.produced += other.produced;
        self.acked += other.acked;
        self.whole += other.whole;
    }

    /// The step judged against `slos`: its row in the search's table.
    pub fn row(&self, slos: &[Slo]) -> StepRow {
        let lag_ns = quantiles(&self.lag);
        let measured = Measured {
            lag_ns,
            backlog_max: self.backlog_max,
            errors: self.errors,
            ack_rate: if self.whole == 0 {
                1.0
            } else {
                (self.acked as f64 / self.whole as f64).min(1.0)
            },
        };
        let (verdicts, pass) = check_all(slos, &measured);
        let secs = self.window.as_secs_f64().max(1e-3);
        let mib_s = |b: u64| b as f64 / (1u64 << 20) as f64 / secs;
        StepRow {
            clusters: self.clusters,
            produced_mib_per_second: mib_s(self.produced),
            acked_mib_per_second: mib_s(self.acked),
            lag_p50_ms: lag_ns[0] as f64 / 1e6,
            lag_p99_ms: lag_ns[2] as f64 / 1e6,
            backlog_max_bytes: self.backlog_max,
            errors: self.errors,
            pass,
            slos: verdicts,
        }
    }

    /// The window as an agent sends it after step `step`.
    pub fn to_wire(&self, step: u32) -> StepResult {
        StepResult {
            step,
            clusters: self.clusters,
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            lag: encode_histogram(&self.lag).into(),
            backlog_max_bytes: self.backlog_max,
            errors: self.errors,
            produced_bytes: self.produced,
            acked_bytes: self.acked,
            whole_bytes: self.whole,
        }
    }

    /// A peer's window, checked: at most `clusters` clusters, a window no
    /// longer than `longest`, a lag histogram whose lengths are checked
    /// before it is decoded.
    pub fn from_wire(
        r: &StepResult,
        clusters: u64,
        longest: Duration,
    ) -> Result<StepWindow, String> {
        if r.clusters > clusters {
            return Err(format!(
                "step {} ran {} clusters, more than its share of {clusters}",
                r.step, r.clusters
            ));
        }
        let window = Duration::from_millis(r.window_ms);
        if window > longest {
            return Err(format!(
                "step {} measured for {} ms, longer than a step can last ({} ms)",
                r.step,
                r.window_ms,
                longest.as_millis()
            ));
        }
        Ok(StepWindow {
            clusters: r.clusters,
            window,
            lag: decode_histogram(&r.lag).map_err(|e| format!("its step lag histogram: {e}"))?,
            backlog_max: r.backlog_max_bytes,
            errors: r.errors,
            produced: r.produced_bytes,
            acked: r.acked_bytes,
            whole: r.whole_bytes,
        })
    }
}

/// Clusters agent `index` of `agents` runs when the whole run runs
/// `total`: an even split, the first agents taking one more.
pub fn share(total: u64, agents: u64, index: u64) -> u64 {
    let agents = agents.max(1);
    total / agents + u64::from(index < total % agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(clusters: u64, lags_ms: &[u64], backlog: u64) -> StepWindow {
        let mut w = StepWindow::empty();
        w.clusters = clusters;
        w.window = Duration::from_secs(4);
        for l in lags_ms {
            w.lag.record(l * 1_000_000).unwrap();
        }
        w.backlog_max = backlog;
        w.produced = clusters << 20;
        w.acked = clusters << 20;
        w.whole = clusters << 20;
        w
    }

    #[test]
    fn windows_add_up_and_are_judged_together() {
        let slos: Vec<Slo> = vec!["lag.p99<500ms".parse().unwrap()];
        let a = window(3, &[10, 20, 30], 1 << 20);
        let b = window(2, &[900], 4 << 20);
        assert!(a.row(&slos).pass);
        let mut sum = StepWindow::empty();
        sum.add(&a);
        sum.add(&b);
        let row = sum.row(&slos);
        assert_eq!(row.clusters, 5);
        assert_eq!(row.backlog_max_bytes, 4 << 20);
        assert!(!row.pass, "one agent's slow segment breaks the step");
        assert!((row.produced_mib_per_second - 5.0 / 4.0).abs() < 1e-9);
    }

    #[test]
    fn a_window_crosses_the_wire_and_lies_are_refused() {
        let w = window(3, &[10, 20], 7);
        let back = StepWindow::from_wire(&w.to_wire(2), 3, Duration::from_secs(10)).unwrap();
        assert_eq!(back.lag, w.lag);
        assert_eq!(
            (back.clusters, back.backlog_max, back.window),
            (3, 7, w.window)
        );
        let err = StepWindow::from_wire(&w.to_wire(2), 2, Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("more than its share of 2"), "{err}");
        let err = StepWindow::from_wire(&w.to_wire(2), 3, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("longer than a step can last"), "{err}");
        let mut bad = w.to_wire(0);
        bad.lag = vec![0x1c, 0x84, 0x93, 0x14, 0xff, 0xff, 0xff, 0xff].into();
        assert!(StepWindow::from_wire(&bad, 3, Duration::from_secs(10)).is_err());
    }

    #[test]
    fn shares_split_evenly_and_add_up() {
        for total in 0..40 {
            let shares: Vec<u64> = (0..3).map(|i| share(total, 3, i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
        assert_eq!(share(7, 0, 0), 7);
    }
}
