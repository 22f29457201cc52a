//! A distributed capacity search from the coordinator's side: each agent
//! runs its even share of every step in lock-step from the start instant
//! and sends what the step measured; once every running agent has sent a
//! step, the step's windows are added up and judged against the
//! objectives, in step order. The first step that breaks one, or the one
//! that reaches `--max-clusters`, ends the search.

use std::collections::{BTreeMap, BTreeSet};

use walplayer_proto::control::StepResult;
use walplayer_simulate::slo::Slo;
use walplayer_simulate::step::{self, StepWindow};
use walplayer_simulate::summary::{SearchDoc, StepRow};
use walplayer_simulate::workload::Search;

/// Steps an agent may report ahead of the first one not yet judged (one
/// waiting for a slower agent); more is a protocol violation, so what the
/// coordinator holds stays bounded.
pub const MAX_STEPS_AHEAD: u32 = 8;

/// The search's state: steps reported but not judged yet, and the table
/// of judged ones.
pub(crate) struct Judge {
    search: Search,
    slos: Vec<Slo>,
    agents: u64,
    /// Steps up to `max_clusters`.
    steps: u32,
    /// The first step not judged yet.
    next: u32,
    /// Per step not judged: who sent it and the windows added so far.
    pending: BTreeMap<u32, (BTreeSet<String>, StepWindow)>,
    rows: Vec<StepRow>,
    max_clusters: Option<u64>,
    /// Why the search is over, once it is.
    over: Option<String>,
}

impl Judge {
    pub(crate) fn new(search: Search, slos: Vec<Slo>, agents: usize) -> Judge {
        Judge {
            search,
            slos,
            agents: agents as u64,
            steps: search.steps(),
            next: 0,
            pending: BTreeMap::new(),
            rows: Vec::new(),
            max_clusters: None,
            over: None,
        }
    }

    /// Takes what agent `name` (number `index` of the run) measured in a
    /// step; an error says which rule the result broke (nothing of it is
    /// kept). Results after the search ended are dropped.
    pub(crate) fn take(&mut self, name: &str, index: u64, r: &StepResult) -> Result<(), String> {
        if self.over.is_some() {
            return Ok(());
        }
        if r.step >= self.steps {
            return Err(format!(
                "sent step {} of a search of {} steps",
                r.step, self.steps
            ));
        }
        if r.step < self.next {
            return Err(format!("sent step {} again, after it was judged", r.step));
        }
        if r.step - self.next >= MAX_STEPS_AHEAD {
            return Err(format!(
                "sent step {} while step {} is not judged yet (at most {MAX_STEPS_AHEAD} ahead)",
                r.step, self.next
            ));
        }
        let share = step::share(self.search.clusters_in_step(r.step), self.agents, index);
        let window = StepWindow::from_wire(r, share, self.search.step_duration * 2)?;
        let (from, sum) = self
            .pending
            .entry(r.step)
            .or_insert_with(|| (BTreeSet::new(), StepWindow::empty()));
        if !from.insert(name.to_string()) {
            return Err(format!("sent step {} twice", r.step));
        }
        sum.add(&window);
        Ok(())
    }

    /// Judges, in order, every step that all of `running` have sent.
    /// Returns why the search is over when that just happened.
    pub(crate) fn judge(&mut self, running: &BTreeSet<String>) -> Option<String> {
        while self.over.is_none() {
            let Some((from, _)) = self.pending.get(&self.next) else {
                break;
            };
            if !running.is_subset(from) {
                break;
            }
            let (_, window) = self.pending.remove(&self.next).expect("just found");
            let row = window.row(&self.slos);
            walplayer_simulate::drive::log_step(&row);
            let total = self.search.clusters_in_step(self.next);
            let pass = row.pass;
            self.rows.push(row);
            self.next += 1;
            if !pass {
                self.over = Some(format!(
                    "step {} of {total} clusters broke an objective",
                    self.next
                ));
            } else {
                self.max_clusters = Some(total);
                if self.next >= self.steps {
                    tracing::warn!(
                        "reached --max-clusters {} with every SLO met",
                        self.search.max_clusters
                    );
                    self.over = Some(format!(
                        "--max-clusters {} reached with every objective met",
                        self.search.max_clusters
                    ));
                }
            }
            if let Some(why) = &self.over {
                return Some(why.clone());
            }
        }
        None
    }

