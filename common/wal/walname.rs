//! PostgreSQL WAL file names, segment sizes and LSNs.
//!
//! Owns the naming rule (`%08X%08X%08X` of timeline, log, segment), the
//! segment-size rule PostgreSQL enforces, and the name check Klio applies to
//! `wal_name` and `cluster_name`.

use std::fmt;

/// WAL page size (XLOG_BLCKSZ).
pub const PAGE_SIZE: usize = 8192;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Segment sizes PostgreSQL accepts, in MiB.
pub const ALLOWED_SEGMENT_MIB: &str = "1, 2, 4, 8, 16, 32, 64, 128, 256, 512 or 1024";

/// Checks a segment size in MiB the way `initdb --wal-segsize` does and
/// returns it in bytes.
pub fn segment_bytes_from_mib(mib: u64) -> Result<u64, String> {
    if mib == 0 || mib > 1024 || !mib.is_power_of_two() {
        return Err(format!(
            "WAL segment size {mib} MB is not one PostgreSQL accepts: use {ALLOWED_SEGMENT_MIB}"
        ));
    }
    Ok(mib * MIB)
}

/// The name of one WAL segment: timeline, log and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub timeline: u32,
    pub log: u32,
    pub segment: u32,
}

impl SegmentName {
    /// The segment on `timeline` that contains `lsn`.
    pub fn containing(timeline: u32, lsn: u64, segment_bytes: u64) -> SegmentName {
        SegmentName {
            timeline,
            log: (lsn >> 32) as u32,
            segment: ((lsn & 0xFFFF_FFFF) / segment_bytes) as u32,
        }
    }

    /// The LSN of this segment's first byte.
    pub fn start_lsn(&self, segment_bytes: u64) -> u64 {
        ((self.log as u64) << 32) + self.segment as u64 * segment_bytes
    }

    /// The segment that follows this one on the same timeline.
    pub fn next(&self, segment_bytes: u64) -> SegmentName {
        SegmentName::containing(
            self.timeline,
            self.start_lsn(segment_bytes) + segment_bytes,
            segment_bytes,
        )
    }

    /// Parses a plain 24-hex-digit segment name.
    pub fn parse(name: &str) -> Option<SegmentName> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let field = |i: usize| u32::from_str_radix(&name[i * 8..i * 8 + 8], 16).ok();
        Some(SegmentName {
            timeline: field(0)?,
            log: field(1)?,
            segment: field(2)?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.timeline, self.log, self.segment
        )
    }
}

/// Parses an LSN written as PostgreSQL prints it (`16/B374D848`) or as a
/// plain number of bytes.
pub fn parse_lsn(text: &str) -> Result<u64, String> {
    let bad =
        || format!("{text:?} is not an LSN: write it as PostgreSQL does, e.g. 0/0 or 16/B374D848");
    match text.split_once('/') {
        Some((hi, lo)) => {
            let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
            let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
            Ok(((hi as u64) << 32) | lo as u64)
        }
        None => text.parse::<u64>().map_err(|_| bad()),
    }
}

fn all_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Klio's rule for `wal_name`: 24 hex digits optionally followed by
/// `.partial` or `.XXXXXXXX.backup`, or 8 hex digits followed by `.history`.
pub fn is_wal_name(name: &str) -> bool {
    if let Some(tli) = name.strip_suffix(".history") {
        return tli.len() == 8 && all_hex(tli);
    }
    if name.len() < 24 || !name.is_char_boundary(24) {
        return false;
    }
    let (segment, rest) = name.split_at(24);
    if !all_hex(segment) {
        return false;
    }
    if rest.is_empty() || rest == ".partial" {
        return true;
    }
    match rest
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".backup"))
    {
        Some(offset) => offset.len() == 8 && all_hex(offset),
        None => false,
    }
}

/// Klio's character rule for `cluster_name` and `wal_name`: letters, digits,
/// `_`, `-` and `.` only.
pub fn has_only_name_chars(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Longest cluster name: the server keeps each cluster in one directory,
/// and a file system name holds at most 255 bytes.
pub const MAX_CLUSTER_NAME: usize = 255;

/// Longest agent name: a Kubernetes pod name (a DNS label) holds 63.
pub const MAX_AGENT_NAME: usize = 63;

/// Whether `name` is a cluster name a server can take and store: Klio's
/// characters, not empty, not `.` or `..`, and short enough for one
/// directory name.
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME
        && has_only_name_chars(name)
        && name != "."
        && name != ".."
}

