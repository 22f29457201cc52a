//! Private keys never reach a log: not in a full run of every process at
//! `RUST_LOG=trace`, not in the errors about a damaged or mismatched key.

use super::*;

/// Every private key `certs::mint` wrote (the CA's too).
fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(key_files(&path));
        } else if path.extension().is_some_and(|e| e == "key") {
            out.push(path);
        }
    }
    out
}

/// The base64 lines of a PEM file, long enough not to turn up by chance.
fn body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(String::from)
        .collect()
}

/// A copy of `key` with one base64 line reversed: still PEM, no longer a key.
fn damaged(env: &TestEnv, key: &Path, name: &str) -> (PathBuf, String) {
    let pem = std::fs::read_to_string(key).unwrap();
    let lines = body_lines(&pem);
    let victim = &lines[lines.len() / 2];
    let reversed: String = victim.chars().rev().collect();
    let path = env.path(name);
    std::fs::write(&path, pem.replace(victim.as_str(), &reversed)).unwrap();
    (path, reversed)
}

/// Asserts no captured output holds a line of any key, or a PEM key label.
fn assert_no_key_material(outputs: &[(String, String)], secrets: &[String]) {
    assert!(!secrets.is_empty());
    for (what, text) in outputs {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} names a PEM key block"
        );
        for secret in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} holds a line of a private key"
            );
        }
    }
}

#[test]
fn private_keys_never_reach_a_log() {
    let env = TestEnv::new();
    let c = &env.certs;
    let mut secrets: Vec<String> = key_files(&c.dir)
        .iter()
        .flat_map(|k| body_lines(&std::fs::read_to_string(k).unwrap()))
        .collect();
    assert!(secrets.len() >= 5, "found the keys: {secrets:?}");
    let mut outputs = Vec::new();
    let wal = env.generate("wal", 2, 1, &[]);

    // A full run of every process, logging everything.
    let mut cmd = env.walplayer(&["sink", "--listen", "127.0.0.1:0", "--fsync", "none"]);
    cmd.env("RUST_LOG", "trace")
        .arg("--data")
        .arg(env.path("data"))
        .arg("--tls-cert")
        .arg(&c.server.cert)
        .arg("--tls-key")
        .arg(&c.server.key)
        .arg("--client-ca")
        .arg(&c.server.ca);
    let mut sink = SinkProcess::start(cmd);

    let mut cmd = env.play(&wal, &sink.address, &[]);
    cmd.env("RUST_LOG", "trace");
    let (status, text) = run_logged(cmd, &env.path("play.log"));
    assert_eq!(status.code(), Some(0), "{text}");
    outputs.push(("play".to_string(), text));

    let mut cmd = env.walplayer(&["coordinator", "--listen", "127.0.0.1:0", "--quiet"]);
    cmd.env("RUST_LOG", "trace")
        .args(["--agents", "1", "--length", "2", "--wal-size", "1"])
        .args(["--address", &sink.address])
        .arg("--tls-cert")
        .arg(&c.coordinator.cert)
        .arg("--tls-key")
        .arg(&c.coordinator.key)
        .arg("--client-ca")
        .arg(&c.coordinator.ca)
        .arg("--output")
        .arg(env.path("merged.jsonl"))
        .stdout(Stdio::null());
    let mut coordinator = Logged::start(cmd, env.path("coordinator.log"));
    let line = coordinator.wait_line("coordinator listening on ", LIMIT);
    let address = line.rsplit(' ').next().unwrap().to_string();
    let agent_data = env.path("agent");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
    cmd.env("HOME", env.dir.path())
        .env("RUST_LOG", "trace")
        .args(["--coordinator", &address, "--name", "keys", "--once"])
        .args(["--allow-address", &sink.address])
        .arg("--data-dir")
        .arg(&agent_data)
        .arg("--config")
        .arg(&c.klio_config)
        .arg("--control-ca")
        .arg(&c.agent.ca)
        .arg("--control-cert")
        .arg(&c.agent.cert)
        .arg("--control-key")
        .arg(&c.agent.key);
    let (status, text) = run_logged(cmd, &env.path("agent.log"));
    assert_eq!(status.code(), Some(0), "{text}");
    outputs.push(("agent".to_string(), text));
    assert_eq!(
        coordinator.wait(LIMIT).code(),
        Some(0),
        "{}",
        coordinator.text()
    );
    outputs.push(("coordinator".to_string(), coordinator.text()));

    for (what, text) in &outputs {
        assert!(text.contains("TRACE"), "{what} logged at trace level");
    }

    // Failing runs: a damaged key, and a valid key that is not the cert's.
    let (bad_client, line) = damaged(&env, &c.client.key, "bad-client.key");
    secrets.push(line);
    let (bad_server, line) = damaged(&env, &c.server.key, "bad-server.key");
    secrets.push(line);
    let (bad_control, line) = damaged(&env, &c.coordinator.key, "bad-control.key");
    secrets.push(line);
    let mut failing: Vec<(&str, Command)> = Vec::new();
    for (what, key) in [
        ("play, damaged key", &bad_client),
        ("play, another identity's key", &c.server.key),
    ] {
        let cmd = env.play_as(&wal, &sink.address, &c.client.ca, &c.client.cert, key);
        failing.push((what, cmd));
    }
    let mut cmd = env.walplayer(&["sink", "--listen", "127.0.0.1:0", "--data"]);
    cmd.arg(env.path("data"))
        .arg("--tls-cert")
        .arg(&c.server.cert)
        .arg("--tls-key")
        .arg(&bad_server)
        .arg("--client-ca")
        .arg(&c.server.ca);
    failing.push(("sink, damaged key", cmd));
    let mut cmd = env.walplayer(&["coordinator", "--listen", "127.0.0.1:0"]);
    cmd.args(["--agents", "1", "--length", "1"])
        .arg("--tls-cert")
        .arg(&c.coordinator.cert)
        .arg("--tls-key")
        .arg(&bad_control)
        .arg("--client-ca")
        .arg(&c.coordinator.ca);
    failing.push(("coordinator, damaged key", cmd));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
    cmd.env("HOME", env.dir.path())
        .env("CLIENT_WAL_CLIENT_KEY_PATH", &bad_client)
        .args(["--coordinator", &address, "--name", "bad", "--once"])
        .arg("--data-dir")
        .arg(&agent_data)
        .arg("--config")
        .arg(&c.klio_config);
    failing.push(("agent, damaged Klio key", cmd));
    for (i, (what, mut cmd)) in failing.into_iter().enumerate() {
        cmd.env("RUST_LOG", "trace");
        let (status, text) = run_logged(cmd, &env.path(&format!("failing-{i}.log")));
        assert_eq!(status.code(), Some(2), "{what}: {text}");
        outputs.push((what.to_string(), text));
    }
    // The sink saw the full run and the mismatched key's handshake.
    assert!(sink.terminate().success());
    let sink_log = sink.log_text();
    assert!(sink_log.contains("TRACE"), "sink logged at trace level");
    outputs.push(("sink".to_string(), sink_log));
    assert_no_key_material(&outputs, &secrets);
}
