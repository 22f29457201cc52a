//! Log-spaced buckets of nanosecond values: the `latencyHistogram` of a
//! summary (a few dozen buckets, for a chart) and the small sparse
//! histograms a timeline keeps per second (finer, for p50 and p99).
//!
//! Bucket `i` of a scale with `k` buckets per doubling holds the values
//! `<= le(i) = floor(2^(i/k))` and above the previous bucket's bound.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Buckets per doubling of the summary's `latencyHistogram`: 1 ns to one
/// hour is 42 doublings, so at most 84 buckets.
pub const SUMMARY_PER_DOUBLING: u32 = 2;

/// Buckets per doubling of a timeline's per-second histograms: each
/// bucket is about 9% wide.
pub const SECOND_PER_DOUBLING: u32 = 8;

/// Doublings covered: the last bucket's bound is `u64::MAX`.
const MAX_DOUBLINGS: u32 = 64;

/// One bucket of a histogram: how many values were `<= le_ns` and above
/// the previous bucket's `le_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub le_ns: u64,
    pub count: u64,
}

/// Upper bound of bucket `i` on a scale of `k` buckets per doubling.
pub fn le(i: u32, k: u32) -> u64 {
    let exact = 2f64.powf(i as f64 / k as f64);
    if exact >= u64::MAX as f64 {
        u64::MAX
    } else {
        exact.floor() as u64
    }
}

/// The bucket holding `v` on a scale of `k` buckets per doubling: the
/// smallest `i` with `v <= le(i)`.
pub fn index(v: u64, k: u32) -> u32 {
    let last = MAX_DOUBLINGS * k;
    if v <= 1 {
        return 0;
    }
    // The float estimate is off by at most one either way; the exact
    // bounds decide.
    let mut i = ((v as f64).log2() * k as f64).ceil().min(last as f64) as u32;
    while i > 0 && le(i - 1, k) >= v {
        i -= 1;
    }
    while i < last && le(i, k) < v {
        i += 1;
    }
    i
}

/// The summary's `latencyHistogram` of `h`: log-spaced, empty buckets
/// left out.
pub fn of_histogram(h: &Histogram<u64>) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for v in h.iter_recorded() {
        let value = h.highest_equivalent(v.value_iterated_to()).max(1);
        let le_ns = le(index(value, SUMMARY_PER_DOUBLING), SUMMARY_PER_DOUBLING);
        let count = v.count_at_value();
        match out.last_mut() {
            Some(last) if last.le_ns == le_ns => last.count += count,
            _ => out.push(Bucket { le_ns, count }),
        }
    }
    out
}

/// A few values, counted in buckets of [`SECOND_PER_DOUBLING`]: only the
/// buckets holding something take memory, a handful for one second of
/// uploads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparse {
    /// (bucket index, count), by index.
    counts: Vec<(u16, u32)>,
}

impl Sparse {
    pub fn record(&mut self, v: u64) {
        let i = index(v, SECOND_PER_DOUBLING) as u16;
        match self.counts.binary_search_by_key(&i, |&(b, _)| b) {
            Ok(at) => self.counts[at].1 = self.counts[at].1.saturating_add(1),
            Err(at) => self.counts.insert(at, (i, 1)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The upper bound of the bucket holding quantile `q` (0 to 1); 0 when
    /// empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.iter().map(|&(_, c)| c as u64).sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(i, c) in &self.counts {
            seen += c as u64;
            if seen >= rank {
                return le(i as u32, SECOND_PER_DOUBLING);
            }
        }
        le(
            self.counts.last().expect("not empty").0 as u32,
            SECOND_PER_DOUBLING,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn every_value_falls_in_the_first_bucket_whose_bound_holds_it() {
        for k in [SUMMARY_PER_DOUBLING, SECOND_PER_DOUBLING] {
            for v in (0..5_000u64).chain([1 << 20, (1 << 20) + 1, 3_600_000_000_000, u64::MAX]) {
                let i = index(v, k);
                assert!(le(i, k) >= v.max(1), "v {v} k {k} i {i}");
                if i > 0 {
                    assert!(le(i - 1, k) < v, "v {v} k {k} i {i}");
                }
            }
        }
    }

    #[test]
    fn summary_buckets_are_few_and_count_every_value() {
        let mut h = new_histogram();
        for v in [1u64, 900, 1_000, 1_500, 2_000_000, 3_600_000_000_000] {
            h.record(v).unwrap();
        }
        h.record_n(50_000_000, 7).unwrap();
        let b = of_histogram(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 13);
        assert!(b.windows(2).all(|w| w[0].le_ns < w[1].le_ns));
        assert!(b.iter().all(|b| b.count > 0));
        let fifty = b.iter().find(|b| b.le_ns >= 50_000_000).unwrap();
        assert_eq!(fifty.count, 7);
        assert!(fifty.le_ns < 50_000_000 * 3 / 2, "{fifty:?}");
        assert!(index(3_600_000_000_000, SUMMARY_PER_DOUBLING) < 100);
    }

    #[test]
    fn sparse_quantiles_are_within_a_bucket_of_the_truth() {
        let mut s = Sparse::default();
        assert_eq!(s.quantile(0.5), 0);
        for ms in 1..=100u64 {
            s.record(ms * 1_000_000);
        }
        let p50 = s.quantile(0.50) as f64;
        let p99 = s.quantile(0.99) as f64;
        assert!((50e6..50e6 * 1.1).contains(&p50), "{p50}");
        assert!((99e6..99e6 * 1.1).contains(&p99), "{p99}");
        assert!(s.counts.len() <= 60, "{} buckets", s.counts.len());
    }
}
