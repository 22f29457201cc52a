//! `walplayer play` under each fault: per-file faults give exit status 1
//! with every earlier result kept; faults that would fail every file are
//! found up front, exit status 2, nothing sent.

use super::*;
use crate::proxy::{Mode, Proxy, Trip};

/// Client-to-server bytes that carry the probe and two 1 MiB files with
/// their TLS and HTTP/2 framing, and end halfway through the third file.
const TWO_AND_A_HALF_FILES: u64 = 5 * MIB / 2;

#[test]
fn short_write_fails_each_file_and_keeps_the_ones_before() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 4, 1, &[]);
    let data = env.path("data");
    let sink = faulty_sink(&env, &data, "short-write", 2);
    let run = play(&env, &wal, &sink.address, "short", &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.lines.len(), 4);
    assert_kept(&run.lines, 2, &stored(&data));
    for error in &run.errors()[2..] {
        assert_says(
            error,
            &[
                "incomplete WAL file",
                "server stored 1048575 of the 1048576 bytes sent",
            ],
        );
    }
    // The sink kept what it got as partial files, as Klio does, under a
    // name no WAL name can take.
    for line in &run.lines[2..] {
        let name = line["walName"].as_str().unwrap();
        assert!(stored(&data).join(format!("{name}~partial")).exists());
    }
    assert_eq!(run.summary["filesOk"], 2);
    assert_eq!(run.summary["filesFailed"], 2);
    assert_eq!(run.summary["bytes"], 2 * MIB);
}

#[test]
fn each_put_status_is_a_clear_per_file_error() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    for (fault, code) in [
        ("invalid-argument", "InvalidArgument"),
        ("failed-precondition", "FailedPrecondition"),
        ("internal", "Internal"),
        ("unavailable", "Unavailable"),
        ("resource-exhausted", "ResourceExhausted"),
        ("permission-denied", "PermissionDenied"),
        ("unauthenticated", "Unauthenticated"),
    ] {
        let data = env.path(&format!("data-{fault}"));
        let sink = faulty_sink(&env, &data, &format!("status:{fault}"), 1);
        let run = play(&env, &wal, &sink.address, fault, &[]);
        assert_eq!(run.code(), Some(1), "{fault}: {}", run.stderr);
        assert_eq!(run.lines.len(), 2, "{fault}");
        assert_kept(&run.lines, 1, &stored(&data));
        assert_says(
            run.errors()[1],
            &[
                "server rejected the upload",
                code,
                &format!("fault injected by the sink (--fault status:{fault})"),
            ],
        );
        assert_eq!(run.summary["filesFailed"], 1, "{fault}");
        assert!(
            run.summary["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(code),
            "{fault}: {}",
            run.summary
        );
    }
}

#[test]
fn sink_stalling_a_stream_times_the_file_out() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 3, 1, &[]);
    let data = env.path("data");
    let mut sink = faulty_sink(&env, &data, "stall", 2);
    let run = play(&env, &wal, &sink.address, "stall", &["--timeout", "2s"]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.lines.len(), 3);
    assert_kept(&run.lines, 2, &stored(&data));
    assert_says(run.errors()[2], &["timed out after 2s"]);
    assert_eq!(run.summary["filesOk"], 2);
    // The stall ended with the client's cancel: the sink still stops cleanly.
    assert!(sink.terminate().success(), "{}", sink.log_text());
    assert_says(&sink.log_text(), &["stalling a Put stream"]);
}

#[test]
fn connection_reset_mid_file_fails_that_file_and_the_run_goes_on() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 5, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let proxy = Proxy::start(
        &sink.address,
        Mode::After(TWO_AND_A_HALF_FILES, Trip::Reset),
    );
    let run = play(&env, &wal, &proxy.address, "reset", &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(proxy.mode(), Mode::Pass, "the reset happened");
    assert_eq!(run.lines.len(), 5, "every file is reported");
    assert_kept(&run.lines[..3], 2, &stored(&data));
    let error = run.errors()[2].to_lowercase();
    assert!(
        error.contains("reset") || error.contains("connection"),
        "{error}"
    );
    // The channel reconnects: the files after the reset are stored.
    let last = &run.lines[4];
    assert_eq!(last["error"], "", "{last}");
    assert!(stored(&data)
        .join(last["walName"].as_str().unwrap())
        .exists());
    assert_eq!(
        run.summary["filesOk"].as_u64().unwrap() + run.summary["filesFailed"].as_u64().unwrap(),
        5
    );
}

#[test]
fn network_stall_mid_file_times_each_file_out() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 4, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let proxy = Proxy::start(
        &sink.address,
        Mode::After(TWO_AND_A_HALF_FILES, Trip::Stall),
    );
    let run = play(
        &env,
        &wal,
        &proxy.address,
        "net-stall",
        &["--timeout", "2s"],
    );
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(proxy.mode(), Mode::Stall);
    assert_eq!(run.lines.len(), 4);
    assert_kept(&run.lines, 2, &stored(&data));
    for error in &run.errors()[2..] {
        assert_says(error, &["timed out after 2s"]);
    }
    assert_eq!(run.summary["filesFailed"], 2);
}

#[test]
fn connections_refused_mid_run_fail_the_rest_quickly() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 5, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let proxy = Proxy::start(
        &sink.address,
        Mode::After(TWO_AND_A_HALF_FILES, Trip::Refuse),
    );
    let run = play(&env, &wal, &proxy.address, "refuse", &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(proxy.mode(), Mode::Refuse);
    assert_eq!(run.lines.len(), 5);
    assert_kept(&run.lines, 2, &stored(&data));
    for error in &run.errors()[3..] {
        let error = error.to_lowercase();
        assert!(
            error.contains("connect") || error.contains("reset"),
            "{error}"
        );
    }
    assert_eq!(run.summary["filesOk"], 2);
    assert_eq!(run.summary["filesFailed"], 3);
}

/// A fault present from the start fails the probe: exit 2, the address and
/// the cause named once, no file attempted.
fn assert_up_front(run: &Played, address: &str, cause: &[&str]) {
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.lines.is_empty(), "no file was attempted");
    assert_says(&run.stderr, &[address]);
    let lower = run.stderr.to_lowercase();
    assert!(
        cause.iter().any(|c| lower.contains(&c.to_lowercase())),
        "{:?} does not say any of {cause:?}",
        run.stderr
    );
}

#[test]
fn server_refusing_from_the_start_is_found_up_front() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    // Nothing listens on a port just freed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let run = play(&env, &wal, &closed, "closed", &[]);
    assert_up_front(&run, &closed, &["refused"]);

    let sink = env.sink(&env.path("data"), &[]);
    let proxy = Proxy::start(&sink.address, Mode::Refuse);
    let run = play(&env, &wal, &proxy.address, "refusing", &[]);
    assert_up_front(&run, &proxy.address, &["reset", "closed", "eof"]);

    // The same proxy passing traffic: the refusal was the only fault.
    proxy.set_mode(Mode::Pass);
    let run = play(&env, &wal, &proxy.address, "passing", &[]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(run.lines.len(), 2);
}

#[test]
fn server_stalling_from_the_start_is_found_up_front() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let sink = env.sink(&env.path("data"), &[]);
    let proxy = Proxy::start(&sink.address, Mode::Stall);
    let run = play(&env, &wal, &proxy.address, "stalled", &[]);
    // The TLS handshake never completes; tonic words its connect timeout
    // "deadline has elapsed".
    assert_up_front(
        &run,
        &proxy.address,
        &["timed out", "did not answer", "deadline has elapsed"],
    );
}
