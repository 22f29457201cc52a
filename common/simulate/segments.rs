//! `--output`: one JSON line per acknowledged segment, in the seed's
//! per-file format (so its jq recipes work) plus `cluster`'s `segment`
//! number and `lagNs`.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use walplayer_klio::report::{FailureKind, FileReport, Outcome};

/// One segment's line.
pub struct SegmentLine<'a> {
    pub cluster: &'a str,
    pub wal_name: &'a str,
    /// Its number within the cluster's run, from 0.
    pub segment: u64,
    /// When its (first) Put opened.
    pub start: SystemTime,
    pub bytes: u64,
    pub error: Option<(FailureKind, String)>,
    pub attempts: u32,
    pub lag: Duration,
}

impl SegmentLine<'_> {
    /// The JSON object, without a newline.
    pub fn to_json(&self) -> String {
        let end = SystemTime::now();
        let elapsed = end.duration_since(self.start).unwrap_or_default();
        let outcome = match &self.error {
            None => Outcome::Stored,
            Some((kind, message)) => Outcome::failed(*kind, message.clone()),
        };
        let report = FileReport {
            wal_full_path: format!("{}/{}", self.cluster, self.wal_name),
            cluster: self.cluster.to_string(),
            wal_name: self.wal_name.to_string(),
            agent: None,
            start: self.start,
            end,
            elapsed,
            bytes: self.bytes,
            outcome,
            retries: vec![String::new(); self.attempts.saturating_sub(1) as usize],
            verified: false,
        };
        let mut v: serde_json::Value =
            serde_json::from_str(&report.to_json()).expect("a report is a JSON object");
        let lag = u64::try_from(self.lag.as_nanos()).unwrap_or(u64::MAX);
        v["segment"] = self.segment.into();
        v["lagNs"] = lag.into();
        // Retries are counted in `attempts`; their messages are in the
        // summary's errors, not repeated per segment.
        if let Some(o) = v.as_object_mut() {
            o.remove("retries");
        }
        v.to_string()
    }
}

/// Where segment lines go, if anywhere; written and flushed one by one.
#[derive(Default)]
pub struct Segments {
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl Segments {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> Segments {
        Segments {
            out: out.map(Mutex::new),
        }
    }

    /// Writes one line; a write error is logged once and ends the output.
    pub fn write(&self, line: &SegmentLine<'_>) {
        let Some(out) = &self.out else { return };
        let mut out = out.lock().expect("output lock");
        let mut text = line.to_json();
        text.push('\n');
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            tracing::error!("cannot write --output: {e}; segment lines stop here");
            *out = Box::new(std::io::sink());
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
            error: None,
            attempts: 2,
            lag: Duration::from_millis(1500),
        };
        let v: serde_json::Value = serde_json::from_str(&line.to_json()).unwrap();
        assert_eq!(v["walFullPath"], "pg-3/000000010000000000000002");
        assert_eq!(v["error"], "");
        assert_eq!(v["bytes"], 16u64 << 20);
        assert_eq!(v["cluster"], "pg-3");
        assert_eq!(v["segment"], 1);
        assert_eq!(v["lagNs"], 1_500_000_000u64);
        assert_eq!(v["attempts"], 2);
        let elapsed: u64 = v["elapsedTime"].as_str().unwrap().parse().unwrap();
        assert!(elapsed >= 2_000_000_000);
        assert!(v.get("retries").is_none());
    }
}
