//! Results of a run: the files each agent planned and reported, the
//! counts per agent and per cluster, the merged histogram, the JSON lines
//! output and the progress display, and the summary built from them.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::summary::{AgentSummary, ClusterSummary, Tally};
use crate::track::{Mark, Tracker};
use walplayer_klio::buckets::{self, Bucket};
use walplayer_klio::metrics::ClientMetrics;
use walplayer_klio::output::open_output;
use walplayer_klio::progress::Progress;
use walplayer_klio::report::JsonLines;
use walplayer_klio::stats::{bounded, decode_histogram, new_histogram, Latency, Stats, Totals};
use walplayer_klio::timeline::{second_of, Timeline};
use walplayer_klio::wire;
use walplayer_proto::control::{FileResult, Finished, Ready, SimulationResult};
use walplayer_simulate::parts::Parts;

/// The counts of one agent or cluster, and its latency once it finished.
#[derive(Default)]
struct Counts {
    tally: Tally,
    latency: Option<Latency>,
    /// Messages that broke the protocol: results for files never assigned
    /// to the agent, histograms of clusters it does not own, impossible
    /// counts. None of them is counted.
    violations: u64,
}

/// Most files an agent may report skipped: as many as a cluster may plan.
const MAX_SKIPPED: u64 = crate::track::MAX_PLANNED;

struct ClusterEntry {
    agent: String,
    counts: Counts,
}

pub(crate) struct Results {
    tracker: Tracker,
    received: Stats,
    /// The agents' own histograms, merged as they finish.
    merged: Histogram<u64>,
    agents: HashMap<String, Counts>,
    clusters: HashMap<String, ClusterEntry>,
    /// Opened (emptying the previous run's file) when the barrier opens.
    output: Option<JsonLines<Box<dyn Write + Send>>>,
    write_error: Option<String>,
    progress: Box<dyn Progress>,
    /// The run second by second, once the start instant is known.
    timeline: Timeline,
    /// The start instant, in Unix nanoseconds (0 before the barrier).
    start_unix_nanos: i64,
    /// The same instant on this process's monotonic clock, which the run's
    /// wall time is measured on.
    started: Option<Instant>,
    /// Every counted file is also counted here, for `/metrics`.
    metrics: ClientMetrics,
    /// A simulation's results merged as agents finish: the longest
    /// timeline an agent may send, and what they measured.
    simulation_seconds: u64,
    simulated: Option<Parts>,
}

impl Results {
    pub(crate) fn new(progress: Box<dyn Progress>, metrics: ClientMetrics) -> Results {
        Results {
            tracker: Tracker::default(),
            received: Stats::default(),
            merged: new_histogram(),
            agents: HashMap::new(),
            clusters: HashMap::new(),
            output: None,
            write_error: None,
            progress,
            timeline: Timeline::default(),
            start_unix_nanos: 0,
            started: None,
            metrics,
            simulation_seconds: 0,
            simulated: None,
        }
    }

    /// A simulation: agents' timelines may be up to `seconds` long.
    pub(crate) fn simulating(&mut self, seconds: u64) {
        self.simulation_seconds = seconds;
    }

    /// What the agents' simulations measured, merged; `None` if none sent
    /// its results.
    pub(crate) fn simulated(&self) -> Option<&Parts> {
        self.simulated.as_ref()
    }

    /// Takes what `agent`'s simulation measured, checked against the
    /// clusters it planned.
    fn simulation(&mut self, agent: &str, r: &SimulationResult) {
        let owned = self.clusters.values().filter(|c| c.agent == agent).count() as u64;
        let clusters = &self.clusters;
        let owns = |name: &str| clusters.get(name).is_some_and(|c| c.agent == agent);
        match walplayer_simulate::wire::parts_of(r.clone(), owned, self.simulation_seconds, owns) {
            Ok(parts) => match &mut self.simulated {
                Some(all) => all.merge(&parts),
                None => self.simulated = Some(parts),
            },
            Err(e) => self.violation(agent, &format!("sent unusable simulation results: {e}")),
        }
    }

    /// The barrier opened: seconds count from the start instant, given in
    /// Unix nanoseconds (as agents report end times) and as an `Instant`.
    pub(crate) fn start_at(&mut self, start_unix_nanos: i64, started: Instant) {
        self.start_unix_nanos = start_unix_nanos;
        self.started = Some(started);
    }

