//! The roster: the agents of a run, indexed by their session, and the
//! rules of who may join, the shard assignment in name order, the start
//! barrier, aborts and losing agents.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::plan::{self, Workload};
use crate::service::Downlink;
use walplayer_proto::control::coordinator_message::Body as Down;
use walplayer_proto::control::{
    Abort, Assignment, CoordinatorMessage, EndSearch, Refusal, Register, Start,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Registered,
    Preparing,
    Ready,
    Running,
    Finished,
    Lost(String),
}

pub(crate) struct Agent {
    pub(crate) name: String,
    down: Option<Downlink>,
    pub(crate) state: State,
    last_seen: Instant,
    /// When the agent actually started, from its beats or Finished.
    started_ns: Option<i64>,
    /// What it was assigned; its Ready is checked against it.
    pub(crate) assignment: Option<Assignment>,
}

impl Agent {
    fn send(&self, body: Down) {
        if let Some(down) = &self.down {
            // A full or closed downlink means the agent is gone or stuck;
            // the beat timeout deals with it.
            let _ = down.try_send(Ok(CoordinatorMessage { body: Some(body) }));
        }
    }

    pub(crate) fn active(&self) -> bool {
        !matches!(self.state, State::Finished | State::Lost(_))
    }

    pub(crate) fn lose(&mut self, why: String) {
        if self.active() {
            tracing::warn!("agent {} lost: {why}", self.name);
            self.state = State::Lost(why);
        }
        self.down = None;
    }

    /// Notes the agent's start instant, if it reported one first.
    pub(crate) fn started_at(&mut self, unix_nanos: i64) {
        if unix_nanos > 0 && self.started_ns.is_none() {
            self.started_ns = Some(unix_nanos);
        }
    }

    /// The agent sent Finished; closing its stream tells it it may go back
    /// to waiting.
    pub(crate) fn finish(&mut self, started_unix_nanos: i64) {
        self.started_at(started_unix_nanos);
        self.state = State::Finished;
        self.down = None;
    }

