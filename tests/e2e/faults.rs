//! Fault injection ("Nothing lost, nobody let in"): a sink with fault
//! switches, or a [`crate::proxy`] in front of a sink, misbehaves in each way
//! a Klio server or the network can. For each fault, `play` and the
//! coordinator must finish in bounded time, give every file a clear error,
//! keep every result already obtained, and exit with the documented status.
//!
//! - [`play`]: per-file faults and up-front ones, against `walplayer play`.
//! - [`coordinator`]: the same faults under a coordinator and its agents.
//! - [`certs`]: server certificates the player must not trust.
//! - [`secrets`]: private keys never reach a log, at any log level.
//!
//! Tests that check one fault's error pass `--retries 0` when the binary has
//! retries, so that one fault gives exactly one error.

mod certs;
mod coordinator;
mod play;
mod secrets;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Longest one faulty run may take; every fault here must end far sooner.
const LIMIT: Duration = Duration::from_secs(60);

/// One MiB: the size of every generated segment here.
const MIB: u64 = 1 << 20;

/// One attempt per file, so each test sees its fault's own error.
const NO_RETRIES: [&str; 2] = ["--retries", "0"];

/// What a finished `play` left behind.
struct Played {
    status: ExitStatus,
    lines: Vec<Value>,
    summary: Value,
    stderr: String,
}

impl Played {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn errors(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(|l| l["error"].as_str().unwrap())
            .collect()
    }
}

/// `walplayer play WAL` against `address`, one job, 256 KiB blocks, JSON
/// lines and summary to files named after `tag`; bounded by [`LIMIT`].
fn play(env: &TestEnv, wal: &Path, address: &str, tag: &str, extra: &[&str]) -> Played {
    let output = env.path(&format!("{tag}.jsonl"));
    let summary = env.path(&format!("{tag}-summary.json"));
    let log = env.path(&format!("{tag}.log"));
    let mut cmd = env.play(wal, address, &["-j", "1", "--block-size", "256", "--quiet"]);
    cmd.args(NO_RETRIES)
        .args(extra)
        .arg("--output")
        .arg(&output)
        .arg("--summary")
        .arg(&summary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().expect("start play");
    let status = wait_bounded(&mut child, LIMIT);
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let summary_text = text(&summary);
    Played {
        status,
        lines: json_lines(&text(&output)),
        summary: if summary_text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&summary_text).unwrap()
        },
        stderr: text(&log),
    }
}

/// Asserts that the first `ok` reports are successes whose files the sink
/// stored byte-identical under `stored`, and that no later file was stored.
fn assert_kept(lines: &[Value], ok: usize, stored: &Path) {
    for (i, line) in lines.iter().enumerate() {
        let name = line["walName"].as_str().unwrap();
        let path = stored.join(name);
        if i < ok {
            assert_eq!(line["error"], "", "file {i} was stored before the fault");
            assert_eq!(line["bytes"], MIB);
            let sent = std::fs::read(line["walFullPath"].as_str().unwrap()).unwrap();
            let kept = std::fs::read(&path).unwrap_or_else(|e| panic!("{name} not stored: {e}"));
            assert!(sent == kept, "{name} stored differently from what was sent");
        } else {
            assert_ne!(line["error"], "", "file {i} came after the fault: {line}");
            assert_eq!(line["bytes"], 0, "{line}");
            assert!(!path.exists(), "{name} failed, yet has its final name");
        }
    }
}

/// Asserts `error` contains every one of `needles`.
fn assert_says(error: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            error.contains(needle),
            "error {error:?} does not say {needle:?}"
        );
    }
}

/// A sink with `--fault FAULT --fault-after AFTER`, storing into `data`.
fn faulty_sink(env: &TestEnv, data: &Path, fault: &str, after: u64) -> SinkProcess {
    env.sink(
        data,
        &["--fault", fault, "--fault-after", &after.to_string()],
    )
}

/// The directory the sink stores cluster `walplayer` in.
fn stored(data: &Path) -> PathBuf {
    data.join("walplayer")
}

/// Spawns `cmd` with output to files and waits for it within [`LIMIT`];
/// returns the status and everything it wrote.
fn run_logged(mut cmd: Command, log: &Path) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut child, LIMIT);
    let text = std::fs::read_to_string(log).unwrap_or_default()
        + &std::fs::read_to_string(log.with_extension("out")).unwrap_or_default();
    (status, text)
}
