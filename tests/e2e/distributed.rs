//! Coordinator and several agent processes with a sink, on loopback.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const LIMIT: Duration = Duration::from_secs(90);

/// A sink and the test directory for a coordinator and its agents.
pub struct Cluster {
    pub env: TestEnv,
    pub sink: SinkProcess,
    pub data: PathBuf,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::with_sink(&[])
    }

    /// A cluster whose sink runs with `args` (e.g. a fault).
    pub fn with_sink(args: &[&str]) -> Cluster {
        let env = TestEnv::new();
        let data = env.path("sink-data");
        let sink = env.sink(&data, args);
        Cluster { env, sink, data }
    }

    /// `walplayer coordinator` on a free loopback port; returns it and its address.
    pub fn coordinator(&self, args: &[&str]) -> (Logged, String) {
        let mut cmd = self
            .env
            .walplayer(&["coordinator", "--listen", "127.0.0.1:0", "--quiet"]);
        cmd.args(["--output"]).arg(self.env.path("merged.json"));
        cmd.args(["--summary"]).arg(self.env.path("summary.json"));
        cmd.args(args).stdout(Stdio::null());
        let c = Logged::start(cmd, self.env.path("coordinator.log"));
        let line = c.wait_line("coordinator listening on ", Duration::from_secs(30));
        let addr = line.rsplit(' ').next().unwrap().to_string();
        (c, addr)
    }

    pub fn agent(&self, name: &str, coordinator: &str, extra: &[&str]) -> Logged {
        let data = self.env.path(&format!("agent-{name}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
        cmd.env("HOME", self.env.dir.path())
            .args(["--coordinator", coordinator, "--name", name, "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&self.env.certs.klio_config)
            .args(["--address", &self.sink.address])
            .args(extra)
            .stdout(Stdio::null());
        // A second agent of the same name (the duplicate tests) logs to
        // its own file: two writers of one file mixed their texts.
        let mut log = self.env.path(&format!("agent-{name}.log"));
        for n in 2.. {
            if !log.exists() {
                break;
            }
            log = self.env.path(&format!("agent-{name}-{n}.log"));
        }
        Logged::start(cmd, log)
    }

    pub fn merged(&self) -> Vec<serde_json::Value> {
        json_lines(&std::fs::read_to_string(self.env.path("merged.json")).unwrap())
    }

    pub fn summary(&self) -> serde_json::Value {
        read_json(&self.env.path("summary.json"))
    }

    pub fn stored(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let Ok(dirs) = std::fs::read_dir(&self.data) else {
            return out;
        };
        for cluster in dirs {
            let cluster = cluster.unwrap().path();
            for f in std::fs::read_dir(&cluster).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                if !name.contains('~') {
                    out.insert((
                        cluster.file_name().unwrap().to_str().unwrap().to_string(),
                        name,
                    ));
                }
            }
        }
        out
    }
}

/// The WAL file names anywhere under `dir`, sorted (in WAL order).
fn wal_names_under(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(wal_names_under(&path));
        } else {
            let name = path.file_name().unwrap().to_str().unwrap();
            if walplayer::wal::walname::is_wal_name(name) {
                out.insert(name.to_string());
            }
        }
    }
    out
}

impl Cluster {
    /// Every file under the sink's storage, `.partial` ones included, with
    /// its size: what a still-running upload would change.
    pub fn sink_state(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        let Ok(dirs) = std::fs::read_dir(&self.data) else {
            return out;
        };
        for cluster in dirs {
            let cluster = cluster.unwrap().path();
            for f in std::fs::read_dir(&cluster).unwrap() {
                let f = f.unwrap();
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                let name = format!(
                    "{}/{}",
                    cluster.file_name().unwrap().to_str().unwrap(),
                    f.file_name().to_str().unwrap()
                );
                out.insert(name, size);
            }
        }
        out
    }
}

