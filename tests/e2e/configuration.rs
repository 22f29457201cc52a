//! Klio's configuration habits, end to end: where the default file is, a
//! whole Klio configuration, grpc-go address forms, and `server_cert_path`
//! naming the server's own certificate.

use crate::util::*;

/// Klio's full configuration fixture, pointed at this test's sink and
/// certificates.
fn full_config(env: &TestEnv, address: &str) -> String {
    let c = &env.certs.client;
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/klio-full-config.yaml"
    ))
    .unwrap()
    .replace(
        "dns:///klio.klio-system.svc:52000",
        &format!("dns:///{address}"),
    )
    .replace("/projected/klio/server/ca.crt", c.ca.to_str().unwrap())
    .replace("/projected/klio/client/tls.crt", c.cert.to_str().unwrap())
    .replace("/projected/klio/client/tls.key", c.key.to_str().unwrap())
}

#[test]
fn a_whole_klio_configuration_plays_without_a_warning() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    let sink = env.sink(&env.path("data"), &[]);
    let config = env.path("klio.yaml");
    std::fs::write(&config, full_config(&env, &sink.address)).unwrap();
    let out = run(env
        .walplayer(&["play"])
        .arg(&wal)
        .arg("--config")
        .arg(&config));
    assert_status(&out, 0);
    let err = stderr(&out);
    assert!(!err.contains("unknown key"), "{err}");
    assert!(
        env.path("data/pg-main").is_dir(),
        "uploaded as the file's cluster"
    );
    assert_eq!(file_lines(&stdout(&out)).len(), 2);
}

#[test]
fn the_default_file_is_home_klio_json_toml_yaml_or_yml_in_vipers_order() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let sink = env.sink(&env.path("data"), &[]);
    let c = &env.certs.client;
    let json = serde_json::json!({"client": {"cluster_name": "from-json", "wal": {
        "address": format!("dns:///{}", sink.address),
        "server_cert_path": c.ca, "client_cert_path": c.cert, "client_key_path": c.key}}});
    std::fs::write(env.path(".klio.json"), json.to_string()).unwrap();
    // Found after .klio.json: not read.
    std::fs::write(
        env.path(".klio.yaml"),
        "client:\n  cluster_name: from-yaml\n",
    )
    .unwrap();
    let out = run(env.walplayer(&["play"]).arg(&wal));
    assert_status(&out, 0);
    assert!(env.path("data/from-json").is_dir());
    assert!(!env.path("data/from-yaml").exists());

    // An explicit --config still wins.
    let toml = format!(
        "[client]\ncluster_name = \"from-toml\"\n[client.wal]\naddress = \"{}\"\nserver_cert_path = {:?}\nclient_cert_path = {:?}\nclient_key_path = {:?}\n",
        sink.address, c.ca, c.cert, c.key
    );
    std::fs::write(env.path("mine.toml"), toml).unwrap();
    let out = run(env
        .walplayer(&["play"])
        .arg(&wal)
        .arg("--config")
        .arg(env.path("mine.toml")));
    assert_status(&out, 0);
    assert!(env.path("data/from-toml").is_dir());
}

#[test]
fn an_address_in_no_accepted_form_is_refused_naming_the_forms() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    for address in ["unix:///run/klio.sock", "dns://10.0.0.2/klio:52000", "klio"] {
        let out = run(&mut env.play(&wal, address, &[]));
        assert_status(&out, 2);
        let err = stderr(&out);
        for form in ["host:port", "[v6]:port", "dns:///host:port"] {
            assert!(err.contains(form), "{address}: {err}");
        }
        assert!(err.contains(address), "names the address: {err}");
    }
}

#[test]
fn server_cert_path_may_name_the_servers_own_certificate() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    let sink = env.sink(&env.path("data"), &[]);
    let c = &env.certs.client;
    // The sink's own certificate, not the CA that signed it.
    let out = run(&mut env.play_as(&wal, &sink.address, &env.certs.server.cert, &c.cert, &c.key));
    assert_status(&out, 0);
    assert_eq!(file_lines(&stdout(&out)).len(), 2);

    // Another server's certificate, from another CA, is refused up front
    // (the host-name check and an unrelated self-signed certificate are
    // common/klio/tls.rs's unit tests).
    let other = TestEnv::new();
    let out = run(&mut env.play_as(
        &wal,
        &sink.address,
        &other.certs.server.cert,
        &c.cert,
        &c.key,
    ));
    assert_status(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&sink.address), "{err}");
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
}
