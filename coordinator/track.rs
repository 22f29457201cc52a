//! Track: which files each cluster was planned to upload and which have
//! been reported, one bit per file. Finds duplicates and names the files
//! never reported, with memory per cluster, not per result.

use std::collections::HashMap;

use walplayer_proto::control::ClusterPlan;
use walplayer_wal::walname::SegmentName;

/// The files of one cluster.
#[derive(Debug)]
enum Expected {
    /// Consecutive segments from `first`.
    Range {
        first: SegmentName,
        count: u64,
        segment_bytes: u64,
    },
    /// Named files.
    Names {
        names: Vec<String>,
        index: HashMap<String, usize>,
    },
}

impl Expected {
    fn of(plan: &ClusterPlan) -> Result<Expected, String> {
        if plan.wal_names.is_empty() && plan.count > 0 {
            let first = SegmentName::parse(&plan.first_segment)
                .ok_or_else(|| format!("plan of {} has no valid first segment", plan.cluster))?;
            if plan.segment_bytes == 0 {
                return Err(format!("plan of {} has no segment size", plan.cluster));
            }
            return Ok(Expected::Range {
                first,
                count: plan.count,
                segment_bytes: plan.segment_bytes,
            });
        }
        let index = plan
            .wal_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Ok(Expected::Names {
            names: plan.wal_names.clone(),
            index,
        })
    }

    fn len(&self) -> u64 {
        match self {
            Expected::Range { count, .. } => *count,
            Expected::Names { names, .. } => names.len() as u64,
        }
    }

    fn index_of(&self, wal: &str) -> Option<usize> {
        match self {
            Expected::Range {
                first,
                count,
                segment_bytes,
            } => {
                let name = SegmentName::parse(wal)?;
                if name.timeline != first.timeline {
                    return None;
                }
                let offset = name
                    .start_lsn(*segment_bytes)
                    .checked_sub(first.start_lsn(*segment_bytes))?;
                let i = offset / segment_bytes;
                (i < *count).then_some(i as usize)
            }
            Expected::Names { index, .. } => index.get(wal).copied(),
        }
    }

    fn name_at(&self, i: usize) -> String {
        match self {
            Expected::Range {
                first,
                segment_bytes,
                ..
            } => {
                let lsn = first.start_lsn(*segment_bytes) + i as u64 * segment_bytes;
                SegmentName::containing(first.timeline, lsn, *segment_bytes).to_string()
            }
            Expected::Names { names, .. } => names[i].clone(),
        }
    }
}

/// One cluster's plan and what was reported of it.
#[derive(Debug)]
struct ClusterTrack {
    agent: String,
    expected: Expected,
    seen: Vec<u64>,
    reported: u64,
}

/// How a reported file relates to the plan.
#[derive(Debug, PartialEq, Eq)]
pub enum Mark {
    First,
    Duplicate,
    Unplanned,
}

/// Files never reported by one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreported {
    pub agent: String,
    pub cluster: String,
    pub count: u64,
    /// The first few names, for the summary.
    pub first_names: Vec<String>,
}

/// The plans of every cluster of a run.
#[derive(Debug, Default)]
pub struct Tracker {
    clusters: HashMap<String, ClusterTrack>,
}

/// Most files one cluster may plan (its bitset is then 1.25 MB).
pub const MAX_PLANNED: u64 = 10_000_000;

/// How many unreported names a summary lists per cluster.
pub const NAMES_LISTED: usize = 20;

impl Tracker {
    /// Adds the plans an agent sent with Ready.
    pub fn plan(&mut self, agent: &str, plans: &[ClusterPlan]) -> Result<(), String> {
        for plan in plans {
            if let Some(other) = self.clusters.get(&plan.cluster) {
                return Err(format!(
                    "cluster {} is claimed by both {} and {agent}",
                    plan.cluster, other.agent
                ));
            }
            let expected = Expected::of(plan)?;
            if expected.len() > MAX_PLANNED {
                return Err(format!(
                    "agent {agent} plans {} files for cluster {}, more than the {MAX_PLANNED} a cluster may have",
                    expected.len(),
                    plan.cluster
                ));
            }
            let words = expected.len().div_ceil(64) as usize;
            self.clusters.insert(
                plan.cluster.clone(),
                ClusterTrack {
                    agent: agent.to_string(),
                    expected,
                    seen: vec![0; words],
                    reported: 0,
                },
            );
        }
        Ok(())
    }

    /// Files planned by every cluster.
    pub fn planned(&self) -> u64 {
        self.clusters.values().map(|t| t.expected.len()).sum()
    }

    /// Records one reported file of `agent`.
    pub fn mark(&mut self, agent: &str, cluster: &str, wal: &str) -> Mark {
        let Some(track) = self.clusters.get_mut(cluster).filter(|t| t.agent == agent) else {
            return Mark::Unplanned;
        };
        let Some(i) = track.expected.index_of(wal) else {
            return Mark::Unplanned;
        };
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if track.seen[word] & bit != 0 {
            return Mark::Duplicate;
        }
        track.seen[word] |= bit;
        track.reported += 1;
        Mark::First
    }

    /// Files planned but never reported, per cluster of `agent`.
    pub fn unreported(&self, agent: &str) -> Vec<Unreported> {
        let mut out: Vec<Unreported> = self
            .clusters
            .iter()
            .filter(|(_, t)| t.agent == agent && t.reported < t.expected.len())
            .map(|(cluster, t)| {
                let first_names = (0..t.expected.len() as usize)
                    .filter(|i| t.seen[i / 64] & (1 << (i % 64)) == 0)
                    .take(NAMES_LISTED)
                    .map(|i| t.expected.name_at(i))
                    .collect();
                Unreported {
                    agent: agent.to_string(),
                    cluster: cluster.clone(),
                    count: t.expected.len() - t.reported,
                    first_names,
                }
            })
            .collect();
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(cluster: &str, count: u64) -> ClusterPlan {
        ClusterPlan {
            cluster: cluster.into(),
            first_segment: "000000010000000000000000".into(),
            count,
            segment_bytes: 16 << 20,
            wal_names: vec![],
        }
    }

    #[test]
    fn marks_duplicates_and_names_the_unreported() {
        let mut t = Tracker::default();
        t.plan("a", &[range("c1", 300)]).unwrap();
        t.plan(
            "b",
            &[ClusterPlan {
                cluster: "c2".into(),
                wal_names: vec!["x1".into(), "x2".into()],
                ..Default::default()
            }],
        )
        .unwrap();
        assert!(t
            .plan("b", &[range("c1", 1)])
            .unwrap_err()
            .contains("claimed by both"));
        let e = t.plan("b", &[range("huge", u64::MAX)]).unwrap_err();
        assert!(e.contains("more than the 10000000"), "{e}");
        for i in 0..300u64 {
            if i != 257 {
                let name = SegmentName::containing(1, i * (16 << 20), 16 << 20).to_string();
                assert_eq!(t.mark("a", "c1", &name), Mark::First);
            }
        }
        assert_eq!(
            t.mark("a", "c1", "000000010000000000000000"),
            Mark::Duplicate
        );
        assert_eq!(
            t.mark("b", "c1", "000000010000000000000000"),
            Mark::Unplanned
        );
        assert_eq!(
            t.mark("a", "c1", "000000010000000300000000"),
            Mark::Unplanned
        );
        assert_eq!(t.mark("b", "c2", "x2"), Mark::First);
        let u = t.unreported("a");
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].count, 1);
        assert_eq!(u[0].first_names, ["000000010000000100000001"]);
        assert_eq!(t.unreported("b")[0].first_names, ["x1"]);
    }
}
