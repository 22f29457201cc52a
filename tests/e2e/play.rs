//! `walplayer play` against a sink process: what is sent is what is stored.

use std::time::Duration;

use crate::proxy::{Mode, Proxy, Trip};
use crate::util::*;

#[test]
fn generate_play_store_byte_identical() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 6, 1, &[]);
    // Not WAL: warned about and skipped, never sent.
    std::fs::write(wal.join("README"), b"not wal").unwrap();
    std::fs::create_dir(wal.join("archive_status")).unwrap();
    let data = env.path("data");
    let mut sink = env.sink(&data, &[]);
    let summary = env.path("summary.json");
    let out = run(env
        .play(
            &wal,
            &sink.address,
            &["-j", "3", "--block-size", "100", "--summary"],
        )
        .arg(&summary));
    assert_status(&out, 0);

    let lines = file_lines(&stdout(&out));
    assert_eq!(lines.len(), 6, "one JSON line per WAL file");
    for line in &lines {
        for key in [
            "walFullPath",
            "startTime",
            "endTime",
            "elapsedTime",
            "error",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["error"], "");
        assert_eq!(line["bytes"], 1 << 20);
        assert_eq!(line["cluster"], "walplayer");
        let elapsed: u64 = line["elapsedTime"].as_str().unwrap().parse().unwrap();
        assert!(elapsed > 0);
        let start = humantime::parse_rfc3339(line["startTime"].as_str().unwrap()).unwrap();
        let end = humantime::parse_rfc3339(line["endTime"].as_str().unwrap()).unwrap();
        assert!(end >= start);
        assert!(line["startTime"].as_str().unwrap().ends_with('Z'));
    }
    assert!(
        stderr(&out).contains("README"),
        "skipped file is named: {}",
        stderr(&out)
    );
    assert_eq!(assert_stored_identical(&wal, &data.join("walplayer")), 6);

    let s = read_json(&summary);
    assert_eq!(
        summary_line(&stdout(&out)),
        s,
        "stdout ends with the --summary object"
    );
    assert_eq!(s["filesOk"], 6);
    assert_eq!(s["filesFailed"], 0);
    assert_eq!(s["filesSkipped"], 1);
    assert_eq!(s["bytes"], 6 << 20);
    for key in ["wallSeconds", "mibPerSecond", "filesPerSecond"] {
        assert!(s[key].as_f64().unwrap() > 0.0, "{key}");
    }
    let lat = &s["latency"];
    let (min, p50, max) = (
        lat["minNs"].as_u64().unwrap(),
        lat["p50Ns"].as_u64().unwrap(),
        lat["maxNs"].as_u64().unwrap(),
    );
    assert!(min > 0 && min <= p50 && p50 <= max);
    for key in ["meanNs", "p90Ns", "p99Ns", "p999Ns"] {
        assert!(lat[key].as_u64().is_some(), "{key}");
    }
    assert_eq!(s["errors"], serde_json::json!([]));

    // The sink logs its totals and exits cleanly on SIGTERM.
    let status = sink.terminate();
    assert!(status.success(), "sink exit {status:?}");
    assert!(
        sink.log_text().contains("6 files complete"),
        "{}",
        sink.log_text()
    );
}

#[test]
fn gzip_input_is_sent_decompressed_with_trailer_size() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 3, 2, &["--gzip"]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let out = run(&mut env.play(&wal, &sink.address, &["-j", "2"]));
    assert_status(&out, 0);
    let lines = file_lines(&stdout(&out));
    assert_eq!(lines.len(), 3);
    let mut names: Vec<_> = lines
        .iter()
        .map(|l| l["walName"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "000000010000000000000000",
            "000000010000000000000001",
            "000000010000000000000002"
        ]
    );
    for l in &lines {
        let path = l["walFullPath"].as_str().unwrap();
        assert!(
            path.ends_with(&format!("{}.gz", l["walName"].as_str().unwrap())),
            "{path}"
        );
        assert_eq!(
            l["bytes"],
            2 << 20,
            "size from the trailer, sent decompressed"
        );
    }
    assert_eq!(assert_stored_identical(&wal, &data.join("walplayer")), 3);
}

#[test]
fn damaged_gzip_fails_that_file_only() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 3, 1, &["--gzip"]);
    let names: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    // First: trailer claims one byte more than the data holds.
    let mut bytes = std::fs::read(&names[0]).unwrap();
    let n = bytes.len();
    let isize = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) + 1;
    bytes[n - 4..].copy_from_slice(&isize.to_le_bytes());
    std::fs::write(&names[0], &bytes).unwrap();
    // Second: deflate data corrupted in the middle.
    let mut bytes = std::fs::read(&names[1]).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&names[1], &bytes).unwrap();

    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let out = run(&mut env.play(&wal, &sink.address, &[]));
    assert_status(&out, 1);
    let lines = file_lines(&stdout(&out));
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]["error"].as_str().unwrap().contains("gzip trailer"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1]["error"].as_str().unwrap().contains("gzip"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["error"], "");
    // Only the good file completed; damaged ones never got a final name.
    assert!(!data.join("walplayer/000000010000000000000000").exists());
    assert!(!data.join("walplayer/000000010000000000000001").exists());
    assert!(data.join("walplayer/000000010000000000000002").exists());
}

