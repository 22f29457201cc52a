//! Bad input gets exit status 2 and a message naming what is wrong.

use std::path::Path;
use std::process::Command;

use crate::util::*;

fn expect_usage_error(out: std::process::Output, needles: &[&str]) {
    assert_status(&out, 2);
    let err = stderr(&out);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn play_flags_out_of_range() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    for (flag, value) in [
        ("--block-size", "0"),
        ("--block-size", "8193"),
        ("--jobs", "0"),
        ("--timeout", "soon"),
        ("--timeout", "0s"),
    ] {
        let out = run(&mut env.play(&wal, "127.0.0.1:1", &[flag, value]));
        expect_usage_error(out, &[flag]);
    }
}

/// Issue item 9 (memory): jobs × block size beyond `--max-memory` is
/// refused before anything is sent, with the numbers and what to lower.
#[test]
fn play_beyond_max_memory_is_refused_with_what_fits() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let args = [
        "-j",
        "256",
        "--block-size",
        "8192",
        "--max-memory",
        "256MiB",
    ];
    let out = run(&mut env.play(&wal, "127.0.0.1:1", &args));
    expect_usage_error(
        out,
        &[
            "256 jobs × 8192 KiB blocks need about 778 MiB",
            "more than 256 MiB of --max-memory",
            "lower --jobs to 82, or raise the limit",
        ],
    );
    let out = run(&mut env.play(&wal, "127.0.0.1:1", &["--max-memory", "lots"]));
    expect_usage_error(out, &["--max-memory", "not a size"]);
}

#[test]
fn play_missing_directory_and_file_as_directory() {
    let env = TestEnv::new();
    let missing = env.path("no-such-dir");
    let out = run(&mut env.play(&missing, "127.0.0.1:1", &[]));
    expect_usage_error(out, &["no-such-dir", "does not exist"]);
    let file = env.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = run(&mut env.play(&file, "127.0.0.1:1", &[]));
    expect_usage_error(out, &["a-file", "not a directory"]);
}

#[test]
fn missing_settings_are_listed_together() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let out = run(env
        .walplayer(&["play"])
        .arg(&wal)
        .args(["--address", "127.0.0.1:1"]));
    expect_usage_error(
        out,
        &[
            "client.cluster_name",
            "CLIENT_CLUSTER_NAME",
            "--cluster-name",
            "client.wal.server_cert_path",
            "client.wal.client_cert_path",
            "client.wal.client_key_path",
        ],
    );
}

#[test]
fn unknown_yaml_key_is_warned_by_name() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let config = env.path("klio.yaml");
    std::fs::write(
        &config,
        "client:\n  base:\n    cluster_name: oops\n  wal:\n    address: 127.0.0.1:1\n",
    )
    .unwrap();
    let out = run(env.walplayer(&["play", "--config"]).arg(&config).arg(&wal));
    expect_usage_error(
        out,
        &[
            "client.base.cluster_name",
            "did you mean client.cluster_name",
            "missing",
        ],
    );

    let out = run(env
        .walplayer(&["play", "--config"])
        .arg(env.path("absent.yaml"))
        .arg(&wal));
    expect_usage_error(out, &["absent.yaml", "cannot read configuration file"]);

    std::fs::write(&config, "client: [unclosed\n").unwrap();
    let out = run(env.walplayer(&["play", "--config"]).arg(&config).arg(&wal));
    expect_usage_error(out, &["klio.yaml", "not valid YAML"]);
}

#[test]
fn certificate_files_unreadable_or_not_pem_are_named() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let junk = env.path("junk.pem");
    std::fs::write(&junk, "this is not PEM").unwrap();
    let c = &env.certs.client;
    let cases: [(&str, &Path, &str); 4] = [
        (
            "--server-cert",
            &env.path("missing-ca.crt"),
            "missing-ca.crt",
        ),
        ("--server-cert", &junk, "junk.pem"),
        ("--client-cert", &junk, "junk.pem"),
        ("--client-key", &junk, "junk.pem"),
    ];
    for (flag, path, needle) in cases {
        let mut cmd = env.walplayer(&["play"]);
        cmd.arg(&wal)
            .args(["--cluster-name", "x", "--address", "127.0.0.1:1"]);
        for (f, default) in [
            ("--server-cert", &c.ca),
            ("--client-cert", &c.cert),
            ("--client-key", &c.key),
        ] {
            cmd.arg(f)
                .arg(if f == flag { path } else { default.as_path() });
        }
        expect_usage_error(run(&mut cmd), &[needle]);
    }
    // A directory where a file is expected.
    let mut cmd = env.play_as(&wal, "127.0.0.1:1", env.dir.path(), &c.cert, &c.key);
    expect_usage_error(run(&mut cmd), &["server CA certificate"]);
}

#[test]
fn unreachable_address_is_reported_once() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 3, 1, &[]);
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let out = run(&mut env.play(&wal, &address, &[]));
    assert!(stdout(&out).is_empty(), "no file was attempted");
    let err = stderr(&out);
    assert_eq!(err.matches(&address).count(), 1, "reported once: {err}");
    expect_usage_error(out, &[&address, "cannot connect"]);
    let out = run(&mut env.play(&wal, "no-port", &[]));
    expect_usage_error(out, &["client.wal.address", "host:port"]);
}

