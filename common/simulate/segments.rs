//! Where acknowledged segments are reported: one JSON line each for
//! `--output`, in the seed's per-file format (so its jq recipes work) plus
//! the segment's number and `lagNs`; or, on an agent, the control stream.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use walplayer_klio::report::{FileReport, JsonLines, Outcome, Simulated};

/// One acknowledged segment.
pub struct SegmentLine<'a> {
    pub cluster: &'a str,
    pub wal_name: &'a str,
    /// Its number within the cluster's run, from 0.
    pub segment: u64,
    /// When its (first) Put opened.
    pub start: SystemTime,
    pub bytes: u64,
    pub attempts: u32,
    pub lag: Duration,
}

impl SegmentLine<'_> {
    /// The segment as a file report, ending now.
    pub fn report(&self) -> FileReport {
        let end = SystemTime::now();
        FileReport {
            wal_full_path: format!("{}/{}", self.cluster, self.wal_name),
            cluster: self.cluster.to_string(),
            wal_name: self.wal_name.to_string(),
            agent: None,
            start: self.start,
            end,
            elapsed: end.duration_since(self.start).unwrap_or_default(),
            bytes: self.bytes,
            outcome: Outcome::Stored,
            // Retried attempts are counted in `attempts`; their messages
            // are in the summary's errors, not repeated per segment.
            retries: vec![String::new(); self.attempts.saturating_sub(1) as usize],
            verified: false,
            simulated: Some(Simulated {
                segment: self.segment,
                lag: self.lag,
            }),
        }
    }
}

type Deliver = Box<dyn Fn(FileReport) + Send + Sync>;

/// Where segment reports go, if anywhere.
#[derive(Default)]
pub struct Segments {
    deliver: Option<Deliver>,
}

impl Segments {
    /// JSON lines to `out`, written and flushed one by one; a write error
    /// is logged once and ends the output.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Segments {
        let lines = Mutex::new(Some(JsonLines::new(out)));
        Segments::to_fn(move |report| {
            let mut lines = lines.lock().expect("output lock");
            if let Some(out) = lines.as_mut() {
                if let Err(e) = out.write(&report) {
                    tracing::error!("cannot write --output: {e}; segment lines stop here");
                    *lines = None;
                }
            }
        })
    }

    /// Each report to `deliver`.
    pub fn to_fn(deliver: impl Fn(FileReport) + Send + Sync + 'static) -> Segments {
        Segments {
            deliver: Some(Box::new(deliver)),
        }
    }

    pub fn write(&self, line: &SegmentLine<'_>) {
        if let Some(deliver) = &self.deliver {
            deliver(line.report());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_line_has_the_seed_fields_and_the_lag() {
        let line = SegmentLine {
            cluster: "pg-3",
            wal_name: "000000010000000000000002",
            segment: 1,
            start: SystemTime::now() - Duration::from_secs(2),
            bytes: 16 << 20,
            attempts: 2,
            lag: Duration::from_millis(1500),
        };
        let v: serde_json::Value = serde_json::from_str(&line.report().to_json()).unwrap();
        assert_eq!(v["walFullPath"], "pg-3/000000010000000000000002");
        assert_eq!(v["error"], "");
        assert_eq!(v["bytes"], 16u64 << 20);
        assert_eq!(v["cluster"], "pg-3");
        assert_eq!(v["segment"], 1);
        assert_eq!(v["lagNs"], 1_500_000_000u64);
        assert_eq!(v["attempts"], 2);
        let elapsed: u64 = v["elapsedTime"].as_str().unwrap().parse().unwrap();
        assert!(elapsed >= 2_000_000_000);
    }
}
