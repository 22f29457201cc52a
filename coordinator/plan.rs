//! Plan: how a run's workload is split into one assignment per agent.
//!
//! Agents are ordered by name, so the same agents always get the same
//! shards. Generated workloads are divided as evenly as whole files allow.

use walplayer_klio::settings::{Jobs, UploadSettings};
use walplayer_proto::control::{Assignment, Source, Split};

/// How many files a generated workload has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// This many files across all agents.
    Total(u64),
    /// This many files on every agent.
    PerAgent(u64),
}

/// What every agent of a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub source: Source,
    pub length: Length,
    pub wal_size_mib: u64,
    pub gzip: bool,
    pub split: Split,
    pub clusters_per_agent: u32,
    /// Per agent.
    pub jobs: Jobs,
    pub upload: UploadSettings,
    /// Klio address every agent uses instead of its own, if set.
    pub address: Option<String>,
}

/// Splits `total` into `parts` shares differing by at most one.
pub fn split_evenly(total: u64, parts: u64) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

/// One assignment per agent, in the order of `agents`.
pub fn assignments(run_id: &str, agents: usize, w: &Workload) -> Vec<Assignment> {
    let per_agent = match w.length {
        Length::Total(n) => split_evenly(n, agents as u64),
        Length::PerAgent(n) => vec![n; agents],
    };
    per_agent
        .into_iter()
        .enumerate()
        .map(|(index, files)| Assignment {
            run_id: run_id.to_string(),
            agent_index: index as u32,
            agent_count: agents as u32,
            source: w.source as i32,
            split: w.split as i32,
            segments_per_cluster: if w.source == Source::Generate {
                split_evenly(files, w.clusters_per_agent as u64)
            } else {
                Vec::new()
            },
            wal_size_mib: w.wal_size_mib,
            gzip: w.gzip,
            clusters: w.clusters_per_agent,
            jobs: w.jobs.get() as u32,
            block_size_kib: w.upload.block.kib(),
            timeout_ms: u64::try_from(w.upload.timeout.as_millis()).unwrap_or(u64::MAX),
            address: w.address.clone().unwrap_or_default(),
            verify: w.upload.verify,
            retries: w.upload.retries,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use walplayer_klio::settings::BlockSize;

    fn workload(length: Length, clusters: u32) -> Workload {
        Workload {
            source: Source::Generate,
            length,
            wal_size_mib: 16,
            gzip: false,
            split: Split::Shard,
            clusters_per_agent: clusters,
            jobs: Jobs::new(2, Jobs::MAX).unwrap(),
            upload: UploadSettings {
                block: BlockSize::DEFAULT,
                timeout: std::time::Duration::from_secs(1),
                retries: 0,
                verify: false,
            },
            address: None,
        }
    }

    #[test]
    fn totals_split_evenly_over_agents_and_clusters() {
        let a = assignments("r", 3, &workload(Length::Total(10), 2));
        let per_cluster: Vec<_> = a.iter().map(|a| a.segments_per_cluster.clone()).collect();
        assert_eq!(per_cluster, vec![vec![2, 2], vec![2, 1], vec![2, 1]]);
        let sum: u64 = per_cluster.iter().flatten().sum();
        assert_eq!(sum, 10);
        assert_eq!(a[2].agent_index, 2);
        assert_eq!(a[2].agent_count, 3);
    }

    #[test]
    fn per_agent_length_is_per_agent() {
        let a = assignments("r", 2, &workload(Length::PerAgent(5), 1));
        assert_eq!(a[0].segments_per_cluster, vec![5]);
        assert_eq!(a[1].segments_per_cluster, vec![5]);
    }

    #[test]
    fn split_evenly_edges() {
        assert_eq!(split_evenly(0, 3), vec![0, 0, 0]);
        assert_eq!(split_evenly(5, 0), Vec::<u64>::new());
        assert_eq!(split_evenly(7, 7), vec![1; 7]);
    }
}
