//! When a simulated cluster's WAL appears: the schedule of bytes produced
//! since the cluster started, fixed in advance and never slowed by the
//! server (open loop). Times are seconds since the cluster's own start.
//!
//! - constant: `rate` bytes every second, evenly;
//! - poisson: 8 KiB records (one WAL page) at exponential intervals with
//!   the same mean rate;
//! - recorded: a pace replayed from a CSV of `time,bytes` rows (see
//!   [`Recording`]), looped, each cluster from its own offset into it.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use walplayer_wal::rng::Rng;

/// Bytes per Poisson arrival: one WAL page.
pub const POISSON_RECORD: u64 = 8192;

/// How bytes appear over time: `--arrival`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly, at the cluster's rate
    Constant,
    /// 8 KiB records at exponential intervals (a Poisson process)
    Poisson,
}

/// One cluster's production schedule.
pub enum Pace {
    Constant {
        rate: f64,
    },
    Poisson(Mutex<Poisson>),
    Recorded {
        recording: Arc<Recording>,
        offset: f64,
    },
}

impl Pace {
    /// A schedule of `rate` bytes per second on average.
    pub fn new(arrival: Arrival, rate: f64, seed: u64) -> Pace {
        match arrival {
            Arrival::Constant => Pace::Constant { rate },
            Arrival::Poisson => Pace::Poisson(Mutex::new(Poisson::new(rate, seed))),
        }
    }

    /// Bytes produced by `t` seconds after the start.
    pub fn produced(&self, t: f64) -> u64 {
        if t <= 0.0 {
            return 0;
        }
        match self {
            Pace::Constant { rate } => (rate * t) as u64,
            Pace::Poisson(p) => p.lock().expect("pace lock").produced(t),
            Pace::Recorded { recording, offset } => {
                recording.cumulative(offset + t) - recording.cumulative(*offset)
            }
        }
    }

    /// The instant (seconds after the start) at which `bytes` bytes have
    /// been produced; 0 for 0.
    pub fn instant_of(&self, bytes: u64) -> f64 {
        if bytes == 0 {
            return 0.0;
        }
        match self {
            Pace::Constant { rate } => bytes as f64 / rate,
            Pace::Poisson(p) => p.lock().expect("pace lock").instant_of(bytes),
            Pace::Recorded { recording, offset } => {
                recording.instant_of(recording.cumulative(*offset) + bytes) - offset
            }
        }
    }

    /// Bytes below `bytes` are acknowledged and will not be asked about
    /// again: what a schedule kept for them can go.
    pub fn forget_before(&self, bytes: u64) {
        if let Pace::Poisson(p) = self {
            p.lock().expect("pace lock").forget_before(bytes);
        }
    }
}

/// A Poisson process of [`POISSON_RECORD`]-byte arrivals, generated lazily
/// and deterministically from its seed. It keeps the arrival times from
/// the oldest unacknowledged byte on (8 bytes per 8 KiB of backlog).
pub struct Poisson {
    rng: Rng,
    /// Mean seconds between arrivals.
    mean_gap: f64,
    /// Arrival times of records `first..first + times.len()`.
    times: VecDeque<f64>,
    first: u64,
    /// Time of the last arrival generated.
    last: f64,
}

impl Poisson {
    fn new(rate: f64, seed: u64) -> Poisson {
        Poisson {
            rng: Rng::new(seed),
            mean_gap: POISSON_RECORD as f64 / rate,
            times: VecDeque::new(),
            first: 0,
            last: 0.0,
        }
    }

    fn generate(&mut self) {
        self.last += -self.rng.unit().ln() * self.mean_gap;
        self.times.push_back(self.last);
    }

    fn produced(&mut self, t: f64) -> u64 {
        while self.last <= t {
            self.generate();
        }
        // Records with an arrival at or before t.
        let kept = self.times.partition_point(|a| *a <= t) as u64;
        (self.first + kept) * POISSON_RECORD
    }

    fn instant_of(&mut self, bytes: u64) -> f64 {
        let record = bytes.div_ceil(POISSON_RECORD); // 1-based
        while self.first + (self.times.len() as u64) < record {
            self.generate();
        }
        match (record - 1).checked_sub(self.first) {
            Some(i) => self.times[i as usize],
            // Forgotten: long acknowledged, so long produced.
            None => self.times.front().copied().unwrap_or(0.0),
        }
    }

    fn forget_before(&mut self, bytes: u64) {
        let keep_from = bytes / POISSON_RECORD;
        while self.first < keep_from && self.times.len() > 1 {
            self.times.pop_front();
            self.first += 1;
        }
    }
}

/// A recorded pace: cumulative bytes at points in time, replayed in a loop
/// with the bytes of each row spread evenly since the row before.
///
/// The CSV has one `time,bytes` row per line: `time` in seconds (Unix time
/// or from any origin, with decimals), `bytes` the WAL written at that
/// moment since the row before (a finished 16 MiB segment is 16777216). A
/// header line and blank lines are ignored. An archive directory gives one
/// directly: `find ARCHIVE -type f -printf '%T@,%s\n' | sort -n`.
#[derive(Debug)]
pub struct Recording {
    /// (seconds since the first row, cumulative bytes); starts at (0, 0).
    points: Vec<(f64, u64)>,
}

