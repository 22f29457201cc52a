//! Logs as Kubernetes shows them: `--log-format json` makes every stderr
//! line a JSON record, so `kubectl logs` (stdout and stderr merged line by
//! line) of a coordinator parses line by line, and its last
//! `walplayerSummary` line is the summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::distributed::Cluster;
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(90);

/// A process whose stdout and stderr are merged line by line into one
/// log, as a container runtime keeps them for `kubectl logs`.
struct Merged {
    child: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Merged {
    fn start(mut cmd: Command) -> Merged {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let log = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [out, err]
            .into_iter()
            .map(|stream| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        log.lock().unwrap().push(line);
                    }
                })
            })
            .collect();
        Merged {
            child,
            log,
            readers,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a record whose `msg` contains `needle`; returns the msg.
    fn wait_msg(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(&format!("a log record with {needle:?}"), LIMIT, || {
            found = self.lines().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let msg = v["msg"].as_str()?;
                msg.contains(needle).then(|| msg.to_string())
            });
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits for the exit and for both streams to end; the whole log.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = wait_bounded(&mut self.child, LIMIT);
        for r in std::mem::take(&mut self.readers) {
            r.join().unwrap();
        }
        (status, self.lines())
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's filter, `jq -R 'fromjson? | select(.walplayerSummary?) |
/// .walplayerSummary'`, keeping the last: lines that are not JSON are
/// skipped.
fn jq_summary(lines: &[String]) -> Option<serde_json::Value> {
    lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("walplayerSummary").cloned())
}

/// Asserts every line is a JSON object: a file record, the summary line or
/// a log record with Klio's keys; returns the file records.
fn assert_all_json(lines: &[String]) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nlog:\n{}", lines.join("\n")));
        assert!(v.is_object(), "{line}");
        if v.get("walFullPath").is_some() {
            records.push(v);
        } else if v.get("walplayerSummary").is_none() {
            for key in ["level", "ts", "logger", "msg"] {
                assert!(v[key].is_string(), "log record without {key}: {line}");
            }
            assert!(
                ["error", "warning", "info", "debug", "trace"]
                    .contains(&v["level"].as_str().unwrap()),
                "{line}"
            );
            assert!(
                humantime::parse_rfc3339(v["ts"].as_str().unwrap()).is_ok(),
                "{line}"
            );
        }
    }
    records
}

#[test]
fn coordinator_json_logs_merged_with_stdout_parse_and_end_with_the_summary() {
    let c = Cluster::new();
    let summary = c.env.path("summary.json");
    let mut cmd = c.env.walplayer(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--agents",
        "2",
        "--length",
        "6",
        "--wal-size",
        "1",
    ]);
    cmd.arg("--summary").arg(&summary);
    let coord = Merged::start(cmd);
    let listening = coord.wait_msg("coordinator listening on ");
    let addr = listening.rsplit(' ').next().unwrap().to_string();
    let mut agents: Vec<Logged> = ["node-0", "node-1"]
        .iter()
        .map(|name| c.agent(name, &addr, &["--once", "--log-format", "json"]))
        .collect();
    let (status, lines) = coord.finish();
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));

    let records = assert_all_json(&lines);
    assert_eq!(records.len(), 6, "one record per file");
    let found = jq_summary(&lines).expect("a walplayerSummary line");
    assert_eq!(
        found,
        read_json(&summary),
        "the summary line is the --summary file"
    );
    assert_eq!(
        walplayer::klio::output::summary_from_log(&lines.join("\n")).unwrap(),
        found
    );
    // The end-of-run text summary went out as log records too.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("files stored, 0 failed") && l.contains("\"msg\"")),
        "{}",
        lines.join("\n")
    );
    for agent in &mut agents {
        assert_eq!(agent.wait(LIMIT).code(), Some(0), "{}", agent.text());
        let text = agent.text();
        assert!(!text.trim().is_empty());
        assert_all_json(&text.lines().map(str::to_string).collect::<Vec<_>>());
    }
}

#[test]
fn play_json_logs_keep_stderr_json_and_text_stays_the_default() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    std::fs::write(wal.join("README"), b"not wal").unwrap();
    let sink = env.sink(&env.path("data"), &[]);
    let out = run(&mut env.play(&wal, &sink.address, &["--log-format", "json"]));
    assert_status(&out, 0);
    let err: Vec<String> = stderr(&out).lines().map(str::to_string).collect();
    assert_all_json(&err);
    let text = err.join("\n");
    assert!(
        text.contains("\"level\":\"warning\"") && text.contains("README"),
        "{text}"
    );
    assert!(text.contains("2 files stored, 0 failed"), "{text}");
    assert_eq!(file_lines(&stdout(&out)).len(), 2);

    // The environment chooses the same; a usage error is then JSON too.
    let out = run(env
        .walplayer(&["play", "--no-such-flag"])
        .env("WALPLAYER_LOG_FORMAT", "json"));
    assert_status(&out, 2);
    let err: Vec<String> = stderr(&out).lines().map(str::to_string).collect();
    assert_all_json(&err);
    assert!(err.iter().any(|l| l.contains("--no-such-flag")), "{err:?}");

    // Text by default: the summary in words, no JSON on stderr.
    let out = run(&mut env.play(&wal, &sink.address, &[]));
    assert_status(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("2 files stored, 0 failed"), "{err}");
    assert!(!err.lines().any(|l| l.starts_with('{')), "{err}");
}

#[test]
fn log_level_flags_and_environment_filter_what_is_logged() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    std::fs::write(wal.join("README"), b"not wal").unwrap();
    let sink = env.sink(&env.path("data"), &[]);
    // --log-level error hides the warning about README, not the summary.
    let out = run(&mut env.play(&wal, &sink.address, &["--log-level", "error"]));
    assert_status(&out, 0);
    let err = stderr(&out);
    assert!(!err.contains("README"), "{err}");
    assert!(err.contains("1 files stored"), "{err}");
    // So does the environment variable.
    let out = run(env
        .play(&wal, &sink.address, &[])
        .env("WALPLAYER_LOG_LEVEL", "error"));
    assert!(!stderr(&out).contains("README"), "{}", stderr(&out));
    // Klio's --debug shows debug records.
    let out = run(&mut env.play(&wal, &sink.address, &["--debug", "--log-format", "json"]));
    assert_status(&out, 0);
    assert!(
        stderr(&out).contains("\"level\":\"debug\""),
        "{}",
        stderr(&out)
    );
    let out = run(&mut env.walplayer(&["generate", "--length", "1", "--log-level", "loud"]));
    assert_status(&out, 2);
    assert!(stderr(&out).contains("--log-level"), "{}", stderr(&out));
}
