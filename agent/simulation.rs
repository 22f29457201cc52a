//! A cluster simulation from the agent's side: check the share against
//! our bounds, plan every segment the schedules will complete (so the
//! coordinator knows which results to expect), connect, say Ready, wait
//! for the start instant, run the clusters while streaming a result per
//! acknowledged segment and a beat every second, and end with Finished
//! carrying what the simulation measured.

use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use walplayer_klio::config::KlioConfig;
use walplayer_klio::endpoint::KlioEndpoint;
use walplayer_klio::report::{unix_nanos, FileReport};
use walplayer_klio::stats::{encode_histogram, Stats};
use walplayer_klio::tls;
use walplayer_klio::wire;
use walplayer_proto::control::agent_message::Body as Up;
use walplayer_proto::control::{
    AgentMessage, Assignment, Beat, ClusterPlan, Finished, Ready, SimulateSpec, StepResult,
};
use walplayer_simulate::drive::{self, Lockstep};
use walplayer_simulate::parts::Parts;
use walplayer_simulate::run::{Live, Sim};
use walplayer_simulate::segments::Segments;
use walplayer_simulate::step::{self, StepWindow};
use walplayer_simulate::workload::{Search, Workload};
use walplayer_wal::walname::SegmentName;

use crate::session::{
    await_close, fail, wait_for_start, watch_for_stop, watching, Link, SessionEnd, Stop,
};
use crate::spec;
use crate::AgentOptions;

/// Runs a simulation assignment to the end of the session.
pub(crate) async fn run(
    opts: &AgentOptions,
    link: &mut Link,
    a: &Assignment,
    share: &SimulateSpec,
    mut klio: KlioConfig,
    shutdown: &CancellationToken,
) -> SessionEnd {
    // One cluster is `<base>-<agent>`, several `<base>-<agent>-<i>`, as an
    // agent names the clusters it plays.
    let prefix = format!("{}-{}", klio.cluster_name, opts.name);
    let (workload, address) = match spec::simulation(a, share, &opts.limits, &klio.address, &prefix)
    {
        Ok(checked) => checked,
        Err(reason) => {
            let reason = format!("agent {} refuses the assignment: {reason}", opts.name);
            return fail(link, reason).await;
        }
    };
    if let Some(address) = address {
        klio.address = address;
    }
    let lockstep = workload.search.map(|s| Steps::of(s, a, workload.clusters));
    let plans = plans(&workload, lockstep.as_ref());
    let endpoint = match tls::client_config(&klio.server_ca, &klio.client_cert, &klio.client_key)
        .map_err(|e| e.to_string())
        .and_then(|t| KlioEndpoint::new(&klio.address, t))
    {
        Ok(e) => e,
        Err(reason) => return fail(link, format!("agent {}: {reason}", opts.name)).await,
    };
    let connecting = Sim::new(workload.clone(), endpoint, Segments::default());
    let mut sim = match watching(link, shutdown, connecting).await {
        Ok(Ok(sim)) => sim,
        Ok(Err(e)) => return fail(link, format!("agent {}: {e:#}", opts.name)).await,
        Err(end) => return end,
    };
    let files: u64 = plans.iter().map(|p| p.count).sum();
    let ready = Ready {
        files,
        bytes: files.saturating_mul(workload.shape.segment_bytes),
        clusters: plans,
    };
    if let Err(end) = link.send(Up::Ready(ready)).await {
        return end;
    }
    tracing::info!(
        "ready: {} simulated clusters, {files} segments planned, Klio at {}",
        workload.clusters,
        klio.address
    );
    if let Err(end) = wait_for_start(opts, link, shutdown).await {
        return end;
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let forwarding = tokio::spawn(forward(link.up.clone(), rx));
    let segments = tx.clone();
    let results = tx.clone();
    sim.begin(
        Segments::to_fn(move |report| {
            let _ = segments.send(Message::File(Box::new(report)));
        }),
        None,
    );
    let started = SystemTime::now();
    let (mut files_done, mut bytes_done) = (0u64, 0u64);
    let beats = tx.clone();
    let mut live = move |l: &Live<'_>| {
        files_done += l.point.files;
        bytes_done += l.point.acked_bytes;
        let _ = beats.send(Message::Beat(Beat {
            files_done,
            bytes_done,
            started_unix_nanos: unix_nanos(started),
        }));
    };
    drop(tx);
    let stop = shutdown.child_token();
    let mut aborted = None;
    let ended = {
        let running = async {
            let Some(steps) = &lockstep else {
                return drive::fixed(&mut sim, &stop, &mut live).await;
            };
            let share = |k| steps.share(k);
            let plan = Lockstep {
                origin: Instant::now(),
                step_duration: steps.search.step_duration,
                steps: steps.steps,
                share: &share,
            };
            let mut done = |k: u32, w: StepWindow| {
                let _ = results.send(Message::Step(w.to_wire(k)));
            };
            let at = drive::lockstep(&mut sim, plan, &stop, &mut live, &mut done).await?;
            Ok(drive::Ended { at, aborted: None })
        };
        tokio::pin!(running);
        tokio::select! {
            ended = &mut running => ended,
            s = watch_for_stop(&mut link.down) => {
                stop.cancel();
                let ended = running.await;
                match s {
                    Stop::Lost(end) => return end,
                    Stop::Aborted(reason) => aborted = Some(reason),
                    Stop::SearchOver(reason) => tracing::info!("the search is over: {reason}"),
                }
                ended
            }
        }
    };
    let ended = match ended {
        Ok(ended) => ended,
        Err(e) => return fail(link, format!("agent {}: {e:#}", opts.name)).await,
    };
    let mut parts = Parts::of(&sim, ended.at);
    parts.aborted = ended.aborted;
    // The simulation and the display hold the last senders of what goes
    // up: dropping them ends the forwarding once all of it is sent.
    drop(sim);
    drop(live);
    drop(results);
    let stats = match forwarding.await {
        Ok(Ok(stats)) => stats,
        Ok(Err(end)) => return end,
        Err(e) => return SessionEnd::CoordinatorLost(format!("forwarding results failed: {e}")),
    };
    let finished = Finished {
        histogram: encode_histogram(&stats.latency).into(),
        clusters: Vec::new(),
        started_unix_nanos: unix_nanos(started),
        ended_unix_nanos: unix_nanos(SystemTime::now()),
        files_skipped: 0,
        simulation: Some(Box::new(walplayer_simulate::wire::result_of(&parts))),
    };
    if let Err(end) = link.send(Up::Finished(finished)).await {
        return end;
    }
    if let Some(reason) = aborted {
        return SessionEnd::CoordinatorLost(format!("aborted: {reason}"));
    }
    if shutdown.is_cancelled() {
        return SessionEnd::Stopped;
    }
    await_close(link).await
}

