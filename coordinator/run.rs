//! The run loop: one task owns the whole state of a run and reacts to
//! session events and the clock. Registration → assignment → every agent
//! ready → start barrier → results → summary.
//!
//! The loop holds the phase and the failure; the agents are in the
//! `Roster`, what they reported in `Results`, the deadlines in the
//! `Clock`.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::CoordinatorMetrics;
use crate::results::Results;
use crate::roster::{self, Roster, State};
use crate::search::Judge;
use crate::service::{Downlink, Event};
use crate::summary::RunSummary;
use crate::CoordinatorOptions;
use walplayer_klio::exit::Exit;
use walplayer_klio::progress::Progress;
use walplayer_klio::report::unix_nanos;
use walplayer_proto::control::agent_message::Body as Up;
use walplayer_proto::control::{
    EndSearch, FileResult, Finished, Ready, Register, Start, StepResult,
};
use walplayer_simulate::parts::Parts;

/// Protocol violations after which an agent is dropped.
pub const MAX_VIOLATIONS: u64 = 100;

/// The shortest default `--run-timeout`.
pub const MIN_RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Time the default `--run-timeout` allows per planned file.
pub const RUN_TIMEOUT_PER_FILE: Duration = Duration::from_secs(5);

/// The `--run-timeout` of a run of `files` files when none is given: the
/// longer of [`MIN_RUN_TIMEOUT`] and [`RUN_TIMEOUT_PER_FILE`] per file.
pub fn default_run_timeout(files: u64) -> Duration {
    let per_file = RUN_TIMEOUT_PER_FILE.saturating_mul(u32::try_from(files).unwrap_or(u32::MAX));
    MIN_RUN_TIMEOUT.max(per_file)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registering,
    Preparing,
    Running,
}

/// How a run ended: its summary and exit status, and why if it stopped
/// before uploading.
pub struct RunOutcome {
    pub summary: RunSummary,
    /// A cluster simulation's summary, which is then the run's document.
    pub simulation: Option<walplayer_simulate::summary::Summary>,
    pub exit: Exit,
    pub failure: Option<String>,
}

impl RunOutcome {
    /// The run's summary document: the simulation's, or the files'.
    pub fn document(&self) -> serde_json::Value {
        let doc = match &self.simulation {
            Some(s) => serde_json::to_value(s),
            None => serde_json::to_value(&self.summary),
        };
        doc.expect("a summary always serializes")
    }

    /// The text printed at the end of the run.
    pub fn text(&self) -> String {
        match &self.simulation {
            Some(s) => s.to_text(),
            None => self.summary.to_text(),
        }
    }
}

pub(crate) struct Run {
    opts: CoordinatorOptions,
    run_id: String,
    phase: Phase,
    roster: Roster,
    results: Results,
    clock: Clock,
    /// The run's `--run-timeout`, once the barrier opened.
    run_timeout: Duration,
    failure: Option<(Exit, String)>,
    metrics: CoordinatorMetrics,
    /// A distributed capacity search's judge.
    search: Option<Judge>,
}

