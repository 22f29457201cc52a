//! One run on the control stream, from the agent's side.
//!
//! Register → Assignment (checked against our bounds) → prepare the shard
//! and connect to Klio → Ready → wait for Start → play through the common
//! pipeline, sending each report as it comes and a beat every second →
//! Finished. If the coordinator aborts or goes away, uploads stop at once.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::agent::shard::{self, Shard};
use crate::agent::AgentOptions;
use crate::common::klio::KlioEndpoint;
use crate::common::pipeline::Pipeline;
use crate::common::play::connect_jobs;
use crate::common::report::{unix_nanos, FileReport};
use crate::common::stats::{encode_histogram, Stats};
use crate::common::tls;
use crate::common::upload::UploadSettings;
use crate::proto::control::agent_message::Body as Up;
use crate::proto::control::control_client::ControlClient;
use crate::proto::control::coordinator_message::Body as Down;
use crate::proto::control::{
    AgentMessage, Assignment, Beat, ClusterHistogram, CoordinatorMessage, Failed, FileResult,
    Finished, Ready, Register,
};

/// How often the agent beats during a run.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The run ended and every report was sent.
    Finished,
    /// The coordinator would not take this agent.
    Refused(String),
    /// This agent could not carry out its assignment (and said so).
    Failed(String),
    /// The control stream broke or the coordinator aborted.
    CoordinatorLost(String),
    /// We were told to stop (signal).
    Stopped,
}

/// The agent's half of the control stream.
struct Link {
    up: mpsc::Sender<AgentMessage>,
    down: Streaming<CoordinatorMessage>,
}

impl Link {
    async fn send(&self, body: Up) -> Result<(), SessionEnd> {
        self.up
            .send(AgentMessage { body: Some(body) })
            .await
            .map_err(|_| SessionEnd::CoordinatorLost("control stream closed".into()))
    }

    /// The next message from the coordinator; a closed or broken stream is
    /// the coordinator gone.
    async fn recv(&mut self) -> Result<Down, SessionEnd> {
        match self.down.message().await {
            Ok(Some(CoordinatorMessage { body: Some(body) })) => Ok(body),
            Ok(Some(_)) => Err(SessionEnd::CoordinatorLost(
                "empty message from the coordinator".into(),
            )),
            Ok(None) => Err(SessionEnd::CoordinatorLost(
                "the coordinator closed the session".into(),
            )),
            Err(status) => Err(SessionEnd::CoordinatorLost(
                crate::common::transport::status_text(&status),
            )),
        }
    }
}

/// Runs one session; never panics, always says how it ended.
pub async fn run(
    opts: &AgentOptions,
    mut client: ControlClient<Channel>,
    shutdown: CancellationToken,
) -> SessionEnd {
    let (up, rx) = mpsc::channel(1024);
    let register = AgentMessage {
        body: Some(Up::Register(Register {
            name: opts.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: vec!["generate".into(), "dir".into(), "gzip".into()],
            free_bytes: shard::free_bytes(&opts.data_dir),
        })),
    };
    if up.send(register).await.is_err() {
        return SessionEnd::CoordinatorLost("control stream closed".into());
    }
    let down = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return SessionEnd::CoordinatorLost(crate::common::transport::status_text(&status))
        }
    };
    let mut link = Link { up, down };
    let assignment = match link.recv().await {
        Ok(Down::Assignment(a)) => a,
        Ok(Down::Refusal(r)) => return SessionEnd::Refused(r.reason),
        Ok(Down::Abort(a)) => return SessionEnd::CoordinatorLost(format!("aborted: {}", a.reason)),
        Ok(Down::Start(_)) => {
            return SessionEnd::CoordinatorLost("start before any assignment".into())
        }
        Err(end) => return end,
    };
    tracing::info!(
        "assigned run {} as agent {} of {}",
        assignment.run_id,
        assignment.agent_index + 1,
        assignment.agent_count
    );
    play_assignment(opts, &mut link, &assignment, &shutdown).await
}

/// The directory a run generates into, removed however the run ends. Made
/// only for an assignment that passed [`shard::check`], so its run id is a
/// plain name inside `runs/`.
struct GeneratedDir(std::path::PathBuf);

impl Drop for GeneratedDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove generated WAL in {}: {e}", self.0.display()),
        }
    }
}