    /// The state as the summary shows it.
    pub(crate) fn state_text(&self) -> String {
        match &self.state {
            State::Lost(why) => format!("lost: {why}"),
            State::Finished => "finished".to_string(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// Tells an agent it may not join, and why.
pub(crate) fn refuse(down: Downlink, reason: String) {
    let _ = down.try_send(Ok(CoordinatorMessage {
        body: Some(Down::Refusal(Refusal { reason })),
    }));
}

pub(crate) struct Roster {
    /// By session; sessions are numbered as they open, so this is the
    /// order agents registered in.
    agents: BTreeMap<u64, Agent>,
    /// How many agents the run waits for.
    wanted: usize,
    /// Shards were assigned: the agents are listed in name order.
    assigned: bool,
}

impl Roster {
    pub(crate) fn new(wanted: usize) -> Roster {
        Roster {
            agents: BTreeMap::new(),
            wanted,
            assigned: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.agents.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.agents.len() == self.wanted
    }

    pub(crate) fn get(&self, conn: u64) -> Option<&Agent> {
        self.agents.get(&conn)
    }

    pub(crate) fn get_mut(&mut self, conn: u64) -> Option<&mut Agent> {
        self.agents.get_mut(&conn)
    }

    /// Every agent's state, in no particular order.
    pub(crate) fn states(&self) -> impl Iterator<Item = &State> {
        self.agents.values().map(|a| &a.state)
    }

    /// The agents in registration order, or in name order once assigned.
    pub(crate) fn in_order(&self) -> Vec<&Agent> {
        let mut agents: Vec<&Agent> = self.agents.values().collect();
        if self.assigned {
            agents.sort_by(|a, b| a.name.cmp(&b.name));
        }
        agents
    }

    /// The agents that pass `keep`, in the order of [`Roster::in_order`].
    fn in_order_mut(&mut self, keep: impl Fn(&Agent) -> bool) -> Vec<&mut Agent> {
        let mut agents: Vec<&mut Agent> = self.agents.values_mut().filter(|a| keep(a)).collect();
        if self.assigned {
            agents.sort_by(|a, b| a.name.cmp(&b.name));
        }
        agents
    }

    /// Why `register` may not join, if it may not; `open` is whether the
    /// run still takes agents.
    pub(crate) fn refusal(&self, register: &Register, run_id: &str, open: bool) -> Option<String> {
        let ours = env!("CARGO_PKG_VERSION");
        if register.version != ours {
            return Some(format!(
                "agent {} runs walplayer {} but the coordinator runs {ours}: use the same version on both",
                register.name, register.version
            ));
        }
        if let Err(e) = walplayer_wal::walname::check_agent_name(&register.name) {
            return Some(e);
        }
        if self.agents.values().any(|a| a.name == register.name) {
            return Some(format!(
                "an agent named {} is already registered: give every agent its own --name",
                register.name
            ));
        }
        if !open {
            return Some(format!(
                "run {run_id} already has its {} agents and is past registration: agent {} may join the next run",
                self.wanted, register.name
            ));
        }
        None
    }

    /// Adds an agent that passed [`Roster::refusal`].
    pub(crate) fn add(&mut self, conn: u64, name: String, down: Downlink) {
        let agent = Agent {
            name,
            down: Some(down),
            state: State::Registered,
            last_seen: Instant::now(),
            started_ns: None,
            assignment: None,
        };
        self.agents.insert(conn, agent);
    }

    /// Removes an agent that left before the run.
    pub(crate) fn remove(&mut self, conn: u64) -> Option<Agent> {
        self.agents.remove(&conn)
    }

    /// Notes that an agent spoke; returns its name.
    pub(crate) fn seen(&mut self, conn: u64) -> Option<String> {
        let agent = self.agents.get_mut(&conn)?;
        agent.last_seen = Instant::now();
        Some(agent.name.clone())
    }

    /// Sends every agent its shard, in name order.
    pub(crate) fn assign(&mut self, run_id: &str, workload: &Workload) {
        self.assigned = true;
        let assignments = plan::assignments(run_id, self.agents.len(), workload);
        for (agent, assignment) in self.in_order_mut(|_| true).into_iter().zip(assignments) {
            agent.send(Down::Assignment(assignment.clone()));
            agent.assignment = Some(assignment);
            agent.state = State::Preparing;
        }
    }

    pub(crate) fn all_ready(&self) -> bool {
        self.agents.values().all(|a| a.state == State::Ready)
    }

    /// Names of the agents not ready yet.
    pub(crate) fn not_ready(&self) -> Vec<String> {
        self.in_order()
            .into_iter()
            .filter(|a| a.state != State::Ready)
            .map(|a| a.name.clone())
            .collect()
    }

    /// Opens the start barrier: every agent starts at `start`.
    pub(crate) fn release(&mut self, start: Start) {
        for a in self.in_order_mut(|_| true) {
            a.send(Down::Start(start));
            a.state = State::Running;
            a.last_seen = Instant::now();
        }
    }

    /// Ends a capacity search on every agent still running.
    pub(crate) fn end_search(&self, end: EndSearch) {
        for a in self.in_order().into_iter().filter(|a| a.active()) {
            a.send(Down::EndSearch(end.clone()));
        }
    }

    /// Names of the agents still running.
    pub(crate) fn running(&self) -> std::collections::BTreeSet<String> {
        self.agents
            .values()
            .filter(|a| a.active())
            .map(|a| a.name.clone())
            .collect()
    }

    pub(crate) fn abort(&self, reason: &str) {
        for a in self.in_order().into_iter().filter(|a| a.active()) {
            a.send(Down::Abort(Abort {
                reason: reason.to_string(),
            }));
        }
    }

    /// Whether no agent is still running (or about to).
    pub(crate) fn all_done(&self) -> bool {
        self.agents.values().all(|a| !a.active())
    }

    pub(crate) fn any_lost(&self) -> bool {
        self.agents
            .values()
            .any(|a| matches!(a.state, State::Lost(_)))
    }

    pub(crate) fn lose_all(&mut self, why: &str) {
        for a in self.in_order_mut(|_| true) {
            a.lose(why.to_string());
        }
    }

    /// Loses the running agents silent for longer than `limit`.
    pub(crate) fn lose_silent(&mut self, now: Instant, limit: Duration) {
        let silent = |a: &Agent| a.active() && now.duration_since(a.last_seen) > limit;
        for a in self.in_order_mut(silent) {
            a.lose(format!(
                "no beat for {} (--agent-timeout)",
                humantime::format_duration(limit)
            ));
        }
    }

    /// Drops every downlink, which closes every session: agents go back to
    /// waiting for the next run.
    pub(crate) fn close(&mut self) {
        for a in self.agents.values_mut() {
            a.down = None;
        }
    }

    /// Spread of the agents' actual start instants, in ns.
    pub(crate) fn start_skew(&self) -> u64 {
        let starts = self.agents.values().filter_map(|a| a.started_ns);
        match (starts.clone().min(), starts.max()) {
            (Some(lo), Some(hi)) => (hi - lo) as u64,
            _ => 0,
        }
    }

    /// Names who registered and, for StatefulSet-style names, who did not.
    pub(crate) fn missing(&self, register_timeout: Duration) -> String {
        let names: Vec<&str> = self.in_order().iter().map(|a| a.name.as_str()).collect();
        let mut text = format!(
            "only {} of {} agents registered within {} (--register-timeout); registered: {}",
            names.len(),
            self.wanted,
            humantime::format_duration(register_timeout),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        if let Some(prefix) = common_prefix(&names) {
            let missing: Vec<String> = (0..self.wanted)
                .map(|i| format!("{prefix}-{i}"))
                .filter(|n| !names.contains(&n.as_str()))
                .collect();
            text.push_str(&format!(
                "; missing (by StatefulSet ordinal): {}",
                missing.join(", ")
            ));
        }
        text
    }
}

/// The `PREFIX` every name has as `PREFIX-ORDINAL`, if they all share one.
fn common_prefix<'a>(names: &[&'a str]) -> Option<&'a str> {
    let prefixes: Vec<Option<&str>> = names
        .iter()
        .map(|n| {
            n.rsplit_once('-')
                .filter(|(_, i)| i.parse::<u32>().is_ok())
                .map(|(p, _)| p)
        })
        .collect();
    let first = (*prefixes.first()?)?;
    prefixes.iter().all(|p| p == &Some(first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Length;
    use tokio::sync::mpsc;
    use walplayer_klio::settings::{BlockSize, Jobs, UploadSettings};
    use walplayer_proto::control::{Source, Split};

    type Uplink = mpsc::Receiver<Result<CoordinatorMessage, tonic::Status>>;

    fn register(name: &str) -> Register {
        Register {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }

    fn join(roster: &mut Roster, conn: u64, name: &str) -> Uplink {
        let (down, rx) = mpsc::channel(8);
        assert_eq!(roster.refusal(&register(name), "r", true), None);
        roster.add(conn, name.into(), down);
        rx
    }

    fn names(roster: &Roster) -> Vec<&str> {
        roster.in_order().iter().map(|a| a.name.as_str()).collect()
    }

    fn workload() -> Workload {
        Workload {
            source: Source::Generate,
            length: Length::Total(6),
            wal_size_mib: 16,
            gzip: false,
            split: Split::Shard,
            clusters_per_agent: 1,
            jobs: Jobs::new(1, Jobs::MAX).unwrap(),
            upload: UploadSettings {
                block: BlockSize::DEFAULT,
                timeout: Duration::from_secs(1),
                retries: 0,
                verify: false,
            },
            address: None,
            simulate: None,
        }
    }

    #[test]
    fn refuses_other_versions_taken_names_and_late_agents() {
        let mut roster = Roster::new(2);
        let _a = join(&mut roster, 0, "a");
        let mut old = register("b");
        old.version = "0.0.1".into();
        let e = roster.refusal(&old, "r", true).unwrap();
        assert!(e.contains("runs walplayer 0.0.1"), "{e}");
        let e = roster.refusal(&register("a"), "r", true).unwrap();
        assert!(e.contains("already registered"), "{e}");
        let e = roster.refusal(&register("b"), "r", false).unwrap();
        assert!(e.contains("run r already has its 2 agents"), "{e}");
        assert!(roster.refusal(&register("bad/name"), "r", true).is_some());
    }

    #[test]
    fn lists_by_registration_then_assigns_in_name_order() {
        let mut roster = Roster::new(3);
        let mut c = join(&mut roster, 4, "c");
        let mut a = join(&mut roster, 7, "a");
        let mut b = join(&mut roster, 9, "b");
        assert_eq!(names(&roster), ["c", "a", "b"]);
        assert!(roster.is_full());
        roster.assign("r", &workload());
        assert_eq!(names(&roster), ["a", "b", "c"]);
        for (rx, index) in [(&mut a, 0), (&mut b, 1), (&mut c, 2)] {
            match rx.try_recv().unwrap().unwrap().body {
                Some(Down::Assignment(x)) => assert_eq!(x.agent_index, index),
                other => panic!("expected an assignment, got {other:?}"),
            }
        }
        assert_eq!(roster.get(9).unwrap().state, State::Preparing);
        assert_eq!(roster.not_ready(), ["a", "b", "c"]);
    }

    #[test]
    fn start_skew_spans_the_first_start_each_agent_reported() {
        let mut roster = Roster::new(2);
        let _a = join(&mut roster, 0, "a");
        let _b = join(&mut roster, 1, "b");
        assert_eq!(roster.start_skew(), 0);
        roster.get_mut(0).unwrap().started_at(1_000);
        roster.get_mut(0).unwrap().started_at(9_000);
        roster.get_mut(1).unwrap().finish(1_500);
        assert_eq!(roster.start_skew(), 500);
        assert_eq!(roster.get(1).unwrap().state_text(), "finished");
        assert!(!roster.all_done());
        roster.lose_all("gone");
        assert!(roster.all_done() && roster.any_lost());
        assert_eq!(roster.get(0).unwrap().state_text(), "lost: gone");
    }

    #[test]
    fn names_the_missing_statefulset_ordinals() {
        let mut roster = Roster::new(4);
        let _x = join(&mut roster, 0, "walplayer-agent-2");
        let _y = join(&mut roster, 1, "walplayer-agent-0");
        assert_eq!(
            roster.missing(Duration::from_secs(120)),
            "only 2 of 4 agents registered within 2m (--register-timeout); \
             registered: walplayer-agent-2, walplayer-agent-0; \
             missing (by StatefulSet ordinal): walplayer-agent-1, walplayer-agent-3"
        );
        let _z = join(&mut roster, 2, "other");
        assert!(!roster.missing(Duration::from_secs(1)).contains("missing"));
        assert_eq!(
            Roster::new(1).missing(Duration::from_secs(1)),
            "only 0 of 1 agents registered within 1s (--register-timeout); registered: none"
        );
    }
}
