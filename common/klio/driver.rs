//! The report loop shared by `play` and the agent: run the pipeline, count
//! every report into [`Stats`], hand it to a [`Destination`], tick about
//! once a second, and stop uploads when the destination fails or a stop
//! signal comes. The two differ only in their destination (JSON lines and
//! a progress display, or the control stream). On the way it keeps the
//! run's [`Timeline`]: files as their reports arrive, bytes sent as the
//! pipeline's counter reads at each tick.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::endpoint::Client;
use crate::metrics::ClientMetrics;
use crate::pipeline::Pipeline;
use crate::report::FileReport;
use crate::stats::Stats;
use crate::timeline::{second_of, Timeline};
use crate::upload::{UploadSettings, Work};

/// Where reports go.
pub trait Destination {
    /// Takes one report the moment it exists. An error means nothing more
    /// can be delivered: uploads stop, and later reports are only counted.
    fn report(&mut self, report: &FileReport) -> impl Future<Output = Result<(), String>> + Send;

    /// Called about once a second with the counts so far.
    fn tick(&mut self, stats: &Stats) -> impl Future<Output = Result<(), String>> + Send;
}

/// How often [`Destination::tick`] is called.
pub const TICK: Duration = Duration::from_secs(1);

/// How a pipeline's run ended.
#[derive(Debug)]
pub struct Driven<S> {
    /// Every report, counted, whether delivered or not.
    pub stats: Stats,
    /// The run second by second, from the start of [`drive`].
    pub timeline: Timeline,
    /// How long the run took, from the start of [`drive`].
    pub wall: Duration,
    /// Why the destination stopped taking reports, if it did.
    pub undeliverable: Option<String>,
    /// What the stop signal said, if it came.
    pub stopped: Option<S>,
}

/// What a run uploads, and how.
pub struct Uploads {
    /// The files, in the order jobs take them.
    pub work: Vec<Work>,
    /// One client per job.
    pub clients: Vec<Client>,
    pub settings: UploadSettings,
    /// Every report and every block sent is counted here.
    pub metrics: ClientMetrics,
}

/// Runs the uploads until every job is done. `cancel` stops uploads (in
/// flight ones are reported as interrupted); the loop cancels it itself
/// when the destination fails or `stop` resolves. `stats` may carry counts
/// made before (skipped files).
pub async fn drive<D, S>(
    uploads: Uploads,
    cancel: CancellationToken,
    destination: &mut D,
    stop: impl Future<Output = S>,
    mut stats: Stats,
) -> Driven<S>
where
    D: Destination,
{
    let started = Instant::now();
    let Uploads {
        work,
        clients,
        settings,
        metrics,
    } = uploads;
    let mut pipeline = Pipeline::start(work, clients, settings, metrics.clone(), cancel.clone());
    let mut undeliverable = None;
    let mut stopped = None;
    let mut timeline = Timeline::default();
    let mut sent_before = 0;
    let mut sample_sent = |timeline: &mut Timeline, t: u64| {
        let sent = pipeline.sent.load(Ordering::Relaxed);
        timeline.sent(t, sent - sent_before);
        sent_before = sent;
    };
    // Ticks at whole seconds after the start, so a tick's sample of the
    // bytes sent closes the second that just ended.
    let mut ticker = tokio::time::interval_at((started + TICK).into(), TICK);
    tokio::pin!(stop);
    loop {
        let delivering = undeliverable.is_none();
        tokio::select! {
            report = pipeline.reports.recv() => {
                let Some(report) = report else { break };
                stats.record(&report);
                let stored = report.ok().then_some(report.bytes);
                timeline.finished(second_of(started.elapsed()), stored, report.elapsed_ns());
                metrics.file(&report);
                if delivering {
                    if let Err(e) = destination.report(&report).await {
                        undeliverable = Some(e);
                        cancel.cancel();
                    }
                }
            }
            _ = ticker.tick() => {
                sample_sent(&mut timeline, started.elapsed().as_secs().max(1));
                if !delivering {
                    continue;
                }
                if let Err(e) = destination.tick(&stats).await {
                    undeliverable = Some(e);
                    cancel.cancel();
                }
            }
            s = &mut stop, if stopped.is_none() => {
                stopped = Some(s);
                cancel.cancel();
            }
        }
    }
    let wall = started.elapsed();
    sample_sent(&mut timeline, second_of(wall));
    timeline.extend_to(second_of(wall));
    pipeline.join().await;
    Driven {
        stats,
        timeline,
        wall,
        undeliverable,
        stopped,
    }
}
