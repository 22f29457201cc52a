//! Certificates used on the wrong channel: each carries its role, and each
//! server takes only the roles of its own channel, even when one CA signed
//! them all (as `walplayer certs` did before the control channel had its
//! own CA). The refusal names the role found and the one expected.

use std::time::Duration;

use walplayer::certs::{
    mint_client_variant, mint_server_variant, CertSpec, Channel, ServerVariant,
};
use walplayer::klio::role::Role;

use crate::distributed::Cluster;
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Issue item 15: a Klio client certificate, even one signed by the control
/// channel's CA, cannot register as an agent; an agent certificate can.
#[test]
fn a_klio_client_certificate_is_refused_as_an_agent() {
    let c = Cluster::new();
    let certs = &c.env.certs;
    let klio_client = mint_client_variant(
        &certs.dir,
        &c.env.path("klio-client-of-control-ca"),
        Role::KlioClient,
        Channel::Control,
        &CertSpec::default(),
    )
    .unwrap();
    let co = &certs.coordinator;
    let (mut coord, addr) = c.coordinator(&[
        "--tls-cert",
        co.cert.to_str().unwrap(),
        "--tls-key",
        co.key.to_str().unwrap(),
        "--client-ca",
        co.ca.to_str().unwrap(),
        "--agents",
        "1",
        "--length",
        "2",
        "--wal-size",
        "1",
    ]);
    let control = |cert: &std::path::Path, key: &std::path::Path| {
        vec![
            "--once".to_string(),
            "--control-ca".into(),
            certs.control_ca.to_str().unwrap().into(),
            "--control-cert".into(),
            cert.to_str().unwrap().into(),
            "--control-key".into(),
            key.to_str().unwrap().into(),
        ]
    };
    let args = control(&klio_client.cert, &klio_client.key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut intruder = c.agent("intruder", &addr, &args);
    assert_eq!(intruder.wait(LIMIT).code(), Some(3), "{}", intruder.text());
    wait_until(
        "the coordinator names the role found and expected",
        LIMIT,
        || {
            let log = coord.text();
            log.contains("certificate of role klio-client")
                && log.contains("the control channel takes role agent")
        },
    );
    assert!(!coord.text().contains("agent intruder"), "{}", coord.text());

    // The agent certificate gets in and completes the run.
    let args = control(&certs.agent.cert, &certs.agent.key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut good = c.agent("good", &addr, &args);
    assert_eq!(coord.wait(LIMIT).code(), Some(0), "{}", coord.text());
    assert_eq!(good.wait(LIMIT).code(), Some(0), "{}", good.text());
    assert!(coord.text().contains("agent good registered"));
}

/// Issue item 15: the sink refuses an agent certificate, even one signed by
/// the CA it trusts for Klio clients, and stores nothing of it.
#[test]
fn an_agent_certificate_is_refused_by_the_sink() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let agent = mint_client_variant(
        &env.certs.dir,
        &env.path("agent-of-klio-ca"),
        Role::Agent,
        Channel::Klio,
        &CertSpec::default(),
    )
    .unwrap();
    let out = run(&mut env.play_as(
        &wal,
        &sink.address,
        &env.certs.client.ca,
        &agent.cert,
        &agent.key,
    ));
    assert_status(&out, 2);
    wait_until("the sink names the role found and expected", LIMIT, || {
        let log = std::fs::read_to_string(&sink.log).unwrap();
        log.contains("certificate of role agent")
            && log.contains("the Klio channel takes role klio-client")
    });
    assert!(!data.join("walplayer").exists());

    // The Klio client certificate is taken.
    let out = run(&mut env.play(&wal, &sink.address, &[]));
    assert_status(&out, 0);
    assert_eq!(
        std::fs::read_dir(data.join("walplayer")).unwrap().count(),
        2
    );
}

/// Issue item 15, the clients' side: an agent joins only a server whose
/// certificate has the coordinator's role, even one signed by the control
/// CA it trusts, and says which role it found.
#[test]
fn an_agent_refuses_a_coordinator_without_the_coordinator_role() {
    let c = Cluster::new();
    let certs = &c.env.certs;
    let impostor = mint_server_variant(
        &certs.dir,
        &c.env.path("klio-server-of-control-ca"),
        ServerVariant::OtherRole(Role::KlioServer, Channel::Control),
        &CertSpec::default(),
    )
    .unwrap();
    let (coord, addr) = c.coordinator(&[
        "--tls-cert",
        impostor.cert.to_str().unwrap(),
        "--tls-key",
        impostor.key.to_str().unwrap(),
        "--client-ca",
        certs.coordinator.ca.to_str().unwrap(),
        "--agents",
        "1",
        "--length",
        "1",
        "--wal-size",
        "1",
        "--register-timeout",
        "60s",
    ]);
    let agent = c.agent(
        "careful",
        &addr,
        &[
            "--once",
            "--control-ca",
            certs.control_ca.to_str().unwrap(),
            "--control-cert",
            certs.agent.cert.to_str().unwrap(),
            "--control-key",
            certs.agent.key.to_str().unwrap(),
        ],
    );
    wait_until("the agent names the role found and expected", LIMIT, || {
        let log = agent.text();
        log.contains("certificate of role klio-server") && log.contains("role coordinator")
    });
    assert!(
        !coord.text().contains("agent careful registered"),
        "{}",
        coord.text()
    );
}

/// Issue item 15, the clients' side: `play` refuses a server showing a
/// control-channel certificate (here the coordinator's role, signed by the
/// Klio CA it trusts), names the role, and sends nothing.
#[test]
fn play_refuses_a_server_with_a_control_channel_certificate() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let impostor = mint_server_variant(
        &env.certs.dir,
        &env.path("coordinator-of-klio-ca"),
        ServerVariant::OtherRole(Role::Coordinator, Channel::Klio),
        &CertSpec::default(),
    )
    .unwrap();
    let data = env.path("data");
    let mut cmd = env.walplayer(&["sink", "--fsync", "none", "--listen", "127.0.0.1:0"]);
    cmd.arg("--data")
        .arg(&data)
        .arg("--tls-cert")
        .arg(&impostor.cert)
        .arg("--tls-key")
        .arg(&impostor.key)
        .arg("--client-ca")
        .arg(&env.certs.server.ca);
    let sink = SinkProcess::start(cmd);
    let out = run(&mut env.play(&wal, &sink.address, &[]));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("certificate of role coordinator") && text.contains("not a Klio server"),
        "{text}"
    );
    assert!(!data.join("walplayer").exists());
}
