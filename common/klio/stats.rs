//! Statistics of a run: counts, bytes, an HdrHistogram of per-file elapsed
//! time and failures counted by kind (with a few sample messages each);
//! and the summary made from them.
//!
//! `Stats` adds up (`+=`): jobs, agents and clusters each keep their own and
//! are merged exactly, histograms included.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::AddAssign;
use std::time::Duration;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::{FailureKind, FileReport, Outcome};

/// Longest per-file time the histogram tracks exactly (one hour).
const HISTOGRAM_MAX_NS: u64 = 3_600 * 1_000_000_000;

/// Counts, bytes, latency and errors of some set of files.
#[derive(Debug, Clone)]
pub struct Stats {
    pub files_ok: u64,
    pub files_failed: u64,
    pub files_skipped: u64,
    /// Files read back and found identical (`--verify`).
    pub files_verified: u64,
    /// Bytes of the files stored completely.
    pub bytes: u64,
    /// Elapsed time of every finished file (stored or failed), in ns.
    pub latency: Histogram<u64>,
    pub errors: Errors,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            files_ok: 0,
            files_failed: 0,
            files_skipped: 0,
            files_verified: 0,
            bytes: 0,
            latency: new_histogram(),
            errors: Errors::default(),
        }
    }
}

/// A histogram with walplayer's bounds: 1 ns to one hour, 3 significant
/// digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("constant bounds are valid")
}

impl Stats {
    /// Counts one finished file.
    pub fn record(&mut self, report: &FileReport) {
        if report.ok() {
            self.files_ok += 1;
            self.files_verified += report.verified as u64;
            self.bytes += report.bytes;
        } else {
            self.files_failed += 1;
            if let Outcome::Failed { kind, message } = &report.outcome {
                self.errors.record(*kind, message);
            }
        }
        self.latency.saturating_record(report.elapsed_ns().max(1));
    }

    /// Files that finished, stored or not.
    pub fn files_done(&self) -> u64 {
        self.files_ok + self.files_failed
    }
}

impl AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, other: &Stats) {
        self.files_ok += other.files_ok;
        self.files_failed += other.files_failed;
        self.files_skipped += other.files_skipped;
        self.files_verified += other.files_verified;
        self.bytes += other.bytes;
        self.latency
            .add(&other.latency)
            .expect("histograms share walplayer's bounds");
        self.errors += &other.errors;
    }
}

/// Serializes a histogram (HdrHistogram V2 format) to send it elsewhere.
pub fn encode_histogram(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// Cookie of an uncompressed HdrHistogram V2 encoding (what
/// [`encode_histogram`] writes); the compressed form is refused, as its
/// inflated size cannot be bounded by the bytes present.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;

/// Size of the V2 header: cookie, payload length, normalizing offset,
/// significant digits, lowest, highest, conversion ratio.
const V2_HEADER_BYTES: usize = 40;

/// Most significant digits a received histogram may claim: more would make
/// the decoder allocate a counts array far beyond walplayer's own (3).
const MAX_SIGFIG: u32 = 3;

/// Reads a histogram sent by [`encode_histogram`]. A peer's bytes are not
/// trusted: every length in the header is checked against the bytes
/// present before anything is allocated from it.
pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if bytes.len() < V2_HEADER_BYTES {
        return Err(format!(
            "histogram of {} bytes is shorter than its {V2_HEADER_BYTES}-byte header",
            bytes.len()
        ));
    }
    let cookie = be32(0);
    if cookie != V2_COOKIE {
        return Err(format!(
            "histogram is not an uncompressed HdrHistogram V2 encoding (cookie {cookie:#x})"
        ));
    }
    let payload = be32(4) as u64;
    let present = (bytes.len() - V2_HEADER_BYTES) as u64;
    if payload != present {
        return Err(format!(
            "histogram header claims a payload of {payload} bytes but {present} follow it"
        ));
    }
    let sigfig = be32(12);
    if sigfig > MAX_SIGFIG {
        return Err(format!(
            "histogram claims {sigfig} significant digits, more than the {MAX_SIGFIG} walplayer uses"
        ));
    }
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram does not decode: {e:?}"))?;
    if h.low() == 1 && h.high() == HISTOGRAM_MAX_NS && h.sigfig() == 3 {
        return Ok(h);
    }
    let mut ours = new_histogram();
    ours.add(&h)
        .map_err(|e| format!("histogram out of bounds: {e:?}"))?;
    Ok(ours)
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub min_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            min_ns: h.min(),
            mean_ns: h.mean().round() as u64,
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// Most distinct messages kept per kind of failure; the rest are counted
/// together.
pub const SAMPLES_PER_KIND: usize = 8;

/// Longest message kept, in bytes: a peer's error text is not trusted to be
/// short.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Failures counted by kind, each with up to [`SAMPLES_PER_KIND`] distinct
/// messages: bounded however many files fail and however they are worded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    by_kind: BTreeMap<FailureKind, KindErrors>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KindErrors {
    samples: BTreeMap<String, u64>,
    /// Failures whose message is not among the samples.
    other: u64,
}

