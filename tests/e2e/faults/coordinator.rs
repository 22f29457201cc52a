//! The coordinator and its agents under the same faults: the run ends in
//! bounded time, the merged results give each failed file its error, every
//! result obtained is kept (and what was reported stored is stored), and
//! the coordinator exits 1 for failed files, 2 for a fault found up front.

use std::collections::BTreeMap;

use super::*;
use crate::proxy::{Mode, Proxy, Trip};

/// A sink (possibly with faults) for a coordinator run.
struct Fleet {
    env: TestEnv,
    sink: SinkProcess,
    data: PathBuf,
}

/// What a finished distributed run left behind.
struct Coordinated {
    code: Option<i32>,
    agent_codes: Vec<Option<i32>>,
    lines: Vec<Value>,
    summary: Value,
    log: String,
}

impl Coordinated {
    fn ok(&self) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["error"] == "").collect()
    }

    fn failed(&self) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["error"] != "").collect()
    }
}

impl Fleet {
    fn new(sink_args: &[&str]) -> Fleet {
        let env = TestEnv::new();
        let data = env.path("sink-data");
        let sink = env.sink(&data, sink_args);
        Fleet { env, sink, data }
    }

    /// A coordinator for `agents` agents sending to `klio`, 1 MiB segments
    /// in 256 KiB blocks, one job each; runs it and its agents to the end.
    fn run(&self, klio: &str, agents: usize, args: &[&str]) -> Coordinated {
        let env = &self.env;
        let (merged, summary) = (env.path("merged.jsonl"), env.path("summary.json"));
        let mut cmd = env.walplayer(&["coordinator", "--listen", "127.0.0.1:0", "--quiet"]);
        cmd.args(["--agents", &agents.to_string(), "--address", klio])
            .args(["--wal-size", "1", "--block-size", "256", "-j", "1"])
            .args(NO_RETRIES)
            .args(args)
            .arg("--output")
            .arg(&merged)
            .arg("--summary")
            .arg(&summary)
            .stdout(Stdio::null());
        let mut coordinator = Logged::start(cmd, env.path("coordinator.log"));
        let line = coordinator.wait_line("coordinator listening on ", LIMIT);
        let address = line.rsplit(' ').next().unwrap().to_string();
        let mut fleet: Vec<Logged> = (0..agents)
            .map(|i| self.agent(&format!("agent-{i}"), &address, klio))
            .collect();
        let code = coordinator.wait(LIMIT).code();
        let agent_codes = fleet.iter_mut().map(|a| a.wait(LIMIT).code()).collect();
        let summary = std::fs::read_to_string(&summary).unwrap_or_default();
        Coordinated {
            code,
            agent_codes,
            lines: json_lines(&std::fs::read_to_string(&merged).unwrap_or_default()),
            summary: serde_json::from_str(&summary).unwrap_or(Value::Null),
            log: coordinator.text(),
        }
    }

