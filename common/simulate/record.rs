//! What a simulation measures, as it happens: segment lag, time to first
//! block, schedule error, errors, and the per-second timeline; per cluster,
//! bytes acknowledged, segments, errors and the largest backlog.
//!
//! Counters the hot path bumps are atomics; histograms sit behind one lock
//! taken once per flush or segment, never per byte.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use walplayer_klio::metrics::SimulationMetrics;
use walplayer_klio::report::FailureKind;
use walplayer_klio::stats::{new_histogram, Errors};

use crate::pace::Pace;

/// Per-cluster lag histograms count milliseconds, 2 significant digits, so
/// a cluster costs a few KiB whatever it runs for.
fn cluster_histogram() -> Histogram<u32> {
    Histogram::new(2).expect("2 significant digits are valid")
}

/// One simulated cluster: its schedule and what happened to it.
pub struct Cluster {
    pub index: u64,
    pub name: String,
    /// Mean rate in bytes per second.
    pub rate: f64,
    pub pace: Pace,
    /// The instant its schedule starts (t = 0).
    pub start: Instant,
    /// Bytes its schedule produces in all; `None` until the run stops.
    pub limit: Option<u64>,
    pub system_id: u64,
    pub acked: AtomicU64,
    pub segments: AtomicU64,
    pub errors: AtomicU64,
    pub backlog_max: AtomicU64,
    lag_ms: Mutex<Histogram<u32>>,
}

impl Cluster {
    pub fn new(
        index: u64,
        name: String,
        rate: f64,
        pace: Pace,
        start: Instant,
        limit: Option<u64>,
        system_id: u64,
    ) -> Cluster {
        Cluster {
            index,
            name,
            rate,
            pace,
            start,
            limit,
            system_id,
            acked: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            backlog_max: AtomicU64::new(0),
            lag_ms: Mutex::new(cluster_histogram()),
        }
    }

    /// Seconds since the cluster's start at `at` (negative before it).
    pub fn elapsed(&self, at: Instant) -> f64 {
        match at.checked_duration_since(self.start) {
            Some(d) => d.as_secs_f64(),
            None => -(self.start - at).as_secs_f64(),
        }
    }

    /// Bytes produced by `at`, by the schedule.
    pub fn produced(&self, at: Instant) -> u64 {
        let p = self.pace.produced(self.elapsed(at));
        self.limit.map_or(p, |l| p.min(l))
    }

    /// The instant `bytes` had been produced.
    pub fn instant_of(&self, bytes: u64) -> Instant {
        self.start + Duration::from_secs_f64(self.pace.instant_of(bytes).max(0.0))
    }

    /// Produced and not yet acknowledged, at `at`; raises the maximum.
    pub fn sample_backlog(&self, at: Instant) -> u64 {
        let backlog = self.produced(at).saturating_sub(self.acked.load(Relaxed));
        self.backlog_max.fetch_max(backlog, Relaxed);
        backlog
    }

    /// The end (in bytes) of the oldest segment produced whole and not yet
    /// acknowledged at `at`, and how long ago it was produced: the lag that
    /// segment has at least.
    pub fn pending_lag(&self, at: Instant, segment_bytes: u64) -> Option<Duration> {
        let end = self.acked.load(Relaxed) + segment_bytes;
        (self.produced(at) >= end).then(|| at.saturating_duration_since(self.instant_of(end)))
    }

    /// This cluster's row of the summary.
    pub fn row(&self) -> ClusterRow {
        let h = self.lag_ms.lock().expect("lag lock");
        let q = |x: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x)
            }
        };
        ClusterRow {
            name: self.name.clone(),
            rate_bytes_per_second: self.rate.round() as u64,
            segments: self.segments.load(Relaxed),
            acked_bytes: self.acked.load(Relaxed),
            errors: self.errors.load(Relaxed),
            lag_p50_ms: q(0.5),
            lag_p99_ms: q(0.99),
            lag_max_ms: if h.is_empty() { 0 } else { h.max() },
            backlog_max_bytes: self.backlog_max.load(Relaxed),
        }
    }
}

/// A cluster in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    pub name: String,
    pub rate_bytes_per_second: u64,
    pub segments: u64,
    pub acked_bytes: u64,
    pub errors: u64,
    pub lag_p50_ms: u64,
    pub lag_p99_ms: u64,
    pub lag_max_ms: u64,
    pub backlog_max_bytes: u64,
}