#[test]
fn config_file_and_environment_are_used() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    // The minted config points at the default address; the environment
    // overrides it with the real one, and a flag overrides the cluster.
    let out = run(env
        .walplayer(&["play", "--config"])
        .arg(&env.certs.klio_config)
        .arg(&wal)
        .args(["--cluster-name", "from-flag"])
        .env("CLIENT_WAL_ADDRESS", &sink.address)
        .env("CLIENT_CLUSTER_NAME", "from-env"));
    assert_status(&out, 0);
    assert_eq!(assert_stored_identical(&wal, &data.join("from-flag")), 2);

    // $HOME/.klio.yaml is the default file.
    std::fs::copy(&env.certs.klio_config, env.dir.path().join(".klio.yaml")).unwrap();
    let out = run(env
        .walplayer(&["play"])
        .arg(&wal)
        .env("CLIENT_WAL_ADDRESS", &sink.address));
    assert_status(&out, 0);
    assert_eq!(assert_stored_identical(&wal, &data.join("walplayer")), 2);
}

#[test]
fn output_file_gets_each_line_and_read_only_server_fails_files() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 3, 1, &[]);
    let sink = env.sink(&env.path("data"), &["--read-only"]);
    let output = env.path("out.json");
    let summary = env.path("summary.json");
    let out = run(env
        .play(&wal, &sink.address, &["--output"])
        .arg(&output)
        .arg("--summary")
        .arg(&summary));
    assert_status(&out, 1);
    // With --output, stdout holds the summary line alone.
    assert!(file_lines(&stdout(&out)).is_empty(), "{}", stdout(&out));
    assert_eq!(summary_line(&stdout(&out))["filesFailed"], 3);
    let lines = json_lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let e = l["error"].as_str().unwrap();
        assert!(
            e.contains("FailedPrecondition") && e.contains("read-only"),
            "{e}"
        );
    }
    let s = read_json(&summary);
    assert_eq!(s["filesFailed"], 3);
    assert_eq!(s["errors"][0]["count"], 3);
    assert!(s["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("read-only"));
    assert!(stderr(&out).contains("3 failed"), "{}", stderr(&out));
}

#[test]
fn client_certificate_from_another_ca_is_refused_up_front() {
    let env = TestEnv::new();
    let other = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let sink = env.sink(&env.path("data"), &[]);
    let c = &other.certs.client;
    let out = run(&mut env.play_as(&wal, &sink.address, &env.certs.client.ca, &c.cert, &c.key));
    assert_status(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&sink.address), "names the address: {err}");
    assert!(
        err.to_lowercase().contains("certificate")
            || err.contains("UnknownCA")
            || err.contains("alert"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    assert!(
        sink.log_text().contains("TLS handshake"),
        "sink logs the rejection: {}",
        sink.log_text()
    );

    // And the other way: a server we do not trust.
    let mine = &env.certs.client;
    let out = run(&mut env.play_as(
        &wal,
        &sink.address,
        &other.certs.client.ca,
        &mine.cert,
        &mine.key,
    ));
    assert_status(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&sink.address)
            && (err.contains("UnknownIssuer") || err.contains("BadSignature")),
        "{err}"
    );
}

#[test]
fn sink_killed_mid_run_ends_the_run_with_a_summary() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 60, 1, &[]);
    let mut sink = env.sink(&env.path("data"), &[]);
    let output = env.path("out.json");
    let summary = env.path("summary.json");
    // One retry each: the files after the kill fail within bounded time
    // (250 ms of backoff each) and show their retry.
    let mut child = env.spawn_play(
        &wal,
        &sink.address,
        &["--block-size", "16", "--timeout", "20s", "--retries", "1"],
    );
    // Kill the sink once a few files are through.
    wait_for_lines(&output, 3, Duration::from_secs(60));
    sink.child.kill().unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(90));
    assert_eq!(status.code(), Some(1));
    let lines = json_lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(lines.len(), 60, "every file is reported");
    let names: std::collections::BTreeSet<_> = lines
        .iter()
        .map(|l| l["walName"].as_str().unwrap())
        .collect();
    let generated: std::collections::BTreeSet<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        generated.iter().map(String::as_str).collect(),
        "each of the 60 files once"
    );
    let ok = lines.iter().filter(|l| l["error"] == "").count();
    assert!((3..60).contains(&ok), "{ok} ok");
    let s = read_json(&summary);
    assert_eq!(s["filesOk"], ok as u64);
    assert_eq!(s["filesFailed"], 60 - ok as u64);
    for failed in lines.iter().filter(|l| l["error"] != "") {
        assert_eq!(
            failed["attempts"], 2,
            "retried once before failing: {failed}"
        );
    }
}