    /// The last step judged (0 before any).
    pub(crate) fn judged(&self) -> u32 {
        self.next.saturating_sub(1)
    }

    /// What the search found.
    pub(crate) fn doc(&self) -> SearchDoc {
        SearchDoc {
            max_clusters: self.max_clusters,
            steps: self.rows.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn judge() -> Judge {
        let search = Search {
            step: 3,
            step_duration: Duration::from_secs(4),
            max_clusters: 9,
        };
        Judge::new(search, vec!["lag.p99<500ms".parse().unwrap()], 2)
    }

    fn result(step: u32, clusters: u64, lag_ms: u64) -> StepResult {
        let mut w = StepWindow::empty();
        w.clusters = clusters;
        w.window = Duration::from_secs(4);
        w.lag.record(lag_ms * 1_000_000).unwrap();
        w.to_wire(step)
    }

    fn both() -> BTreeSet<String> {
        ["a".to_string(), "b".to_string()].into()
    }

    #[test]
    fn steps_are_judged_in_order_once_every_agent_sent_them() {
        let mut j = judge();
        // Step 0 runs 3 clusters: 2 on agent 0, 1 on agent 1.
        j.take("a", 0, &result(0, 2, 10)).unwrap();
        j.take("a", 0, &result(1, 3, 10)).unwrap();
        assert_eq!(j.judge(&both()), None);
        assert!(j.doc().steps.is_empty(), "b has not sent step 0");
        j.take("b", 1, &result(0, 1, 10)).unwrap();
        assert_eq!(j.judge(&both()), None);
        assert_eq!(j.doc().max_clusters, Some(3));
        j.take("b", 1, &result(1, 3, 900)).unwrap();
        let over = j.judge(&both()).expect("step 2 breaks lag.p99");
        assert!(over.contains("6 clusters"), "{over}");
        let doc = j.doc();
        assert_eq!(doc.max_clusters, Some(3));
        assert_eq!(doc.steps.len(), 2);
        assert_eq!(doc.steps[1].clusters, 6);
        assert!(!doc.steps[1].pass);
        // Anything later is dropped, not judged.
        j.take("a", 0, &result(2, 5, 10)).unwrap();
        assert_eq!(j.judge(&both()), None);
        assert_eq!(j.doc().steps.len(), 2);
    }

    #[test]
    fn the_search_ends_at_max_clusters() {
        let mut j = judge();
        for k in 0..3 {
            j.take("a", 0, &result(k, 1, 10)).unwrap();
            let over = j.judge(&["a".to_string()].into());
            assert_eq!(over.is_some(), k == 2, "step {k}");
        }
        assert_eq!(j.doc().max_clusters, Some(9));
    }

    #[test]
    fn a_lost_agent_no_longer_holds_the_judging_back() {
        let mut j = judge();
        j.take("a", 0, &result(0, 2, 10)).unwrap();
        assert_eq!(j.judge(&both()), None);
        assert_eq!(j.judge(&["a".to_string()].into()), None);
        assert_eq!(j.doc().steps.len(), 1);
    }

    #[test]
    fn lies_and_repeats_are_refused() {
        let mut j = judge();
        let e = j.take("a", 0, &result(3, 1, 10)).unwrap_err();
        assert!(e.contains("a search of 3 steps"), "{e}");
        let e = j.take("a", 0, &result(0, 3, 10)).unwrap_err();
        assert!(e.contains("more than its share of 2"), "{e}");
        j.take("a", 0, &result(0, 2, 10)).unwrap();
        let e = j.take("a", 0, &result(0, 2, 10)).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        j.take("b", 1, &result(0, 1, 10)).unwrap();
        j.judge(&both());
        let e = j.take("b", 1, &result(0, 1, 10)).unwrap_err();
        assert!(e.contains("after it was judged"), "{e}");
    }
}