/// This agent's part of a distributed capacity search: step `k` runs its
/// even share of `(k + 1) * step` clusters of the run, up to the run's
/// `max_clusters`.
struct Steps {
    search: Search,
    agents: u64,
    index: u64,
    /// Steps up to `max_clusters`.
    steps: u32,
    /// The clusters assigned: no step runs more, whatever the counts say.
    assigned: u64,
}

impl Steps {
    fn of(search: Search, a: &Assignment, assigned: u64) -> Steps {
        Steps {
            search,
            agents: u64::from(a.agent_count),
            index: u64::from(a.agent_index),
            steps: search.steps(),
            assigned,
        }
    }

    /// Clusters this agent runs in step `k`.
    fn share(&self, k: u32) -> u64 {
        let total = self.search.clusters_in_step(k);
        step::share(total, self.agents, self.index).min(self.assigned)
    }
}

/// Every cluster's plan: the whole segments its schedule completes within
/// the duration (a search: from the step it joins until one step after the
/// last, the longest the clusters run), which are the results the
/// coordinator will expect.
fn plans(w: &Workload, steps: Option<&Steps>) -> Vec<ClusterPlan> {
    let seg = w.shape.segment_bytes;
    let first = SegmentName::containing(w.timeline, w.start_lsn, seg).to_string();
    let mut joins = 0;
    (0..w.clusters)
        .map(|j| {
            let index = w.first_index + j;
            let (pace, _) = w.pace(index);
            let seconds = match steps {
                None => w.duration.as_secs_f64(),
                Some(s) => {
                    while joins < s.steps && s.share(joins) <= j {
                        joins += 1;
                    }
                    let length = s.steps + 1 - joins;
                    s.search.step_duration.as_secs_f64() * f64::from(length)
                }
            };
            ClusterPlan {
                cluster: w.cluster_name(index),
                first_segment: first.clone(),
                count: pace.produced(seconds) / seg,
                segment_bytes: seg,
                wal_names: Vec::new(),
            }
        })
        .collect()
}

/// What goes up the control stream during a run.
enum Message {
    File(Box<FileReport>),
    Beat(Beat),
    Step(StepResult),
}

/// Sends every message in order, counting segment reports for the
/// histogram Finished carries.
async fn forward(
    up: mpsc::Sender<AgentMessage>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) -> Result<Stats, SessionEnd> {
    let mut stats = Stats::default();
    while let Some(message) = rx.recv().await {
        let body = match message {
            Message::File(report) => {
                stats.record(&report);
                Up::File(wire::file_result(&report))
            }
            Message::Beat(beat) => Up::Beat(beat),
            Message::Step(step) => Up::Step(step),
        };
        if up.send(AgentMessage { body: Some(body) }).await.is_err() {
            return Err(SessionEnd::CoordinatorLost("control stream closed".into()));
        }
    }
    Ok(stats)
}
