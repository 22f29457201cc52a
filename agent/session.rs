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

use walplayer_klio::driver::{drive, Destination, Uploads};
use walplayer_klio::endpoint::{Client, KlioEndpoint};
use walplayer_klio::metrics::ClientMetrics;
use walplayer_klio::report::{from_unix_nanos, unix_nanos, FileReport};
use walplayer_klio::stats::{encode_histogram, Stats};
use walplayer_klio::tls;
use walplayer_klio::transport::status_text;
use walplayer_klio::upload::UploadSettings;
use walplayer_klio::wire;

use crate::shard::{self, Shard};
use crate::spec::{ShardSource, ShardSpec};
use crate::AgentOptions;
use walplayer_proto::control::agent_message::Body as Up;
use walplayer_proto::control::control_client::ControlClient;
use walplayer_proto::control::coordinator_message::Body as Down;
use walplayer_proto::control::{
    AgentMessage, Assignment, Beat, ClusterHistogram, CoordinatorMessage, Failed, Finished, Ready,
    Register,
};

/// Furthest ahead a start instant may be: the coordinator starts runs a
/// moment after every agent is ready, so more means a wrong clock.
pub const MAX_START_AHEAD: Duration = Duration::from_secs(600);

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
pub(crate) struct Link {
    pub(crate) up: mpsc::Sender<AgentMessage>,
    pub(crate) down: Streaming<CoordinatorMessage>,
}

impl Link {
    pub(crate) async fn send(&self, body: Up) -> Result<(), SessionEnd> {
        self.up
            .send(AgentMessage { body: Some(body) })
            .await
            .map_err(|_| SessionEnd::CoordinatorLost("control stream closed".into()))
    }

    /// The next message from the coordinator.
    async fn recv(&mut self) -> Result<Down, SessionEnd> {
        recv(&mut self.down).await
    }
}

