//! The two ways to run a simulation: for a fixed duration, or as a
//! capacity search that adds clusters while every objective holds.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::record::{quantiles, Point};
use crate::run::{Live, Sim};
use crate::slo::{check_all, Measured};
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
    let seg = sim.workload.shape.segment_bytes;
    let mut steps = Vec::new();
    let mut max_clusters = None;
    while !shutdown.is_cancelled() {
        let target = (sim.clusters.len() as u64 + s.step).min(s.max_clusters);
        let add = target - sim.clusters.len() as u64;
        sim.add_clusters(add, None, shutdown).await?;
        let from = Instant::now();
        let whole0 = sim.whole_segments_produced(from);
        let produced0: u64 = sim.clusters.iter().map(|c| c.produced(from)).sum();
        let acked0 = sim
            .recorder()
            .acked
            .load(std::sync::atomic::Ordering::Relaxed);
        sim.recorder().take_window();
        if !sim
            .run_for(s.step_duration, shutdown, live, &mut |_| true)
            .await
        {
            break;
        }
        let to = Instant::now();
        sim.recorder().pending(to, &sim.clusters, seg, false);
        let window = sim.recorder().take_window();
        let whole = sim.whole_segments_produced(to) - whole0;
        let produced: u64 = sim.clusters.iter().map(|c| c.produced(to)).sum::<u64>() - produced0;
        let acked = sim
            .recorder()
            .acked
            .load(std::sync::atomic::Ordering::Relaxed)
            - acked0;
        let lag_ns = quantiles(&window.lag);
        let measured = Measured {
            lag_ns,
            backlog_max: window.backlog_max,
            errors: window.errors,
            ack_rate: if whole == 0 {
                1.0
            } else {
                (acked as f64 / whole as f64).min(1.0)
            },
        };
        let (verdicts, pass) = check_all(&slos, &measured);
        let secs = (to - from).as_secs_f64();
        let mib_s = |b: u64| b as f64 / (1u64 << 20) as f64 / secs;
        tracing::info!(
            "step of {target} clusters: lag p99 {:.3} s, backlog max {} bytes: {}",
            lag_ns[2] as f64 / 1e9,
            window.backlog_max,
            if pass {
                "every SLO met"
            } else {
                "SLO breached"
            }
        );
        steps.push(StepRow {
            clusters: target,
            produced_mib_per_second: mib_s(produced),
            acked_mib_per_second: mib_s(acked),
            lag_p50_ms: lag_ns[0] as f64 / 1e6,
            lag_p99_ms: lag_ns[2] as f64 / 1e6,
            backlog_max_bytes: window.backlog_max,
            errors: window.errors,
            pass,
            slos: verdicts,
        });
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
