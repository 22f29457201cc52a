//! Shard: the files one agent plays, as which clusters, from its checked
//! [`ShardSpec`]: generated into the run's own directory, or listed from the
//! data directory, never anything outside it.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use walplayer_klio::pipeline::interleave;
use walplayer_klio::upload::Work;
use walplayer_proto::control::{ClusterPlan, Split};
use walplayer_wal::generate::{self, GenerateSpec, Payload};
use walplayer_wal::source::{self, Segment};
use walplayer_wal::walname::{check_cluster_name, SegmentName};

use crate::spec::{ShardSource, ShardSpec};

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
    spec: &ShardSpec,
    data_dir: &Path,
    clusters: &[String],
    stop: &CancellationToken,
) -> Result<Shard, String> {
    for c in clusters {
        check_cluster_name(c)?;
    }
    match &spec.source {
        ShardSource::Generate {
            segment_bytes,
            segments_per_cluster,
            gzip,
        } => {
            let generated = Generated {
                segment_bytes: *segment_bytes,
                segments_per_cluster,
                gzip: *gzip,
            };
            prepare_generated(spec, &generated, data_dir, clusters, stop)
        }
        ShardSource::Dir { split } => prepare_dir(spec, *split, data_dir, clusters),
    }
}

/// What a generated shard holds.
struct Generated<'a> {
    segment_bytes: u64,
    segments_per_cluster: &'a [u64],
    gzip: bool,
}

fn prepare_generated(
    spec: &ShardSpec,
    g: &Generated<'_>,
    data_dir: &Path,
    clusters: &[String],
    stop: &CancellationToken,
) -> Result<Shard, String> {
    let segment_bytes = g.segment_bytes;
    let longest = g.segments_per_cluster.iter().copied().max().unwrap_or(0);
    let dir = run_dir(data_dir, &spec.run_id);
    let spec = GenerateSpec {
        dir: dir.clone(),
        count: longest,
        segment_bytes,
        timeline: 1,
        start_lsn: 0,
        pg_version: generate::PgVersion::default(),
        gzip: g.gzip,
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
                gzip: g.gzip,
                unreadable: None,
            }
        })
        .collect();
    let first = SegmentName::containing(1, 0, segment_bytes).to_string();
    let mut per_cluster = Vec::new();
    let mut shard = Shard::default();
    for (cluster, &count) in clusters.iter().zip(g.segments_per_cluster) {
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

fn prepare_dir(
    spec: &ShardSpec,
    split: Split,
    data_dir: &Path,
    clusters: &[String],
) -> Result<Shard, String> {
    let listing = source::list(data_dir, source::Links::Refuse).map_err(|e| e.to_string())?;
    for skipped in &listing.skipped {
        tracing::warn!("skipping {}: {}", skipped.path.display(), skipped.reason);
    }
    let mine: Vec<Segment> = match split {
        Split::Replicate => listing.segments,
        _ => listing
            .segments
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % spec.agent_count as u64 == spec.agent_index as u64)
            .map(|(_, s)| s)
            .collect(),
    };
    let files = (mine.len() as u64).saturating_mul(clusters.len() as u64);
    if files > spec.max_files {
        return Err(format!(
            "{} files in {} for {} clusters make {files} uploads, more than this agent's --max-files {}",
            mine.len(),
            data_dir.display(),
            clusters.len(),
            spec.max_files
        ));
    }
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
    use crate::spec::tests::assignment;
    use crate::spec::Limits;
    use walplayer_proto::control::{Assignment, Source};

    fn spec(a: &Assignment) -> ShardSpec {
        ShardSpec::from_assignment(a, &Limits::default(), 1 << 40, "own:1").unwrap()
    }

    #[test]
    fn generated_shard_gives_each_cluster_its_own_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let clusters = cluster_names("pg", "a0", 2);
        assert_eq!(clusters, ["pg-a0-0", "pg-a0-1"]);
        let shard = prepare(
            &spec(&assignment()),
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

    /// A data directory of `n` one-byte WAL files.
    fn wal_dir(n: u8) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..n {
            let name = format!("0000000100000000000000{i:02X}");
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        dir
    }

    #[test]
    fn directory_shards_split_files_between_agents() {
        let dir = wal_dir(5);
        let mut a = assignment();
        a.source = Source::Dir as i32;
        a.clusters = 1;
        let names = |a: &Assignment| -> Vec<String> {
            prepare(
                &spec(a),
                dir.path(),
                &["c".to_string()],
                &CancellationToken::new(),
            )
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

    #[test]
    fn a_directory_shard_beyond_max_files_is_refused() {
        let dir = wal_dir(10);
        let mut a = assignment();
        a.source = Source::Dir as i32;
        a.split = Split::Replicate as i32;
        a.clusters = 200;
        let limits = Limits {
            max_files: 10,
            ..Limits::default()
        };
        let spec = ShardSpec::from_assignment(&a, &limits, 1 << 40, "own:1").unwrap();
        let clusters: Vec<String> = (0..200).map(|i| format!("c-{i}")).collect();
        let e = prepare(&spec, dir.path(), &clusters, &CancellationToken::new()).unwrap_err();
        assert!(
            e.contains("2000 uploads") && e.contains("--max-files 10"),
            "{e}"
        );
    }
}
