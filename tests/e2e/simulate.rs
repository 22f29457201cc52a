//! `walplayer simulate`: clusters stream WAL as Klio's WAL sender does
//! (one Put per segment held open while it fills), lag is measured from
//! the schedule (a stalled server shows, no coordinated omission), SLOs
//! decide the exit status, and the capacity search finds what a server
//! with a known cost per block can take.

use std::path::Path;
use std::process::Command;

use crate::util::{assert_status, json_lines, read_json, run, stderr, TestEnv};

const MIB: u64 = 1 << 20;

/// `walplayer simulate` against `address` as this env's client, cluster
/// names `sim-<i>`, with 1 MiB segments.
fn simulate(env: &TestEnv, address: &str, extra: &[&str]) -> Command {
    let c = &env.certs.client;
    let mut cmd = env.walplayer(&["simulate", "--quiet", "--wal-size", "1"]);
    cmd.args(["--cluster-name", "sim", "--address", address])
        .arg("--server-cert")
        .arg(&c.ca)
        .arg("--client-cert")
        .arg(&c.cert)
        .arg("--client-key")
        .arg(&c.key)
        .args(extra);
    cmd
}

/// Runs a distributed simulation with `args` on two agents, `node-0` and
/// `node-1`, and checks that the coordinator and both agents exit 0.
fn run_on_two_agents(c: &crate::distributed::Cluster, args: &[&str]) -> String {
    let mut all = vec!["--agents", "2", "--simulate", "--wal-size", "1"];
    all.extend_from_slice(args);
    let (mut coord, addr) = c.coordinator(&all);
    let mut a = c.agent("node-0", &addr, &["--once"]);
    let mut b = c.agent("node-1", &addr, &["--once"]);
    let limit = std::time::Duration::from_secs(120);
    assert_eq!(coord.wait(limit).code(), Some(0), "{}", coord.text());
    for agent in [&mut a, &mut b] {
        assert_eq!(agent.wait(limit).code(), Some(0), "{}", agent.text());
    }
    coord.text()
}

/// Bytes of complete WAL files stored under `data`.
fn stored_bytes(data: &Path) -> u64 {
    let mut total = 0;
    for cluster in std::fs::read_dir(data).unwrap() {
        for f in std::fs::read_dir(cluster.unwrap().path()).unwrap() {
            let f = f.unwrap();
            if !f.file_name().to_string_lossy().contains('~') {
                total += f.metadata().unwrap().len();
            }
        }
    }
    total
}

