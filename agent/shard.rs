//! Shard: the files one agent plays, as which clusters, from its
//! assignment. Checks the assignment against the agent's own bounds first:
//! the coordinator cannot make an agent read or write outside its data
//! directory, or take on more than it allows.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use walplayer_klio::pipeline::interleave;
use walplayer_klio::upload::Work;
use walplayer_proto::control::{Assignment, ClusterPlan, Source, Split};
use walplayer_wal::generate::{self, GenerateSpec, Payload};
use walplayer_wal::source::{self, Segment};
use walplayer_wal::walname::{
    check_cluster_name, check_run_id, segment_bytes_from_mib, SegmentName,
};

/// What an agent accepts from a coordinator.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most files in one run, over all clusters.
    pub max_files: u64,
    /// Most bytes the agent may generate into its data directory.
    pub max_generate_bytes: u64,
    pub max_jobs: u32,
    pub max_clusters: u32,
    /// Longest per-file timeout, in milliseconds.
    pub max_timeout_ms: u64,
    /// Klio addresses the coordinator may choose besides the agent's own.
    pub allowed_addresses: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 1_000_000,
            max_generate_bytes: 1 << 40,
            max_jobs: 256,
            max_clusters: 1000,
            max_timeout_ms: 24 * 3600 * 1000,
            allowed_addresses: Vec::new(),
        }
    }
}

/// Where an agent keeps what it generates for a run.
pub fn run_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join("runs").join(run_id)
}

/// Cluster names of an agent: `<base>-<agent>`, or `<base>-<agent>-<i>`
/// when it simulates several clusters.
pub fn cluster_names(base: &str, agent: &str, clusters: u32) -> Vec<String> {
    if clusters == 1 {
        return vec![format!("{base}-{agent}")];
    }
    (0..clusters)
        .map(|i| format!("{base}-{agent}-{i}"))
        .collect()
}

/// Checks an assignment against `limits` and the free space of the data
/// directory; the error says what is out of bounds.
pub fn check(
    a: &Assignment,
    limits: &Limits,
    free_bytes: u64,
    own_address: &str,
) -> Result<(), String> {
    check_run_id(&a.run_id)?;
    if a.agent_count == 0 || a.agent_index >= a.agent_count {
        return Err(format!(
            "agent index {} of {} agents is impossible",
            a.agent_index, a.agent_count
        ));
    }
    in_range(
        "jobs",
        a.jobs.into(),
        limits.max_jobs.into(),
        " (agent --max-jobs)",
    )?;
    in_range("block size in KiB", a.block_size_kib.into(), 8192, "")?;
    in_range(
        "clusters",
        a.clusters.into(),
        limits.max_clusters.into(),
        " (agent --max-clusters)",
    )?;
    in_range(
        "per-file timeout in ms",
        a.timeout_ms,
        limits.max_timeout_ms,
        "",
    )?;
    if !a.address.is_empty()
        && a.address != own_address
        && !limits.allowed_addresses.contains(&a.address)
    {
        return Err(format!(
            "the coordinator sends it to Klio at {}, but its configuration says {own_address}; start the agent with --allow-address {} to permit that",
            a.address, a.address
        ));
    }
    match Source::try_from(a.source) {
        Ok(Source::Generate) => {
            let segment = segment_bytes_from_mib(a.wal_size_mib)?;
            if a.segments_per_cluster.len() != a.clusters as usize {
                return Err(format!(
                    "{} cluster lengths for {} clusters",
                    a.segments_per_cluster.len(),
                    a.clusters
                ));
            }
            let files: u64 = a.segments_per_cluster.iter().sum();
            if files > limits.max_files {
                return Err(format!(
                    "{files} files is more than this agent's --max-files {}",
                    limits.max_files
                ));
            }
            // Clusters share one generated set: the longest one is on disk.
            let longest = a.segments_per_cluster.iter().copied().max().unwrap_or(0);
            let bytes = longest.saturating_mul(segment);
            let room = limits.max_generate_bytes.min(free_bytes / 10 * 9);
            if bytes > room {
                return Err(format!(
                    "generating {longest} segments of {} MiB needs {bytes} bytes; this agent allows {room} (90% of its free space, at most --max-generate-bytes)",
                    a.wal_size_mib
                ));
            }
        }
        Ok(Source::Dir) => {
            if !matches!(
                Split::try_from(a.split),
                Ok(Split::Shard | Split::Replicate)
            ) {
                return Err("a directory run needs split shard or replicate".into());
            }
        }
        _ => return Err(format!("unknown source {}", a.source)),
    }
    Ok(())
}