async fn fail(link: &mut Link, reason: String) -> SessionEnd {
    if link
        .send(Up::Failed(Failed {
            reason: reason.clone(),
        }))
        .await
        .is_ok()
    {
        // Dropping the session now could cancel the stream before Failed is
        // delivered: wait (bounded) for the coordinator to close it.
        let drain = async { while link.recv().await.is_ok() {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    }
    SessionEnd::Failed(reason)
}

/// Waits for `work` while watching the control stream and the signal.
async fn watching<T>(
    link: &mut Link,
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Result<T, SessionEnd> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            msg = link.recv() => match msg {
                Ok(Down::Abort(a)) => return Err(SessionEnd::CoordinatorLost(format!("aborted: {}", a.reason))),
                Ok(other) => tracing::warn!("unexpected message while preparing: {other:?}"),
                Err(end) => return Err(end),
            },
            _ = shutdown.cancelled() => return Err(SessionEnd::Stopped),
        }
    }
}

async fn play_assignment(
    opts: &AgentOptions,
    link: &mut Link,
    a: &Assignment,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut klio = match opts.klio.resolve() {
        Ok(k) => k,
        Err(e) => return fail(link, format!("agent {}: {e}", opts.name)).await,
    };
    let free = shard::free_bytes(&opts.data_dir);
    if let Err(reason) = shard::check(a, &opts.limits, free, &klio.address) {
        let reason = format!("agent {} refuses the assignment: {reason}", opts.name);
        return fail(link, reason).await;
    }
    if !a.address.is_empty() {
        klio.address = a.address.clone();
    }
    let _generated = (a.source == crate::proto::control::Source::Generate as i32)
        .then(|| GeneratedDir(shard::run_dir(&opts.data_dir, &a.run_id)));
    let clusters = shard::cluster_names(&klio.cluster_name, &opts.name, a.clusters);

    // Prepare the shard (may generate gigabytes) while watching the stream.
    let prepared = {
        let (a, dir, clusters) = (a.clone(), opts.data_dir.clone(), clusters.clone());
        watching(
            link,
            shutdown,
            tokio::task::spawn_blocking(move || shard::prepare(&a, &dir, &clusters)),
        )
        .await
    };
    let shard = match prepared {
        Ok(Ok(Ok(shard))) => shard,
        Ok(Ok(Err(reason))) => {
            return fail(
                link,
                format!("agent {} cannot prepare its shard: {reason}", opts.name),
            )
            .await
        }
        Ok(Err(e)) => {
            return fail(link, format!("agent {}: preparing failed: {e}", opts.name)).await
        }
        Err(end) => return end,
    };

    let endpoint = match tls::client_config(&klio.server_ca, &klio.client_cert, &klio.client_key)
        .map_err(|e| e.to_string())
        .and_then(|t| KlioEndpoint::new(&klio.address, t))
    {
        Ok(e) => e,
        Err(reason) => return fail(link, format!("agent {}: {reason}", opts.name)).await,
    };
    let clients = match watching(link, shutdown, connect_jobs(&endpoint, a.jobs as usize)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(link, format!("agent {}: {e:#}", opts.name)).await,
        Err(end) => return end,
    };
    let ready = Ready {
        files: shard.work.len() as u64,
        bytes: shard.bytes,
        clusters: shard.plans.clone(),
    };
    if let Err(end) = link.send(Up::Ready(ready)).await {
        return end;
    }
    tracing::info!(
        "ready: {} files, connected to Klio at {}",
        shard.work.len(),
        klio.address
    );

    // The barrier: wait for Start, then for its instant.
    let start_at = match watching_start(link, shutdown).await {
        Ok(t) => t,
        Err(end) => return end,
    };
    if let Ok(wait) = start_at.duration_since(SystemTime::now()) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return SessionEnd::Stopped,
        }
    }
    let settings = UploadSettings {
        block_bytes: a.block_size_kib as usize * 1024,
        timeout: Duration::from_millis(a.timeout_ms),
        retries: a.retries,
        verify: a.verify,
    };
    stream_run(link, shard, clients, settings, shutdown).await
}

async fn watching_start(
    link: &mut Link,
    shutdown: &CancellationToken,
) -> Result<SystemTime, SessionEnd> {
    tokio::select! {
        msg = link.recv() => match msg? {
            Down::Start(s) => Ok(crate::common::report::from_unix_nanos(s.start_unix_nanos)),
            Down::Abort(a) => Err(SessionEnd::CoordinatorLost(format!("aborted: {}", a.reason))),
            other => Err(SessionEnd::CoordinatorLost(format!("expected Start, got {other:?}"))),
        },
        _ = shutdown.cancelled() => Err(SessionEnd::Stopped),
    }
}

