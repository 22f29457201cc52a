//! A hostile agent, speaking the control protocol directly: results for
//! files never assigned to it, a histogram whose header lies about its
//! length, a Ready with thousands of cluster plans, and beats without end.
//! The coordinator counts none of it, stays small, ends the run in bounded
//! time and writes its summary.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use walplayer::klio::stats::{encode_histogram, new_histogram};
use walplayer::proto::control::agent_message::Body as Up;
use walplayer::proto::control::control_client::ControlClient;
use walplayer::proto::control::coordinator_message::Body as Down;
use walplayer::proto::control::{
    AgentMessage, Assignment, Beat, ClusterHistogram, ClusterPlan, CoordinatorMessage, FileResult,
    Finished, Ready, Register,
};

use crate::distributed::Cluster;
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;
/// Most memory the coordinator may hold under a hostile agent.
const RSS_LIMIT_KIB: u64 = 200 << 10;

fn name(i: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, i >> 8, i & 0xff)
}

/// A raw agent: a session of the control protocol, driven by hand.
struct Raw {
    up: mpsc::Sender<AgentMessage>,
    down: tonic::Streaming<CoordinatorMessage>,
    cluster: String,
}

impl Raw {
    /// Registers as `agent` and takes its assignment.
    async fn join(addr: &str, agent: &str) -> (Raw, Assignment) {
        let (up, rx) = mpsc::channel::<AgentMessage>(64);
        // Register goes first: the session opens on it.
        up.send(AgentMessage {
            body: Some(Up::Register(Register {
                name: agent.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                capabilities: vec!["generate".into()],
                free_bytes: 1 << 40,
            })),
        })
        .await
        .unwrap();
        let mut client = ControlClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_encoding_message_size(64 << 20);
        let mut raw = Raw {
            up,
            down: client
                .session(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner(),
            cluster: format!("walplayer-{agent}"),
        };
        let Some(Down::Assignment(a)) = raw.next().await else {
            panic!("expected an assignment");
        };
        (raw, a)
    }

    async fn send(&self, body: Up) {
        // The coordinator may have ended the session: what it did with the
        // message is what the test checks.
        let _ = self.up.send(AgentMessage { body: Some(body) }).await;
    }

    async fn next(&mut self) -> Option<Down> {
        tokio::time::timeout(LIMIT, self.down.message())
            .await
            .expect("the coordinator answers")
            .ok()
            .flatten()
            .and_then(|m| m.body)
    }

    /// The honest plan of `count` 1 MiB segments of its one cluster.
    fn plan(&self, count: u64) -> ClusterPlan {
        ClusterPlan {
            cluster: self.cluster.clone(),
            first_segment: name(0),
            count,
            segment_bytes: MIB,
            wal_names: Vec::new(),
        }
    }

    /// Sends the honest Ready of `count` files and takes Start.
    async fn ready(&mut self, count: u64) -> i64 {
        self.send(Up::Ready(Ready {
            files: count,
            bytes: count * MIB,
            clusters: vec![self.plan(count)],
        }))
        .await;
        let Some(Down::Start(start)) = self.next().await else {
            panic!("expected Start");
        };
        self.send(Up::Beat(Beat {
            files_done: 0,
            bytes_done: 0,
            started_unix_nanos: start.start_unix_nanos,
        }))
        .await;
        start.start_unix_nanos
    }

    /// A stored result of file `i` of `cluster`.
    fn result(&self, cluster: &str, wal: &str, t0: i64) -> FileResult {
        FileResult {
            wal_full_path: format!("/raw/{wal}"),
            cluster: cluster.into(),
            wal_name: wal.into(),
            start_unix_nanos: t0,
            end_unix_nanos: t0 + 1_000_000,
            elapsed_ns: 1_000_000,
            bytes: MIB,
            error: String::new(),
            retries: Vec::new(),
            verified: false,
            error_kind: 0,
            ..Default::default()
        }
    }
}

/// Highest memory the process `pid` held (VmHWM), in KiB, sampled until it
/// exits: a thread that returns the peak it saw.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if status.contains("State:\tZ") {
                break;
            }
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    })
}

