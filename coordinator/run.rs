//! The run loop: one task owns the whole state of a run and reacts to
//! session events and the clock. Registration → assignment → every agent
//! ready → start barrier → results → summary.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::plan;
use crate::service::{Downlink, Event};
use crate::summary::{AgentSummary, ClusterSummary, RunSummary, Tally};
use crate::track::{Mark, Tracker};
use crate::CoordinatorOptions;
use walplayer_klio::exit::Exit;
use walplayer_klio::output::open_output;
use walplayer_klio::progress::Progress;
use walplayer_klio::report::{unix_nanos, JsonLines};
use walplayer_klio::stats::{decode_histogram, new_histogram, Latency, Stats, Totals};
use walplayer_klio::wire;
use walplayer_proto::control::agent_message::Body as Up;
use walplayer_proto::control::coordinator_message::Body as Down;
use walplayer_proto::control::{
    Abort, CoordinatorMessage, FileResult, Finished, Ready, Refusal, Register, Start,
};

/// How long agents get to send what finished after an abort.
const ABORT_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Registered,
    Preparing,
    Ready,
    Running,
    Finished,
    Lost(String),
}

struct Agent {
    name: String,
    conn: u64,
    down: Option<Downlink>,
    state: State,
    last_seen: Instant,
    tally: Tally,
    latency: Option<Latency>,
    started_ns: Option<i64>,
}

impl Agent {
    fn send(&self, body: Down) {
        if let Some(down) = &self.down {
            // A full or closed downlink means the agent is gone or stuck;
            // the beat timeout deals with it.
            let _ = down.try_send(Ok(CoordinatorMessage { body: Some(body) }));
        }
    }

    fn active(&self) -> bool {
        !matches!(self.state, State::Finished | State::Lost(_))
    }

    fn lose(&mut self, why: String) {
        if self.active() {
            tracing::warn!("agent {} lost: {why}", self.name);
            self.state = State::Lost(why);
        }
        self.down = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registering,
    Preparing,
    Running,
}

struct ClusterEntry {
    agent: String,
    tally: Tally,
    latency: Option<Latency>,
}

/// How a run ended: its summary and exit status, and why if it stopped
/// before uploading.
pub struct RunOutcome {
    pub summary: RunSummary,
    pub exit: Exit,
    pub failure: Option<String>,
}

pub(crate) struct Run {
    opts: CoordinatorOptions,
    run_id: String,
    phase: Phase,
    agents: Vec<Agent>,
    /// Position in `agents` of each session, kept in step with it.
    by_conn: HashMap<u64, usize>,
    deadline: Instant,
    tracker: Tracker,
    received: Stats,
    merged: Histogram<u64>,
    clusters: HashMap<String, ClusterEntry>,
    /// Opened (emptying the previous run's file) when the barrier opens.
    output: Option<JsonLines<Box<dyn Write + Send>>>,
    write_error: Option<String>,
    progress: Box<dyn Progress>,
    failure: Option<(Exit, String)>,
    interrupted: Option<Instant>,
    started: Option<Instant>,
}

impl Run {
    pub(crate) fn new(opts: CoordinatorOptions, progress: Box<dyn Progress>) -> Run {
        let nanos = unix_nanos(SystemTime::now());
        Run {
            run_id: format!("run-{:x}", nanos / 1_000_000),
            phase: Phase::Registering,
            agents: Vec::new(),
            by_conn: HashMap::new(),
            deadline: Instant::now() + opts.register_timeout,
            tracker: Tracker::default(),
            received: Stats::default(),
            merged: new_histogram(),
            clusters: HashMap::new(),
            output: None,
            write_error: None,
            progress,
            failure: None,
            interrupted: None,
            started: None,
            opts,
        }
    }

    /// Drives the run to its end.
    pub(crate) async fn drive(
        mut self,
        mut events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> RunOutcome {
        tracing::info!(
            "run {}: waiting for {} agents",
            self.run_id,
            self.opts.agents
        );
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !self.done() {
            tokio::select! {
                event = events.recv() => match event {
                    Some(e) => self.handle(e),
                    None => break,
                },
                _ = tick.tick() => self.check_clock(),
                _ = shutdown.cancelled(), if self.interrupted.is_none() => self.interrupt(),
            }
        }
        self.finish()
    }

    fn done(&self) -> bool {
        if self.failure.is_some() && self.phase != Phase::Running {
            return true;
        }
        match self.phase {
            Phase::Running => self.agents.iter().all(|a| !a.active()),
            _ => self.interrupted.is_some(),
        }
    }

    fn index(&self, conn: u64) -> Option<usize> {
        self.by_conn.get(&conn).copied()
    }

    fn reindex(&mut self) {
        self.by_conn = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.conn, i))
            .collect();
    }