fn ns(v: &serde_json::Value) -> i64 {
    let t = humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

#[test]
fn barrier_holds_and_every_file_appears_exactly_once() {
    let c = Cluster::new();
    let page = c.env.path("report.html");
    let (mut coord, addr) = c.coordinator(&[
        "--report",
        page.to_str().unwrap(),
        "--agents",
        "3",
        "--length",
        "17",
        "--wal-size",
        "1",
        "--clusters-per-agent",
        "2",
        "-j",
        "2",
    ]);
    let mut a = c.agent("node-0", &addr, &["--once"]);
    let mut b = c.agent("node-1", &addr, &["--once"]);
    // The third agent comes once the first two have registered: they must
    // wait for it.
    coord.wait_lines(
        &["agent node-0 registered", "agent node-1 registered"],
        LIMIT,
    );
    let mut d = c.agent("node-2", &addr, &["--once"]);
    assert_eq!(coord.wait(LIMIT).code(), Some(0), "{}", coord.text());
    for agent in [&mut a, &mut b, &mut d] {
        assert_eq!(agent.wait(LIMIT).code(), Some(0), "{}", agent.text());
    }

    let lines = c.merged();
    assert_eq!(lines.len(), 17);
    let keys: BTreeSet<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["cluster"].as_str().unwrap().to_string(),
                l["walName"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 17, "no file reported twice");
    assert_eq!(
        c.stored(),
        keys,
        "the sink holds exactly the reported files"
    );
    let clusters: BTreeSet<_> = keys.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        clusters.len(),
        6,
        "3 agents x 2 clusters, each its own directory: {clusters:?}"
    );
    for l in &lines {
        assert_eq!(l["error"], "");
        let agent = l["agent"].as_str().unwrap();
        assert!(
            l["cluster"]
                .as_str()
                .unwrap()
                .starts_with(&format!("walplayer-{agent}-")),
            "{l}"
        );
    }

    // Nobody uploaded before the barrier, which opened after the last agent was ready.
    let log = coord.text();
    // Log lines start with their RFC 3339 time.
    let logged_at = |needle: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {log}"));
        ns(&serde_json::Value::String(
            line.split_whitespace().next().unwrap().to_string(),
        ))
    };
    let barrier = log
        .lines()
        .find(|l| l.contains("start barrier released for "))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let barrier_ns = ns(&serde_json::Value::String(barrier));
    for agent in ["node-0", "node-1", "node-2"] {
        let ready = logged_at(&format!("agent {agent} ready"));
        assert!(
            barrier_ns > ready,
            "the barrier opened after {agent} was ready"
        );
        let first_start = lines
            .iter()
            .filter(|l| l["agent"] == agent)
            .map(|l| ns(&l["startTime"]))
            .min()
            .unwrap_or_else(|| panic!("{agent} uploaded nothing"));
        assert!(
            first_start >= barrier_ns,
            "{agent} started a file {} ns before the barrier",
            barrier_ns - first_start
        );
    }

    let s = c.summary();
    assert_eq!(s["filesOk"], 17);
    assert_eq!(s["agents"].as_array().unwrap().len(), 3);
    assert_eq!(s["clusters"].as_array().unwrap().len(), 6);
    // Measured, not asserted: a loaded machine may start agents apart.
    assert!(s["startSkewNs"].as_u64().is_some(), "{s}");
    assert_eq!(s["filesUnreported"], 0);
    for a in s["agents"].as_array().unwrap() {
        assert_eq!(a["state"], "finished");
        assert!(a["latency"]["p50Ns"].as_u64().unwrap() > 0);
    }

    // Merged percentiles equal those of one histogram built from every file.
    let mut h = walplayer::klio::stats::new_histogram();
    for l in &lines {
        h.record(l["elapsedTime"].as_str().unwrap().parse().unwrap())
            .unwrap();
    }
    let expect = walplayer::klio::stats::Latency::of(&h);
    assert_eq!(s["latency"], serde_json::to_value(expect).unwrap());

    // The timeline places every file in the second it ended; the report
    // carries the very summary written to --summary.
    assert_eq!(s["mode"], "distributed");
    crate::report::assert_timeline_adds_up(&s);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html, walplayer::report::render(&s));
}