/// `value` must be in 1..=`max`; the error names the setting and, in
/// `bound`, where the limit comes from.
fn in_range(name: &str, value: u64, max: u64, bound: &str) -> Result<(), String> {
    if value == 0 || value > max {
        return Err(format!("{name} {value} is outside 1..={max}{bound}"));
    }
    Ok(())
}

/// An agent's prepared shard: work in upload order, and the plan the
/// coordinator tracks it by.
#[derive(Debug, Default)]
pub struct Shard {
    pub work: Vec<Work>,
    pub plans: Vec<ClusterPlan>,
    pub bytes: u64,
    pub skipped: u64,
}

/// Prepares the shard: generates its files or lists the data directory.
/// Blocking; `clusters` are this agent's cluster names. Generation ends
/// within a batch of pages once `stop` is cancelled.
pub fn prepare(
    a: &Assignment,
    data_dir: &Path,
    clusters: &[String],
    stop: &CancellationToken,
) -> Result<Shard, String> {
    for c in clusters {
        check_cluster_name(c)?;
    }
    match Source::try_from(a.source) {
        Ok(Source::Generate) => prepare_generated(a, data_dir, clusters, stop),
        Ok(Source::Dir) => prepare_dir(a, data_dir, clusters),
        _ => Err(format!("unknown source {}", a.source)),
    }
}

fn prepare_generated(
    a: &Assignment,
    data_dir: &Path,
    clusters: &[String],
    stop: &CancellationToken,
) -> Result<Shard, String> {
    let segment_bytes = segment_bytes_from_mib(a.wal_size_mib)?;
    let longest = a.segments_per_cluster.iter().copied().max().unwrap_or(0);
    let dir = run_dir(data_dir, &a.run_id);
    let spec = GenerateSpec {
        dir: dir.clone(),
        count: longest,
        segment_bytes,
        timeline: 1,
        start_lsn: 0,
        pg_version: generate::PgVersion::default(),
        gzip: a.gzip,
        system_id: generate::DEFAULT_SYSTEM_ID,
    };
    let mut files = Vec::new();
    let written = generate::generate(&spec, &Payload::synthetic(), stop, &mut |path, _| {
        files.push(path.to_path_buf())
    })
    .map_err(|e| e.to_string())?;
    if written < longest {
        return Err(format!(
            "stopped after generating {written} of {longest} segments"
        ));
    }
    let segments: Vec<Segment> = files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let wal_name = name.strip_suffix(".gz").unwrap_or(name).to_string();
            Segment {
                path,
                wal_name,
                size: segment_bytes,
                gzip: a.gzip,
            }
        })
        .collect();
    let first = SegmentName::containing(1, 0, segment_bytes).to_string();
    let mut per_cluster = Vec::new();
    let mut shard = Shard::default();
    for (cluster, &count) in clusters.iter().zip(&a.segments_per_cluster) {
        let work: Vec<Work> = segments[..count as usize]
            .iter()
            .map(|s| Work {
                segment: s.clone(),
                cluster: cluster.clone(),
            })
            .collect();
        shard.bytes += count * segment_bytes;
        shard.plans.push(ClusterPlan {
            cluster: cluster.clone(),
            first_segment: first.clone(),
            count,
            segment_bytes,
            wal_names: Vec::new(),
        });
        per_cluster.push(work);
    }
    shard.work = interleave(per_cluster);
    Ok(shard)
}

fn prepare_dir(a: &Assignment, data_dir: &Path, clusters: &[String]) -> Result<Shard, String> {
    let listing = source::list(data_dir).map_err(|e| e.to_string())?;
    let mine: Vec<Segment> = match Split::try_from(a.split) {
        Ok(Split::Replicate) => listing.segments,
        _ => listing
            .segments
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % a.agent_count as u64 == a.agent_index as u64)
            .map(|(_, s)| s)
            .collect(),
    };
    let mut shard = Shard {
        skipped: listing.skipped.len() as u64,
        ..Shard::default()
    };
    let mut per_cluster = Vec::new();
    for cluster in clusters {
        shard.bytes += mine.iter().map(|s| s.size).sum::<u64>();
        shard.plans.push(ClusterPlan {
            cluster: cluster.clone(),
            wal_names: mine.iter().map(|s| s.wal_name.clone()).collect(),
            ..ClusterPlan::default()
        });
        per_cluster.push(
            mine.iter()
                .map(|s| Work {
                    segment: s.clone(),
                    cluster: cluster.clone(),
                })
                .collect(),
        );
    }
    shard.work = interleave(per_cluster);
    Ok(shard)
}