impl Recording {
    /// Reads and checks a rate file.
    pub fn read(path: &Path) -> Result<Recording, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --rate-file {}: {e}", path.display()))?;
        Recording::parse(&text).map_err(|e| format!("--rate-file {}: {e}", path.display()))
    }

    /// Parses the CSV text of a rate file.
    pub fn parse(text: &str) -> Result<Recording, String> {
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(',').and_then(|(t, b)| {
                Some((t.trim().parse::<f64>().ok()?, b.trim().parse::<u64>().ok()?))
            });
            match parsed {
                Some((t, b)) if t.is_finite() => rows.push((t, b)),
                _ if rows.is_empty() && n == 0 => continue, // a header
                _ => {
                    return Err(format!(
                        "line {}: {line:?} is not `seconds,bytes` (e.g. 1732780800.25,16777216)",
                        n + 1
                    ))
                }
            }
        }
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(origin, _)) = rows.first() else {
            return Err("no `seconds,bytes` rows".into());
        };
        let mut points = vec![(0.0, 0u64)];
        let mut total = 0u64;
        for &(t, bytes) in &rows[1..] {
            total = total.saturating_add(bytes);
            points.push((t - origin, total));
        }
        let (period, total) = *points.last().expect("points start non-empty");
        if period <= 0.0 || total == 0 {
            return Err(
                "needs at least two rows at different times with bytes after the first".into(),
            );
        }
        Ok(Recording { points })
    }

    /// The recording as rate-file CSV that [`Recording::parse`] reads back
    /// to the same recording (how a coordinator sends it to agents).
    pub fn to_csv(&self) -> String {
        let mut csv = String::with_capacity(self.points.len() * 24);
        let mut before = 0;
        for &(t, bytes) in &self.points {
            csv.push_str(&format!("{t},{}\n", bytes - before));
            before = bytes;
        }
        csv
    }

    /// The most bytes any stretch of `seconds` can hold, from any offset:
    /// the laps it spans, plus one for the partial laps at its ends.
    pub fn most_within(&self, seconds: f64) -> u64 {
        let (period, total) = self.period();
        let laps = (seconds / period).ceil() as u64 + 1;
        laps.saturating_mul(total)
    }

    fn period(&self) -> (f64, u64) {
        *self.points.last().expect("a recording has points")
    }

    /// The recording's mean rate in bytes per second.
    pub fn mean_rate(&self) -> f64 {
        let (period, total) = self.period();
        total as f64 / period
    }

    /// Seconds the recording lasts before it loops.
    pub fn length(&self) -> f64 {
        self.period().0
    }

    /// Cumulative bytes at `t` seconds, looping.
    fn cumulative(&self, t: f64) -> u64 {
        let (period, total) = self.period();
        let laps = (t / period).floor();
        let within = t - laps * period;
        let i = self.points.partition_point(|p| p.0 <= within);
        let (t0, c0) = self.points[i - 1];
        let extra = match self.points.get(i) {
            Some(&(t1, c1)) => ((c1 - c0) as f64 * (within - t0) / (t1 - t0)) as u64,
            None => 0,
        };
        laps as u64 * total + c0 + extra
    }

    /// The first time the cumulative count reaches `bytes`.
    fn instant_of(&self, bytes: u64) -> f64 {
        let (period, total) = self.period();
        let laps = (bytes - 1) / total;
        let within = bytes - laps * total;
        let i = self.points.partition_point(|p| p.1 < within);
        let (t1, c1) = self.points[i];
        let (t0, c0) = self.points[i - 1];
        let fraction = (within - c0) as f64 / (c1 - c0) as f64;
        laps as f64 * period + t0 + (t1 - t0) * fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_pace_and_its_inverse_agree() {
        let p = Pace::new(Arrival::Constant, 1000.0, 1);
        assert_eq!(p.produced(2.5), 2500);
        assert_eq!(p.instant_of(2500), 2.5);
        assert_eq!(p.produced(-1.0), 0);
    }

    #[test]
    fn a_poisson_pace_keeps_its_mean_and_answers_consistently() {
        let p = Pace::new(Arrival::Poisson, 81920.0, 5); // 10 records/s
        let produced = p.produced(1000.0);
        let records = produced / POISSON_RECORD;
        assert!(
            (9500..10500).contains(&records),
            "{records} records in 1000 s"
        );
        for bytes in [1, 8192, 8193, 50 * 8192] {
            let t = p.instant_of(bytes);
            assert!(p.produced(t) >= bytes, "at {t} s");
            assert!(p.produced(t - 1e-9) < bytes, "just before {t} s");
        }
        // Forgetting acknowledged records keeps later answers the same.
        let t = p.instant_of(9000 * 8192);
        p.forget_before(8000 * 8192);
        assert_eq!(p.instant_of(9000 * 8192), t);
        if let Pace::Poisson(inner) = &p {
            assert!(inner.lock().unwrap().times.len() < 3000);
        }
    }

    #[test]
    fn a_recording_replays_and_loops() {
        let csv = "time,bytes\n100,0\n101,1000\n103,3000\n";
        let r = Recording::parse(csv).unwrap();
        assert_eq!(r.length(), 3.0);
        assert_eq!(r.mean_rate(), 4000.0 / 3.0);
        assert_eq!(r.cumulative(0.5), 500);
        assert_eq!(r.cumulative(2.0), 2500);
        assert_eq!(r.cumulative(3.5), 4500);
        assert_eq!(r.instant_of(2500), 2.0);
        assert_eq!(r.instant_of(4500), 3.5);
        let pace = Pace::Recorded {
            recording: Arc::new(r),
            offset: 1.0,
        };
        assert_eq!(pace.produced(1.0), 1500);
        assert_eq!(pace.instant_of(1500), 1.0);
    }

    #[test]
    fn bad_rate_files_name_the_line() {
        let e = Recording::parse("1,100\n2,lots\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("seconds,bytes"), "{e}");
        assert!(Recording::parse("")
            .unwrap_err()
            .contains("no `seconds,bytes` rows"));
        assert!(Recording::parse("5,100\n5,100\n")
            .unwrap_err()
            .contains("two rows"));
    }
}