/// Waits for the coordinator to exit; its status and log.
async fn exit_of(mut coord: Logged) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let status = coord.wait(LIMIT);
        (status.code(), coord.text())
    })
    .await
    .unwrap()
}

/// Issue 9, item 6: results for another agent's cluster, for a name out of
/// its plan, a histogram of a cluster not its own and 2^63 skipped files
/// are protocol violations of that agent, never written or counted; the
/// strings kept of a result are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_for_files_never_assigned_are_violations_not_counted() {
    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&["--agents", "1", "--length", "2", "--wal-size", "1"]);
    let (mut raw, _) = Raw::join(&addr, "raw").await;
    let t0 = raw.ready(2).await;
    let own = raw.cluster.clone();
    raw.send(Up::File(raw.result(&own, &name(0), t0))).await;
    // Its own second file, with an 8 MiB error and 200 retries of 64 KiB.
    let mut heavy = raw.result(&own, &name(1), t0);
    heavy.error = "e".repeat(8 << 20);
    heavy.error_kind = walplayer::proto::control::FailureKind::Refused as i32;
    heavy.bytes = 0;
    heavy.retries = vec!["r".repeat(64 << 10); 200];
    raw.send(Up::File(heavy)).await;
    // Another agent's cluster, and a name out of its plan.
    raw.send(Up::File(raw.result("walplayer-other", &name(0), t0)))
        .await;
    raw.send(Up::File(raw.result(&own, &name(9), t0))).await;
    let mut h = new_histogram();
    h.record(1_000_000).unwrap();
    h.record(1_000_000).unwrap();
    raw.send(Up::Finished(Finished {
        histogram: encode_histogram(&h).into(),
        clusters: vec![
            ClusterHistogram {
                cluster: own.clone(),
                histogram: encode_histogram(&h).into(),
            },
            ClusterHistogram {
                cluster: "walplayer-other".into(),
                histogram: encode_histogram(&h).into(),
            },
        ],
        started_unix_nanos: t0,
        ended_unix_nanos: t0 + 2_000_000,
        files_skipped: 1 << 63,
        simulation: None,
    }))
    .await;
    let (code, log) = exit_of(coord).await;
    assert_eq!(code, Some(1), "one file failed: {log}");
    assert!(
        log.contains("protocol violation 1 of agent raw, not counted: reported walplayer-other/"),
        "{log}"
    );

    let lines = c.merged();
    let reported: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["cluster"].as_str().unwrap(),
                l["walName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            (own.as_str(), name(0).as_str()),
            (own.as_str(), name(1).as_str())
        ],
        "only the files assigned to it"
    );
    let error = lines[1]["error"].as_str().unwrap();
    assert!(
        error.len() < 8 << 10,
        "error kept whole: {} bytes",
        error.len()
    );
    let retries = lines[1]["retries"].as_array().unwrap();
    assert!(retries.len() <= 101, "{} retries kept", retries.len());
    assert!(retries.iter().all(|r| r.as_str().unwrap().len() < 8 << 10));

    let s = c.summary();
    assert_eq!(s["filesOk"], 1, "{s}");
    assert_eq!(s["filesFailed"], 1, "{s}");
    assert_eq!(s["filesSkipped"], 0, "{s}");
    assert_eq!(s["agents"][0]["protocolViolations"], 4, "{s}");
    assert_eq!(s["clusters"].as_array().unwrap().len(), 1, "{s}");
}