impl Errors {
    /// Counts one failure.
    pub fn record(&mut self, kind: FailureKind, message: &str) {
        self.add_count(kind, &bounded(message), 1);
    }

    /// Counts `count` failures with one message (rows received from a
    /// peer, say).
    pub fn record_count(&mut self, kind: FailureKind, message: &str, count: u64) {
        self.add_count(kind, &bounded(message), count);
    }

    fn add_count(&mut self, kind: FailureKind, message: &str, count: u64) {
        let k = self.by_kind.entry(kind).or_default();
        if let Some(n) = k.samples.get_mut(message) {
            *n += count;
        } else if k.samples.len() < SAMPLES_PER_KIND {
            k.samples.insert(message.to_string(), count);
        } else {
            k.other += count;
        }
    }

    /// Failures of every kind.
    pub fn total(&self) -> u64 {
        self.by_kind
            .values()
            .map(|k| k.samples.values().sum::<u64>() + k.other)
            .sum()
    }

    /// Failures of `kind`.
    pub fn of_kind(&self, kind: FailureKind) -> u64 {
        self.by_kind
            .get(&kind)
            .map_or(0, |k| k.samples.values().sum::<u64>() + k.other)
    }

    /// The counts as summary rows: per kind, each sample message, most
    /// frequent first, then the rest of that kind in one row.
    pub fn counts(&self) -> Vec<ErrorCount> {
        let mut rows = Vec::new();
        for (kind, k) in &self.by_kind {
            let mut samples: Vec<ErrorCount> = k
                .samples
                .iter()
                .map(|(message, count)| ErrorCount {
                    kind: *kind,
                    message: message.clone(),
                    count: *count,
                })
                .collect();
            samples.sort_by(|a, b| b.count.cmp(&a.count).then(a.message.cmp(&b.message)));
            rows.extend(samples);
            if k.other > 0 {
                rows.push(ErrorCount {
                    kind: *kind,
                    message: format!("(other {kind} errors)"),
                    count: k.other,
                });
            }
        }
        rows
    }
}

impl AddAssign<&Errors> for Errors {
    fn add_assign(&mut self, other: &Errors) {
        for (kind, k) in &other.by_kind {
            for (message, count) in &k.samples {
                self.add_count(*kind, message, *count);
            }
            if k.other > 0 {
                self.by_kind.entry(*kind).or_default().other += k.other;
            }
        }
    }
}

/// `message`, cut to [`MAX_MESSAGE_BYTES`] at a character boundary.
pub fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    bounded_to(message, MAX_MESSAGE_BYTES)
}

/// `message` cut to at most `max` bytes (on a character boundary), saying
/// how long it was.
pub fn bounded_to(message: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if message.len() <= max {
        return message.into();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &message[..end], message.len()).into()
}

/// One row of the errors table: a kind, a message, and how many files
/// failed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub kind: FailureKind,
    pub message: String,
    pub count: u64,
}

/// Totals of a run, as written to `--summary FILE`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub files_ok: u64,
    pub files_failed: u64,
    pub files_skipped: u64,
    pub files_verified: u64,
    pub bytes: u64,
    pub wall_seconds: f64,
    pub mib_per_second: f64,
    pub files_per_second: f64,
    pub latency: Latency,
    pub errors: Vec<ErrorCount>,
}

impl Totals {
    /// Totals of `stats` over a run that took `wall`.
    pub fn new(stats: &Stats, wall: Duration) -> Totals {
        let secs = wall.as_secs_f64();
        let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let errors = stats.errors.counts();
        Totals {
            files_ok: stats.files_ok,
            files_failed: stats.files_failed,
            files_skipped: stats.files_skipped,
            files_verified: stats.files_verified,
            bytes: stats.bytes,
            wall_seconds: secs,
            mib_per_second: per_sec(stats.bytes as f64 / (1u64 << 20) as f64),
            files_per_second: per_sec(stats.files_ok as f64),
            latency: Latency::of(&stats.latency),
            errors,
        }
    }

    /// The human-readable summary, several lines.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{} files stored, {} failed, {} skipped; {} in {:.2} s = {:.1} MiB/s, {:.1} files/s",
            self.files_ok,
            self.files_failed,
            self.files_skipped,
            human_bytes(self.bytes),
            self.wall_seconds,
            self.mib_per_second,
            self.files_per_second
        );
        let l = &self.latency;
        if self.files_ok + self.files_failed > 0 {
            let _ = writeln!(
                t,
                "time per file: min {}  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                ns(l.min_ns),
                ns(l.mean_ns),
                ns(l.p50_ns),
                ns(l.p90_ns),
                ns(l.p99_ns),
                ns(l.p999_ns),
                ns(l.max_ns)
            );
        }
        if self.files_verified > 0 {
            let _ = writeln!(
                t,
                "{} files read back and verified identical",
                self.files_verified
            );
        }
        for e in &self.errors {
            let _ = writeln!(
                t,
                "  {} file(s) failed ({}): {}",
                e.count, e.kind, e.message
            );
        }
        t
    }
}

