//! The memory a run of N jobs needs, checked against `--max-memory` (by
//! default the cgroup's limit) before anything is sent.
//!
//! Peak RSS ≈ [`FIXED_BYTES`] + jobs × [`per_job`], the bound measured in
//! BENCHMARKS.md ("Memory"): a job holds a few chunks of its block (see
//! [`crate::put`]) and what HTTP/2 has not written yet, whatever the block
//! and file sizes. A run that cannot fit would be killed by the kernel
//! half-way, so it is refused up front instead.

use std::path::Path;

use crate::put::CHUNK_BYTES;

/// What the process holds whatever the jobs and block size.
pub const FIXED_BYTES: u64 = 10 << 20;
/// What HTTP/2 holds per stream before the socket takes it: hyper's
/// per-stream send buffer (1 MiB, not settable through tonic's `Endpoint`).
pub const SEND_BUFFER_BYTES: u64 = 1 << 20;
/// Pieces of a block a job holds besides: the one being read, the one
/// waiting for the transport, the one HTTP/2 took beyond its buffer, and
/// the allocator's slack (measured: up to 2.4 MiB per job in all, so this
/// leaves a quarter of margin).
const PIECES_HELD: u64 = 8;

/// The most one job holds with blocks of `block_bytes`: at most 3 MiB.
pub fn per_job(block_bytes: usize) -> u64 {
    SEND_BUFFER_BYTES + PIECES_HELD * block_bytes.min(CHUNK_BYTES) as u64
}

/// The expected peak RSS of `jobs` uploads of `block_bytes` blocks.
pub fn estimate(jobs: usize, block_bytes: usize) -> u64 {
    FIXED_BYTES.saturating_add((jobs as u64).saturating_mul(per_job(block_bytes)))
}

/// Refuses `jobs` × `block_bytes` when the estimate exceeds `max`, with the
/// numbers and the jobs that would fit; `max` of `None` means no limit is
/// known.
pub fn check(jobs: usize, block_bytes: usize, max: Option<MemoryLimit>) -> Result<(), String> {
    let Some(max) = max else { return Ok(()) };
    let need = estimate(jobs, block_bytes);
    if need <= max.bytes {
        return Ok(());
    }
    let fitting_jobs = max.bytes.saturating_sub(FIXED_BYTES) / per_job(block_bytes);
    let lower = match fitting_jobs {
        0 => "raise the limit: not even one job fits".to_string(),
        jobs => format!("lower --jobs to {jobs}, or raise the limit"),
    };
    Err(format!(
        "{jobs} jobs × {} KiB blocks need about {} (10 MiB + {} KiB per job), more than {} of {}: {lower}",
        block_bytes / 1024,
        mib(need),
        per_job(block_bytes) / 1024,
        mib(max.bytes),
        max.source,
    ))
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// A memory limit and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// Words for the message: `--max-memory` or the cgroup file.
    pub source: String,
}

/// `--max-memory` if given, else the cgroup's limit, else none.
pub fn limit(flag: Option<u64>) -> Option<MemoryLimit> {
    match flag {
        Some(bytes) => Some(MemoryLimit {
            bytes,
            source: "--max-memory".into(),
        }),
        None => cgroup_limit(Path::new("/sys/fs/cgroup")),
    }
}

/// The memory limit of the cgroup this process runs in, read under `root`:
/// v2 `memory.max` (`max` is none), else v1 `memory/memory.limit_in_bytes`
/// (a page-rounded `i64::MAX` is none).
pub fn cgroup_limit(root: &Path) -> Option<MemoryLimit> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| (text.trim().to_string(), path.display().to_string()))
    };
    let v2 = root.join("memory.max");
    let v1 = root.join("memory").join("memory.limit_in_bytes");
    let (text, source) = read(&v2).or_else(|| read(&v1))?;
    let bytes: u64 = text.parse().ok()?;
    // cgroup v1 writes "no limit" as the largest page-aligned i64.
    if bytes >= (i64::MAX as u64) & !0xfff {
        return None;
    }
    Some(MemoryLimit {
        bytes,
        source: format!("the cgroup limit ({source})"),
    })
}

/// Parses a size: bytes, or a number with K, M, G, T (powers of 1024,
/// optionally written KiB, MiB ...).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 512MiB, 4GiB or bytes"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use KiB, MiB, GiB or TiB"
            ))
        }
    };
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| {
        format!("{text:?} is not a usable size: give more than 0 and less than 16 EiB")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn a_run_too_big_for_the_limit_is_refused_with_what_fits() {
        let limit = MemoryLimit {
            bytes: 100 << 20,
            source: "--max-memory".into(),
        };
        check(30, 2 << 20, Some(limit.clone())).unwrap();
        let e = check(64, 2 << 20, Some(limit.clone())).unwrap_err();
        assert!(
            e.contains("64 jobs × 2048 KiB blocks need about 202 MiB (10 MiB + 3072 KiB per job)")
                && e.contains("more than 100 MiB of --max-memory")
                && e.contains("lower --jobs to 30, or raise the limit"),
            "{e}"
        );
        // A job holds the same with 8 MiB blocks, less with small ones.
        assert_eq!(per_job(8 << 20), per_job(CHUNK_BYTES));
        assert_eq!(per_job(64 << 10), (1 << 20) + 8 * (64 << 10));
        let tiny = MemoryLimit {
            bytes: 11 << 20,
            ..limit
        };
        let e = check(2, 8 << 20, Some(tiny)).unwrap_err();
        assert!(e.contains("not even one job fits"), "{e}");
        check(1024, 8 << 20, None).unwrap();
    }

    #[test]
    fn cgroup_limits_are_read_from_v2_then_v1_and_max_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        let v1 = dir.path().join("memory/memory.limit_in_bytes");
        std::fs::write(&v1, "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::write(&v1, "1073741824\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()).unwrap().bytes, 1 << 30);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "536870912\n").unwrap();
        let l = cgroup_limit(dir.path()).unwrap();
        assert_eq!(l.bytes, 512 << 20);
        assert!(l.source.contains("memory.max"), "{}", l.source);
    }
}