fn file_result(r: &FileReport) -> FileResult {
    FileResult {
        wal_full_path: r.wal_full_path.clone(),
        cluster: r.cluster.clone(),
        wal_name: r.wal_name.clone(),
        start_unix_nanos: unix_nanos(r.start),
        end_unix_nanos: unix_nanos(r.end),
        elapsed_ns: r.elapsed_ns(),
        bytes: r.bytes,
        error: r.error.clone(),
        retries: r.retries.clone(),
        verified: r.verified,
    }
}

/// Plays the shard and streams reports; stops at once if the coordinator
/// aborts or goes away.
async fn stream_run(
    link: &mut Link,
    shard: Shard,
    clients: Vec<crate::common::klio::Client>,
    settings: UploadSettings,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let started = SystemTime::now();
    let cancel = shutdown.child_token();
    let mut pipeline = Pipeline::start(shard.work, clients, settings, cancel.clone());
    let mut all = Stats {
        files_skipped: shard.skipped,
        ..Stats::default()
    };
    let mut per_cluster: BTreeMap<String, Stats> = BTreeMap::new();
    // Set once the coordinator aborted (reports still go out) or the
    // stream broke (nothing can go out).
    let mut aborted: Option<String> = None;
    let mut lost: Option<SessionEnd> = None;
    let beat = |all: &Stats| {
        Up::Beat(Beat {
            files_done: all.files_done(),
            bytes_done: all.bytes,
            started_unix_nanos: unix_nanos(started),
        })
    };
    if let Err(end) = link.send(beat(&all)).await {
        lost = Some(end);
        cancel.cancel();
    }
    let mut ticker = tokio::time::interval(BEAT_EVERY);
    loop {
        let listening = lost.is_none() && aborted.is_none();
        tokio::select! {
            report = pipeline.reports.recv() => {
                let Some(report) = report else { break };
                all.record(&report);
                per_cluster.entry(report.cluster.clone()).or_default().record(&report);
                if lost.is_none() {
                    if let Err(end) = link.send(Up::File(file_result(&report))).await {
                        lost = Some(end);
                        cancel.cancel();
                    }
                }
            }
            _ = ticker.tick(), if lost.is_none() => {
                if let Err(end) = link.send(beat(&all)).await {
                    lost = Some(end);
                    cancel.cancel();
                }
            }
            msg = link.recv(), if listening => {
                match msg {
                    Ok(Down::Abort(a)) => aborted = Some(a.reason),
                    Ok(other) => lost = Some(SessionEnd::CoordinatorLost(format!("unexpected message during the run: {other:?}"))),
                    Err(end) => lost = Some(end),
                }
                tracing::warn!("stopping uploads: {}", aborted.clone().map(|r| format!("aborted: {r}")).unwrap_or_else(|| format!("{lost:?}")));
                cancel.cancel();
            }
        }
    }
    pipeline.join().await;
    if let Some(end) = lost {
        return end;
    }
    if let Err(end) = finish(link, &all, &per_cluster, started).await {
        return end;
    }
    if let Some(reason) = aborted {
        return SessionEnd::CoordinatorLost(format!("aborted: {reason}"));
    }
    if shutdown.is_cancelled() {
        return SessionEnd::Stopped;
    }
    // The coordinator closes the session once it has taken Finished: only
    // that clean close says the results arrived. A broken or silent link
    // (a coordinator killed or stopped near the end) is the coordinator lost.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match link.down.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(crate::common::transport::status_text(&status)),
            }
        }
    })
    .await;
    match closed {
        Ok(Ok(())) => SessionEnd::Finished,
        Ok(Err(why)) => SessionEnd::CoordinatorLost(format!("after Finished: {why}")),
        Err(_) => SessionEnd::CoordinatorLost(
            "the coordinator did not confirm Finished within 10s".into(),
        ),
    }
}

async fn finish(
    link: &Link,
    all: &Stats,
    per_cluster: &BTreeMap<String, Stats>,
    started: SystemTime,
) -> Result<(), SessionEnd> {
    let finished = Finished {
        histogram: encode_histogram(&all.latency).into(),
        clusters: per_cluster
            .iter()
            .map(|(cluster, s)| ClusterHistogram {
                cluster: cluster.clone(),
                histogram: encode_histogram(&s.latency).into(),
            })
            .collect(),
        started_unix_nanos: unix_nanos(started),
        ended_unix_nanos: unix_nanos(SystemTime::now()),
        files_skipped: all.files_skipped,
    };
    link.send(Up::Finished(finished)).await
}
