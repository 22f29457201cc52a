//! A run second by second: bytes sent and acknowledged, files finished and
//! failed, and p50/p99 of the files that finished in each second. One
//! small entry per second (a one-hour run is 3,600), whatever the number
//! of files.
//!
//! Second `t` (from 1) covers the run's time `(t - 1, t]` seconds after
//! its start.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::buckets::Sparse;

/// Longest run a timeline covers (a week); later seconds are counted in
/// the last one, so a wrong clock cannot grow it without bound.
pub const MAX_SECONDS: u64 = 7 * 24 * 3_600;

#[derive(Debug, Clone, Default)]
struct Second {
    sent_bytes: u64,
    acked_bytes: u64,
    files: u64,
    errors: u64,
    latency: Sparse,
}

/// The per-second series of a run.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    seconds: Vec<Second>,
}

/// One second of a timeline, as the summary writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// The end of this second, in whole seconds since the run started.
    pub t: u64,
    /// Bytes put on the wire during this second (failed attempts too).
    pub sent_bytes: u64,
    /// Bytes of the files stored during this second.
    pub acked_bytes: u64,
    /// Files that finished during this second, stored or failed.
    pub files: u64,
    /// Of those, the files that failed.
    pub errors: u64,
    /// Median time of the files that finished this second (absent when
    /// none did), to about 9%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ns: Option<u64>,
    /// 99th percentile of the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<u64>,
}

impl Timeline {
    fn second(&mut self, t: u64) -> &mut Second {
        let t = t.clamp(1, MAX_SECONDS) as usize;
        if self.seconds.len() < t {
            self.seconds.resize_with(t, Second::default);
        }
        &mut self.seconds[t - 1]
    }

    /// Makes the timeline cover seconds 1 to `t`, empty ones included.
    pub fn extend_to(&mut self, t: u64) {
        self.second(t);
    }

    /// Counts `bytes` put on the wire during second `t`.
    pub fn sent(&mut self, t: u64, bytes: u64) {
        self.second(t).sent_bytes += bytes;
    }

    /// Counts a file that finished during second `t`: `stored` bytes
    /// acknowledged (`None` if it failed), after `elapsed_ns`.
    pub fn finished(&mut self, t: u64, stored: Option<u64>, elapsed_ns: u64) {
        let s = self.second(t);
        s.files += 1;
        match stored {
            Some(bytes) => s.acked_bytes += bytes,
            None => s.errors += 1,
        }
        s.latency.record(elapsed_ns.max(1));
    }

    /// Seconds covered.
    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Every second, as the summary writes them.
    pub fn points(&self) -> Vec<Point> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let latency = |q| (!s.latency.is_empty()).then(|| s.latency.quantile(q));
                Point {
                    t: i as u64 + 1,
                    sent_bytes: s.sent_bytes,
                    acked_bytes: s.acked_bytes,
                    files: s.files,
                    errors: s.errors,
                    p50_ns: latency(0.50),
                    p99_ns: latency(0.99),
                }
            })
            .collect()
    }
}

/// The second (from 1) that holds the instant `elapsed` after the start.
pub fn second_of(elapsed: Duration) -> u64 {
    let whole = elapsed.as_secs();
    let t = if elapsed.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    t.clamp(1, MAX_SECONDS)
}

/// The second holding `at` in a run that started at `start` (the first
/// one if `at` is before the start).
pub fn second_at(start: SystemTime, at: SystemTime) -> u64 {
    second_of(at.duration_since(start).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_end_at_whole_seconds_from_the_start() {
        assert_eq!(second_of(Duration::ZERO), 1);
        assert_eq!(second_of(Duration::from_millis(1)), 1);
        assert_eq!(second_of(Duration::from_secs(1)), 1);
        assert_eq!(second_of(Duration::from_millis(1_001)), 2);
        assert_eq!(second_of(Duration::from_secs(u64::MAX / 2)), MAX_SECONDS);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(second_at(start, SystemTime::UNIX_EPOCH), 1);
        assert_eq!(second_at(start, start + Duration::from_millis(2_500)), 3);
    }

    #[test]
    fn points_cover_every_second_and_count_each_file_once() {
        let mut t = Timeline::default();
        t.sent(1, 10);
        t.sent(3, 5);
        t.finished(1, Some(10), 2_000_000);
        t.finished(3, None, 40_000_000);
        t.finished(3, Some(5), 10_000_000);
        t.extend_to(4);
        let p = t.points();
        assert_eq!(p.len(), 4);
        assert_eq!(p.iter().map(|p| p.t).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!((p[0].acked_bytes, p[0].files, p[0].errors), (10, 1, 0));
        assert_eq!(p[1].p50_ns, None, "no file finished in second 2");
        assert_eq!((p[2].sent_bytes, p[2].files, p[2].errors), (5, 2, 1));
        let p99 = p[2].p99_ns.unwrap();
        assert!((40_000_000..44_000_000).contains(&p99), "{p99}");
        let json = serde_json::to_value(&p[1]).unwrap();
        assert!(json.get("p50Ns").is_none(), "{json}");
        assert_eq!(json["ackedBytes"], 0);
    }
}
