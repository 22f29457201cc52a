//! Pipeline: N jobs, each on its own connection, take files in order and
//! upload them; every report goes out on one channel as soon as it exists.
//!
//! `play` and the agent share this; they differ only in where the reports
//! go. Cancellation stops jobs from starting files and interrupts uploads in
//! flight, which are reported as such.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Client;
use crate::metrics::ClientMetrics;
use crate::report::FailureKind;
use crate::report::FileReport;
use crate::upload::{finish, upload_counted, Failure, SentCounter, UploadSettings, Work};

/// Message of files interrupted by a stop request.
pub const INTERRUPTED: &str = "interrupted: the run was stopped before this file finished";

/// A running pipeline.
pub struct Pipeline {
    /// Reports, in the order files finish; closed when every job is done.
    pub reports: mpsc::Receiver<FileReport>,
    /// Bytes every job put on the wire so far.
    pub sent: SentCounter,
    jobs: JoinSet<()>,
}

impl Pipeline {
    /// Starts one job per client over `work`, in order; blocks sent are
    /// counted into `metrics`.
    pub fn start(
        work: Vec<Work>,
        clients: Vec<Client>,
        settings: UploadSettings,
        metrics: ClientMetrics,
        cancel: CancellationToken,
    ) -> Pipeline {
        let queue = Arc::new(Mutex::new(VecDeque::from(work)));
        let (tx, reports) = mpsc::channel(clients.len().max(1) * 2);
        let sent = SentCounter::default();
        let mut jobs = JoinSet::new();
        for client in clients {
            jobs.spawn(job(
                client,
                queue.clone(),
                settings.clone(),
                metrics.clone(),
                tx.clone(),
                sent.clone(),
                cancel.clone(),
            ));
        }
        Pipeline {
            reports,
            sent,
            jobs,
        }
    }

    /// Waits for every job to end (after the reports are drained).
    pub async fn join(mut self) {
        while self.jobs.join_next().await.is_some() {}
    }
}

async fn job(
    mut client: Client,
    queue: Arc<Mutex<VecDeque<Work>>>,
    settings: UploadSettings,
    metrics: ClientMetrics,
    reports: mpsc::Sender<FileReport>,
    sent: SentCounter,
    cancel: CancellationToken,
) {
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let Some(work) = queue.lock().expect("queue lock").pop_front() else {
            return;
        };
        let start = SystemTime::now();
        let clock = Instant::now();
        let report = tokio::select! {
            report = upload_counted(&mut client, &work, &settings, &metrics, &sent) => report,
            _ = cancel.cancelled() => {
                let interrupted = Failure::fatal(FailureKind::Interrupted, INTERRUPTED);
                finish(&work, start, clock.elapsed(), Err(interrupted))
            }
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

/// Interleaves per-cluster work lists round-robin, so every cluster makes
/// progress at once while each keeps its own files in order.
pub fn interleave(per_cluster: Vec<Vec<Work>>) -> Vec<Work> {
    let mut iters: Vec<_> = per_cluster.into_iter().map(|w| w.into_iter()).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for it in iters.iter_mut() {
            out.extend(it.next());
        }
        if out.len() == before {
            return out;
        }
    }
}
