//! The shard spec: an assignment from the wire, checked once against the
//! agent's own bounds and turned into validated types. Nothing after this
//! looks at the raw assignment, so the coordinator cannot make an agent
//! read or write outside its data directory, or take on more than it
//! allows.

use std::time::Duration;

use walplayer_klio::memory::{self, MemoryLimit};
use walplayer_klio::settings::{BlockSize, Jobs, UploadSettings, MAX_RETRIES};
use walplayer_proto::control::{Assignment, SimulateSpec, Source, Split};
use walplayer_simulate::workload::Workload;
use walplayer_wal::walname::{check_run_id, segment_bytes_from_mib};

/// What an agent accepts from a coordinator.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most files in one run, over all clusters.
    pub max_files: u64,
    /// Most bytes the agent may generate into its data directory.
    pub max_generate_bytes: u64,
    pub max_jobs: u32,
    pub max_clusters: u32,
    /// Longest per-file timeout.
    pub max_timeout: Duration,
    /// Klio addresses the coordinator may choose besides the agent's own.
    pub allowed_addresses: Vec<String>,
    /// The memory jobs × block size may take (`--max-memory` or the cgroup's).
    pub max_memory: Option<MemoryLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 1_000_000,
            max_generate_bytes: 1 << 40,
            max_jobs: 256,
            max_clusters: 1000,
            max_timeout: Duration::from_secs(24 * 3600),
            allowed_addresses: Vec::new(),
            max_memory: None,
        }
    }
}

/// Where a shard's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// Generated into the run's directory: one length per cluster.
    Generate {
        segment_bytes: u64,
        segments_per_cluster: Vec<u64>,
        gzip: bool,
    },
    /// The WAL files of the data directory.
    Dir { split: Split },
}

/// One agent's part of a run, within its bounds.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// A plain directory name (see [`check_run_id`]).
    pub run_id: String,
    pub agent_index: u32,
    pub agent_count: u32,
    pub source: ShardSource,
    pub clusters: u32,
    pub jobs: Jobs,
    pub upload: UploadSettings,
    /// The Klio address the coordinator chose, when it differs from the
    /// agent's own and the agent allows it.
    pub address: Option<String>,
    /// The agent's bound on files, for sources whose count is known only
    /// once listed.
    pub max_files: u64,
}

impl ShardSpec {
    /// Checks `a` against `limits`, the free space of the data directory
    /// and the agent's own Klio address; the error says what is out of
    /// bounds and which flag sets the bound.
    pub fn from_assignment(
        a: &Assignment,
        limits: &Limits,
        free_bytes: u64,
        own_address: &str,
    ) -> Result<ShardSpec, String> {
        check_run_id(&a.run_id)?;
        if a.agent_count == 0 || a.agent_index >= a.agent_count {
            return Err(format!(
                "agent index {} of {} agents is impossible",
                a.agent_index, a.agent_count
            ));
        }
        let jobs = Jobs::new(a.jobs.into(), limits.max_jobs)
            .map_err(|e| format!("jobs {e} (agent --max-jobs)"))?;
        let block = BlockSize::from_kib(a.block_size_kib.into())
            .map_err(|e| format!("block size in KiB {e}"))?;
        memory::check(jobs.get(), block.bytes(), limits.max_memory.clone())
            .map_err(|e| format!("{e} (agent --max-memory)"))?;
        in_range(
            "clusters",
            a.clusters.into(),
            limits.max_clusters.into(),
            " (agent --max-clusters)",
        )?;
        let max_timeout_ms = u64::try_from(limits.max_timeout.as_millis()).unwrap_or(u64::MAX);
        in_range("per-file timeout in ms", a.timeout_ms, max_timeout_ms, "")?;
        if a.retries > MAX_RETRIES {
            return Err(format!(
                "retries {} is outside 0..={MAX_RETRIES}",
                a.retries
            ));
        }
        let address = chosen_address(&a.address, limits, own_address)?;
        let source = match Source::try_from(a.source) {
            Ok(Source::Generate) => generated(a, limits, free_bytes)?,
            Ok(Source::Dir) => match Split::try_from(a.split) {
                Ok(split @ (Split::Shard | Split::Replicate)) => ShardSource::Dir { split },
                _ => return Err("a directory run needs split shard or replicate".into()),
            },
            _ => return Err(format!("unknown source {}", a.source)),
        };
        Ok(ShardSpec {
            run_id: a.run_id.clone(),
            agent_index: a.agent_index,
            agent_count: a.agent_count,
            source,
            clusters: a.clusters,
            jobs,
            upload: UploadSettings {
                block,
                timeout: Duration::from_millis(a.timeout_ms),
                retries: a.retries,
                verify: a.verify,
            },
            address,
            max_files: limits.max_files,
        })
    }
}