    /// The second of the run a file that ended at `end_ns` (an agent's
    /// clock) belongs to: not before the first, and not after the one now
    /// on this clock, so a wrong or lying clock cannot make it grow.
    fn second_of_end(&self, end_ns: i64) -> u64 {
        let since = end_ns.saturating_sub(self.start_unix_nanos).max(0) as u64;
        let now = self.started.map_or(Duration::ZERO, |s| s.elapsed());
        second_of(Duration::from_nanos(since)).min(second_of(now))
    }

    /// Takes the plan `agent` sent with Ready.
    pub(crate) fn plan(&mut self, agent: &str, ready: &Ready) -> Result<(), String> {
        self.tracker.plan(agent, &ready.clusters)?;
        for plan in &ready.clusters {
            let entry = ClusterEntry {
                agent: agent.to_string(),
                counts: Counts::default(),
            };
            self.clusters.insert(plan.cluster.clone(), entry);
        }
        self.progress.add_total(ready.files, ready.bytes);
        Ok(())
    }

    /// Opens the JSON lines output, emptying the previous run's file.
    pub(crate) fn open_output(&mut self, path: Option<&Path>) -> anyhow::Result<()> {
        self.output = Some(JsonLines::new(open_output(path)?));
        Ok(())
    }

    /// Counts one file `agent` reported; returns the error that makes the
    /// run fail, if writing the output just failed.
    pub(crate) fn file(&mut self, agent: &str, f: FileResult) -> Option<String> {
        if !self.counts(agent, &f) {
            return None;
        }
        let (start_ns, end_ns) = (f.start_unix_nanos, f.end_unix_nanos);
        let report = match wire::file_report(f, agent.to_string()) {
            Ok(r) => r,
            Err(e) => {
                self.violation(agent, &format!("sent an unusable result: {e}"));
                return None;
            }
        };
        let failed = self.write(&report);
        self.received.record(&report);
        let t = self.second_of_end(end_ns);
        let stored = report.ok().then_some(report.bytes);
        self.timeline.sent(t, stored.unwrap_or(0));
        self.timeline.finished(t, stored, report.elapsed_ns());
        self.metrics.file(&report);
        let counts = self.agents.entry(agent.to_string()).or_default();
        counts.tally.record(&report, start_ns, end_ns);
        if let Some(c) = self.clusters.get_mut(&report.cluster) {
            c.counts.tally.record(&report, start_ns, end_ns);
        }
        self.progress.file_done(report.bytes, !report.ok());
        failed
    }

    /// Whether a reported file counts: not when it was reported before.
    fn counts(&mut self, agent: &str, f: &FileResult) -> bool {
        match self.tracker.mark(agent, &f.cluster, &f.wal_name) {
            Mark::First => true,
            Mark::Duplicate => {
                tracing::warn!(
                    "agent {agent} reported {}/{} twice; counted once",
                    f.cluster,
                    f.wal_name
                );
                false
            }
            Mark::Unplanned => {
                self.violation(
                    agent,
                    &format!(
                        "reported {}/{}, which was not assigned to it",
                        bounded(&f.cluster),
                        bounded(&f.wal_name)
                    ),
                );
                false
            }
        }
    }

    /// Files planned by every agent.
    pub(crate) fn planned(&self) -> u64 {
        self.tracker.planned()
    }

    /// Counts a protocol violation of `agent`; nothing of it is counted.
    pub(crate) fn violation(&mut self, agent: &str, what: &str) {
        let counts = self.agents.entry(agent.to_string()).or_default();
        counts.violations += 1;
        tracing::warn!(
            "protocol violation {} of agent {agent}, not counted: {what}",
            counts.violations
        );
    }

    /// Protocol violations of `agent` so far.
    pub(crate) fn violations(&self, agent: &str) -> u64 {
        self.agents.get(agent).map_or(0, |c| c.violations)
    }

    /// Writes a JSON line unless writing failed before; returns a new
    /// write error.
    fn write(&mut self, report: &walplayer_klio::report::FileReport) -> Option<String> {
        let (None, Some(output)) = (&self.write_error, self.output.as_mut()) else {
            return None;
        };
        let e = output.write(report).err()?;
        let why = format!("cannot write results: {e}");
        self.write_error = Some(why.clone());
        Some(why)
    }