#[test]
fn late_and_duplicate_agents_are_refused_on_both_sides() {
    let c = Cluster::new();
    let (mut coord, addr) = c.coordinator(&[
        "--agents",
        "1",
        "--length",
        "40",
        "--wal-size",
        "1",
        "--block-size",
        "16",
    ]);
    let mut a = c.agent("solo", &addr, &["--once"]);
    coord.wait_line("registered", LIMIT);
    // Same name while the first is registered.
    let mut dup = c.agent("solo", &addr, &["--once"]);
    assert_eq!(dup.wait(LIMIT).code(), Some(3));
    assert!(dup.text().contains("already registered"), "{}", dup.text());
    coord.wait_line("start barrier released", LIMIT);
    let mut late = c.agent("latecomer", &addr, &["--once"]);
    assert_eq!(late.wait(LIMIT).code(), Some(3));
    assert!(
        late.text().contains("may join the next run"),
        "{}",
        late.text()
    );
    assert_eq!(coord.wait(LIMIT).code(), Some(0), "{}", coord.text());
    assert_eq!(a.wait(LIMIT).code(), Some(0));
    let log = coord.text();
    assert!(
        log.contains("refused agent solo") && log.contains("refused agent latecomer"),
        "{log}"
    );
}

#[test]
fn killed_agent_is_lost_its_files_named_and_the_rest_finish() {
    let c = Cluster::new();
    let (mut coord, addr) = c.coordinator(&[
        "--agents",
        "2",
        "--length-per-agent",
        "60",
        "--wal-size",
        "1",
        "--block-size",
        "8",
        "--agent-timeout",
        "5s",
    ]);
    let mut victim = c.agent("victim", &addr, &["--once"]);
    let mut other = c.agent("survivor", &addr, &["--once"]);
    let merged = c.env.path("merged.json");
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(&merged).unwrap_or_default();
        if text
            .lines()
            .filter(|l| l.contains("\"agent\":\"victim\""))
            .count()
            >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "victim reported nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    victim.child.kill().unwrap();
    let _ = victim.wait(LIMIT);
    assert_eq!(coord.wait(LIMIT).code(), Some(3), "{}", coord.text());
    assert_eq!(other.wait(LIMIT).code(), Some(0));

    let s = c.summary();
    let agents: HashMap<String, serde_json::Value> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a.clone()))
        .collect();
    assert_eq!(agents["survivor"]["state"], "finished");
    assert_eq!(agents["survivor"]["filesOk"], 60);
    let v = &agents["victim"];
    assert!(v["state"].as_str().unwrap().starts_with("lost"), "{v}");
    let reported = v["filesOk"].as_u64().unwrap() + v["filesFailed"].as_u64().unwrap();
    assert!(reported >= 2);
    assert_eq!(v["filesUnreported"].as_u64().unwrap(), 60 - reported);
    assert_eq!(s["filesUnreported"].as_u64().unwrap(), 60 - reported);
    // Results already sent are kept.
    let merged = c.merged();
    let victim_lines: Vec<_> = merged.iter().filter(|l| l["agent"] == "victim").collect();
    assert_eq!(victim_lines.len() as u64, reported);
    // Exactly the files it generated and never reported are named, in
    // order, up to the 20 listed.
    let sent: BTreeSet<String> = victim_lines
        .iter()
        .map(|l| l["walName"].as_str().unwrap().to_string())
        .collect();
    let planned = wal_names_under(&c.env.path("agent-victim"));
    assert_eq!(
        planned.len(),
        60,
        "the victim generated its shard: {planned:?}"
    );
    let never: Vec<&String> = planned.iter().filter(|n| !sent.contains(*n)).collect();
    assert_eq!(never.len() as u64, 60 - reported);
    let unreported = v["unreported"].as_array().unwrap();
    assert_eq!(unreported.len(), 1, "one cluster: {v}");
    assert_eq!(unreported[0]["cluster"], "walplayer-victim");
    assert_eq!(unreported[0]["count"].as_u64().unwrap(), 60 - reported);
    let named: Vec<&str> = unreported[0]["firstWalNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = never.iter().take(20).map(|n| n.as_str()).collect();
    assert_eq!(named, expected);
    assert!(coord.text().contains("agent victim lost"));
}

