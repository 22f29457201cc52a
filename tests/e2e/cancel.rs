//! Cancellation reaches blocking work: a signal stops `generate` between
//! pages, and an Abort stops an agent's shard generation, leaving nothing
//! half-written behind.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use walplayer::proto::control::agent_message::Body as Up;
use walplayer::proto::control::control_server::{Control, ControlServer};
use walplayer::proto::control::coordinator_message::Body as Down;
use walplayer::proto::control::{
    Abort, AgentMessage, Assignment, CoordinatorMessage, Source, Split,
};

use crate::distributed::Cluster;
use crate::util::{signal, wait_bounded, wait_until, TestEnv};

const LIMIT: Duration = Duration::from_secs(60);

/// How many 16 MiB segments to ask for: far more than a test lets be
/// written before it interrupts, but at most half the free space next to
/// `dir`. An agent refuses a generation needing over 90% of its free
/// space, and a fresh CI machine may have only a few GiB left after the
/// build.
fn many_segments(dir: &Path) -> u64 {
    let free = walplayer_agent::shard::free_bytes(dir);
    let segments = (free / 2 / (16 << 20)).min(400);
    assert!(
        segments >= 32,
        "this test needs at least 1 GiB free next to {dir:?}; {free} bytes are"
    );
    segments
}

/// Names of the files in `dir` and their sizes.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .map(|e| {
            let e = e.unwrap();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().into_string().unwrap(), len)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn generate_interrupted_exits_130_leaving_only_complete_segments() {
    let env = TestEnv::new();
    let dir = env.path("wal");
    let length = many_segments(&env.path("")).to_string();
    let mut child = env
        .walplayer(&[
            "generate",
            "--length",
            &length,
            "--wal-size",
            "16",
            "--quiet",
        ])
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two complete segments exist: generation is well under way.
    wait_until("two segments written", LIMIT, || {
        files(&dir)
            .iter()
            .filter(|(n, _)| !n.ends_with(".tmp"))
            .count()
            >= 2
    });
    let signalled = Instant::now();
    signal(&child, libc::SIGINT);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(130), "interrupted is status 130");
    eprintln!("generate stopped {took:?} after SIGINT");
    let left = files(&dir);
    assert!(left.len() < 400, "stopped early: {} files", left.len());
    for (name, len) in &left {
        assert!(!name.ends_with(".tmp"), "no temporary file is left: {name}");
        assert_eq!(*len, 16 << 20, "{name} is a whole segment");
    }
    let last = &left.last().unwrap().0;
    let seg = walplayer::wal::walname::SegmentName::parse(last).unwrap();
    let bytes = std::fs::read(dir.join(last)).unwrap();
    walplayer::wal::generate::check_page_headers(&bytes, seg, 16 << 20).unwrap();
}

/// A coordinator the test drives by hand: the first session gets whatever
/// the test sends; what the agent says comes back to the test.
struct Scripted {
    script: std::sync::Mutex<Option<mpsc::Receiver<CoordinatorMessage>>>,
    heard: mpsc::Sender<Up>,
}

#[tonic::async_trait]
impl Control for Scripted {
    type SessionStream =
        tokio_stream::wrappers::ReceiverStream<Result<CoordinatorMessage, tonic::Status>>;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let Some(mut script) = self.script.lock().unwrap().take() else {
            return Err(tonic::Status::unavailable("one session only"));
        };
        let mut up = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let heard = self.heard.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = script.recv() => match m {
                        Some(m) => { let _ = tx.send(Ok(m)).await; }
                        None => return, // dropping tx closes the session
                    },
                    m = up.message() => match m {
                        Ok(Some(AgentMessage { body: Some(b) })) => { let _ = heard.send(b).await; }
                        _ => return,
                    },
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }
}

#[tokio::test]
async fn agent_aborted_while_generating_stops_and_removes_its_run() {
    let c = Cluster::new();
    let (script_tx, script) = mpsc::channel(4);
    let (heard, mut agent_says) = mpsc::channel(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(Scripted {
                script: std::sync::Mutex::new(Some(script)),
                heard,
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut agent = c.agent("slow", &addr, &["--once"]);
    let registered = tokio::time::timeout(LIMIT, agent_says.recv())
        .await
        .unwrap();
    assert!(
        matches!(registered, Some(Up::Register(_))),
        "{registered:?}"
    );
    let segments = many_segments(&c.env.path(""));
    let run_id = "run-abort";
    let assignment = Assignment {
        run_id: run_id.into(),
        agent_index: 0,
        agent_count: 1,
        source: Source::Generate as i32,
        split: Split::Shard as i32,
        segments_per_cluster: vec![segments],
        wal_size_mib: 16,
        clusters: 1,
        jobs: 1,
        block_size_kib: 1024,
        timeout_ms: 10_000,
        ..Default::default()
    };
    let send = |body| CoordinatorMessage { body: Some(body) };
    script_tx
        .send(send(Down::Assignment(assignment)))
        .await
        .unwrap();
    let run_dir = c.env.path("agent-slow").join("runs").join(run_id);
    let seen = run_dir.clone();
    let mut agent = tokio::task::spawn_blocking(move || {
        agent.wait_running("the agent generated two segments", LIMIT, || {
            files(&seen)
                .iter()
                .filter(|(n, _)| !n.ends_with(".tmp"))
                .count()
                >= 2
        });
        agent
    })
    .await
    .unwrap();
    script_tx
        .send(send(Down::Abort(Abort {
            reason: "test abort".into(),
        })))
        .await
        .unwrap();
    drop(script_tx);
    let status = tokio::task::spawn_blocking(move || {
        let status = agent.wait(LIMIT);
        (status, agent.text())
    })
    .await
    .unwrap();
    assert_eq!(
        status.0.code(),
        Some(3),
        "aborted is the coordinator lost: {}",
        status.1
    );
    assert!(status.1.contains("aborted: test abort"), "{}", status.1);
    assert!(
        !run_dir.exists(),
        "the run directory is removed: {:?}",
        files(&run_dir)
    );
    assert!(
        !matches!(agent_says.try_recv(), Ok(Up::Ready(_))),
        "an aborted agent never says it is ready"
    );
    server.abort();
}