    /// Takes the histograms and skipped count `agent` sent with Finished.
    pub(crate) fn finished(&mut self, agent: &str, f: &Finished) {
        if let Some(sim) = &f.simulation {
            self.simulation(agent, sim);
        }
        match decode_histogram(&f.histogram) {
            Ok(h) => {
                self.agents.entry(agent.to_string()).or_default().latency = Some(Latency::of(&h));
                let _ = self.merged.add(&h);
            }
            Err(e) => tracing::warn!("agent {agent} sent an unreadable histogram: {e}"),
        }
        for c in &f.clusters {
            let Some(entry) = self
                .clusters
                .get_mut(&c.cluster)
                .filter(|e| e.agent == agent)
            else {
                self.violation(
                    agent,
                    &format!(
                        "sent the histogram of cluster {}, which is not its own",
                        bounded(&c.cluster)
                    ),
                );
                continue;
            };
            if let Ok(h) = decode_histogram(&c.histogram) {
                entry.counts.latency = Some(Latency::of(&h));
            }
        }
        if f.files_skipped > MAX_SKIPPED {
            self.violation(
                agent,
                &format!(
                    "reported {} files skipped, more than the {MAX_SKIPPED} an agent may have",
                    f.files_skipped
                ),
            );
        } else {
            self.received.files_skipped += f.files_skipped;
        }
    }

    pub(crate) fn tick(&mut self) {
        self.progress.tick();
    }

    pub(crate) fn finish_progress(&mut self) {
        self.progress.finish();
    }

    /// The run's totals over `wall`. `lost`: some agent was lost; `ran`:
    /// the barrier opened.
    pub(crate) fn totals(&self, wall: Duration, lost: bool, ran: bool) -> Totals {
        let mut stats = self.received.clone();
        stats.latency = self.latency(lost, ran).clone();
        Totals::new(&stats, wall)
    }

    /// The histogram of per-file time: the agents' own when every agent
    /// sent one (they equal the received ones), else the results received,
    /// which cover lost agents.
    fn latency(&self, lost: bool, ran: bool) -> &Histogram<u64> {
        let received = &self.received.latency;
        if !lost && self.merged.len() == received.len() {
            return &self.merged;
        }
        if !lost && ran {
            tracing::warn!(
                "agents' histograms hold {} files but {} results arrived; using the results",
                self.merged.len(),
                received.len()
            );
        }
        received
    }

    /// The summary's `latencyHistogram`, of the histogram [`Results::totals`]
    /// takes its percentiles from.
    pub(crate) fn latency_histogram(&self, lost: bool) -> Vec<Bucket> {
        // `ran` only decides a warning, given once by `totals`.
        buckets::of_histogram(self.latency(lost, false))
    }

    /// The timeline, covering every second up to `wall` after the start
    /// (none if the run never started).
    pub(crate) fn timeline(
        &self,
        wall: Duration,
        ran: bool,
    ) -> Vec<walplayer_klio::timeline::Point> {
        if !ran {
            return Vec::new();
        }
        let mut timeline = self.timeline.clone();
        timeline.extend_to(second_of(wall));
        timeline.points()
    }

    /// One agent's line; the files it never reported count only if the
    /// run started (`ran`).
    pub(crate) fn agent_summary(&self, agent: &str, state: String, ran: bool) -> AgentSummary {
        let unreported = if ran {
            self.tracker.unreported(agent)
        } else {
            Vec::new()
        };
        let none = Counts::default();
        let c = self.agents.get(agent).unwrap_or(&none);
        AgentSummary::new(agent, state, &c.tally, c.latency, unreported, c.violations)
    }

    /// Every cluster's line, by name.
    pub(crate) fn cluster_summaries(&self) -> Vec<ClusterSummary> {
        let mut clusters: Vec<ClusterSummary> = self
            .clusters
            .iter()
            .map(|(name, c)| ClusterSummary::new(name, &c.agent, &c.counts.tally, c.counts.latency))
            .collect();
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        clusters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walplayer_klio::progress::Silent;

    /// An agent's end times place its files in the run's seconds, but a
    /// clock far ahead or behind cannot grow the timeline past the run.
    #[test]
    fn a_file_lands_in_its_second_and_no_later_than_now() {
        let mut r = Results::new(Box::new(Silent), ClientMetrics::unregistered());
        let start_ns = 1_700_000_000_000_000_000i64;
        let five_ago = Instant::now().checked_sub(Duration::from_secs(5)).unwrap();
        r.start_at(start_ns, five_ago);
        assert_eq!(r.second_of_end(start_ns + 3_500_000_000), 4);
        assert_eq!(r.second_of_end(start_ns - 9_000_000_000), 1);
        let far_future = r.second_of_end(i64::MAX);
        assert!((5..=7).contains(&far_future), "{far_future}");
        assert_eq!(r.second_of_end(i64::MIN), 1);
    }
}
