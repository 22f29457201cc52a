//! Plan: how a run's workload is split into one assignment per agent.
//!
//! Agents are ordered by name, so the same agents always get the same
//! shards. Generated workloads are divided as evenly as whole files allow.

use walplayer_klio::settings::{Jobs, UploadSettings};
use walplayer_proto::control::{Assignment, ClusterPlan, SimulateSpec, Source, Split};

/// How many files a generated workload has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// This many files across all agents.
    Total(u64),
    /// This many files on every agent.
    PerAgent(u64),
}

/// What every agent of a run does.
#[derive(Debug, Clone, PartialEq)]
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
    /// A cluster simulation: the share every agent gets, before its
    /// clusters and first index are set.
    pub simulate: Option<SimulateSpec>,
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
    if let Some(sim) = &w.simulate {
        return simulations(run_id, agents, w, sim);
    }
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
            simulate: None,
        })
        .collect()
}

/// A simulation's assignments: its clusters split evenly, each agent's
/// from the index after the previous agent's last.
fn simulations(run_id: &str, agents: usize, w: &Workload, sim: &SimulateSpec) -> Vec<Assignment> {
    let mut first_index = 0;
    split_evenly(sim.clusters, agents as u64)
        .into_iter()
        .enumerate()
        .map(|(index, clusters)| {
            let share = SimulateSpec {
                clusters,
                first_index,
                ..sim.clone()
            };
            first_index += clusters;
            Assignment {
                run_id: run_id.to_string(),
                agent_index: index as u32,
                agent_count: agents as u32,
                source: Source::Unspecified as i32,
                split: Split::Unspecified as i32,
                segments_per_cluster: Vec::new(),
                wal_size_mib: w.wal_size_mib,
                gzip: false,
                clusters: u32::try_from(clusters).unwrap_or(u32::MAX),
                jobs: 1,
                block_size_kib: w.upload.block.kib(),
                timeout_ms: u64::try_from(w.upload.timeout.as_millis()).unwrap_or(u64::MAX),
                address: w.address.clone().unwrap_or_default(),
                verify: false,
                retries: 0,
                simulate: Some(Box::new(share)),
            }
        })
        .collect()
}

/// Checks the plans `agent` sent with Ready against the assignment it was
/// sent: one plan per assigned cluster, named as the agent names its
/// clusters (`<base>-<agent>` or `<base>-<agent>-<i>`, one base), and for
/// generated runs the assigned number of segments of the assigned size.
/// Checked before anything is kept, so a plan cannot make the coordinator
/// hold more than its assignment allows.
pub fn check_plans(agent: &str, a: &Assignment, plans: &[ClusterPlan]) -> Result<(), String> {
    if plans.len() != a.clusters as usize {
        return Err(format!(
            "{} cluster plans for an assignment of {} clusters",
            plans.len(),
            a.clusters
        ));
    }
    let mut base: Option<&str> = None;
    for (i, plan) in plans.iter().enumerate() {
        // A search's agents number their clusters even when they have one.
        let searching = a.simulate.as_ref().is_some_and(|s| s.search.is_some());
        let suffix = if a.clusters == 1 && !searching {
            format!("-{agent}")
        } else {
            format!("-{agent}-{i}")
        };
        let prefix = plan
            .cluster
            .strip_suffix(&suffix)
            .filter(|p| !p.is_empty() && base.is_none_or(|b| b == *p))
            .ok_or_else(|| {
                format!(
                    "cluster plan {i} is named {:?}, not <base>{suffix} as this agent's clusters are",
                    walplayer_klio::stats::bounded(&plan.cluster)
                )
            })?;
        base = Some(prefix);
        if let Some(sim) = &a.simulate {
            check_simulated(plan, sim, a.wal_size_mib)?;
        }
        if a.source == Source::Generate as i32 {
            let want = a.segments_per_cluster.get(i).copied().unwrap_or(0);
            let bytes = a.wal_size_mib << 20;
            if !plan.wal_names.is_empty() || plan.count != want || plan.segment_bytes != bytes {
                return Err(format!(
                    "cluster {} plans {} segments of {} bytes ({} named files), but was assigned {want} segments of {bytes} bytes",
                    plan.cluster,
                    plan.count,
                    plan.segment_bytes,
                    plan.wal_names.len()
                ));
            }
        }
    }
    Ok(())
}

/// A simulated cluster's plan: segments of the assigned size, no more
/// than the fastest rate of the workload completes in its duration.
fn check_simulated(
    plan: &ClusterPlan,
    sim: &SimulateSpec,
    wal_size_mib: u64,
) -> Result<(), String> {
    let bytes = wal_size_mib << 20;
    let most = walplayer_simulate::wire::most_bytes(sim) / bytes.max(1) + 1;
    if !plan.wal_names.is_empty() || plan.segment_bytes != bytes || plan.count > most {
        return Err(format!(
            "simulated cluster {} plans {} segments of {} bytes ({} named files), but its workload makes at most {most} segments of {bytes} bytes",
            walplayer_klio::stats::bounded(&plan.cluster),
            plan.count,
            plan.segment_bytes,
            plan.wal_names.len()
        ));
    }
    Ok(())
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
            simulate: None,
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
    fn plans_must_match_the_assignment() {
        let a = &assignments("r", 1, &workload(Length::Total(5), 2))[0];
        let plan = |cluster: &str, count| ClusterPlan {
            cluster: cluster.into(),
            first_segment: "000000010000000000000000".into(),
            count,
            segment_bytes: 16 << 20,
            wal_names: vec![],
        };
        let good = [plan("pg-a-0", 3), plan("pg-a-1", 2)];
        assert_eq!(check_plans("a", a, &good), Ok(()));
        let many: Vec<_> = (0..20_000).map(|i| plan(&format!("pg-a-{i}"), 1)).collect();
        let e = check_plans("a", a, &many).unwrap_err();
        assert!(
            e.contains("20000 cluster plans for an assignment of 2"),
            "{e}"
        );
        let e = check_plans("a", a, &[plan("pg-b-0", 3), plan("pg-b-1", 2)]).unwrap_err();
        assert!(e.contains("not <base>-a-0"), "{e}");
        let e = check_plans("a", a, &[plan("pg-a-0", 3), plan("qq-a-1", 2)]).unwrap_err();
        assert!(e.contains("not <base>-a-1"), "{e}");
        let e = check_plans("a", a, &[plan("pg-a-0", 3), plan("pg-a-1", 9)]).unwrap_err();
        assert!(e.contains("assigned 2 segments"), "{e}");
    }

    #[test]
    fn split_evenly_edges() {
        assert_eq!(split_evenly(0, 3), vec![0, 0, 0]);
        assert_eq!(split_evenly(5, 0), Vec::<u64>::new());
        assert_eq!(split_evenly(7, 7), vec![1; 7]);
    }
}