/// The next message from the coordinator; a closed or broken stream is the
/// coordinator gone.
async fn recv(down: &mut Streaming<CoordinatorMessage>) -> Result<Down, SessionEnd> {
    match down.message().await {
        Ok(Some(CoordinatorMessage { body: Some(body) })) => Ok(body),
        Ok(Some(_)) => Err(SessionEnd::CoordinatorLost(
            "empty message from the coordinator".into(),
        )),
        Ok(None) => Err(SessionEnd::CoordinatorLost(
            "the coordinator closed the session".into(),
        )),
        Err(status) => Err(SessionEnd::CoordinatorLost(status_text(&status))),
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
        Err(status) => return SessionEnd::CoordinatorLost(status_text(&status)),
    };
    let mut link = Link { up, down };
    let assignment = match link.recv().await {
        Ok(Down::Assignment(a)) => a,
        Ok(Down::Refusal(r)) => return SessionEnd::Refused(r.reason),
        Ok(Down::Abort(a)) => return SessionEnd::CoordinatorLost(format!("aborted: {}", a.reason)),
        Ok(Down::Start(_)) => {
            return SessionEnd::CoordinatorLost("start before any assignment".into())
        }
        Ok(Down::EndSearch(_)) => {
            return SessionEnd::CoordinatorLost("end of a search before any assignment".into())
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
/// only for an assignment that passed [`ShardSpec::from_assignment`], so its run id is a
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

pub(crate) async fn fail(link: &mut Link, reason: String) -> SessionEnd {
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
pub(crate) async fn watching<T>(
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
    let klio = match opts.klio.resolve() {
        Ok(k) => k,
        Err(e) => return fail(link, format!("agent {}: {e}", opts.name)).await,
    };
    if let Some(spec) = &a.simulate {
        return crate::simulation::run(opts, link, a, spec, klio, shutdown).await;
    }
    let mut klio = klio;
    let free = shard::free_bytes(&opts.data_dir);
    let spec = match ShardSpec::from_assignment(a, &opts.limits, free, &klio.address) {
        Ok(spec) => spec,
        Err(reason) => {
            let reason = format!("agent {} refuses the assignment: {reason}", opts.name);
            return fail(link, reason).await;
        }
    };
    if let Some(address) = &spec.address {
        klio.address = address.clone();
    }
    let _generated = matches!(spec.source, ShardSource::Generate { .. })
        .then(|| GeneratedDir(shard::run_dir(&opts.data_dir, &spec.run_id)));
    let clusters = shard::cluster_names(&klio.cluster_name, &opts.name, spec.clusters);

    let shard = match prepare_shard(opts, link, &spec, clusters, shutdown).await {
        Ok(shard) => shard,
        Err(end) => return end,
    };

    let endpoint = match tls::client_config(&klio.server_ca, &klio.client_cert, &klio.client_key)
        .map_err(|e| e.to_string())
        .and_then(|t| KlioEndpoint::new(&klio.address, t))
    {
        Ok(e) => e,
        Err(reason) => return fail(link, format!("agent {}: {reason}", opts.name)).await,
    };
    let clients = match watching(link, shutdown, endpoint.connect_jobs(spec.jobs.get())).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(link, format!("agent {}: {e}", opts.name)).await,
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

    if let Err(end) = wait_for_start(opts, link, shutdown).await {
        return end;
    }
    stream_run(link, shard, clients, spec.upload, &opts.metrics, shutdown).await
}

/// Prepares the shard (may generate gigabytes) while watching the stream.
/// The generator sees a stop token between pages; whatever ends the wait,
/// it is stopped and joined before the caller removes the run directory.
async fn prepare_shard(
    opts: &AgentOptions,
    link: &mut Link,
    spec: &ShardSpec,
    clusters: Vec<String>,
    shutdown: &CancellationToken,
) -> Result<Shard, SessionEnd> {
    let stop = shutdown.child_token();
    let mut preparing = {
        let (spec, dir, stop) = (spec.clone(), opts.data_dir.clone(), stop.clone());
        tokio::task::spawn_blocking(move || shard::prepare(&spec, &dir, &clusters, &stop))
    };
    match watching(link, shutdown, &mut preparing).await {
        Ok(Ok(Ok(shard))) => Ok(shard),
        Ok(Ok(Err(reason))) => Err(fail(
            link,
            format!("agent {} cannot prepare its shard: {reason}", opts.name),
        )
        .await),
        Ok(Err(e)) => Err(fail(link, format!("agent {}: preparing failed: {e}", opts.name)).await),
        Err(end) => {
            stop.cancel();
            let _ = preparing.await;
            tracing::info!("stopped preparing the shard: {end:?}");
            Err(end)
        }
    }
}

/// The barrier: waits for Start, then for its instant, still listening
/// for an Abort or the coordinator going away.
pub(crate) async fn wait_for_start(
    opts: &AgentOptions,
    link: &mut Link,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let start_at = watching_start(link, shutdown).await?;
    if let Ok(wait) = start_at.duration_since(SystemTime::now()) {
        if wait > MAX_START_AHEAD {
            let reason = format!(
                "agent {} refuses a start {} ahead (at most {} is sane): check the clocks of the coordinator and this agent",
                opts.name,
                humantime::format_duration(Duration::from_secs(wait.as_secs())),
                humantime::format_duration(MAX_START_AHEAD)
            );
            return Err(fail(link, reason).await);
        }
        watching(link, shutdown, tokio::time::sleep(wait)).await?;
    }
    Ok(())
}

async fn watching_start(
    link: &mut Link,
    shutdown: &CancellationToken,
) -> Result<SystemTime, SessionEnd> {
    tokio::select! {
        msg = link.recv() => match msg? {
            Down::Start(s) => Ok(from_unix_nanos(s.start_unix_nanos)),
            Down::Abort(a) => Err(SessionEnd::CoordinatorLost(format!("aborted: {}", a.reason))),
            other => Err(SessionEnd::CoordinatorLost(format!("expected Start, got {other:?}"))),
        },
        _ = shutdown.cancelled() => Err(SessionEnd::Stopped),
    }
}

/// Where the agent's reports go: the control stream, one `FileResult` per
/// file and a beat every tick; per-cluster statistics are kept for the
/// histograms sent at the end.
struct Uplink<'a> {
    up: &'a mpsc::Sender<AgentMessage>,
    per_cluster: BTreeMap<String, Stats>,
    started: SystemTime,
}

impl Uplink<'_> {
    async fn send(&self, body: Up) -> Result<(), String> {
        self.up
            .send(AgentMessage { body: Some(body) })
            .await
            .map_err(|_| "control stream closed".to_string())
    }

    fn beat(&self, all: &Stats) -> Up {
        Up::Beat(Beat {
            files_done: all.files_done(),
            bytes_done: all.bytes,
            started_unix_nanos: unix_nanos(self.started),
        })
    }
}

impl Destination for Uplink<'_> {
    async fn report(&mut self, report: &FileReport) -> Result<(), String> {
        self.per_cluster
            .entry(report.cluster.clone())
            .or_default()
            .record(report);
        self.send(Up::File(wire::file_result(report))).await
    }

    async fn tick(&mut self, stats: &Stats) -> Result<(), String> {
        self.send(self.beat(stats)).await
    }
}

/// What stops a run from the coordinator's side: an Abort (reports still
/// go out), or the stream breaking (nothing can go out).
#[derive(Debug)]
pub(crate) enum Stop {
    Aborted(String),
    Lost(SessionEnd),
    /// A capacity search is over (the coordinator judged its last step).
    SearchOver(String),
}

/// Waits for the message that stops a run.
pub(crate) async fn watch_for_stop(down: &mut Streaming<CoordinatorMessage>) -> Stop {
    let stop = match recv(down).await {
        Ok(Down::Abort(a)) => Stop::Aborted(a.reason),
        Ok(Down::EndSearch(e)) => Stop::SearchOver(e.reason),
        Ok(other) => Stop::Lost(SessionEnd::CoordinatorLost(format!(
            "unexpected message during the run: {other:?}"
        ))),
        Err(end) => Stop::Lost(end),
    };
    tracing::warn!("stopping uploads: {stop:?}");
    stop
}

/// Plays the shard and streams reports; stops at once if the coordinator
/// aborts or goes away.
async fn stream_run(
    link: &mut Link,
    shard: Shard,
    clients: Vec<Client>,
    settings: UploadSettings,
    metrics: &ClientMetrics,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut uplink = Uplink {
        up: &link.up,
        per_cluster: BTreeMap::new(),
        started: SystemTime::now(),
    };
    let all = Stats {
        files_skipped: shard.skipped,
        ..Stats::default()
    };
    if uplink.send(uplink.beat(&all)).await.is_err() {
        return SessionEnd::CoordinatorLost("control stream closed".into());
    }
    let uploads = Uploads {
        work: shard.work,
        clients,
        settings,
        metrics: metrics.clone(),
    };
    let driven = drive(
        uploads,
        shutdown.child_token(),
        &mut uplink,
        watch_for_stop(&mut link.down),
        all,
    )
    .await;
    let aborted = match driven.stopped {
        Some(Stop::Lost(end)) => return end,
        Some(Stop::Aborted(reason)) => Some(reason),
        Some(Stop::SearchOver(_)) => {
            return SessionEnd::CoordinatorLost("ended a search during a file run".into())
        }
        None => None,
    };
    if let Some(reason) = driven.undeliverable {
        return SessionEnd::CoordinatorLost(reason);
    }
    let (per_cluster, started) = (uplink.per_cluster, uplink.started);
    if let Err(end) = finish(link, &driven.stats, &per_cluster, started).await {
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

/// After Finished: the coordinator closes the session once it has taken
/// it, and only that clean close says the results arrived. A broken or
/// silent link (a coordinator killed or stopped near the end) is the
/// coordinator lost.
pub(crate) async fn await_close(link: &mut Link) -> SessionEnd {
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match link.down.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(status_text(&status)),
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
        simulation: None,
    };
    link.send(Up::Finished(finished)).await
}