/// Bytes with a binary unit, e.g. `1.50 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

fn ns(n: u64) -> String {
    format!("{:.1?}", Duration::from_nanos(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn report(ms: u64, error: &str) -> FileReport {
        let outcome = if error.is_empty() {
            Outcome::Stored
        } else {
            Outcome::failed(FailureKind::Refused, error)
        };
        FileReport {
            wal_full_path: "p".into(),
            cluster: "c".into(),
            wal_name: "w".into(),
            agent: None,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            elapsed: Duration::from_millis(ms),
            bytes: if error.is_empty() { 100 } else { 0 },
            outcome,
            retries: vec![],
            verified: false,
            simulated: None,
        }
    }

    #[test]
    fn merged_stats_equal_one_stats_of_everything() {
        let mut all = Stats::default();
        let mut parts = [Stats::default(), Stats::default(), Stats::default()];
        for i in 0..300u64 {
            let r = report(1 + i * 7 % 113, if i % 50 == 0 { "boom" } else { "" });
            all.record(&r);
            parts[(i % 3) as usize].record(&r);
        }
        let mut merged = Stats::default();
        for p in &parts {
            let wire = decode_histogram(&encode_histogram(&p.latency)).unwrap();
            let mut copy = p.clone();
            copy.latency = wire;
            merged += &copy;
        }
        let w = Duration::from_secs(2);
        let (a, m) = (Totals::new(&all, w), Totals::new(&merged, w));
        assert_eq!(a.latency, m.latency);
        assert_eq!((m.files_ok, m.files_failed, m.bytes), (294, 6, 29_400));
        assert_eq!(
            m.errors,
            vec![ErrorCount {
                kind: FailureKind::Refused,
                message: "boom".into(),
                count: 6
            }]
        );
        assert!(m.to_text().contains("6 file(s) failed (refused): boom"));
        assert!((m.files_per_second - 147.0).abs() < 1e-9);
    }

    #[test]
    fn empty_run_has_zero_latency_and_bad_histograms_are_errors() {
        let t = Totals::new(&Stats::default(), Duration::ZERO);
        assert_eq!(t.latency, Latency::default());
        assert_eq!(t.mib_per_second, 0.0);
        assert!(decode_histogram(b"nonsense").is_err());
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }

    /// A 40-byte header claiming a 4 GiB payload, or a compressed form, or
    /// more significant digits than ours, is refused before anything is
    /// allocated from it (issue 9, item 7).
    #[test]
    fn decode_histogram_checks_every_length_before_allocating() {
        let mut h = new_histogram();
        h.record(1_000).unwrap();
        let good = encode_histogram(&h);
        assert_eq!(decode_histogram(&good).unwrap().len(), 1);

        let mut lying = good[..V2_HEADER_BYTES].to_vec();
        lying[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = decode_histogram(&lying).unwrap_err();
        assert!(
            e.contains("claims a payload of 4294967295 bytes but 0"),
            "{e}"
        );

        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(decode_histogram(&longer)
            .unwrap_err()
            .contains("claims a payload"));

        let mut compressed = good.clone();
        compressed[0..4].copy_from_slice(&(0x1c84_9304u32 | 0x10).to_be_bytes());
        let e = decode_histogram(&compressed).unwrap_err();
        assert!(e.contains("not an uncompressed"), "{e}");

        let mut digits = good.clone();
        digits[12..16].copy_from_slice(&5u32.to_be_bytes());
        let e = decode_histogram(&digits).unwrap_err();
        assert!(e.contains("5 significant digits"), "{e}");

        assert!(decode_histogram(&good[..20])
            .unwrap_err()
            .contains("shorter"));
    }

    #[test]
    fn errors_are_counted_by_kind_with_bounded_samples() {
        let mut e = Errors::default();
        for i in 0..100 {
            e.record(FailureKind::Transport, &format!("reset #{i}"));
        }
        e.record(FailureKind::Timeout, "slow");
        e.record(FailureKind::Timeout, "slow");
        e.record(FailureKind::LocalFile, &"x".repeat(16 << 20));
        assert_eq!(e.total(), 103);
        assert_eq!(e.of_kind(FailureKind::Transport), 100);
        let rows = e.counts();
        let transport: Vec<_> = rows
            .iter()
            .filter(|r| r.kind == FailureKind::Transport)
            .collect();
        assert_eq!(
            transport.len(),
            SAMPLES_PER_KIND + 1,
            "samples plus one row for the rest"
        );
        assert_eq!(
            transport.last().unwrap().count,
            100 - SAMPLES_PER_KIND as u64
        );
        let long = rows
            .iter()
            .find(|r| r.kind == FailureKind::LocalFile)
            .unwrap();
        assert!(
            long.message.len() < MAX_MESSAGE_BYTES + 64,
            "a 16 MiB message is cut"
        );
        let mut merged = Errors::default();
        merged += &e;
        merged += &e;
        assert_eq!(merged.total(), 206);
        assert_eq!(merged.of_kind(FailureKind::Timeout), 4);
    }
}
