//! `--metrics-listen`: `/metrics` scraped while runs go on and after they
//! end, parsed as Prometheus exposition text, and checked against the
//! summaries; a bad address or a taken port is a usage error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use crate::distributed::Cluster;
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(60);
const MIB: f64 = (1 << 20) as f64;

/// One scrape: the raw text, checked line by line, and the parsed samples.
pub struct Metrics {
    pub text: String,
    scrape: Scrape,
}

impl Metrics {
    /// `GET http://addr/metrics`; the answer must be a 200 in OpenMetrics
    /// text whose every line is a comment the format defines or a sample.
    pub fn scrape(addr: &str) -> Metrics {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        check_lines(body);
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
        Metrics {
            text: body.to_string(),
            scrape,
        }
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.len() == labels.len())
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{name} is not a number: {other:?}"),
            })
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?} in:\n{}", self.text);
        found[0]
    }

    /// The sum of every sample `name` having `labels` (and maybe others).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// The cumulative buckets of histogram `name` (no other labels).
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let s = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.is_empty())
            .unwrap_or_else(|| panic!("no histogram {name} in:\n{}", self.text));
        match &s.value {
            Value::Histogram(b) => b.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

/// prometheus-parse skips what it does not understand; this does not:
/// every line must be `# HELP`, `# TYPE`, `# UNIT`, the final `# EOF`, or
/// `name{labels} value` with a number for the value.
fn check_lines(body: &str) {
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF:\n{body}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "unknown comment {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name in {line:?}"
        );
        assert!(
            series.contains('{') == series.ends_with('}'),
            "labels in {line:?}"
        );
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "value in {line:?}"
        );
    }
}

/// The address a process printed in its `metrics on http://ADDR/metrics` line.
fn metrics_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

