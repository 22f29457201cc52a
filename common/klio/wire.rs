//! File results on the control channel: the one place a [`FileReport`] is
//! turned into the wire's `FileResult` (agent) and back (coordinator).

use std::time::Duration;

use walplayer_proto::control::{self, FileResult};

use crate::report::{from_unix_nanos, unix_nanos, FailureKind, FileReport, Outcome};

/// A failure kind as the control protocol's enum.
pub fn kind_to_wire(kind: FailureKind) -> control::FailureKind {
    match kind {
        FailureKind::Refused => control::FailureKind::Refused,
        FailureKind::Transport => control::FailureKind::Transport,
        FailureKind::Timeout => control::FailureKind::Timeout,
        FailureKind::LocalFile => control::FailureKind::LocalFile,
        FailureKind::Mismatch => control::FailureKind::Mismatch,
        FailureKind::Interrupted => control::FailureKind::Interrupted,
    }
}

/// A failure kind from the wire; `None` for unspecified or unknown.
pub fn kind_from_wire(kind: i32) -> Option<FailureKind> {
    Some(match control::FailureKind::try_from(kind).ok()? {
        control::FailureKind::Unspecified => return None,
        control::FailureKind::Refused => FailureKind::Refused,
        control::FailureKind::Transport => FailureKind::Transport,
        control::FailureKind::Timeout => FailureKind::Timeout,
        control::FailureKind::LocalFile => FailureKind::LocalFile,
        control::FailureKind::Mismatch => FailureKind::Mismatch,
        control::FailureKind::Interrupted => FailureKind::Interrupted,
    })
}

/// The wire form of a report.
pub fn file_result(r: &FileReport) -> FileResult {
    FileResult {
        wal_full_path: r.wal_full_path.clone(),
        cluster: r.cluster.clone(),
        wal_name: r.wal_name.clone(),
        start_unix_nanos: unix_nanos(r.start),
        end_unix_nanos: unix_nanos(r.end),
        elapsed_ns: r.elapsed_ns(),
        bytes: r.bytes,
        error: r.outcome.error_text().to_string(),
        retries: r.retries.clone(),
        verified: r.verified,
        error_kind: r
            .outcome
            .kind()
            .map_or(control::FailureKind::Unspecified, kind_to_wire) as i32,
        simulated: r.simulated.is_some(),
        segment: r.simulated.map_or(0, |s| s.segment),
        lag_ns: r
            .simulated
            .map_or(0, |s| u64::try_from(s.lag.as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// Longest string of a received result that is kept (path, error, each
/// retry), in bytes: a peer's text is not trusted to be short.
pub const MAX_KEPT_BYTES: usize = 4096;

/// Most retry messages of one received result that are kept; the rest are
/// counted in one last entry.
pub const MAX_RETRIES_KEPT: usize = 100;

fn kept(s: String) -> String {
    match crate::stats::bounded_to(&s, MAX_KEPT_BYTES) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

/// The report an agent sent, as played by `agent`; an error without its
/// kind (or a kind without an error) is refused, naming the file. Every
/// string is cut to [`MAX_KEPT_BYTES`] and at most [`MAX_RETRIES_KEPT`]
/// retries are kept.
pub fn file_report(f: FileResult, agent: String) -> Result<FileReport, String> {
    let mut retries: Vec<String> = f
        .retries
        .iter()
        .take(MAX_RETRIES_KEPT)
        .map(|r| kept(r.clone()))
        .collect();
    if f.retries.len() > MAX_RETRIES_KEPT {
        retries.push(format!(
            "({} more retries not kept)",
            f.retries.len() - MAX_RETRIES_KEPT
        ));
    }
    let outcome = match (f.error.is_empty(), kind_from_wire(f.error_kind)) {
        (true, None) => Outcome::Stored,
        (false, Some(kind)) => Outcome::failed(kind, kept(f.error)),
        _ => {
            return Err(format!(
                "result for {}/{} has error {:?} with failure kind {}",
                crate::stats::bounded(&f.cluster),
                crate::stats::bounded(&f.wal_name),
                crate::stats::bounded(&f.error),
                f.error_kind
            ))
        }
    };
    Ok(FileReport {
        wal_full_path: kept(f.wal_full_path),
        cluster: kept(f.cluster),
        wal_name: kept(f.wal_name),
        agent: Some(agent),
        start: from_unix_nanos(f.start_unix_nanos),
        end: from_unix_nanos(f.end_unix_nanos),
        elapsed: Duration::from_nanos(f.elapsed_ns),
        bytes: f.bytes,
        outcome,
        retries,
        verified: f.verified,
        simulated: f.simulated.then_some(crate::report::Simulated {
            segment: f.segment,
            lag: Duration::from_nanos(f.lag_ns),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn reports_cross_the_wire_unchanged() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for outcome in [
            Outcome::Stored,
            Outcome::failed(FailureKind::Mismatch, "verification failed"),
            Outcome::failed(FailureKind::Interrupted, "stopped"),
        ] {
            let sent = FileReport {
                wal_full_path: "/d/000000010000000000000001".into(),
                cluster: "c-a".into(),
                wal_name: "000000010000000000000001".into(),
                agent: Some("a".into()),
                start,
                end: start + Duration::from_millis(3),
                elapsed: Duration::from_millis(3),
                bytes: 16,
                outcome,
                retries: vec!["earlier".into()],
                verified: false,
                simulated: Some(crate::report::Simulated {
                    segment: 3,
                    lag: Duration::from_millis(1500),
                }),
            };
            let back = file_report(file_result(&sent), "a".into()).unwrap();
            assert_eq!(back, sent);
        }
        let mut odd = file_result(&FileReport {
            outcome: Outcome::failed(FailureKind::Refused, "no"),
            ..file_report(FileResult::default(), "a".into()).unwrap()
        });
        odd.error_kind = 0;
        let mut huge = odd.clone();
        huge.error_kind = control::FailureKind::Refused as i32;
        huge.error = "e".repeat(16 << 20);
        huge.wal_full_path = "p".repeat(1 << 20);
        huge.retries = vec!["r".repeat(1 << 20); 1000];
        let kept = file_report(huge, "a".into()).unwrap();
        assert!(kept.outcome.error_text().len() < MAX_KEPT_BYTES + 64);
        assert!(kept.wal_full_path.len() < MAX_KEPT_BYTES + 64);
        assert_eq!(kept.retries.len(), MAX_RETRIES_KEPT + 1);
        assert!(kept.retries.iter().all(|r| r.len() < MAX_KEPT_BYTES + 64));
        assert_eq!(
            kept.retries[MAX_RETRIES_KEPT],
            "(900 more retries not kept)"
        );
        assert!(file_report(odd, "a".into())
            .unwrap_err()
            .contains("failure kind"));
    }
}