/// The Klio address the coordinator chose, when it differs from the
/// agent's own: only one the agent allows (`--allow-address`).
pub fn chosen_address(
    chosen: &str,
    limits: &Limits,
    own_address: &str,
) -> Result<Option<String>, String> {
    match chosen {
        "" => Ok(None),
        same if same == own_address => Ok(None),
        other if limits.allowed_addresses.iter().any(|x| x == other) => Ok(Some(other.to_string())),
        other => Err(format!(
            "the coordinator sends it to Klio at {other}, but its configuration says {own_address}; start the agent with --allow-address {other} to permit that"
        )),
    }
}

/// Most clusters one agent simulates.
pub const MAX_SIMULATED_CLUSTERS: u64 = 100_000;

/// A simulation's share, checked against the agent's bounds: the workload
/// and the Klio address to use instead of its own, if any.
pub fn simulation(
    a: &Assignment,
    spec: &SimulateSpec,
    limits: &Limits,
    own_address: &str,
    prefix: &str,
) -> Result<(Workload, Option<String>), String> {
    check_run_id(&a.run_id)?;
    in_range(
        "simulated clusters",
        spec.clusters,
        MAX_SIMULATED_CLUSTERS,
        "",
    )?;
    let max_timeout_ms = u64::try_from(limits.max_timeout.as_millis()).unwrap_or(u64::MAX);
    in_range("timeout in ms", a.timeout_ms, max_timeout_ms, "")?;
    let address = chosen_address(&a.address, limits, own_address)?;
    let timeout = Duration::from_millis(a.timeout_ms);
    let workload = walplayer_simulate::wire::workload_of(spec, prefix, a.wal_size_mib, timeout)?;
    Ok((workload, address))
}

fn generated(a: &Assignment, limits: &Limits, free_bytes: u64) -> Result<ShardSource, String> {
    let segment = segment_bytes_from_mib(a.wal_size_mib)?;
    if a.segments_per_cluster.len() != a.clusters as usize {
        return Err(format!(
            "{} cluster lengths for {} clusters",
            a.segments_per_cluster.len(),
            a.clusters
        ));
    }
    let files = a
        .segments_per_cluster
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n));
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
    Ok(ShardSource::Generate {
        segment_bytes: segment,
        segments_per_cluster: a.segments_per_cluster.clone(),
        gzip: a.gzip,
    })
}

/// `value` must be in 1..=`max`; the error names the setting and, in
/// `bound`, where the limit comes from.
fn in_range(name: &str, value: u64, max: u64, bound: &str) -> Result<(), String> {
    if value == 0 || value > max {
        return Err(format!("{name} {value} is outside 1..={max}{bound}"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn assignment() -> Assignment {
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
            simulate: None,
        }
    }

    fn check(a: &Assignment, limits: &Limits, free: u64, own: &str) -> Result<ShardSpec, String> {
        ShardSpec::from_assignment(a, limits, free, own)
    }

    #[test]
    fn out_of_bounds_assignments_are_refused_with_a_reason() {
        let limits = Limits::default();
        let spec = check(&assignment(), &limits, 1 << 40, "own:1").unwrap();
        assert_eq!(spec.upload.block.bytes(), 64 << 10);
        assert_eq!(spec.jobs.get(), 2);
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
                Box::new(|a| a.segments_per_cluster = vec![u64::MAX, 5]),
                "--max-files",
            ),
            (
                Box::new(|a| a.address = "elsewhere:1".into()),
                "--allow-address elsewhere:1",
            ),
            (Box::new(|a| a.agent_index = 5), "impossible"),
            (Box::new(|a| a.retries = 1_000_000), "retries"),
        ];
        for (mutate, needle) in cases {
            let mut a = assignment();
            mutate(&mut a);
            let e = check(&a, &limits, 1 << 40, "own:1").unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = check(&assignment(), &limits, 1 << 20, "own:1").unwrap_err();
        assert!(e.contains("free space"), "{e}");
        // 2 jobs × 64 KiB blocks need about 13 MiB: 10 MiB is too little.
        let tight = Limits {
            max_memory: Some(MemoryLimit {
                bytes: 10 << 20,
                source: "--max-memory".into(),
            }),
            ..Limits::default()
        };
        let e = check(&assignment(), &tight, 1 << 40, "own:1").unwrap_err();
        assert!(
            e.contains("2 jobs × 64 KiB blocks") && e.contains("agent --max-memory"),
            "{e}"
        );
        let mut a = assignment();
        a.address = "own:1".into();
        assert_eq!(check(&a, &limits, 1 << 40, "own:1").unwrap().address, None);
        a.address = "other:2".into();
        let allowed = Limits {
            allowed_addresses: vec!["other:2".into()],
            ..Limits::default()
        };
        let spec = check(&a, &allowed, 1 << 40, "own:1").unwrap();
        assert_eq!(spec.address.as_deref(), Some("other:2"));
    }
}