/// A cluster name that is safe both on the wire and as one directory name:
/// Klio's characters, not empty, not `.` or `..`, at most 255 bytes.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("cluster name is empty".into());
    }
    if name.len() > MAX_CLUSTER_NAME {
        return Err(format!(
            "cluster name {}... is {} bytes long; a server stores each cluster in one directory, whose name holds at most {MAX_CLUSTER_NAME} bytes: choose a shorter name",
            &name[..32.min(name.len())],
            name.len()
        ));
    }
    if !is_cluster_name(name) {
        return Err(format!(
            "cluster name {name:?} may contain only letters, digits, '_', '-' and '.' (and is not '.' or '..')"
        ));
    }
    Ok(())
}

/// An agent name: it becomes part of cluster names and paths, so it
/// follows the cluster name rule and fits a pod name.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    check_cluster_name(name).map_err(|e| format!("agent name: {e}"))?;
    if name.len() > MAX_AGENT_NAME {
        return Err(format!(
            "agent name {name:?} is longer than {MAX_AGENT_NAME} characters"
        ));
    }
    Ok(())
}

/// A run id, which names a directory under an agent's data directory:
/// 1 to 64 letters, digits and `-`, so it can never climb out of it.
pub fn check_run_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(format!("run id {id:?} is not a safe directory name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_postgres_rule() {
        let s = 16 * MIB;
        let first = SegmentName::containing(1, 0, s);
        assert_eq!(first.to_string(), "000000010000000000000000");
        let mut n = SegmentName::parse("0000000100000000000000FF").unwrap();
        n = n.next(s);
        assert_eq!(n.to_string(), "000000010000000100000000");
        assert_eq!(n.start_lsn(s), 1 << 32);
        let big = SegmentName::containing(2, 0, 1024 * MIB);
        assert_eq!(
            big.next(1024 * MIB)
                .next(1024 * MIB)
                .next(1024 * MIB)
                .next(1024 * MIB)
                .to_string(),
            "000000020000000100000000"
        );
    }

    #[test]
    fn segment_sizes_are_postgres_ones() {
        assert_eq!(segment_bytes_from_mib(16).unwrap(), 16 * MIB);
        assert_eq!(segment_bytes_from_mib(1024).unwrap(), 1024 * MIB);
        for bad in [0, 3, 24, 2048] {
            let e = segment_bytes_from_mib(bad).unwrap_err();
            assert!(e.contains("1, 2, 4"), "{e}");
        }
    }

    #[test]
    fn klio_name_rule() {
        for good in [
            "000000010000000000000001",
            "000000010000000000000001.partial",
            "000000010000000000000001.00000028.backup",
            "00000002.history",
        ] {
            assert!(is_wal_name(good), "{good}");
        }
        for bad in [
            "",
            "00000001000000000000000",
            "00000001000000000000000G",
            "000000010000000000000001.gz",
            "000000010000000000000001.0000028.backup",
            "0000002.history",
            "README",
            "archive_status",
        ] {
            assert!(!is_wal_name(bad), "{bad}");
        }
        assert!(check_cluster_name("pg-1_a.b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_lsn("0/0").unwrap(), 0);
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("4096").unwrap(), 4096);
        assert!(parse_lsn("x/1").unwrap_err().contains("not an LSN"));
    }

    proptest! {
        #[test]
        fn name_parser_never_panics(s in "\\PC{0,40}") {
            let _ = is_wal_name(&s);
            let _ = SegmentName::parse(&s);
            let _ = parse_lsn(&s);
        }

        #[test]
        fn names_round_trip(tli in 1u32.., lsn in any::<u64>(), shift in 20u32..=30) {
            let size = 1u64 << shift;
            let name = SegmentName::containing(tli, lsn, size);
            prop_assert!(is_wal_name(&name.to_string()));
            prop_assert_eq!(SegmentName::parse(&name.to_string()), Some(name));
        }
    }

    #[test]
    fn name_rules_bound_length_and_characters() {
        assert!(check_cluster_name(&"a".repeat(255)).is_ok());
        let long = check_cluster_name(&"a".repeat(256)).unwrap_err();
        assert!(
            long.contains("256 bytes") && long.contains("at most 255"),
            "{long}"
        );
        assert!(check_cluster_name("..").is_err());
        assert!(check_cluster_name("a/b").is_err());
        assert!(check_agent_name(&"a".repeat(63)).is_ok());
        assert!(check_agent_name(&"a".repeat(64))
            .unwrap_err()
            .contains("63"));
        assert!(check_agent_name("a b")
            .unwrap_err()
            .starts_with("agent name:"));
        assert!(check_run_id("run-1a").is_ok());
        for bad in ["", "../x", "a.b", &"r".repeat(65)] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }
}