    fn broadcast_abort(&mut self, reason: &str) {
        for a in self.agents.iter().filter(|a| a.active()) {
            a.send(Down::Abort(Abort {
                reason: reason.to_string(),
            }));
        }
    }

    fn fail(&mut self, exit: Exit, reason: String) {
        tracing::error!("{reason}");
        self.broadcast_abort(&reason);
        if self.failure.is_none() {
            self.failure = Some((exit, reason));
        }
    }

    fn interrupt(&mut self) {
        tracing::warn!("interrupted: aborting the run on every agent");
        self.broadcast_abort("the coordinator was interrupted");
        self.interrupted = Some(Instant::now());
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Joined {
                conn,
                register,
                peer,
                down,
            } => self.join(conn, register, peer, down),
            Event::Message { conn, body } => {
                let Some(i) = self.index(conn) else { return };
                self.agents[i].last_seen = Instant::now();
                self.message(i, body);
            }
            Event::Left { conn, reason } => {
                let Some(i) = self.index(conn) else { return };
                match self.phase {
                    Phase::Registering => {
                        let a = self.agents.remove(i);
                        self.reindex();
                        tracing::info!("agent {} left before the run: {reason}", a.name);
                    }
                    Phase::Preparing if self.agents[i].active() => {
                        let name = self.agents[i].name.clone();
                        self.agents[i].lose(reason.clone());
                        self.fail(
                            Exit::Lost,
                            format!("agent {name} left before the start barrier: {reason}"),
                        );
                    }
                    _ => self.agents[i].lose(reason),
                }
            }
        }
    }

    fn refusal(&self, register: &Register) -> Option<String> {
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
        if self.agents.iter().any(|a| a.name == register.name) {
            return Some(format!(
                "an agent named {} is already registered: give every agent its own --name",
                register.name
            ));
        }
        if self.phase != Phase::Registering || self.failure.is_some() || self.interrupted.is_some()
        {
            return Some(format!(
                "run {} already has its {} agents and is past registration: agent {} may join the next run",
                self.run_id, self.opts.agents, register.name
            ));
        }
        None
    }

    fn join(&mut self, conn: u64, register: Register, peer: String, down: Downlink) {
        if let Some(reason) = self.refusal(&register) {
            tracing::warn!("refused agent {} from {peer}: {reason}", register.name);
            let _ = down.try_send(Ok(CoordinatorMessage {
                body: Some(Down::Refusal(Refusal { reason })),
            }));
            return;
        }
        self.agents.push(Agent {
            name: register.name.clone(),
            conn,
            down: Some(down),
            state: State::Registered,
            last_seen: Instant::now(),
            tally: Tally::default(),
            latency: None,
            started_ns: None,
        });
        self.by_conn.insert(conn, self.agents.len() - 1);
        tracing::info!(
            "agent {} registered from {peer} ({} of {})",
            register.name,
            self.agents.len(),
            self.opts.agents
        );
        if self.agents.len() == self.opts.agents {
            self.assign();
        }
    }

    fn assign(&mut self) {
        self.agents.sort_by(|a, b| a.name.cmp(&b.name));
        self.reindex();
        let assignments = plan::assignments(&self.run_id, self.agents.len(), &self.opts.workload);
        for (agent, assignment) in self.agents.iter_mut().zip(assignments) {
            agent.send(Down::Assignment(assignment));
            agent.state = State::Preparing;
        }
        self.phase = Phase::Preparing;
        self.deadline = Instant::now() + self.opts.ready_timeout;
        tracing::info!(
            "all {} agents registered; shards assigned, waiting for them to be ready",
            self.agents.len()
        );
    }

    fn message(&mut self, i: usize, body: Up) {
        match body {
            Up::Ready(ready) => self.ready(i, ready),
            Up::Failed(f) => {
                let name = self.agents[i].name.clone();
                self.agents[i].lose(format!("failed: {}", f.reason));
                self.fail(
                    Exit::Usage,
                    format!("agent {name} cannot run its assignment: {}", f.reason),
                );
            }
            Up::File(file) => self.file(i, file),
            Up::Beat(beat) => {
                if beat.started_unix_nanos > 0 && self.agents[i].started_ns.is_none() {
                    self.agents[i].started_ns = Some(beat.started_unix_nanos);
                }
            }
            Up::Finished(f) => self.finished(i, f),
            Up::Register(_) => {}
        }
    }

    fn ready(&mut self, i: usize, ready: Ready) {
        if self.agents[i].state != State::Preparing {
            return;
        }
        let name = self.agents[i].name.clone();
        if let Err(e) = self.tracker.plan(&name, &ready.clusters) {
            self.fail(
                Exit::Usage,
                format!("agent {name} sent an unusable plan: {e}"),
            );
            return;
        }
        for plan in &ready.clusters {
            self.clusters.insert(
                plan.cluster.clone(),
                ClusterEntry {
                    agent: name.clone(),
                    tally: Tally::default(),
                    latency: None,
                },
            );
        }
        self.progress.add_total(ready.files, ready.bytes);
        self.agents[i].state = State::Ready;
        tracing::info!("agent {name} ready: {} files", ready.files);
        if self.agents.iter().all(|a| a.state == State::Ready) {
            self.release_barrier();
        }
    }

    fn release_barrier(&mut self) {
        match open_output(self.opts.output.as_deref()) {
            Ok(out) => self.output = Some(JsonLines::new(out)),
            Err(e) => return self.fail(Exit::Usage, format!("{e:#}")),
        }
        let at = SystemTime::now() + self.opts.barrier_delay;
        let start = Start {
            start_unix_nanos: unix_nanos(at),
        };
        for a in &mut self.agents {
            a.send(Down::Start(start));
            a.state = State::Running;
            a.last_seen = Instant::now();
        }
        self.phase = Phase::Running;
        self.started = Some(Instant::now() + self.opts.barrier_delay);
        tracing::info!(
            "every agent is ready: start barrier released for {}",
            walplayer_klio::report::rfc3339(at)
        );
    }

    fn file(&mut self, i: usize, f: FileResult) {
        let name = self.agents[i].name.clone();
        match self.tracker.mark(&name, &f.cluster, &f.wal_name) {
            Mark::First => {}
            Mark::Duplicate => {
                tracing::warn!(
                    "agent {name} reported {}/{} twice; counted once",
                    f.cluster,
                    f.wal_name
                );
                return;
            }
            Mark::Unplanned => tracing::warn!(
                "agent {name} reported {}/{}, which was not in its plan",
                f.cluster,
                f.wal_name
            ),
        }
        let (start_ns, end_ns) = (f.start_unix_nanos, f.end_unix_nanos);
        let report = match wire::file_report(f, name.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("agent {name} sent an unusable result, not counted: {e}");
                return;
            }
        };
        if let (None, Some(output)) = (&self.write_error, self.output.as_mut()) {
            if let Err(e) = output.write(&report) {
                self.write_error = Some(format!("cannot write results: {e}"));
                self.fail(Exit::FilesFailed, format!("cannot write results: {e}"));
            }
        }
        self.received.record(&report);
        self.agents[i].tally.record(&report, start_ns, end_ns);
        if let Some(c) = self.clusters.get_mut(&report.cluster) {
            c.tally.record(&report, start_ns, end_ns);
        }
        self.progress.file_done(report.bytes, !report.ok());
    }

    fn finished(&mut self, i: usize, f: Finished) {
        let name = self.agents[i].name.clone();
        match decode_histogram(&f.histogram) {
            Ok(h) => {
                self.agents[i].latency = Some(Latency::of(&h));
                let _ = self.merged.add(&h);
            }
            Err(e) => tracing::warn!("agent {name} sent an unreadable histogram: {e}"),
        }
        for c in &f.clusters {
            if let (Some(entry), Ok(h)) = (
                self.clusters.get_mut(&c.cluster),
                decode_histogram(&c.histogram),
            ) {
                entry.latency = Some(Latency::of(&h));
            }
        }
        self.received.files_skipped += f.files_skipped;
        if self.agents[i].started_ns.is_none() && f.started_unix_nanos > 0 {
            self.agents[i].started_ns = Some(f.started_unix_nanos);
        }
        self.agents[i].state = State::Finished;
        // Closing the stream tells the agent it may go back to waiting.
        self.agents[i].down = None;
        tracing::info!("agent {name} finished");
    }

    fn check_clock(&mut self) {
        self.progress.tick();
        let now = Instant::now();
        if let Some(since) = self.interrupted {
            if now.duration_since(since) > ABORT_GRACE {
                for a in &mut self.agents {
                    a.lose("did not finish after the abort".into());
                }
            }
        }
        match self.phase {
            Phase::Registering if now > self.deadline && self.failure.is_none() => {
                let reason = self.missing_agents();
                self.fail(Exit::Lost, reason);
            }
            Phase::Preparing if now > self.deadline && self.failure.is_none() => {
                let slow: Vec<_> = self
                    .agents
                    .iter()
                    .filter(|a| a.state != State::Ready)
                    .map(|a| a.name.clone())
                    .collect();
                let reason = format!(
                    "agents not ready within {} (--ready-timeout): {}",
                    humantime::format_duration(self.opts.ready_timeout),
                    slow.join(", ")
                );
                self.fail(Exit::Lost, reason);
            }
            Phase::Running => {
                let limit = self.opts.agent_timeout;
                for a in self.agents.iter_mut().filter(|a| a.active()) {
                    if now.duration_since(a.last_seen) > limit {
                        a.lose(format!(
                            "no beat for {} (--agent-timeout)",
                            humantime::format_duration(limit)
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// Names who registered and, for StatefulSet-style names, who did not.
    fn missing_agents(&self) -> String {
        let names: Vec<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
        let mut text = format!(
            "only {} of {} agents registered within {} (--register-timeout); registered: {}",
            names.len(),
            self.opts.agents,
            humantime::format_duration(self.opts.register_timeout),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        let prefixes: Vec<Option<&str>> = names
            .iter()
            .map(|n| {
                n.rsplit_once('-')
                    .filter(|(_, i)| i.parse::<u32>().is_ok())
                    .map(|(p, _)| p)
            })
            .collect();
        if let Some(Some(prefix)) = prefixes.first() {
            if prefixes.iter().all(|p| p == &Some(*prefix)) {
                let missing: Vec<String> = (0..self.opts.agents)
                    .map(|i| format!("{prefix}-{i}"))
                    .filter(|n| !names.contains(&n.as_str()))
                    .collect();
                text.push_str(&format!(
                    "; missing (by StatefulSet ordinal): {}",
                    missing.join(", ")
                ));
            }
        }
        text
    }

    fn finish(mut self) -> RunOutcome {
        self.progress.finish();
        let wall = self
            .started
            .map(|s| Instant::now().saturating_duration_since(s))
            .unwrap_or_default();
        let lost = self
            .agents
            .iter()
            .any(|a| matches!(a.state, State::Lost(_)));
        let mut stats = self.received.clone();
        // Percentiles come from the agents' own histograms when every agent
        // sent one; they equal the received ones, which cover lost agents.
        if !lost && self.merged.len() == stats.latency.len() {
            stats.latency = self.merged.clone();
        } else if !lost && self.phase == Phase::Running {
            tracing::warn!(
                "agents' histograms hold {} files but {} results arrived; using the results",
                self.merged.len(),
                stats.latency.len()
            );
        }
        let totals = Totals::new(&stats, wall);
        let starts: Vec<i64> = self.agents.iter().filter_map(|a| a.started_ns).collect();
        let skew = match (starts.iter().min(), starts.iter().max()) {
            (Some(lo), Some(hi)) => (hi - lo) as u64,
            _ => 0,
        };
        let agents: Vec<AgentSummary> = self
            .agents
            .iter()
            .map(|a| {
                let state = match &a.state {
                    State::Lost(why) => format!("lost: {why}"),
                    State::Finished => "finished".to_string(),
                    other => format!("{other:?}").to_lowercase(),
                };
                let unreported = if self.phase == Phase::Running {
                    self.tracker.unreported(&a.name)
                } else {
                    Vec::new()
                };
                AgentSummary::new(&a.name, state, &a.tally, a.latency, unreported)
            })
            .collect();
        let mut clusters: Vec<ClusterSummary> = self
            .clusters
            .iter()
            .map(|(name, c)| ClusterSummary::new(name, &c.agent, &c.tally, c.latency))
            .collect();
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        let summary = RunSummary {
            totals,
            run_id: self.run_id.clone(),
            interrupted: self.interrupted.is_some(),
            files_unreported: agents.iter().map(|a| a.files_unreported).sum(),
            start_skew_ns: skew,
            agents,
            clusters,
        };
        let exit = match &self.failure {
            Some((exit, _)) => *exit,
            None if lost && self.interrupted.is_none() => Exit::Lost,
            None => Exit::of_run(summary.totals.files_failed, self.interrupted.is_some()),
        };
        // Dropping the downlinks closes every session: agents go back to
        // waiting for the next run.
        for a in &mut self.agents {
            a.down = None;
        }
        RunOutcome {
            summary,
            exit,
            failure: self.failure.map(|(_, why)| why),
        }
    }
}