    fn agent(&self, name: &str, coordinator: &str, klio: &str) -> Logged {
        let data = self.env.path(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
        cmd.env("HOME", self.env.dir.path())
            .env_remove("RUST_LOG")
            .env_remove("CLIENT_WAL_ADDRESS")
            .args(["--coordinator", coordinator, "--name", name, "--once"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&self.env.certs.klio_config)
            // The coordinator's --address override needs the agent's consent.
            .args(["--allow-address", klio])
            .stdout(Stdio::null());
        Logged::start(cmd, self.env.path(&format!("{name}.log")))
    }

    /// Asserts that every reported success is stored complete (the agent
    /// removes the files it generated, so sizes are compared), and that the
    /// run's accounting adds up to `files`.
    fn assert_kept(&self, run: &Coordinated, files: u64) {
        assert_eq!(run.lines.len() as u64, files, "every file is reported");
        for line in run.ok() {
            let stored = self
                .data
                .join(line["cluster"].as_str().unwrap())
                .join(line["walName"].as_str().unwrap());
            let size = std::fs::metadata(&stored)
                .unwrap_or_else(|e| panic!("{line} not stored: {e}"))
                .len();
            assert_eq!(size, MIB, "{line}");
            assert_eq!(line["bytes"], MIB, "{line}");
        }
        let s = &run.summary;
        assert_eq!(s["filesOk"], run.ok().len() as u64, "{s}");
        assert_eq!(s["filesFailed"], run.failed().len() as u64, "{s}");
        assert_eq!(s["filesUnreported"], 0, "{s}");
        for agent in s["agents"].as_array().unwrap() {
            assert_eq!(agent["state"], "finished", "{agent}");
        }
        assert!(
            run.agent_codes.iter().all(|c| *c == Some(0)),
            "{:?}",
            run.agent_codes
        );
    }

    /// Asserts that no failed file has its final name in the sink.
    fn assert_failed_not_stored(&self, run: &Coordinated) {
        for line in run.failed() {
            let stored = self
                .data
                .join(line["cluster"].as_str().unwrap())
                .join(line["walName"].as_str().unwrap());
            assert!(!stored.exists(), "{line} failed, yet has its final name");
        }
    }
}

/// How many files each error message was given to.
fn by_error(run: &Coordinated) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in run.failed() {
        *out.entry(line["error"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

#[test]
fn short_write_fails_files_on_every_agent_and_keeps_the_rest() {
    let fleet = Fleet::new(&["--fault", "short-write", "--fault-after", "3"]);
    let run = fleet.run(&fleet.sink.address, 2, &["--length", "6"]);
    assert_eq!(run.code, Some(1), "{}", run.log);
    fleet.assert_kept(&run, 6);
    fleet.assert_failed_not_stored(&run);
    assert_eq!(run.ok().len(), 3, "the first three streams were stored");
    let errors = by_error(&run);
    assert_eq!(
        errors.get("incomplete WAL file: server stored 1048575 of the 1048576 bytes sent"),
        Some(&3),
        "{errors:?}"
    );
}

#[test]
fn status_rejection_is_each_files_error() {
    let fleet = Fleet::new(&["--fault", "status:resource-exhausted", "--fault-after", "2"]);
    let run = fleet.run(&fleet.sink.address, 1, &["--length", "4"]);
    assert_eq!(run.code, Some(1), "{}", run.log);
    fleet.assert_kept(&run, 4);
    fleet.assert_failed_not_stored(&run);
    assert_eq!(run.ok().len(), 2);
    for line in run.failed() {
        assert_says(
            line["error"].as_str().unwrap(),
            &[
                "server rejected the upload",
                "ResourceExhausted",
                "--fault status:resource-exhausted",
            ],
        );
        assert_eq!(line["agent"], "agent-0");
    }
}

#[test]
fn stalled_streams_time_out_on_every_agent() {
    let fleet = Fleet::new(&["--fault", "stall", "--fault-after", "2"]);
    let run = fleet.run(
        &fleet.sink.address,
        2,
        &["--length", "4", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(1), "{}", run.log);
    fleet.assert_kept(&run, 4);
    fleet.assert_failed_not_stored(&run);
    assert_eq!(run.ok().len(), 2);
    for line in run.failed() {
        assert_says(line["error"].as_str().unwrap(), &["timed out after 2s"]);
    }
}

#[test]
fn connection_reset_fails_the_file_in_flight_only() {
    let fleet = Fleet::new(&[]);
    // Both agents' probes, then 2.5 MiB of files: the mark falls inside a file.
    let proxy = Proxy::start(&fleet.sink.address, Mode::After(5 * MIB / 2, Trip::Reset));
    let run = fleet.run(&proxy.address, 2, &["--length", "8"]);
    assert_eq!(run.code, Some(1), "{}", run.log);
    assert_eq!(proxy.mode(), Mode::Pass, "the reset happened");
    fleet.assert_kept(&run, 8);
    let failed = run.failed();
    assert!(
        (1..=2).contains(&failed.len()),
        "one connection was reset: {:?}",
        by_error(&run)
    );
    for line in failed {
        let error = line["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains("reset")
                || error.contains("broken pipe")
                || error.contains("connection"),
            "{error}"
        );
    }
}

#[test]
fn connections_refused_mid_run_fail_the_rest_in_bounded_time() {
    let fleet = Fleet::new(&[]);
    let proxy = Proxy::start(&fleet.sink.address, Mode::After(5 * MIB / 2, Trip::Refuse));
    let run = fleet.run(&proxy.address, 2, &["--length", "8"]);
    assert_eq!(run.code, Some(1), "{}", run.log);
    assert_eq!(proxy.mode(), Mode::Refuse);
    fleet.assert_kept(&run, 8);
    // 2.5 MiB cannot all be partial files of two agents: one file got through.
    assert!(!run.ok().is_empty(), "{:?}", by_error(&run));
    assert!(run.failed().len() >= 4, "{:?}", by_error(&run));
    for line in run.failed() {
        let error = line["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains("reset") || error.contains("broken pipe") || error.contains("connect"),
            "{error}"
        );
    }
}

#[test]
fn untrusted_server_certificate_fails_the_run_up_front() {
    let fleet = Fleet::new(&[]);
    let other = TestEnv::new();
    let mut cmd = fleet
        .env
        .walplayer(&["sink", "--listen", "127.0.0.1:0", "--fsync", "none"]);
    cmd.arg("--data")
        .arg(fleet.env.path("untrusted-data"))
        .arg("--tls-cert")
        .arg(&other.certs.server.cert)
        .arg("--tls-key")
        .arg(&other.certs.server.key)
        .arg("--client-ca")
        .arg(&fleet.env.certs.server.ca);
    let untrusted = SinkProcess::start(cmd);
    let run = fleet.run(&untrusted.address, 1, &["--length", "2"]);
    assert_eq!(run.code, Some(2), "{}", run.log);
    assert!(run.lines.is_empty(), "no file was attempted");
    assert_says(
        &run.log,
        &[
            "agent agent-0 cannot run its assignment",
            &untrusted.address,
        ],
    );
    assert!(
        run.log.contains("UnknownIssuer") || run.log.contains("BadSignature"),
        "{}",
        run.log
    );
}