#[test]
fn killed_coordinator_stops_agents_in_bounded_time() {
    let c = Cluster::new();
    let run = [
        "--agents",
        "1",
        "--length",
        "400",
        "--wal-size",
        "1",
        "--block-size",
        "4",
    ];
    let (mut coord, addr) = c.coordinator(&run);
    let mut once = c.agent("once", &addr, &["--once"]);
    // Killed while uploading: a first result has come back.
    wait_for_lines(&c.env.path("merged.json"), 1, LIMIT);
    coord.child.kill().unwrap();
    // Bounded, not fast: the time only proves the agent does not hang.
    assert_eq!(
        once.wait(Duration::from_secs(30)).code(),
        Some(3),
        "{}",
        once.text()
    );
    assert!(
        once.text().contains("lost the coordinator"),
        "{}",
        once.text()
    );
    let stored = c.stored().len();
    assert!(
        stored < 400,
        "the agent stopped instead of finishing the run"
    );

    // A long-lived agent goes back to waiting instead of exiting, and its
    // uploads stop: the sink gets nothing more from it.
    std::fs::remove_file(c.env.path("merged.json")).unwrap();
    let (mut coord2, addr2) = c.coordinator(&run);
    let stay = c.agent("stay", &addr2, &[]);
    wait_for_lines(&c.env.path("merged.json"), 1, LIMIT);
    coord2.child.kill().unwrap();
    stay.wait_line("lost the coordinator", Duration::from_secs(30));
    let at_loss = c.sink_state();
    stay.wait_line("waiting for the coordinator", Duration::from_secs(30));
    let waiting = c.sink_state();
    // A file whose last block was already on its way may still complete.
    let completed_after: Vec<_> = waiting
        .iter()
        .filter(|(name, _)| !name.contains('~') && !at_loss.contains_key(*name))
        .collect();
    assert!(
        completed_after.len() <= 1,
        "uploads went on after the loss: {completed_after:?}"
    );
    // An observation window: an agent still uploading at 4 KiB blocks would
    // grow a file in it.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.sink_state(), waiting, "the sink got more after the loss");
    assert!(
        waiting
            .keys()
            .filter(|n| n.contains("walplayer-stay"))
            .count()
            < 400,
        "the agent stopped instead of finishing the run"
    );
    let mut stay = stay;
    assert!(
        stay.child.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
}

#[test]
fn interrupted_coordinator_aborts_agents_and_writes_summary() {
    let c = Cluster::new();
    let (mut coord, addr) = c.coordinator(&[
        "--agents",
        "1",
        "--length",
        "300",
        "--wal-size",
        "1",
        "--block-size",
        "4",
    ]);
    let mut agent = c.agent("a", &addr, &["--once"]);
    coord.wait_line("start barrier released", LIMIT);
    let merged = c.env.path("merged.json");
    wait_for_lines(&merged, 2, LIMIT);
    signal(&coord.child, libc::SIGINT);
    assert_eq!(coord.wait(LIMIT).code(), Some(130), "{}", coord.text());
    assert_eq!(agent.wait(LIMIT).code(), Some(3), "{}", agent.text());
    let s = c.summary();
    assert_eq!(s["interrupted"], true);
    let lines = c.merged().len() as u64;
    assert!((2..300).contains(&lines));
    assert_eq!(
        s["filesOk"].as_u64().unwrap() + s["filesFailed"].as_u64().unwrap(),
        lines
    );
}

#[test]
fn directory_runs_shard_or_replicate() {
    let c = Cluster::new();
    let src = c.env.generate("src", 5, 1, &[]);
    let mut source: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    source.sort();
    for split in ["shard", "replicate"] {
        let (mut coord, addr) =
            c.coordinator(&["--agents", "2", "--source", "dir", "--split", split]);
        let mut agents: Vec<Logged> = ["d0", "d1"]
            .iter()
            .map(|n| {
                let data = c.env.path(&format!("agent-{n}"));
                std::fs::create_dir_all(&data).unwrap();
                for f in std::fs::read_dir(&src).unwrap() {
                    let f = f.unwrap().path();
                    std::fs::copy(&f, data.join(f.file_name().unwrap())).unwrap();
                }
                c.agent(n, &addr, &["--once"])
            })
            .collect();
        assert_eq!(coord.wait(LIMIT).code(), Some(0), "{}", coord.text());
        for a in &mut agents {
            assert_eq!(a.wait(LIMIT).code(), Some(0));
        }
        // Which files went where: agent -> (cluster, names) it reported.
        let mut by_agent: HashMap<String, (BTreeSet<String>, Vec<String>)> = HashMap::new();
        for l in c.merged() {
            assert_eq!(l["error"], "", "{l}");
            let entry = by_agent
                .entry(l["agent"].as_str().unwrap().to_string())
                .or_default();
            entry.0.insert(l["cluster"].as_str().unwrap().to_string());
            entry.1.push(l["walName"].as_str().unwrap().to_string());
        }
        let mut all_names: Vec<String> = Vec::new();
        for agent in ["d0", "d1"] {
            let (clusters, names) = &by_agent[agent];
            assert_eq!(
                clusters,
                &BTreeSet::from([format!("walplayer-{agent}")]),
                "{split}: {agent} uploads as its own cluster"
            );
            let distinct: BTreeSet<&String> = names.iter().collect();
            assert_eq!(
                distinct.len(),
                names.len(),
                "{split}: {agent} sent a file twice"
            );
            // What the sink holds for the agent's cluster is what it reported.
            let stored: BTreeSet<String> = c
                .stored()
                .into_iter()
                .filter(|(cl, _)| *cl == format!("walplayer-{agent}"))
                .map(|(_, n)| n)
                .collect();
            assert_eq!(stored, names.iter().cloned().collect(), "{split}: {agent}");
            if split == "replicate" {
                assert_eq!(
                    distinct,
                    source.iter().collect(),
                    "replicate: {agent} plays every file"
                );
            } else {
                assert!(!names.is_empty(), "shard: {agent} got a share");
            }
            all_names.extend(names.iter().cloned());
        }
        if split == "shard" {
            all_names.sort();
            assert_eq!(
                all_names, source,
                "shard: every file exactly once over both agents"
            );
        }
    }
}

#[test]
fn agents_refuse_an_address_or_size_outside_their_bounds() {
    let c = Cluster::new();
    let (mut coord, addr) = c.coordinator(&[
        "--agents",
        "1",
        "--length",
        "4",
        "--wal-size",
        "1",
        "--address",
        "127.0.0.1:9",
    ]);
    let mut a = c.agent("careful", &addr, &["--once"]);
    assert_eq!(coord.wait(LIMIT).code(), Some(2), "{}", coord.text());
    assert!(
        coord.text().contains("--allow-address 127.0.0.1:9"),
        "{}",
        coord.text()
    );
    assert_eq!(a.wait(LIMIT).code(), Some(1));
    assert!(a.text().contains("refuses the assignment"), "{}", a.text());

    let (mut coord, addr) = c.coordinator(&["--agents", "1", "--length", "50", "--wal-size", "1"]);
    let mut a = c.agent("small", &addr, &["--once", "--max-files", "10"]);
    assert_eq!(coord.wait(LIMIT).code(), Some(2), "{}", coord.text());
    assert!(coord.text().contains("--max-files 10"), "{}", coord.text());
    assert_eq!(a.wait(LIMIT).code(), Some(1));

    let (mut coord, addr) = c.coordinator(&[
        "--agents",
        "1",
        "--length",
        "6",
        "--wal-size",
        "1",
        "--clusters-per-agent",
        "3",
    ]);
    let mut a = c.agent("few", &addr, &["--once", "--max-clusters", "2"]);
    assert_eq!(coord.wait(LIMIT).code(), Some(2), "{}", coord.text());
    let why = "refuses the assignment: clusters 3 is outside 1..=2 (agent --max-clusters)";
    assert!(coord.text().contains(why), "{}", coord.text());
    assert_eq!(a.wait(LIMIT).code(), Some(1));
    assert!(a.text().contains(why), "{}", a.text());
    assert!(c.stored().is_empty(), "nothing was uploaded");
}

#[tokio::test]
async fn other_version_is_refused_with_a_reason() {
    use walplayer::proto::control::agent_message::Body as Up;
    use walplayer::proto::control::control_client::ControlClient;
    use walplayer::proto::control::coordinator_message::Body as Down;
    use walplayer::proto::control::{AgentMessage, Register};

    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&["--agents", "1", "--length", "1", "--wal-size", "1"]);
    let mut client = ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let register = AgentMessage {
        body: Some(Up::Register(Register {
            name: "old-agent".into(),
            version: "0.0.1".into(),
            ..Default::default()
        })),
    };
    let mut down = client
        .session(tokio_stream::iter(vec![register]))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(LIMIT, down.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(Down::Refusal(r)) = reply.body else {
        panic!("expected a refusal, got {reply:?}");
    };
    assert!(
        r.reason
            .contains("runs walplayer 0.0.1 but the coordinator runs"),
        "{}",
        r.reason
    );
    coord.wait_line("refused agent old-agent", LIMIT);
}

/// A coordinator that hands out one chosen assignment and records what the
/// agent answers.
struct RogueCoordinator {
    assignment: walplayer::proto::control::Assignment,
    answers: tokio::sync::mpsc::Sender<String>,
}

#[tonic::async_trait]
impl walplayer::proto::control::control_server::Control for RogueCoordinator {
    type SessionStream = tokio_stream::wrappers::ReceiverStream<
        Result<walplayer::proto::control::CoordinatorMessage, tonic::Status>,
    >;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<walplayer::proto::control::AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        use walplayer::proto::control::agent_message::Body as Up;
        use walplayer::proto::control::coordinator_message::Body as Down;
        let mut up = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let assignment = self.assignment.clone();
        let answers = self.answers.clone();
        tokio::spawn(async move {
            let _register = up.message().await;
            let msg = walplayer::proto::control::CoordinatorMessage {
                body: Some(Down::Assignment(assignment)),
            };
            let _ = tx.send(Ok(msg)).await;
            while let Ok(Some(m)) = up.message().await {
                if let Some(Up::Failed(f)) = m.body {
                    let _ = answers.send(f.reason).await;
                    return; // dropping tx closes the session
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }
}

#[tokio::test]
async fn a_coordinator_cannot_make_an_agent_touch_paths_outside_its_data_dir() {
    use walplayer::proto::control::{Assignment, Source, Split};
    let c = Cluster::new();
    let data = c.env.path("agent-rogue");
    std::fs::create_dir_all(data.join("victim")).unwrap();
    // As after an earlier run, so `runs/../victim` resolves.
    std::fs::create_dir_all(data.join("runs")).unwrap();
    std::fs::write(data.join("victim/keep.txt"), b"mine").unwrap();
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel(4);
    let rogue = RogueCoordinator {
        assignment: Assignment {
            run_id: "../victim".into(),
            agent_index: 0,
            agent_count: 1,
            source: Source::Generate as i32,
            split: Split::Shard as i32,
            segments_per_cluster: vec![1],
            wal_size_mib: 1,
            clusters: 1,
            jobs: 1,
            block_size_kib: 64,
            timeout_ms: 10_000,
            ..Default::default()
        },
        answers: answers_tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(walplayer::proto::control::control_server::ControlServer::new(rogue))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut agent = c.agent("rogue", &addr, &["--once"]);
    let reason = tokio::time::timeout(LIMIT, answers.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(reason.contains("safe directory name"), "{reason}");
    let status = tokio::task::spawn_blocking(move || agent.wait(LIMIT))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        std::fs::read(data.join("victim/keep.txt")).unwrap(),
        b"mine",
        "nothing outside runs/ is touched"
    );
    server.abort();
}