#[test]
fn play_metrics_are_live_and_match_the_summary() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 5, 1, &[]);
    // The fifth file stalls at the sink until play's --timeout: the run is
    // still going when the first four are stored.
    let data = env.path("data");
    let sink = env.sink(&data, &["--fault", "stall", "--fault-after", "4"]);
    let (out, summary) = (env.path("out.json"), env.path("summary.json"));
    let mut cmd = env.play(
        &wal,
        &sink.address,
        &[
            "-j",
            "1",
            "--block-size",
            "256",
            "--timeout",
            "8s",
            "--retries",
            "0",
        ],
    );
    cmd.args(["--quiet", "--metrics-listen", "127.0.0.1:0"])
        .args(["--metrics-hold", "60s", "--output"])
        .arg(&out)
        .arg("--summary")
        .arg(&summary)
        .stdout(std::process::Stdio::null());
    let mut play = Logged::start(cmd, env.path("play.log"));
    let addr = metrics_addr(&play.wait_line("metrics on http://", LIMIT));

    wait_for_lines(&out, 4, LIMIT);
    let live = Metrics::scrape(&addr);
    assert!(
        play.text()
            .lines()
            .all(|l| !l.contains("serving /metrics on")),
        "the first scrape is taken during the run"
    );
    assert_eq!(
        live.value("walplayer_files_total", &[("outcome", "stored")]),
        4.0
    );
    assert_eq!(live.value("walplayer_bytes_stored_total", &[]), 4.0 * MIB);
    assert!(live.value("walplayer_bytes_sent_total", &[]) >= 4.0 * MIB);
    assert!(live.value("walplayer_upload_seconds_count", &[]) >= 4.0);

    play.wait_line("serving /metrics on", LIMIT);
    let end = Metrics::scrape(&addr);
    let s = read_json(&summary);
    let stored = s["filesOk"].as_f64().unwrap();
    let failed = s["filesFailed"].as_f64().unwrap();
    assert_eq!((stored, failed), (4.0, 1.0), "{s}");
    assert_eq!(
        end.value("walplayer_files_total", &[("outcome", "stored")]),
        stored
    );
    assert_eq!(
        end.sum("walplayer_files_total", &[("outcome", "failed")]),
        failed
    );
    for e in s["errors"].as_array().unwrap() {
        let kind = e["kind"].as_str().unwrap();
        assert_eq!(
            end.value(
                "walplayer_files_total",
                &[("outcome", "failed"), ("kind", kind)]
            ),
            e["count"].as_f64().unwrap(),
            "{kind}"
        );
    }
    assert_eq!(
        end.value(
            "walplayer_files_total",
            &[("outcome", "failed"), ("kind", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        end.value("walplayer_bytes_stored_total", &[]),
        s["bytes"].as_f64().unwrap()
    );
    // The stalled file's first blocks were sent too, but never all of it.
    let sent = end.value("walplayer_bytes_sent_total", &[]);
    assert!(sent > 4.0 * MIB && sent <= 5.0 * MIB, "{sent}");
    assert_eq!(
        end.value("walplayer_upload_seconds_count", &[]),
        stored + failed
    );
    let buckets = end.buckets("walplayer_upload_seconds");
    assert_eq!(buckets.last().unwrap().1, stored + failed, "+Inf holds all");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "cumulative, ascending: {buckets:?}"
    );

    // A signal ends the hold; the status is the run's.
    signal(&play.child, libc::SIGTERM);
    assert_eq!(play.wait(LIMIT).code(), Some(1));
}

#[test]
fn coordinator_and_agent_metrics_follow_the_run() {
    let c = Cluster::new();
    let (mut coordinator, control) = c.coordinator(&[
        "--agents",
        "2",
        "--length",
        "4",
        "--wal-size",
        "1",
        "--metrics-listen",
        "127.0.0.1:0",
        "--metrics-hold",
        "60s",
    ]);
    // Printed before the control address, which Cluster::coordinator waited for.
    let line = coordinator
        .text()
        .lines()
        .find(|l| l.contains("metrics on http://"))
        .map(str::to_string)
        .expect("the coordinator names its metrics address");
    let addr = metrics_addr(&line);
    let empty = Metrics::scrape(&addr);
    for state in [
        "registered",
        "preparing",
        "ready",
        "running",
        "finished",
        "lost",
    ] {
        assert_eq!(
            empty.value("walplayer_agents", &[("state", state)]),
            0.0,
            "{state}"
        );
    }

    // One agent of two: it waits, registered.
    let agent_a = c.agent("a", &control, &["--metrics-listen", "127.0.0.1:0"]);
    let agent_addr = metrics_addr(&agent_a.wait_line("metrics on http://", LIMIT));
    wait_until("agent a counted as registered", LIMIT, || {
        Metrics::scrape(&addr).value("walplayer_agents", &[("state", "registered")]) == 1.0
    });
    let mut agent_b = c.agent("b", &control, &["--once"]);

    coordinator.wait_line("serving /metrics on", LIMIT);
    let end = Metrics::scrape(&addr);
    assert_eq!(end.value("walplayer_agents", &[("state", "finished")]), 2.0);
    assert_eq!(
        end.value("walplayer_agents", &[("state", "registered")]),
        0.0
    );
    let s = c.summary();
    assert_eq!(s["filesOk"], 4, "{s}");
    assert_eq!(
        end.value("walplayer_files_total", &[("outcome", "stored")]),
        4.0
    );
    assert_eq!(
        end.value("walplayer_bytes_stored_total", &[]),
        s["bytes"].as_f64().unwrap()
    );
    assert!(
        !end.text.contains("walplayer_bytes_sent"),
        "the coordinator sends nothing itself"
    );

    // The agent that stays up counts what it played itself.
    let a = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "a")
        .expect("agent a in the summary");
    let mine = Metrics::scrape(&agent_addr);
    assert_eq!(
        mine.value("walplayer_files_total", &[("outcome", "stored")]),
        a["filesOk"].as_f64().unwrap()
    );
    assert_eq!(
        mine.value("walplayer_bytes_sent_total", &[]),
        a["bytes"].as_f64().unwrap()
    );

    assert_eq!(agent_b.wait(LIMIT).code(), Some(0));
    signal(&coordinator.child, libc::SIGTERM);
    assert_eq!(coordinator.wait(LIMIT).code(), Some(0));
    drop(agent_a);
}

#[test]
fn a_bad_metrics_address_is_a_usage_error_naming_the_flag() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let out = run(&mut env.play(&wal, "127.0.0.1:9", &["--metrics-listen", "localhost"]));
    assert_status(&out, 2);
    assert!(
        stderr(&out).contains("invalid value 'localhost' for '--metrics-listen <ADDR>'"),
        "{}",
        stderr(&out)
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let expected = format!("cannot listen on --metrics-listen {port}: ");
    let out = run(&mut env.play(&wal, "127.0.0.1:9", &["--metrics-listen", &port]));
    assert_status(&out, 2);
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    let data = env.path("data");
    let mut sink = env.walplayer(&["sink", "--listen", "127.0.0.1:0", "--data"]);
    sink.arg(&data).args(["--metrics-listen", &port]);
    let s = &env.certs.server;
    sink.arg("--tls-cert")
        .arg(&s.cert)
        .arg("--tls-key")
        .arg(&s.key)
        .arg("--client-ca")
        .arg(&s.ca);
    let out = run(&mut sink);
    assert_status(&out, 2);
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    let out = run(&mut env.walplayer(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--agents",
        "1",
        "--length",
        "1",
        "--metrics-listen",
        &port,
    ]));
    assert_status(&out, 2);
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
    agent
        .env("HOME", env.dir.path())
        .args(["--coordinator", "127.0.0.1:9", "--name", "a", "--once"])
        .arg("--data-dir")
        .arg(env.path("agent"))
        .args(["--metrics-listen", &port]);
    let out = run(&mut agent);
    assert_status(&out, 2);
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    drop(taken);
}