#[test]
fn a_simulated_cluster_holds_one_put_open_per_segment_while_it_fills() {
    let env = TestEnv::new();
    let data = env.path("data");
    let puts = env.path("puts.jsonl");
    let sink = env.sink(&data, &["--put-log", puts.to_str().unwrap()]);
    let (output, summary) = (env.path("segments.jsonl"), env.path("summary.json"));
    let out = run(&mut simulate(
        &env,
        &sink.address,
        &[
            "--clusters",
            "2",
            "--wal-rate",
            "512KiB/s",
            "--duration",
            "6s",
            "--output",
            output.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
    ));
    assert_status(&out, 0);
    // 512 KiB/s fills a 1 MiB segment in 2 s: each Put stays open ~2 s and
    // carries a block every 200 ms, ~10 messages.
    let puts = json_lines(&std::fs::read_to_string(&puts).unwrap());
    let complete: Vec<_> = puts.iter().filter(|p| p["complete"] == true).collect();
    assert_eq!(complete.len(), 6, "{puts:?}");
    for p in &complete {
        let open_ns = p["closedNs"].as_u64().unwrap() - p["openedNs"].as_u64().unwrap();
        let open = open_ns as f64 / 1e9;
        assert!((1.5..=2.8).contains(&open), "Put open {open:.2} s: {p}");
        let messages = p["messages"].as_u64().unwrap();
        assert!((8..=13).contains(&messages), "{messages} messages: {p}");
        assert_eq!(p["bytes"].as_u64(), Some(MIB));
    }
    // Clusters x rate x duration is what was stored, within 10%.
    let expected = 2.0 * 512.0 * 1024.0 * 6.0;
    let stored = stored_bytes(&data) as f64;
    assert!(
        (stored - expected).abs() <= expected * 0.1,
        "stored {stored} bytes, expected {expected}"
    );
    // One line per segment, the seed's fields plus the lag; the seed's jq
    // recipes (count of stored files, mean elapsed time) work on them.
    let lines = json_lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(lines.len(), 6);
    let ok = lines.iter().filter(|l| l["error"] == "").count();
    assert_eq!(ok, 6);
    for l in &lines {
        let elapsed: u64 = l["elapsedTime"].as_str().unwrap().parse().unwrap();
        assert!(elapsed > 1_000_000_000, "{l}");
        assert!(l["lagNs"].as_u64().unwrap() < 2_000_000_000, "{l}");
        assert!(l["cluster"].as_str().unwrap().starts_with("sim-"));
        assert!(l["segment"].as_u64().unwrap() < 3);
        assert!(l["walName"].as_str().unwrap().starts_with("00000001"));
    }
    let s = read_json(&summary);
    assert_eq!(s["mode"], "simulate");
    assert_eq!(s["segmentsAcked"], 6);
    assert_eq!(s["ackRate"], 1.0);
    assert_eq!(s["clusterStats"].as_array().unwrap().len(), 2);
    assert!(
        s["timeline"].as_array().unwrap().len() >= 5,
        "{}",
        s["timeline"]
    );
}

#[test]
fn a_stalled_server_shows_as_lag_and_backlog_without_coordinated_omission() {
    let env = TestEnv::new();
    let data = env.path("data");
    // Streams open every 0.5 s at 2 MiB/s; the fifth's first block (at
    // about 2.2 s) stops the sink reading anything for 4 s.
    let sink = env.sink(&data, &["--fault", "pause:4s", "--fault-after", "4"]);
    let (output, summary) = (env.path("segments.jsonl"), env.path("summary.json"));
    let out = run(&mut simulate(
        &env,
        &sink.address,
        &[
            "--clusters",
            "1",
            "--wal-rate",
            "2MiB/s",
            "--duration",
            "10s",
            "--output",
            output.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
    ));
    assert_status(&out, 0);
    let s = read_json(&summary);
    // Every segment the schedule made whole was stored: WAL kept coming
    // during the stall, and none of it was skipped.
    assert_eq!(s["segmentsAcked"], 20, "{}", stderr(&out));
    // The first segment finished during the stall (0.3 s in) waited it
    // out: its lag counts from when its last byte was produced, not from
    // when it could be sent.
    let max_lag = s["lag"]["maxNs"].as_u64().unwrap() as f64 / 1e9;
    assert!(max_lag >= 3.4, "max lag {max_lag:.2} s");
    let lines = json_lines(&std::fs::read_to_string(&output).unwrap());
    let stalled = lines
        .iter()
        .filter(|l| l["lagNs"].as_u64().unwrap() > 1_000_000_000)
        .count();
    assert!(stalled >= 3, "{stalled} segments lagged over 1 s");
    // The backlog peaks near rate x 4 s, then drains.
    let timeline = s["timeline"].as_array().unwrap();
    let backlog: Vec<u64> = timeline
        .iter()
        .map(|p| p["backlogBytes"].as_u64().unwrap())
        .collect();
    let peak = *backlog.iter().max().unwrap() as f64 / MIB as f64;
    assert!(
        (5.0..=9.5).contains(&peak),
        "backlog peak {peak:.2} MiB: {backlog:?}"
    );
    let last = *backlog.last().unwrap() as f64 / MIB as f64;
    assert!(last <= 2.5, "backlog at the end {last:.2} MiB: {backlog:?}");
}

#[test]
fn slos_pass_with_status_0_and_breach_with_status_4() {
    let env = TestEnv::new();
    let sink = env.sink(&env.path("data"), &[]);
    let workload = [
        "--clusters",
        "2",
        "--wal-rate",
        "512KiB/s",
        "--duration",
        "3s",
    ];
    let summary = env.path("pass.json");
    let out = run(simulate(&env, &sink.address, &workload)
        .args([
            "--slo",
            "lag.p99<30s",
            "--slo",
            "errors==0",
            "--slo",
            "ack.rate>=0.99",
        ])
        .args(["--summary", summary.to_str().unwrap()]));
    assert_status(&out, 0);
    let s = read_json(&summary);
    assert_eq!(s["sloPass"], true);
    assert_eq!(s["slos"].as_array().unwrap().len(), 3);
    assert!(
        stderr(&out).contains("SLO lag.p99<30s: measured"),
        "{}",
        stderr(&out)
    );

    let summary = env.path("breach.json");
    let out = run(simulate(&env, &sink.address, &workload)
        .args(["--slo", "lag.p99<1us", "--slo", "errors==0"])
        .args(["--summary", summary.to_str().unwrap()]));
    assert_status(&out, 4);
    let s = read_json(&summary);
    assert_eq!(s["sloPass"], false);
    assert_eq!(s["slos"][0]["expr"], "lag.p99<1us");
    assert_eq!(s["slos"][0]["pass"], false);
    assert!(s["slos"][0]["value"].as_f64().unwrap() > 1e-6);
    assert_eq!(s["slos"][1]["pass"], true);
    assert!(stderr(&out).contains("BREACH"), "{}", stderr(&out));
}

#[test]
fn bad_workloads_are_refused_before_anything_connects() {
    let env = TestEnv::new();
    // Nothing listens there: each refusal comes before connecting.
    let cases: [(&[&str], &str); 5] = [
        (&["--wal-rate", "fast"], "not a size"),
        (&["--slo", "lag.p95<1s"], "unknown metric"),
        (&["--find-max-clusters"], "needs at least one --slo"),
        (&["--flush-bytes", "16MiB"], "largest block Klio accepts"),
        (
            &["--rate-file", "/nonexistent/pace.csv"],
            "cannot read --rate-file",
        ),
    ];
    for (args, needle) in cases {
        let out = run(&mut simulate(&env, "127.0.0.1:9", args));
        assert_status(&out, 2);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn the_capacity_search_finds_what_a_fixed_cost_per_block_allows() {
    let env = TestEnv::new();
    // The sink writes one block at a time, 25 ms each: 40 blocks/s. A
    // cluster flushes every 200 ms, 5 blocks/s, so 8 clusters fill it; past
    // that, blocks queue and lag climbs.
    let sink = env.sink(
        &env.path("data"),
        &["--fault", "block-delay:25ms", "--fault-after", "0"],
    );
    let summary = env.path("summary.json");
    let out = run(&mut simulate(
        &env,
        &sink.address,
        &[
            "--wal-rate",
            "512KiB/s",
            "--find-max-clusters",
            "--step",
            "2",
            "--step-duration",
            "4s",
            "--slo",
            "lag.p99<500ms",
            "--summary",
            summary.to_str().unwrap(),
        ],
    ));
    assert_status(&out, 0);
    let s = read_json(&summary);
    let search = &s["search"];
    let found = search["maxClusters"].as_u64().unwrap();
    let predicted = 8;
    assert!(
        found.abs_diff(predicted) <= 2,
        "found {found}, predicted {predicted}: {}",
        stderr(&out)
    );
    let steps = search["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(last["pass"], false, "the search stops at the first breach");
    assert_eq!(last["clusters"].as_u64(), Some(found + 2));
    assert!(steps[..steps.len() - 1].iter().all(|r| r["pass"] == true));
    assert!(stderr(&out).contains(&format!(
        "largest cluster count that met every SLO: {found}"
    )));
}

#[test]
fn a_distributed_simulation_splits_clusters_and_merges_lags_exactly() {
    let c = crate::distributed::Cluster::new();
    run_on_two_agents(
        &c,
        &[
            "--clusters",
            "5",
            "--wal-rate",
            "512KiB/s",
            "--duration",
            "5s",
            "--slo",
            "lag.p99<30s",
        ],
    );
    // 512 KiB/s for 5 s makes 2 whole 1 MiB segments per cluster; the
    // clusters are split 3 and 2, named after their agent.
    let lines = c.merged();
    assert_eq!(lines.len(), 10, "{lines:?}");
    let mut per_agent =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let mut lags = walplayer::klio::stats::new_histogram();
    for l in &lines {
        assert_eq!(l["error"], "", "{l}");
        let agent = l["agent"].as_str().unwrap().to_string();
        let cluster = l["cluster"].as_str().unwrap().to_string();
        assert!(cluster.starts_with(&format!("walplayer-{agent}-")), "{l}");
        per_agent.entry(agent).or_default().insert(cluster);
        lags.record(l["lagNs"].as_u64().unwrap().max(1)).unwrap();
        assert!(l["segment"].as_u64().unwrap() < 2, "{l}");
    }
    let sizes: Vec<usize> = per_agent.values().map(|c| c.len()).collect();
    assert_eq!(sizes, vec![3, 2]);
    assert_eq!(c.stored().len(), 10);
    let s = c.summary();
    assert_eq!(s["mode"], "simulate");
    assert_eq!(s["clusters"], 5);
    assert_eq!(s["segmentsAcked"], 10);
    assert_eq!(s["sloPass"], true);
    assert_eq!(s["clusterStats"].as_array().unwrap().len(), 5);
    let agents = s["distributed"]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert!(
        agents.iter().all(|a| a["state"] == "finished"),
        "{agents:?}"
    );
    // The merged lag percentiles are those of every segment's lag together.
    let expect = walplayer::klio::stats::Latency::of(&lags);
    assert_eq!(s["lag"], serde_json::to_value(expect).unwrap());
    assert!(s["timeline"].as_array().unwrap().len() >= 5);
}

#[test]
fn a_distributed_capacity_search_adds_clusters_across_agents_and_judges_them_together() {
    // As in the one-process search: 40 blocks/s fill with 8 clusters.
    let c = crate::distributed::Cluster::with_sink(&[
        "--fault",
        "block-delay:25ms",
        "--fault-after",
        "0",
    ]);
    let log = run_on_two_agents(
        &c,
        &[
            "--wal-rate",
            "512KiB/s",
            "--find-max-clusters",
            "--step",
            "2",
            "--step-duration",
            "4s",
            "--max-clusters",
            "20",
            "--slo",
            "lag.p99<500ms",
        ],
    );
    let s = c.summary();
    let search = &s["search"];
    let found = search["maxClusters"].as_u64().unwrap();
    assert!(found.abs_diff(8) <= 2, "found {found}: {}", log);
    let steps = search["steps"].as_array().unwrap();
    for (k, row) in steps.iter().enumerate() {
        assert_eq!(row["clusters"].as_u64(), Some(2 * (k as u64 + 1)), "{row}");
    }
    let last = steps.last().unwrap();
    assert_eq!(last["pass"], false, "the search stops at the first breach");
    assert_eq!(last["clusters"].as_u64(), Some(found + 2));
    assert!(steps[..steps.len() - 1].iter().all(|r| r["pass"] == true));
    // Both agents ran half of every step: their clusters are named after
    // them, numbered from 0 even when an agent had one.
    let mut per_agent =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for l in c.merged() {
        assert_eq!(l["error"], "", "{l}");
        let agent = l["agent"].as_str().unwrap().to_string();
        let cluster = l["cluster"].as_str().unwrap().to_string();
        assert!(cluster.starts_with(&format!("walplayer-{agent}-")), "{l}");
        per_agent.entry(agent).or_default().insert(cluster);
    }
    assert_eq!(per_agent.len(), 2, "{per_agent:?}");
    assert!(
        per_agent.values().all(|c| c.len() as u64 >= found / 2),
        "{per_agent:?}"
    );
    assert!(log.contains("capacity search over"), "{}", log);
    let agents = s["distributed"]["agents"].as_array().unwrap();
    assert!(
        agents.iter().all(|a| a["filesUnreported"] == 0),
        "{agents:?}"
    );
}

#[test]
fn a_distributed_simulation_replays_a_recorded_pace_with_a_template() {
    let c = crate::distributed::Cluster::new();
    // 1 MiB every second, looped: 3 s make about 3 segments a cluster.
    let pace = c.env.path("pace.csv");
    std::fs::write(&pace, "seconds,bytes\n0,0\n1,1048576\n").unwrap();
    // A template whose records are all 'Z': a generated segment with its
    // page contents overwritten, headers kept.
    let gen = c.env.path("gen");
    let out = run(c
        .env
        .walplayer(&["generate", "--length", "1", "--wal-size", "1", "--quiet"])
        .arg(&gen));
    assert_status(&out, 0);
    let template = gen.join("000000010000000000000000");
    let mut seg = std::fs::read(&template).unwrap();
    for (i, page) in seg.chunks_mut(8192).enumerate() {
        let header = if i == 0 { 40 } else { 24 };
        page[header..].fill(b'Z');
    }
    std::fs::write(&template, &seg).unwrap();
    run_on_two_agents(
        &c,
        &[
            "--clusters",
            "2",
            "--duration",
            "3s",
            "--rate-file",
            pace.to_str().unwrap(),
            "--template",
            template.to_str().unwrap(),
        ],
    );
    let s = c.summary();
    assert!(
        s["workload"]["walRate"]
            .as_str()
            .unwrap()
            .starts_with("recorded"),
        "{s}"
    );
    let lines = c.merged();
    let mut per_cluster = std::collections::BTreeMap::<String, u64>::new();
    for l in &lines {
        assert_eq!(l["error"], "", "{l}");
        *per_cluster
            .entry(l["cluster"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_cluster.len(), 2, "{per_cluster:?}");
    assert!(
        per_cluster.values().all(|n| (2..=4).contains(n)),
        "{per_cluster:?}"
    );
    // Every stored segment is made of the template's records, under page
    // headers of its own position.
    for (cluster, name) in c.stored() {
        let bytes = std::fs::read(c.data.join(&cluster).join(&name)).unwrap();
        let z = bytes.iter().filter(|&&b| b == b'Z').count();
        assert!(
            z > bytes.len() / 2,
            "{cluster}/{name}: {z} of {} bytes from the template",
            bytes.len()
        );
        let seg = walplayer::wal::walname::SegmentName::parse(&name).unwrap();
        walplayer::wal::generate::check_page_headers(&bytes, seg, MIB).unwrap();
    }
}

#[test]
fn simulation_metrics_are_served_and_agree_with_the_summary() {
    let env = TestEnv::new();
    let sink = env.sink(&env.path("data"), &[]);
    let summary = env.path("summary.json");
    let mut cmd = simulate(
        &env,
        &sink.address,
        &[
            "--clusters",
            "2",
            "--wal-rate",
            "512KiB/s",
            "--duration",
            "4s",
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-hold",
            "60s",
            "--summary",
            summary.to_str().unwrap(),
        ],
    );
    cmd.stdout(std::process::Stdio::null());
    let mut run = crate::util::Logged::start(cmd, env.path("simulate.log"));
    let limit = std::time::Duration::from_secs(60);
    let line = run.wait_line("metrics on http://", limit);
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let live = crate::metrics::Metrics::scrape(&addr);
    assert!(
        live.text.contains("walplayer_open_streams"),
        "{}",
        live.text
    );
    run.wait_line("serving /metrics on", limit);
    let end = crate::metrics::Metrics::scrape(&addr);
    let s = read_json(&summary);
    let acked = s["segmentsAcked"].as_f64().unwrap();
    assert_eq!(acked, 4.0, "{s}");
    assert_eq!(end.value("walplayer_segment_lag_seconds_count", &[]), acked);
    let produced = end.value("walplayer_produced_bytes_total", &[]);
    assert!(
        produced > 0.0 && produced <= s["producedBytes"].as_f64().unwrap(),
        "{produced}"
    );
    crate::util::signal(&run.child, libc::SIGINT);
    run.wait(limit);
}

#[test]
fn abort_on_breach_stops_a_run_whose_backlog_stays_past_its_bound() {
    let env = TestEnv::new();
    // The third stream's first block stops the sink reading for 25 s: the
    // backlog climbs past 2 MiB within seconds and stays there.
    let sink = env.sink(
        &env.path("data"),
        &["--fault", "pause:25s", "--fault-after", "2"],
    );
    let summary = env.path("summary.json");
    let started = std::time::Instant::now();
    let out = run(&mut simulate(
        &env,
        &sink.address,
        &[
            "--clusters",
            "1",
            "--wal-rate",
            "1MiB/s",
            "--duration",
            "40s",
            "--slo",
            "backlog.max<2MiB",
            "--abort-on-breach",
            "--summary",
            summary.to_str().unwrap(),
        ],
    ));
    assert_status(&out, 4);
    let s = read_json(&summary);
    let why = s["aborted"]
        .as_str()
        .unwrap_or_else(|| panic!("not aborted: {s}"));
    assert!(
        why.contains("backlog.max<2MiB") && why.contains("10 s"),
        "{why}"
    );
    assert!(s["wallSeconds"].as_f64().unwrap() < 30.0, "{s}");
    assert!(started.elapsed() < std::time::Duration::from_secs(35));
    assert!(stderr(&out).contains("stopped early"), "{}", stderr(&out));
}