/// One second of the run, as the summary's `timeline` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Seconds since the run started, at the end of this second.
    pub t: u64,
    pub produced_bytes: u64,
    pub sent_bytes: u64,
    pub acked_bytes: u64,
    /// Segments acknowledged in this second.
    pub files: u64,
    pub errors: u64,
    #[serde(rename = "p50Ns")]
    pub p50_ns: u64,
    #[serde(rename = "p99Ns")]
    pub p99_ns: u64,
    pub open_streams: u64,
    /// Produced and unacknowledged, all clusters together, at the end of
    /// this second.
    pub backlog_bytes: u64,
    /// The largest backlog of one cluster at the end of this second.
    pub backlog_max_bytes: u64,
}

/// Counts of one interval (a second, a search step, the whole run).
struct Interval {
    lag: Histogram<u64>,
    errors: u64,
    segments: u64,
    backlog_max: u64,
}

impl Interval {
    fn new() -> Interval {
        Interval {
            lag: new_histogram(),
            errors: 0,
            segments: 0,
            backlog_max: 0,
        }
    }
}

struct Inner {
    run: Interval,
    second: Interval,
    window: Interval,
    ttfb: Histogram<u64>,
    schedule: Histogram<u64>,
    errors: Errors,
    timeline: Vec<Point>,
}

/// Everything measured across clusters.
pub struct Recorder {
    pub origin: Instant,
    /// Prometheus metrics, when served (`--metrics-listen`).
    metrics: Option<SimulationMetrics>,
    inner: Mutex<Inner>,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub open_streams: AtomicU64,
    /// Bytes of segments that were produced whole, counted at sampling.
    last: Mutex<(u64, u64, u64)>,
}

