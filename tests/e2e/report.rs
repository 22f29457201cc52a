//! The HTML report (`walplayer report`, `--report`): made from a real
//! run's summary, opened in headless Chromium, every chart drawn from the
//! data and no script error; user-supplied names shown as text; the same
//! page from a log as from the summary file.

mod browser;
mod png;

use std::path::Path;

use serde_json::{json, Value};

use crate::util::*;

/// Checks the per-second series against the totals: every finished file
/// is in exactly one second, every stored byte acknowledged in one, and
/// the histogram counts every file.
pub fn assert_timeline_adds_up(s: &Value) {
    let timeline = s["timeline"].as_array().expect("a timeline");
    let sum = |key: &str| -> u64 { timeline.iter().map(|p| p[key].as_u64().unwrap()).sum() };
    let done = s["filesOk"].as_u64().unwrap() + s["filesFailed"].as_u64().unwrap();
    assert_eq!(sum("files"), done, "{s}");
    assert_eq!(sum("errors"), s["filesFailed"].as_u64().unwrap());
    assert_eq!(sum("ackedBytes"), s["bytes"].as_u64().unwrap());
    assert!(sum("sentBytes") >= s["bytes"].as_u64().unwrap());
    for (i, p) in timeline.iter().enumerate() {
        assert_eq!(p["t"], i as u64 + 1, "one entry per second, in order");
        let finished = p["files"].as_u64().unwrap() > 0;
        assert_eq!(p.get("p50Ns").is_some(), finished, "{p}");
        if finished {
            assert!(p["p50Ns"].as_u64().unwrap() <= p["p99Ns"].as_u64().unwrap());
        }
    }
    let wall = s["wallSeconds"].as_f64().unwrap();
    assert_eq!(timeline.len() as f64, wall.ceil().max(1.0), "{s}");
    let buckets = s["latencyHistogram"].as_array().unwrap();
    let counted: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, done);
    assert!(buckets.len() <= 100);
    assert!(buckets
        .windows(2)
        .all(|w| w[0]["leNs"].as_u64() < w[1]["leNs"].as_u64()));
}

/// A play run of 3 stored files then 2 that the sink stalls until
/// `--timeout` (1.5 s each) fails them: a run of more than 3 seconds,
/// with errors. Returns the summary file and the `--report` page.
fn play_with_stalls(env: &TestEnv) -> (std::path::PathBuf, std::path::PathBuf) {
    let wal = env.generate("wal", 5, 1, &[]);
    let data = env.path("data");
    let _sink = env.sink(&data, &["--fault", "stall", "--fault-after", "3"]);
    let (summary, page) = (env.path("summary.json"), env.path("play.html"));
    let out = run(env
        .play(
            &wal,
            &_sink.address,
            &[
                "-j",
                "1",
                "--timeout",
                "1500ms",
                "--retries",
                "0",
                "--quiet",
            ],
        )
        .arg("--summary")
        .arg(&summary)
        .arg("--report")
        .arg(&page));
    assert_status(&out, 1);
    (summary, page)
}

/// The summary with what distributed and simulate runs add, under names a
/// user could choose to break a page.
fn with_hostile_extras(mut s: Value) -> Value {
    const HOSTILE: &str = "<img src=x onerror=\"document.body.dataset.pwned=1\">&amp;</script>";
    s["agents"] = json!([
        {"name": HOSTILE, "state": "finished", "filesOk": 3, "filesFailed": 0, "filesUnreported": 0,
         "bytes": 3145728, "mibPerSecond": 2.5, "latency": s["latency"].clone(), "protocolViolations": 0},
        {"name": "node-1", "state": "lost: killed", "filesOk": 0, "filesFailed": 2, "filesUnreported": 1,
         "bytes": 0, "mibPerSecond": 0.0, "latency": null, "protocolViolations": 0}
    ]);
    s["clusters"] = (0..25)
        .map(|i| {
            json!({"cluster": format!("{HOSTILE}-{i}"), "agent": "node-1", "filesOk": 1,
                   "filesFailed": i % 3, "bytes": 1048576, "mibPerSecond": 1.0,
                   "latency": s["latency"].clone(), "errors": []})
        })
        .collect();
    s["slos"] = json!([
        {"expr": "lag.p99<5s", "measured": "1.20 s", "value": 1.2, "pass": true},
        {"expr": HOSTILE, "measured": "9 s", "value": 9.0, "pass": false}
    ]);
    s["lagHistogram"] = json!([{"leNs": 1000, "count": 2}, {"leNs": 4000, "count": 5}]);
    s
}

