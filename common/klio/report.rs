//! Report: the outcome of one file, and its JSON line in the seed's format.
//!
//! The seed's fields come first and keep their exact names and types
//! (`elapsedTime` is a string of integer nanoseconds), so the seed's jq
//! recipes work unchanged; walplayer's own fields follow.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What kind of failure ended a file, decided where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The server answered with a refusal (a gRPC status of its own).
    Refused,
    /// The connection under the call failed (reset, refused, closed).
    Transport,
    /// An attempt took longer than `--timeout`.
    Timeout,
    /// The local file could not be read, or is damaged or changed.
    LocalFile,
    /// The server stored or returned other bytes than were sent.
    Mismatch,
    /// The run was stopped before the file finished.
    Interrupted,
}

impl FailureKind {
    /// Every kind, in the order summaries list them.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Refused,
        FailureKind::Transport,
        FailureKind::Timeout,
        FailureKind::LocalFile,
        FailureKind::Mismatch,
        FailureKind::Interrupted,
    ];

    /// The kind's name in summaries and JSON lines (`local-file`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Transport => "transport",
            FailureKind::Timeout => "timeout",
            FailureKind::LocalFile => "local-file",
            FailureKind::Mismatch => "mismatch",
            FailureKind::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored completely (and verified, with `--verify`).
    Stored,
    /// Not stored: why, as a kind and in words.
    Failed { kind: FailureKind, message: String },
}

impl Outcome {
    /// A failure of `kind`.
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            kind,
            message: message.into(),
        }
    }

    /// The seed's `error` field: empty when stored.
    pub fn error_text(&self) -> &str {
        match self {
            Outcome::Stored => "",
            Outcome::Failed { message, .. } => message,
        }
    }

    /// The kind of failure, if the file failed.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            Outcome::Stored => None,
            Outcome::Failed { kind, .. } => Some(*kind),
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub wal_full_path: String,
    pub cluster: String,
    pub wal_name: String,
    /// The agent that played it (distributed runs only).
    pub agent: Option<String>,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Measured on the monotonic clock.
    pub elapsed: Duration,
    /// Bytes the server acknowledged (0 on failure).
    pub bytes: u64,
    pub outcome: Outcome,
    /// Errors of earlier attempts that were retried, oldest first.
    pub retries: Vec<String>,
    /// Read back and found identical (`--verify`).
    pub verified: bool,
    /// A simulated cluster's segment: its number and lag.
    pub simulated: Option<Simulated>,
}

/// What a simulated cluster's segment adds to its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simulated {
    /// Its number within the cluster's run, from 0.
    pub segment: u64,
    /// From the instant its last byte was produced (by the schedule) to its
    /// PutResult.
    pub lag: Duration,
}

impl FileReport {
    /// Whether the file was stored completely.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Stored
    }

    /// Elapsed time in whole nanoseconds.
    pub fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLine<'a> {
    wal_full_path: &'a str,
    start_time: String,
    end_time: String,
    elapsed_time: String,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_kind: Option<FailureKind>,
    bytes: u64,
    cluster: &'a str,
    wal_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    attempts: usize,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    retries: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_ns: Option<u64>,
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2025-01-15T10:30:00.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The instant `nanos` after the Unix epoch.
pub fn from_unix_nanos(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64)
}

impl FileReport {
    /// One JSON object, without a newline.
    pub fn to_json(&self) -> String {
        let line = JsonLine {
            wal_full_path: &self.wal_full_path,
            start_time: rfc3339(self.start),
            end_time: rfc3339(self.end),
            elapsed_time: self.elapsed_ns().to_string(),
            error: self.outcome.error_text(),
            error_kind: self.outcome.kind(),
            bytes: self.bytes,
            cluster: &self.cluster,
            wal_name: &self.wal_name,
            agent: self.agent.as_deref(),
            attempts: self.retries.len() + 1,
            retries: &self.retries,
            verified: self.verified,
            segment: self.simulated.map(|s| s.segment),
            lag_ns: self
                .simulated
                .map(|s| u64::try_from(s.lag.as_nanos()).unwrap_or(u64::MAX)),
        };
        serde_json::to_string(&line).expect("a report always serializes")
    }
}

/// Writes reports as JSON lines, flushing after each so that a reader (or a
/// crash) sees every finished file.
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines { out }
    }

    /// Writes and flushes one report.
    pub fn write(&mut self, report: &FileReport) -> std::io::Result<()> {
        let mut line = report.to_json();
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_fields_and_types() {
        let start = UNIX_EPOCH + Duration::new(1_736_937_000, 5);
        let r = FileReport {
            wal_full_path: "/w/000000010000000000000001".into(),
            cluster: "c".into(),
            wal_name: "000000010000000000000001".into(),
            agent: None,
            start,
            end: start + Duration::from_nanos(7_651_680),
            elapsed: Duration::from_nanos(7_651_680),
            bytes: 16,
            outcome: Outcome::Stored,
            retries: vec![],
            verified: false,
            simulated: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["walFullPath"], "/w/000000010000000000000001");
        assert_eq!(v["startTime"], "2025-01-15T10:30:00.000000005Z");
        assert_eq!(v["endTime"], "2025-01-15T10:30:00.007651685Z");
        assert_eq!(v["elapsedTime"], "7651680");
        assert_eq!(v["error"], "");
        assert!(v.get("agent").is_none() && v.get("errorKind").is_none());
        assert_eq!(v["attempts"], 1);
        assert!(v.get("retries").is_none() && v.get("verified").is_none());
        assert_eq!(from_unix_nanos(unix_nanos(start)), start);

        let failed = FileReport {
            outcome: Outcome::failed(FailureKind::LocalFile, "cannot read file: gone"),
            ..r
        };
        let v: serde_json::Value = serde_json::from_str(&failed.to_json()).unwrap();
        assert_eq!(v["error"], "cannot read file: gone");
        assert_eq!(v["errorKind"], "local-file");
    }
}