/// What one interval measured, for objectives and the search table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub lag: Histogram<u64>,
    pub errors: u64,
    pub segments: u64,
    pub backlog_max: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl Recorder {
    pub fn new(origin: Instant, metrics: Option<SimulationMetrics>) -> Recorder {
        Recorder {
            origin,
            metrics,
            inner: Mutex::new(Inner {
                run: Interval::new(),
                second: Interval::new(),
                window: Interval::new(),
                ttfb: new_histogram(),
                schedule: new_histogram(),
                errors: Errors::default(),
                timeline: Vec::new(),
            }),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            open_streams: AtomicU64::new(0),
            last: Mutex::new((0, 0, 0)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("recorder lock"))
    }

    /// More bytes of a block already counted by [`Recorder::block_sent`]
    /// went out.
    pub fn more_sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Relaxed);
    }

    /// A block went to the transport `late` after it was due (its first
    /// `bytes`, the rest through [`Recorder::more_sent`]).
    pub fn block_sent(&self, bytes: u64, late: Duration, first_of_put: Option<Duration>) {
        self.sent.fetch_add(bytes, Relaxed);
        self.with(|i| {
            i.schedule.saturating_record(ns(late));
            if let Some(ttfb) = first_of_put {
                i.ttfb.saturating_record(ns(ttfb));
            }
        });
    }

    /// A segment of `bytes` was acknowledged `lag` after its last byte was
    /// produced.
    pub fn segment_acked(&self, cluster: &Cluster, bytes: u64, lag: Duration) {
        self.acked.fetch_add(bytes, Relaxed);
        cluster.acked.fetch_add(bytes, Relaxed);
        cluster.segments.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.segment_lag(lag);
        }
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX).max(1);
        cluster
            .lag_ms
            .lock()
            .expect("lag lock")
            .saturating_record(ms);
        self.with(|i| {
            for interval in [&mut i.run, &mut i.second, &mut i.window] {
                interval.lag.saturating_record(ns(lag));
                interval.segments += 1;
            }
        });
    }

    /// A Put attempt failed.
    pub fn put_failed(&self, cluster: &Cluster, kind: FailureKind, message: &str) {
        cluster.errors.fetch_add(1, Relaxed);
        self.with(|i| {
            i.errors.record(kind, message);
            for interval in [&mut i.run, &mut i.second, &mut i.window] {
                interval.errors += 1;
            }
        });
    }

    /// Notes a backlog sample of one cluster.
    pub fn backlog(&self, backlog: u64) {
        self.with(|i| {
            for interval in [&mut i.run, &mut i.second, &mut i.window] {
                interval.backlog_max = interval.backlog_max.max(backlog);
            }
        });
    }

    /// Samples every cluster and closes the second ending at `at`: one
    /// timeline point.
    pub fn tick(&self, at: Instant, clusters: &[std::sync::Arc<Cluster>]) -> Point {
        let (mut produced, mut backlog, mut backlog_max) = (0u64, 0u64, 0u64);
        for c in clusters {
            let b = c.sample_backlog(at);
            produced += c.produced(at);
            backlog += b;
            backlog_max = backlog_max.max(b);
        }
        let (sent, acked) = (self.sent.load(Relaxed), self.acked.load(Relaxed));
        let mut last = self.last.lock().expect("last lock");
        let (p0, s0, a0) = *last;
        *last = (produced, sent, acked);
        drop(last);
        if let Some(m) = &self.metrics {
            m.produced_bytes(produced.saturating_sub(p0));
            m.set_backlog_bytes(backlog);
            m.set_open_streams(self.open_streams.load(Relaxed));
        }
        self.with(|i| {
            for interval in [&mut i.run, &mut i.second, &mut i.window] {
                interval.backlog_max = interval.backlog_max.max(backlog_max);
            }
            let second = std::mem::replace(&mut i.second, Interval::new());
            let q = |x: f64| {
                if second.lag.is_empty() {
                    0
                } else {
                    second.lag.value_at_quantile(x)
                }
            };
            let point = Point {
                t: at
                    .saturating_duration_since(self.origin)
                    .as_secs_f64()
                    .round() as u64,
                produced_bytes: produced.saturating_sub(p0),
                sent_bytes: sent.saturating_sub(s0),
                acked_bytes: acked.saturating_sub(a0),
                files: second.segments,
                errors: second.errors,
                p50_ns: q(0.5),
                p99_ns: q(0.99),
                open_streams: self.open_streams.load(Relaxed),
                backlog_bytes: backlog,
                backlog_max_bytes: backlog_max,
            };
            i.timeline.push(point.clone());
            point
        })
    }

    /// Adds the lag that segments produced whole but not acknowledged have
    /// at least by `at`, so a server that stops answering cannot hide its
    /// lag by never acknowledging (coordinated omission). Into the window
    /// only (`final_` adds them to the whole run too).
    pub fn pending(
        &self,
        at: Instant,
        clusters: &[std::sync::Arc<Cluster>],
        segment_bytes: u64,
        final_: bool,
    ) -> u64 {
        let lags: Vec<Duration> = clusters
            .iter()
            .filter_map(|c| c.pending_lag(at, segment_bytes))
            .collect();
        self.with(|i| {
            for lag in &lags {
                i.window.lag.saturating_record(ns(*lag));
                if final_ {
                    i.run.lag.saturating_record(ns(*lag));
                }
            }
        });
        lags.len() as u64
    }

    /// What the current window measured; starts the next one.
    pub fn take_window(&self) -> Snapshot {
        self.with(|i| {
            let w = std::mem::replace(&mut i.window, Interval::new());
            Snapshot {
                lag: w.lag,
                errors: w.errors,
                segments: w.segments,
                backlog_max: w.backlog_max,
            }
        })
    }

    /// What the whole run measured.
    pub fn run(&self) -> Snapshot {
        self.with(|i| Snapshot {
            lag: i.run.lag.clone(),
            errors: i.run.errors,
            segments: i.run.segments,
            backlog_max: i.run.backlog_max,
        })
    }

    pub fn ttfb(&self) -> Histogram<u64> {
        self.with(|i| i.ttfb.clone())
    }

    pub fn schedule_error(&self) -> Histogram<u64> {
        self.with(|i| i.schedule.clone())
    }

    pub fn errors(&self) -> Errors {
        self.with(|i| i.errors.clone())
    }

    pub fn timeline(&self) -> Vec<Point> {
        self.with(|i| i.timeline.clone())
    }
}

/// p50, p90, p99, p99.9 and max of a histogram, 0 when empty.
pub fn quantiles(h: &Histogram<u64>) -> [u64; 5] {
    let l = walplayer_klio::stats::Latency::of(h);
    [l.p50_ns, l.p90_ns, l.p99_ns, l.p999_ns, l.max_ns]
}