/// Client-to-server bytes that carry the probe and two 1 MiB files with
/// their TLS and HTTP/2 framing, and end halfway through the third file
/// (as in `faults::play`).
const TWO_AND_A_HALF_FILES: u64 = 5 << 19;

#[test]
fn interrupt_stops_starting_files_and_writes_summary() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 20, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    // The network stalls halfway through the third file: it is in flight,
    // for as long as the test wants, when Ctrl-C comes.
    let proxy = Proxy::start(
        &sink.address,
        Mode::After(TWO_AND_A_HALF_FILES, Trip::Stall),
    );
    let output = env.path("out.json");
    let summary = env.path("summary.json");
    let mut child = env.spawn_play(&wal, &proxy.address, &["-j", "1", "--block-size", "256"]);
    wait_for_lines(&output, 2, Duration::from_secs(60));
    wait_until("the third file stalled", Duration::from_secs(60), || {
        proxy.mode() == Mode::Stall
    });
    signal(&child, libc::SIGINT);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));

    let lines = json_lines(&std::fs::read_to_string(&output).unwrap());
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["walName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "000000010000000000000000",
            "000000010000000000000001",
            "000000010000000000000002"
        ],
        "one record each for the two stored files and the one in flight, none for the 17 never started"
    );
    assert_eq!(lines[0]["error"], "");
    assert_eq!(lines[1]["error"], "");
    assert_eq!(
        lines[2]["error"],
        "interrupted: the run was stopped before this file finished"
    );
    assert_eq!(lines[2]["bytes"], 0);
    let stored: Vec<_> = std::fs::read_dir(data.join("walplayer"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // `~` marks the sink's files in progress, never a stored WAL.
        .filter(|n| !n.contains('~'))
        .collect();
    assert_eq!(
        stored.len(),
        2,
        "only the finished files are stored: {stored:?}"
    );
    let s = read_json(&summary);
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["filesOk"], 2);
    assert_eq!(s["filesFailed"], 1);
    assert_eq!(
        s["filesNotStarted"], 17,
        "the counts add up to the 20 files found"
    );
}

#[test]
fn sink_restarted_mid_run_is_retried_and_every_file_reported_once() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 40, 1, &[]);
    let data = env.path("data");
    let mut sink = env.sink(&data, &[]);
    let address = sink.address.clone();
    let output = env.path("out.json");
    let summary = env.path("summary.json");
    let mut child = env.spawn_play(&wal, &address, &["--block-size", "16", "--retries", "8"]);
    wait_for_lines(&output, 3, Duration::from_secs(60));
    sink.child.kill().unwrap();
    let _ = sink.child.wait();
    wait_refused(&address, Duration::from_secs(30));
    // The same address and storage come back.
    let _sink2 = env.sink(&data, &["--listen", &address]);
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    assert_eq!(
        status.code(),
        Some(0),
        "the run recovers: {}",
        std::fs::read_to_string(&output).unwrap()
    );
    let lines = json_lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(lines.len(), 40, "one record per file");
    let names: std::collections::BTreeSet<_> = lines
        .iter()
        .map(|l| l["walName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 40, "no file reported twice");
    let retried: Vec<_> = lines
        .iter()
        .filter(|l| l["attempts"].as_u64().unwrap() > 1)
        .collect();
    assert!(
        !retried.is_empty(),
        "the restart shows in some file's record"
    );
    for l in &retried {
        assert_eq!(l["error"], "", "retried and then stored: {l}");
        let retries = l["retries"].as_array().unwrap();
        assert_eq!(retries.len() as u64 + 1, l["attempts"].as_u64().unwrap());
        assert!(!retries[0].as_str().unwrap().is_empty());
    }
    assert_eq!(assert_stored_identical(&wal, &data.join("walplayer")), 40);
    assert_eq!(read_json(&summary)["filesOk"], 40);
}

#[test]
fn verify_reads_every_file_back() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 4, 1, &["--gzip"]);
    let sink = env.sink(&env.path("data"), &[]);
    let summary = env.path("summary.json");
    let out = run(env
        .play(&wal, &sink.address, &["--verify", "-j", "2", "--summary"])
        .arg(&summary));
    assert_status(&out, 0);
    for l in file_lines(&stdout(&out)) {
        assert_eq!(l["verified"], true, "{l}");
    }
    assert_eq!(read_json(&summary)["filesVerified"], 4);
    assert!(
        stderr(&out).contains("4 files read back and verified identical"),
        "{}",
        stderr(&out)
    );
    // Without --verify nothing is read back.
    let out = run(&mut env.play(&wal, &sink.address, &[]));
    assert_status(&out, 0);
    assert!(file_lines(&stdout(&out))
        .iter()
        .all(|l| l.get("verified").is_none()));
}
