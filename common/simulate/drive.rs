//! The two ways to run a simulation: for a fixed duration, or as a
//! capacity search that adds clusters while every objective holds.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::Ordering::Relaxed;

use crate::record::Point;
use crate::run::{Live, Sim};
use crate::step::StepWindow;
use crate::summary::{SearchDoc, StepRow};
use crate::workload::Search;

/// `--abort-on-breach`: a backlog bound broken this long without a break
/// is taken as a breach that will not recover, and the run stops.
pub const ABORT_WINDOW: Duration = Duration::from_secs(10);

/// How a fixed run ended: when, and why it stopped early if it did.
pub struct Ended {
    pub at: Instant,
    pub aborted: Option<String>,
}

/// Runs every cluster for the workload's duration, then lets unanswered
/// whole segments drain.
pub async fn fixed(
    sim: &mut Sim,
    shutdown: &CancellationToken,
    live: &mut dyn FnMut(&Live<'_>),
) -> Result<Ended> {
    let w = sim.workload.clone();
    sim.add_clusters(w.clusters, Some(w.duration), shutdown)
        .await?;
    let bound = w
        .slos
        .iter()
        .filter_map(|s| s.bounds_backlog().map(|b| (b, s.to_string())))
        .min_by_key(|(b, _)| *b);
    let mut over_since: Option<u64> = None;
    let mut aborted = None;
    let mut check = |p: &Point| {
        let (Some((bound, slo)), true) = (&bound, w.abort_on_breach) else {
            return true;
        };
        if p.backlog_max_bytes <= *bound {
            over_since = None;
            return true;
        }
        let since = *over_since.get_or_insert(p.t);
        if p.t.saturating_sub(since) + 1 >= ABORT_WINDOW.as_secs() {
            aborted = Some(format!(
                "--abort-on-breach: a cluster's backlog stayed above the SLO {slo} for {} s",
                ABORT_WINDOW.as_secs()
            ));
            return false;
        }
        true
    };
    // The last cluster starts up to one flush interval late.
    let length = w.duration + w.flush_interval;
    let finished = sim.run_for(length, shutdown, live, &mut check).await;
    if finished {
        sim.drain(w.drain, shutdown, live).await;
    }
    let at = Instant::now();
    sim.stop().await;
    Ok(Ended { at, aborted })
}

/// `--find-max-clusters`: `step` more clusters every `step_duration` while
/// every objective holds over the step; stops at the first step that
/// breaks one.
pub async fn search(
    sim: &mut Sim,
    s: Search,
    shutdown: &CancellationToken,
    live: &mut dyn FnMut(&Live<'_>),
) -> Result<(SearchDoc, Instant)> {
    let slos = sim.workload.slos.clone();
    let mut steps = Vec::new();
    let mut max_clusters = None;
    while !shutdown.is_cancelled() {
        let target = (sim.clusters.len() as u64 + s.step).min(s.max_clusters);
        let add = target - sim.clusters.len() as u64;
        let ends = |from: Instant| from + s.step_duration;
        let Some(window) = measure(sim, add, ends, shutdown, live).await? else {
            break;
        };
        let row = window.row(&slos);
        log_step(&row);
        let pass = row.pass;
        steps.push(row);
        if !pass {
            break;
        }
        max_clusters = Some(target);
        if target >= s.max_clusters {
            tracing::warn!(
                "reached --max-clusters {} with every SLO met",
                s.max_clusters
            );
            break;
        }
    }
    let at = Instant::now();
    sim.stop().await;
    Ok((
        SearchDoc {
            max_clusters,
            steps,
        },
        at,
    ))
}

/// One agent's part of a distributed capacity search: from `origin`, step
/// `k` lasts `step_duration` and runs this agent's `share(k)` clusters.
pub struct Lockstep<'a> {
    pub origin: Instant,
    pub step_duration: Duration,
    /// Steps up to the search's `--max-clusters`.
    pub steps: u32,
    pub share: &'a dyn Fn(u32) -> u64,
}

/// Runs `plan`'s steps, handing each step's window to `done`; after the
/// last one the clusters run on for up to one more step while the
/// coordinator judges it. `stop` (the coordinator ended the search) ends
/// it any time.
pub async fn lockstep(
    sim: &mut Sim,
    plan: Lockstep<'_>,
    stop: &CancellationToken,
    live: &mut dyn FnMut(&Live<'_>),
    done: &mut dyn FnMut(u32, StepWindow),
) -> Result<Instant> {
    for k in 0..plan.steps {
        let add = (plan.share)(k).saturating_sub(sim.clusters.len() as u64);
        let end = plan.origin + plan.step_duration * (k + 1);
        let Some(window) = measure(sim, add, |_| end, stop, live).await? else {
            break;
        };
        done(k, window);
    }
    sim.run_for(plan.step_duration, stop, live, &mut |_| true)
        .await;
    let at = Instant::now();
    sim.stop().await;
    Ok(at)
}

/// Adds `add` clusters, then measures from the moment they are connected
/// until `ends(that moment)`: the step's window. `None` if stopped first
/// (while connecting, too).
async fn measure(
    sim: &mut Sim,
    add: u64,
    ends: impl FnOnce(Instant) -> Instant,
    shutdown: &CancellationToken,
    live: &mut dyn FnMut(&Live<'_>),
) -> Result<Option<StepWindow>> {
    let seg = sim.workload.shape.segment_bytes;
    if let Err(e) = sim.add_clusters(add, None, shutdown).await {
        // Stopped while connecting: the steps before stand.
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        return Err(e);
    }
    let from = Instant::now();
    let whole0 = sim.whole_segments_produced(from);
    let produced0: u64 = sim.clusters.iter().map(|c| c.produced(from)).sum();
    let acked0 = sim.recorder().acked.load(Relaxed);
    sim.recorder().take_window();
    let length = ends(from).saturating_duration_since(from);
    if !sim.run_for(length, shutdown, live, &mut |_| true).await {
        return Ok(None);
    }
    let to = Instant::now();
    sim.recorder().pending(to, &sim.clusters, seg, false);
    let window = sim.recorder().take_window();
    Ok(Some(StepWindow {
        clusters: sim.clusters.len() as u64,
        window: to - from,
        lag: window.lag,
        backlog_max: window.backlog_max,
        errors: window.errors,
        produced: sim.clusters.iter().map(|c| c.produced(to)).sum::<u64>() - produced0,
        acked: sim.recorder().acked.load(Relaxed) - acked0,
        whole: sim.whole_segments_produced(to) - whole0,
    }))
}

/// The log line of a judged step.
pub fn log_step(row: &StepRow) {
    tracing::info!(
        "step of {} clusters: lag p99 {:.3} s, backlog max {} bytes: {}",
        row.clusters,
        row.lag_p99_ms / 1e3,
        row.backlog_max_bytes,
        if row.pass {
            "every SLO met"
        } else {
            "SLO breached"
        }
    );
}