#[test]
fn bad_cluster_name_is_refused_before_connecting() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let mut cmd = env.walplayer(&["play"]);
    cmd.arg(&wal)
        .arg("--config")
        .arg(&env.certs.klio_config)
        .args(["--cluster-name", "../etc"]);
    expect_usage_error(run(&mut cmd), &["client.cluster_name", "../etc"]);
}

#[test]
fn generate_rejects_sizes_postgres_refuses() {
    let env = TestEnv::new();
    for size in ["0", "3", "2048"] {
        let out = run(env
            .walplayer(&["generate", "--length", "1", "--wal-size", size])
            .arg(env.path("g")));
        expect_usage_error(out, &["--wal-size", "1, 2, 4"]);
    }
    let out = run(env.walplayer(&["generate"]).arg(env.path("g")));
    expect_usage_error(out, &["--length"]);
    let out = run(env
        .walplayer(&["generate", "--length", "1", "--start-lsn", "0/1"])
        .arg(env.path("g")));
    expect_usage_error(out, &["0/0"]);
    let out = run(env
        .walplayer(&["generate", "--length", "1", "--template"])
        .arg(env.path("nope"))
        .arg(env.path("g")));
    expect_usage_error(out, &["nope"]);
}

#[test]
fn key_formats_pkcs1_sec1_pkcs8_all_work() {
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl is needed to write PKCS#1 and SEC1 keys (.ci/run installs it)");
    }
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let ca_dir = env.certs.dir.join("ca");
    let d = env.dir.path();
    let openssl = |args: &[&str]| {
        let out = run(Command::new("openssl").args(args).current_dir(d));
        assert_status(&out, 0);
    };
    // SEC1 ("EC PRIVATE KEY") from the minted PKCS#8 key.
    let key = env.certs.client.key.to_str().unwrap();
    openssl(&["ec", "-in", key, "-out", "sec1.key"]);
    assert!(std::fs::read_to_string(d.join("sec1.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    // An RSA client certificate signed by our CA, key in PKCS#1 ("RSA PRIVATE KEY").
    std::fs::write(d.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "rsa8.key",
        "-subj",
        "/CN=klio@walplayer",
        "-out",
        "rsa.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "rsa.csr",
        "-CA",
        ca_dir.join("tls.crt").to_str().unwrap(),
        "-CAkey",
        ca_dir.join("tls.key").to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "rsa.crt",
    ]);
    openssl(&["rsa", "-in", "rsa8.key", "-traditional", "-out", "rsa1.key"]);
    assert!(std::fs::read_to_string(d.join("rsa1.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));

    let client_cert = env.certs.client.cert.clone();
    for (cert, key) in [
        (client_cert.clone(), d.join("sec1.key")),
        (client_cert, env.certs.client.key.clone()),
        (d.join("rsa.crt"), d.join("rsa1.key")),
        (d.join("rsa.crt"), d.join("rsa8.key")),
    ] {
        let out = run(&mut env.play_as(&wal, &sink.address, &env.certs.client.ca, &cert, &key));
        assert_status(&out, 0);
    }
    // A key that does not belong to the certificate is named.
    let mut mismatched = env.play_as(
        &wal,
        &sink.address,
        &env.certs.client.ca,
        &d.join("rsa.crt"),
        &env.certs.client.key,
    );
    let out = run(&mut mismatched);
    expect_usage_error(out, &["rsa.crt"]);
}

#[test]
fn agent_bad_settings_are_usage_errors() {
    let env = TestEnv::new();
    let agent = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
        cmd.env("HOME", env.dir.path())
            .env_remove("WALPLAYER_COORDINATOR");
        cmd.arg("--data-dir").arg(env.path("agent-data"));
        cmd
    };
    expect_usage_error(run(&mut agent()), &["--coordinator"]);
    expect_usage_error(
        run(agent().args(["--coordinator", "nowhere"])),
        &["--coordinator", "host:port"],
    );
    expect_usage_error(
        run(agent().args(["--coordinator", "127.0.0.1:1", "--name", "a/b"])),
        &["agent name", "a/b"],
    );
    expect_usage_error(
        run(agent().args(["--coordinator", "127.0.0.1:1", "--name", "a", "--once"])),
        &["client.cluster_name", "client.wal.address"],
    );
    expect_usage_error(
        run(agent()
            .args(["--coordinator", "127.0.0.1:1", "--control-ca"])
            .arg(env.path("missing.crt"))),
        &["--control-cert"],
    );
}

#[test]
fn a_run_that_fails_up_front_keeps_the_previous_results() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let (output, summary) = (env.path("results.json"), env.path("summary.json"));
    std::fs::write(&output, "previous results\n").unwrap();
    std::fs::write(&summary, "previous summary\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = env.play(&wal, &format!("127.0.0.1:{port}"), &["--output"]);
    cmd.arg(&output).arg("--summary").arg(&summary);
    expect_usage_error(run(&mut cmd), &["cannot connect"]);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "previous results\n"
    );
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        "previous summary\n"
    );

    // A run that starts replaces them.
    let sink = env.sink(&env.path("data"), &[]);
    let mut cmd = env.play(&wal, &sink.address, &["--output"]);
    cmd.arg(&output).arg("--summary").arg(&summary);
    assert_status(&run(&mut cmd), 0);
    assert_eq!(
        json_lines(&std::fs::read_to_string(&output).unwrap()).len(),
        1
    );
    assert_eq!(read_json(&summary)["filesOk"], 1);
}