/// Free bytes of the filesystem holding `dir` (0 if unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; `path` is a
    // valid NUL-terminated string for the duration of the call.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut s) != 0 {
            return 0;
        }
        (s.f_bavail as u64).saturating_mul(s.f_frsize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment() -> Assignment {
        Assignment {
            run_id: "r1".into(),
            agent_index: 0,
            agent_count: 2,
            source: Source::Generate as i32,
            split: Split::Shard as i32,
            segments_per_cluster: vec![3, 2],
            wal_size_mib: 1,
            gzip: false,
            clusters: 2,
            jobs: 2,
            block_size_kib: 64,
            timeout_ms: 1000,
            address: String::new(),
            verify: false,
            retries: 0,
        }
    }

    #[test]
    fn out_of_bounds_assignments_are_refused_with_a_reason() {
        let limits = Limits::default();
        assert!(check(&assignment(), &limits, 1 << 40, "own:1").is_ok());
        type Mutation = Box<dyn Fn(&mut Assignment)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|a| a.run_id = "../x".into()),
                "safe directory name",
            ),
            (Box::new(|a| a.jobs = 0), "jobs"),
            (Box::new(|a| a.jobs = 100_000), "--max-jobs"),
            (Box::new(|a| a.block_size_kib = 9000), "block size"),
            (Box::new(|a| a.wal_size_mib = 3), "1, 2, 4"),
            (
                Box::new(|a| a.segments_per_cluster = vec![2_000_000, 0]),
                "--max-files",
            ),
            (
                Box::new(|a| a.address = "elsewhere:1".into()),
                "--allow-address elsewhere:1",
            ),
            (Box::new(|a| a.agent_index = 5), "impossible"),
        ];
        for (mutate, needle) in cases {
            let mut a = assignment();
            mutate(&mut a);
            let e = check(&a, &limits, 1 << 40, "own:1").unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = check(&assignment(), &limits, 1 << 20, "own:1").unwrap_err();
        assert!(e.contains("free space"), "{e}");
        let mut a = assignment();
        a.address = "own:1".into();
        assert!(check(&a, &limits, 1 << 40, "own:1").is_ok());
        a.address = "other:2".into();
        let allowed = Limits {
            allowed_addresses: vec!["other:2".into()],
            ..Limits::default()
        };
        assert!(check(&a, &allowed, 1 << 40, "own:1").is_ok());
    }

    #[test]
    fn generated_shard_gives_each_cluster_its_own_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let clusters = cluster_names("pg", "a0", 2);
        assert_eq!(clusters, ["pg-a0-0", "pg-a0-1"]);
        let shard = prepare(
            &assignment(),
            dir.path(),
            &clusters,
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(shard.work.len(), 5);
        let of = |c: &str| -> Vec<String> {
            shard
                .work
                .iter()
                .filter(|w| w.cluster == c)
                .map(|w| w.segment.wal_name.clone())
                .collect()
        };
        assert_eq!(
            of("pg-a0-0"),
            [
                "000000010000000000000000",
                "000000010000000000000001",
                "000000010000000000000002"
            ]
        );
        assert_eq!(
            of("pg-a0-1"),
            ["000000010000000000000000", "000000010000000000000001"]
        );
        // Interleaved so both clusters progress at once.
        assert_ne!(shard.work[0].cluster, shard.work[1].cluster);
        assert_eq!(shard.plans[1].count, 2);
        assert!(run_dir(dir.path(), "r1")
            .join("000000010000000000000002")
            .exists());
    }

    #[test]
    fn directory_shards_split_files_between_agents() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(
                dir.path().join(format!("0000000100000000000000{i:02X}")),
                b"x",
            )
            .unwrap();
        }
        let mut a = assignment();
        a.source = Source::Dir as i32;
        a.clusters = 1;
        let names = |a: &Assignment| -> Vec<String> {
            prepare(a, dir.path(), &["c".to_string()], &CancellationToken::new())
                .unwrap()
                .work
                .iter()
                .map(|w| w.segment.wal_name.clone())
                .collect()
        };
        let first = names(&a);
        a.agent_index = 1;
        let second = names(&a);
        assert_eq!(first.len() + second.len(), 5);
        assert!(first.iter().all(|n| !second.contains(n)));
        a.split = Split::Replicate as i32;
        assert_eq!(names(&a).len(), 5);
    }
}