impl Run {
    pub(crate) fn new(
        opts: CoordinatorOptions,
        progress: Box<dyn Progress>,
        metrics: CoordinatorMetrics,
    ) -> Run {
        let nanos = unix_nanos(SystemTime::now());
        let mut results = Results::new(progress, metrics.files.clone());
        if let Some(sim) = &opts.simulation {
            results.simulating(sim.seconds);
        }
        let search = opts.simulation.as_ref().and_then(|sim| {
            sim.search
                .map(|s| Judge::new(s, sim.slos.clone(), opts.agents))
        });
        Run {
            search,
            run_id: format!("run-{:x}", nanos / 1_000_000),
            phase: Phase::Registering,
            roster: Roster::new(opts.agents),
            results,
            clock: Clock::new(opts.register_timeout),
            run_timeout: Duration::ZERO,
            failure: None,
            opts,
            metrics,
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
                _ = tick.tick() => {
                    self.check_clock();
                    self.metrics.agents(&self.roster);
                }
                _ = shutdown.cancelled(), if !self.clock.interrupted() => self.interrupt(),
            }
        }
        self.metrics.agents(&self.roster);
        self.finish()
    }

    fn done(&self) -> bool {
        if self.failure.is_some() && self.phase != Phase::Running {
            return true;
        }
        match self.phase {
            Phase::Running => self.roster.all_done(),
            _ => self.clock.interrupted(),
        }
    }

    fn fail(&mut self, exit: Exit, reason: String) {
        tracing::error!("{reason}");
        self.roster.abort(&reason);
        if self.failure.is_none() {
            self.failure = Some((exit, reason));
        }
    }

    fn interrupt(&mut self) {
        tracing::warn!("interrupted: aborting the run on every agent");
        self.roster.abort("the coordinator was interrupted");
        self.clock.interrupt();
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
                if let Some(name) = self.roster.seen(conn) {
                    self.message(conn, name, body);
                }
            }
            Event::Left { conn, reason } => self.left(conn, reason),
        }
    }

    fn left(&mut self, conn: u64, reason: String) {
        let Some(agent) = self.roster.get_mut(conn) else {
            return;
        };
        match self.phase {
            Phase::Registering => {
                let name = agent.name.clone();
                self.roster.remove(conn);
                tracing::info!("agent {name} left before the run: {reason}");
            }
            Phase::Preparing if agent.active() => {
                let name = agent.name.clone();
                agent.lose(reason.clone());
                self.fail(
                    Exit::Lost,
                    format!("agent {name} left before the start barrier: {reason}"),
                );
            }
            _ => agent.lose(reason),
        }
    }

    fn join(&mut self, conn: u64, register: Register, peer: String, down: Downlink) {
        let open =
            self.phase == Phase::Registering && self.failure.is_none() && !self.clock.interrupted();
        if let Some(reason) = self.roster.refusal(&register, &self.run_id, open) {
            tracing::warn!("refused agent {} from {peer}: {reason}", register.name);
            return roster::refuse(down, reason);
        }
        self.roster.add(conn, register.name.clone(), down);
        tracing::info!(
            "agent {} registered from {peer} ({} of {})",
            register.name,
            self.roster.len(),
            self.opts.agents
        );
        if self.roster.is_full() {
            self.assign();
        }
    }

    fn assign(&mut self) {
        self.roster.assign(&self.run_id, &self.opts.workload);
        self.phase = Phase::Preparing;
        self.clock.ready_within(self.opts.ready_timeout);
        tracing::info!(
            "all {} agents registered; shards assigned, waiting for them to be ready",
            self.roster.len()
        );
    }

    fn message(&mut self, conn: u64, name: String, body: Up) {
        match body {
            Up::Ready(ready) => self.ready(conn, name, ready),
            Up::Failed(f) => {
                let reason = walplayer_klio::stats::bounded(&f.reason);
                if let Some(agent) = self.roster.get_mut(conn) {
                    agent.lose(format!("failed: {reason}"));
                }
                self.fail(
                    Exit::Usage,
                    format!("agent {name} cannot run its assignment: {reason}"),
                );
            }
            Up::File(file) => {
                self.file(&name, file);
                self.drop_if_hostile(conn, &name);
            }
            Up::Beat(beat) => {
                if let Some(agent) = self.roster.get_mut(conn) {
                    agent.started_at(beat.started_unix_nanos);
                }
            }
            Up::Finished(f) => {
                self.finished(conn, name.clone(), f);
                self.drop_if_hostile(conn, &name);
            }
            Up::Step(r) => {
                self.step(conn, &name, &r);
                self.drop_if_hostile(conn, &name);
            }
            Up::Register(_) => {}
        }
    }

    fn ready(&mut self, conn: u64, name: String, ready: Ready) {
        if self.roster.get(conn).map(|a| &a.state) != Some(&State::Preparing) {
            return;
        }
        let checked = match self.roster.get(conn).and_then(|a| a.assignment.as_ref()) {
            Some(a) => crate::plan::check_plans(&name, a, &ready.clusters),
            None => Err("no assignment was sent to it".to_string()),
        };
        if let Err(e) = checked.and_then(|()| self.results.plan(&name, &ready)) {
            self.fail(
                Exit::Usage,
                format!("agent {name} sent an unusable plan: {e}"),
            );
            return;
        }
        if let Some(agent) = self.roster.get_mut(conn) {
            agent.state = State::Ready;
        }
        tracing::info!("agent {name} ready: {} files", ready.files);
        if self.roster.all_ready() {
            self.release_barrier();
        }
    }

    fn release_barrier(&mut self) {
        if let Err(e) = self.results.open_output(self.opts.output.as_deref()) {
            return self.fail(Exit::Usage, format!("{e:#}"));
        }
        let at = SystemTime::now() + self.opts.barrier_delay;
        self.roster.release(Start {
            start_unix_nanos: unix_nanos(at),
        });
        self.phase = Phase::Running;
        let limit = self.opts.run_timeout.unwrap_or_else(|| {
            let files = default_run_timeout(self.results.planned());
            // A simulation runs for its duration whatever it plans.
            let simulated = self.opts.simulation.as_ref().map_or(Duration::ZERO, |s| {
                Duration::from_secs(s.seconds) + MIN_RUN_TIMEOUT
            });
            files.max(simulated)
        });
        self.run_timeout = limit;
        self.clock.start_after(self.opts.barrier_delay, limit);
        if let Some(started) = self.clock.started() {
            self.results.start_at(unix_nanos(at), started);
        }
        tracing::info!(
            "every agent is ready: start barrier released for {}",
            walplayer_klio::report::rfc3339(at)
        );
    }

    /// One step of a capacity search from one agent; judges what every
    /// running agent has sent, and ends the search when a step says so.
    fn step(&mut self, conn: u64, name: &str, r: &StepResult) {
        let running = self
            .roster
            .get(conn)
            .is_some_and(|a| a.state == State::Running);
        let index = self
            .roster
            .get(conn)
            .and_then(|a| a.assignment.as_ref())
            .map(|a| u64::from(a.agent_index));
        let (Some(judge), Some(index), true) = (self.search.as_mut(), index, running) else {
            return self
                .results
                .violation(name, "sent a step result outside a running search");
        };
        if let Err(e) = judge.take(name, index, r) {
            return self.results.violation(name, &e);
        }
        self.judge();
    }

    /// Judges the steps every running agent sent; ends the search on
    /// every agent once it is over.
    fn judge(&mut self) {
        let running = self.roster.running();
        let Some(judge) = self.search.as_mut() else {
            return;
        };
        if let Some(reason) = judge.judge(&running) {
            tracing::info!("capacity search over: {reason}");
            self.roster.end_search(EndSearch {
                last_step: judge.judged(),
                reason,
            });
        }
    }

    fn file(&mut self, name: &str, f: FileResult) {
        if let Some(why) = self.results.file(name, f) {
            self.fail(Exit::FilesFailed, why);
        }
    }

    /// Drops an agent once it broke the protocol [`MAX_VIOLATIONS`] times.
    fn drop_if_hostile(&mut self, conn: u64, name: &str) {
        let n = self.results.violations(name);
        if n < MAX_VIOLATIONS {
            return;
        }
        if let Some(agent) = self.roster.get_mut(conn).filter(|a| a.active()) {
            agent.lose(format!("dropped after {n} protocol violations"));
        }
    }

    fn finished(&mut self, conn: u64, name: String, f: Finished) {
        // Once per run: a second Finished (or one before the start) would
        // count its skipped files again.
        let state = self.roster.get(conn).map(|a| &a.state);
        if !matches!(state, Some(State::Running | State::Lost(_))) {
            let state = self.roster.get(conn).map(|a| a.state_text());
            self.results.violation(
                &name,
                &format!(
                    "sent Finished while {}",
                    state.unwrap_or_else(|| "unknown".into())
                ),
            );
            return;
        }
        self.results.finished(&name, &f);
        if let Some(agent) = self.roster.get_mut(conn) {
            agent.finish(f.started_unix_nanos);
        }
        tracing::info!("agent {name} finished");
    }

    fn check_clock(&mut self) {
        self.results.tick();
        let now = Instant::now();
        if self.clock.grace_over(now) {
            self.roster.lose_all("did not finish after the abort");
        }
        let late = self.clock.past_deadline(now) && self.failure.is_none();
        match self.phase {
            Phase::Registering if late => {
                let reason = self.roster.missing(self.opts.register_timeout);
                self.fail(Exit::Lost, reason);
            }
            Phase::Preparing if late => {
                let reason = format!(
                    "agents not ready within {} (--ready-timeout): {}",
                    humantime::format_duration(self.opts.ready_timeout),
                    self.roster.not_ready().join(", ")
                );
                self.fail(Exit::Lost, reason);
            }
            Phase::Running if self.clock.past_run_deadline(now) => {
                self.roster.lose_all(&format!(
                    "did not finish within {} of the start (--run-timeout)",
                    humantime::format_duration(self.run_timeout)
                ));
            }
            Phase::Running => {
                self.roster.lose_silent(now, self.opts.agent_timeout);
                // A lost agent no longer holds the search's judging back.
                self.judge();
            }
            _ => {}
        }
    }

    fn finish(mut self) -> RunOutcome {
        self.results.finish_progress();
        let wall = self.clock.wall();
        let ran = self.phase == Phase::Running;
        let lost = self.roster.any_lost();
        let interrupted = self.clock.interrupted();
        let mut agents: Vec<_> = self
            .roster
            .in_order()
            .into_iter()
            .map(|a| self.results.agent_summary(&a.name, a.state_text(), ran))
            .collect();
        if self.search.is_some() {
            // A search plans every segment up to --max-clusters; where it
            // stopped leaves the rest unmade, not unreported.
            for a in &mut agents {
                a.files_unreported = 0;
                a.unreported.clear();
            }
        }
        let summary = RunSummary {
            mode: "distributed",
            totals: self.results.totals(wall, lost, ran),
            run_id: self.run_id.clone(),
            interrupted,
            files_unreported: agents.iter().map(|a| a.files_unreported).sum(),
            start_skew_ns: self.roster.start_skew(),
            agents,
            clusters: self.results.cluster_summaries(),
            address: self.opts.workload.address.clone(),
            jobs_per_agent: self.opts.workload.jobs.get(),
            block_size_kib: self.opts.workload.upload.block.kib(),
            clusters_per_agent: self.opts.workload.clusters_per_agent,
            timeline: self.results.timeline(wall, ran),
            latency_histogram: self.results.latency_histogram(lost),
        };
        let simulation = self.opts.simulation.as_ref().map(|sim| {
            let parts = self
                .results
                .simulated()
                .cloned()
                .unwrap_or_else(Parts::empty);
            let address = self
                .opts
                .workload
                .address
                .as_deref()
                .unwrap_or("each agent's own");
            let mut s = walplayer_simulate::summary::Summary::from_parts(
                parts,
                sim.doc.clone(),
                &sim.slos,
                address,
                wall.as_secs_f64(),
            );
            s.interrupted = interrupted;
            if let Some(judge) = &self.search {
                // The objectives are judged per step; the verdict is the
                // search's, and stopping it leaves segments unanswered by
                // design.
                s.slos.clear();
                s.slo_pass = true;
                s.search = Some(judge.doc());
            }
            s.distributed = Some(serde_json::json!({
                "runId": summary.run_id,
                "startSkewNs": summary.start_skew_ns,
                "segmentsUnreported": summary.files_unreported,
                "agents": summary.agents,
            }));
            s
        });
        let exit = match (&self.failure, &simulation) {
            (Some((exit, _)), _) => *exit,
            (None, _) if lost && !interrupted => Exit::Lost,
            (None, Some(s)) => s.exit(),
            (None, None) => Exit::of_run(summary.totals.files_failed, interrupted),
        };
        self.roster.close();
        RunOutcome {
            summary,
            simulation,
            exit,
            failure: self.failure.map(|(_, why)| why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_run_timeout_is_30m_or_5s_per_file() {
        assert_eq!(default_run_timeout(0), MIN_RUN_TIMEOUT);
        assert_eq!(default_run_timeout(360), MIN_RUN_TIMEOUT);
        assert_eq!(default_run_timeout(1_000), Duration::from_secs(5_000));
        assert!(default_run_timeout(u64::MAX) >= Duration::from_secs(5 * u32::MAX as u64));
    }
}