/// Issue 9, item 7: a 40-byte histogram whose header claims a 4 GiB payload
/// is refused before anything is allocated; the coordinator stays small and
/// writes its summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_histogram_header_claiming_4_gib_allocates_nothing() {
    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&["--agents", "1", "--length", "1", "--wal-size", "1"]);
    let peak = watch_peak_rss(coord.child.id());
    let (mut raw, _) = Raw::join(&addr, "raw").await;
    let t0 = raw.ready(1).await;
    let own = raw.cluster.clone();
    raw.send(Up::File(raw.result(&own, &name(0), t0))).await;
    let mut lying = encode_histogram(&new_histogram())[..40].to_vec();
    lying[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    raw.send(Up::Finished(Finished {
        histogram: lying.clone().into(),
        clusters: vec![ClusterHistogram {
            cluster: own,
            histogram: lying.into(),
        }],
        started_unix_nanos: t0,
        ended_unix_nanos: t0 + 1_000_000,
        files_skipped: 0,
        simulation: None,
    }))
    .await;
    let (code, log) = exit_of(coord).await;
    let peak = peak.join().unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("histogram header claims a payload of 4294967295 bytes but 0 follow it"),
        "{log}"
    );
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert_eq!(c.summary()["filesOk"], 1);
}

/// Issue 9, item 8: a Ready of 20,000 cluster plans (for an assignment of
/// one) is refused with a reason before any plan is kept: exit 2, summary
/// written, memory small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_of_20000_plans_is_refused_against_the_assignment() {
    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&["--agents", "1", "--length", "1", "--wal-size", "1"]);
    let peak = watch_peak_rss(coord.child.id());
    let (mut raw, a) = Raw::join(&addr, "raw").await;
    assert_eq!(a.clusters, 1);
    let clusters: Vec<ClusterPlan> = (0..20_000)
        .map(|i| ClusterPlan {
            cluster: format!("walplayer-raw-{i}"),
            count: 10_000_000,
            ..raw.plan(1)
        })
        .collect();
    raw.send(Up::Ready(Ready {
        files: 1,
        bytes: MIB,
        clusters,
    }))
    .await;
    assert!(matches!(raw.next().await, Some(Down::Abort(_)) | None));
    let (code, log) = exit_of(coord).await;
    let peak = peak.join().unwrap();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "agent raw sent an unusable plan: 20000 cluster plans for an assignment of 1 clusters"
        ),
        "{log}"
    );
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert_eq!(c.summary()["agents"][0]["name"], "raw");
}

/// Issue 9, item 9: an agent that beats but never finishes is lost at the
/// run's deadline (`--run-timeout`); what it reported is kept; exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_beats_but_never_finishes_is_lost_at_the_run_timeout() {
    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&[
        "--agents",
        "1",
        "--length",
        "2",
        "--wal-size",
        "1",
        "--run-timeout",
        "3s",
    ]);
    let (mut raw, _) = Raw::join(&addr, "raw").await;
    let t0 = raw.ready(2).await;
    let own = raw.cluster.clone();
    raw.send(Up::File(raw.result(&own, &name(0), t0))).await;
    let began = Instant::now();
    let beats = tokio::spawn(async move {
        loop {
            raw.send(Up::Beat(Beat {
                files_done: 1,
                bytes_done: MIB,
                started_unix_nanos: t0,
            }))
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (code, log) = exit_of(coord).await;
    beats.abort();
    assert_eq!(code, Some(3), "{log}");
    assert!(began.elapsed() < Duration::from_secs(30), "{log}");
    assert!(
        log.contains("agent raw lost: did not finish within 3s of the start (--run-timeout)"),
        "{log}"
    );
    let s = c.summary();
    assert_eq!(s["filesOk"], 1, "{s}");
    assert_eq!(s["filesUnreported"], 1, "{s}");
    assert_eq!(c.merged().len(), 1);

    let help = stdout(&run(&mut c.env.walplayer(&["coordinator", "--help"])));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("--run-timeout <DURATION>")
            && help.contains("the longer of 30m and 5s per planned file"),
        "{help}"
    );
}