/// What a chart's `<svg>` says it drew, checked against its own paths:
/// each series' `d` has as many points as its `data-points`.
fn drawn_points(dom: &str, id: &str) -> Vec<usize> {
    let said: Vec<usize> = browser::attr(browser::tag_with_id(dom, id), "data-points")
        .unwrap_or_else(|| panic!("#{id} has no data-points"))
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let paths = browser::tags(browser::inner(dom, id), "path");
    let in_paths: Vec<usize> = paths
        .iter()
        .map(|p| {
            let d = browser::attr(p, "d").unwrap();
            d.matches(['M', 'L']).count()
        })
        .collect();
    assert_eq!(said, in_paths, "#{id}: {paths:?}");
    said
}

fn assert_no_script_errors(dom: &str) {
    assert_eq!(
        browser::inner(dom, "script-errors"),
        "",
        "the page reported script errors"
    );
    assert!(
        dom.contains(r#"<body data-rendered="true""#),
        "the report script did not run to its end"
    );
}

#[test]
fn report_draws_every_chart_in_a_browser_without_script_errors() {
    const TEST: &str = "report_draws_every_chart_in_a_browser_without_script_errors";
    if browser::find().is_none() {
        return browser::skipped(TEST, "no chromium on PATH (apt-get install chromium)");
    }
    let env = TestEnv::new();
    let (summary, page) = play_with_stalls(&env);
    let s = read_json(&summary);
    assert_eq!(s["mode"], "play");
    assert_timeline_adds_up(&s);
    let timeline = s["timeline"].as_array().unwrap();
    // The two stalled files take their 1.5 s timeout each.
    assert!(timeline.len() >= 4, "{s}");
    let timed = timeline.iter().filter(|p| p.get("p50Ns").is_some()).count();
    assert!(timed >= 2, "{s}");

    // `walplayer report` on the summary file makes the page `--report` made.
    let again = env.path("again.html");
    let out = run(env
        .walplayer(&["report"])
        .arg(&summary)
        .arg("-o")
        .arg(&again));
    assert_status(&out, 0);
    assert_eq!(
        std::fs::read_to_string(&page).unwrap(),
        std::fs::read_to_string(&again).unwrap()
    );

    let dom = browser::dump_dom(&env, &page);
    assert_no_script_errors(&dom);
    assert_eq!(
        drawn_points(&dom, "chart-throughput"),
        [timeline.len(), timeline.len()]
    );
    assert_eq!(drawn_points(&dom, "chart-latency"), [timed, timed]);
    let bars = s["latencyHistogram"].as_array().unwrap().len();
    let histogram = browser::tag_with_id(&dom, "chart-latency-histogram");
    assert_eq!(
        browser::attr(histogram, "data-bars"),
        Some(bars.to_string())
    );
    let rects = browser::tags(browser::inner(&dom, "chart-latency-histogram"), "rect");
    assert_eq!(rects.len(), bars);
    let errors = browser::inner(&dom, "errors");
    assert!(errors.contains("<td>timeout</td>"), "{errors}");
    assert!(errors.contains("<td>2</td>"), "two files failed: {errors}");

    let shot = env.path("report.png");
    browser::screenshot(&env, &page, &shot);
    let bytes = std::fs::read(&shot).unwrap();
    assert!(bytes.len() > 20_000, "a {}-byte screenshot", bytes.len());
    let image = png::decode(&bytes).unwrap();
    assert_eq!((image.width, image.height), (1200, 2000));
    assert!(
        image.colours > 16,
        "{} colours: a blank page",
        image.colours
    );
}

#[test]
fn report_shows_agents_clusters_and_slos_with_hostile_names_as_text() {
    const TEST: &str = "report_shows_agents_clusters_and_slos_with_hostile_names_as_text";
    if browser::find().is_none() {
        return browser::skipped(TEST, "no chromium on PATH (apt-get install chromium)");
    }
    let env = TestEnv::new();
    let (summary, _) = play_with_stalls(&env);
    let hostile = env.path("hostile.json");
    std::fs::write(
        &hostile,
        with_hostile_extras(read_json(&summary)).to_string(),
    )
    .unwrap();
    let page = env.path("hostile.html");
    let out = run(env
        .walplayer(&["report"])
        .arg(&hostile)
        .arg("-o")
        .arg(&page));
    assert_status(&out, 0);

    let dom = browser::dump_dom(&env, &page);
    assert_no_script_errors(&dom);
    assert!(!dom.contains("data-pwned"), "a name's markup ran");
    assert!(!dom.contains("<img"), "a name became an element");
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "names are shown as text"
    );
    let rows = |id: &str| browser::inner(&dom, id).matches("<tr>").count() - 1;
    assert_eq!(rows("agents"), 2);
    assert_eq!(rows("clusters"), 20, "the 20 worst of 25 clusters");
    assert_eq!(rows("slos"), 2);
    let slos = browser::inner(&dom, "slos");
    assert!(slos.contains(r#"<td class="pass">pass</td>"#), "{slos}");
    assert!(slos.contains(r#"<td class="fail">FAIL</td>"#), "{slos}");
    // Worst first: clusters failing 2 files lead.
    let clusters = browser::inner(&dom, "clusters");
    let first_row = &clusters[clusters.find("<tbody>").unwrap()..];
    assert!(
        first_row.contains(r#"<td class="fail">2</td>"#),
        "{first_row}"
    );
    let lag = browser::tag_with_id(&dom, "chart-lag-histogram");
    assert_eq!(browser::attr(lag, "data-bars").as_deref(), Some("2"));
}

#[test]
fn report_from_a_log_is_the_report_from_the_summary_file() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let summary = env.path("summary.json");
    let out = run(env
        .play(&wal, &sink.address, &["--quiet", "--summary"])
        .arg(&summary));
    assert_status(&out, 0);
    let s = read_json(&summary);
    assert_timeline_adds_up(&s);

    // A log as `kubectl logs` gives it: stderr text, JSON lines that are
    // not the summary, the summary line, more text.
    let log = env.path("coordinator.log");
    std::fs::write(
        &log,
        format!(
            "{}{}\n{{\"walplayerSummary\": {}}}\n2026-11-28T10:00:01Z INFO bye\n",
            stderr(&out),
            stdout(&out),
            s
        ),
    )
    .unwrap();
    let report = |input: &Path, output: &str| {
        let path = env.path(output);
        let out = run(env.walplayer(&["report"]).arg(input).arg("-o").arg(&path));
        (out, path)
    };
    let (from_file, file_page) = report(&summary, "from-file.html");
    let (from_log, log_page) = report(&log, "from-log.html");
    assert_status(&from_file, 0);
    assert_status(&from_log, 0);
    let page = std::fs::read_to_string(&file_page).unwrap();
    assert_eq!(page, std::fs::read_to_string(&log_page).unwrap());
    assert!(page.contains("\"filesOk\":2"));

    let plain = env.path("plain.log");
    // The run's output without its summary line.
    let printed = stdout(&out);
    let lines: Vec<&str> = printed
        .lines()
        .filter(|l| !l.contains("walplayerSummary"))
        .collect();
    std::fs::write(&plain, format!("{}{}", stderr(&out), lines.join("\n"))).unwrap();
    let (none, _) = report(&plain, "none.html");
    assert_status(&none, 2);
    let e = stderr(&none);
    assert!(
        e.contains(&format!("{} holds no walplayer summary", plain.display()))
            && e.contains("--summary")
            && e.contains("walplayerSummary"),
        "{e}"
    );
    let (missing, _) = report(&env.path("nothing-here.json"), "missing.html");
    assert_status(&missing, 2);
    assert!(
        stderr(&missing).contains("cannot read"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn report_of_a_simulation_draws_lag_and_names_its_worst_clusters() {
    const TEST: &str = "report_of_a_simulation_draws_lag_and_names_its_worst_clusters";
    if browser::find().is_none() {
        return browser::skipped(TEST, "no chromium on PATH (apt-get install chromium)");
    }
    let env = TestEnv::new();
    let sink = env.sink(&env.path("data"), &[]);
    let (summary, page) = (env.path("summary.json"), env.path("simulation.html"));
    let c = &env.certs.client;
    let out = run(env
        .walplayer(&["simulate", "--quiet", "--wal-size", "1", "--clusters", "2"])
        .args([
            "--wal-rate",
            "512KiB/s",
            "--duration",
            "3s",
            "--slo",
            "lag.p99<30s",
        ])
        .args(["--cluster-name", "sim", "--address", &sink.address])
        .arg("--server-cert")
        .arg(&c.ca)
        .arg("--client-cert")
        .arg(&c.cert)
        .arg("--client-key")
        .arg(&c.key)
        .arg("--summary")
        .arg(&summary)
        .arg("--report")
        .arg(&page));
    assert_status(&out, 0);
    let s = read_json(&summary);
    let dom = browser::dump_dom(&env, &page);
    assert_no_script_errors(&dom);
    // Produced, sent and acknowledged, one point per second of the run.
    let seconds = s["timeline"].as_array().unwrap().len();
    assert_eq!(drawn_points(&dom, "chart-throughput"), vec![seconds; 3]);
    let bars = browser::tags(browser::inner(&dom, "chart-lag-histogram"), "rect");
    assert!(
        bars.len() >= s["lagHistogram"].as_array().unwrap().len(),
        "{bars:?}"
    );
    let clusters = browser::inner(&dom, "clusters");
    assert!(
        clusters.contains("sim-0") && clusters.contains("sim-1"),
        "{clusters}"
    );
    assert!(browser::inner(&dom, "totals").contains("segments acknowledged"));
    assert!(browser::inner(&dom, "slos").contains("lag.p99&lt;30s"));
}
