//! The control channel between coordinator and agents: who it lets in
//! (mutual TLS), how it notices a peer gone silent (an agent or the
//! coordinator stopped with SIGSTOP: its sockets stay open and say nothing),
//! and what the coordinator makes of a raw client reporting a file twice.

use std::sync::Arc;
use std::time::Duration;

use crate::distributed::Cluster;
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(90);

/// A coordinator serving the control channel with TLS and requiring
/// client certificates from `env`'s CA.
fn tls_coordinator(c: &Cluster, args: &[&str]) -> (Logged, String) {
    let co = &c.env.certs.coordinator;
    let (cert, key, ca) = (
        co.cert.to_str().unwrap(),
        co.key.to_str().unwrap(),
        co.ca.to_str().unwrap(),
    );
    let mut all = vec!["--tls-cert", cert, "--tls-key", key, "--client-ca", ca];
    all.extend_from_slice(args);
    c.coordinator(&all)
}

/// The number of TLS handshakes the coordinator's log says it rejected.
fn rejected(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("TLS handshake with 127.0.0.1:") && l.contains("rejected"))
        .count()
}

/// A TLS client that trusts the coordinator but presents no certificate:
/// the handshake is refused, so no byte of gRPC gets through.
async fn tls_without_client_certificate(address: &str, ca: &std::path::Path) -> String {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // TLS 1.3: the client's side of the handshake may finish before the
    // server has judged it; the refusal then comes on the first read.
    let mut tls = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(LIMIT, tls.read(&mut buf)).await {
        Ok(Ok(0)) => "closed".into(),
        Ok(Ok(n)) => panic!("the coordinator answered a client without a certificate: {n} bytes"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("no answer within {LIMIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_channel_refuses_agents_without_a_certificate_of_its_ca() {
    let c = Cluster::new();
    let (coord, addr) = tls_coordinator(&c, &["--agents", "1", "--length", "2", "--wal-size", "1"]);

    // TLS without a client certificate.
    let why = tls_without_client_certificate(&addr, &c.env.certs.agent.ca).await;
    assert!(
        why.to_lowercase().contains("certificate") || why == "closed",
        "{why}"
    );
    // An agent with no control TLS at all.
    let plain = c.agent("plain", &addr, &["--once"]);
    // An agent with a certificate from another CA (it trusts the right one).
    let other = TestEnv::new();
    let a = &c.env.certs.agent;
    let o = &other.certs.agent;
    let foreign = c.agent(
        "foreign",
        &addr,
        &[
            "--once",
            "--control-ca",
            a.ca.to_str().unwrap(),
            "--control-cert",
            o.cert.to_str().unwrap(),
            "--control-key",
            o.key.to_str().unwrap(),
        ],
    );
    // Each of the three is refused by the coordinator's TLS, by address.
    let coord_log = || coord.text();
    wait_until(
        "the coordinator logs three refused handshakes",
        LIMIT,
        || rejected(&coord_log()) >= 3,
    );
    // Refused, each gives up (--once: exit 3, the coordinator lost).
    for mut agent in [plain, foreign] {
        assert_eq!(agent.wait(LIMIT).code(), Some(3), "{}", agent.text());
        assert!(
            agent.text().contains("lost the coordinator"),
            "{}",
            agent.text()
        );
    }

    // None of them registered: the run is still waiting for its agent,
    // and one with this CA's certificate gets in and completes it.
    assert!(!coord.text().contains("registered"), "{}", coord.text());
    let mut coord = coord;
    let mut good = c.agent(
        "good",
        &addr,
        &[
            "--once",
            "--control-ca",
            a.ca.to_str().unwrap(),
            "--control-cert",
            a.cert.to_str().unwrap(),
            "--control-key",
            a.key.to_str().unwrap(),
        ],
    );
    assert_eq!(coord.wait(LIMIT).code(), Some(0), "{}", coord.text());
    assert_eq!(good.wait(LIMIT).code(), Some(0), "{}", good.text());
    let log = coord.text();
    assert!(log.contains("agent good registered"), "{log}");
    for name in ["plain", "foreign"] {
        assert!(!log.contains(&format!("agent {name}")), "{log}");
    }
    let agents: Vec<_> = c.summary()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(agents, ["good"]);
}

/// Stops `child` (SIGSTOP): its sockets stay open and say nothing.
fn freeze(child: &std::process::Child) {
    signal(child, libc::SIGSTOP);
}

#[test]
fn silent_agent_is_lost_after_agent_timeout() {
    let c = Cluster::new();
    let (mut coord, addr) = c.coordinator(&[
        "--agents",
        "2",
        "--length-per-agent",
        "40",
        "--wal-size",
        "1",
        "--block-size",
        "8",
        "--agent-timeout",
        "3s",
    ]);
    let frozen = c.agent("frozen", &addr, &["--once"]);
    let mut alive = c.agent("alive", &addr, &["--once"]);
    let merged = c.env.path("merged.json");
    wait_until("frozen reports a file", LIMIT, || {
        std::fs::read_to_string(&merged)
            .unwrap_or_default()
            .contains("\"agent\":\"frozen\"")
    });
    freeze(&frozen.child);
    let lost = coord.wait_line("agent frozen lost", LIMIT);
    assert!(lost.contains("no beat for 3s (--agent-timeout)"), "{lost}");
    assert_eq!(coord.wait(LIMIT).code(), Some(3), "{}", coord.text());
    assert_eq!(alive.wait(LIMIT).code(), Some(0), "{}", alive.text());
    let s = c.summary();
    let frozen_summary = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "frozen")
        .unwrap()
        .clone();
    let state = frozen_summary["state"].as_str().unwrap();
    assert!(
        state.starts_with("lost") && state.contains("--agent-timeout"),
        "{frozen_summary}"
    );
    assert!(s["filesUnreported"].as_u64().unwrap() > 0, "{s}");
    // Dropping `frozen` kills it; SIGKILL reaches a stopped process.
}

#[test]
fn silent_coordinator_is_lost_by_http2_keepalive() {
    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&[
        "--agents",
        "1",
        "--length",
        "400",
        "--wal-size",
        "1",
        // 1 KiB blocks: the run outlasts the keepalive's 15 s by far.
        "--block-size",
        "1",
    ]);
    let mut agent = c.agent("watcher", &addr, &["--once"]);
    wait_for_lines(&c.env.path("merged.json"), 1, LIMIT);
    freeze(&coord.child);
    // Keepalive: a ping every 5 s, 10 s to answer; 60 s bounds it loosely.
    assert_eq!(
        agent.wait(Duration::from_secs(60)).code(),
        Some(3),
        "{}",
        agent.text()
    );
    assert!(
        agent.text().contains("lost the coordinator"),
        "{}",
        agent.text()
    );
    assert!(
        c.stored().len() < 400,
        "the agent stopped instead of finishing the run"
    );
    drop(coord);
}

/// The coordinator's next message on a session, within [`LIMIT`].
async fn next(
    down: &mut tonic::Streaming<walplayer::proto::control::CoordinatorMessage>,
) -> Option<walplayer::proto::control::coordinator_message::Body> {
    tokio::time::timeout(LIMIT, down.message())
        .await
        .expect("the coordinator answers")
        .unwrap()
        .and_then(|m| m.body)
}

#[test]
fn coordinator_silent_at_the_end_is_not_taken_for_a_finished_run() {
    let c = Cluster::new();
    let (coord, addr) = c.coordinator(&["--agents", "1", "--length", "3", "--wal-size", "1"]);
    let mut agent = c.agent("last", &addr, &["--once"]);
    // Stopped once it has released the barrier: the agent uploads its 3
    // files and sends Finished into a connection nobody reads.
    coord.wait_line("start barrier released", LIMIT);
    freeze(&coord.child);
    assert_eq!(
        agent.wait(Duration::from_secs(60)).code(),
        Some(3),
        "{}",
        agent.text()
    );
    let log = agent.text();
    assert!(log.contains("lost the coordinator"), "{log}");
    assert!(!log.contains("run finished"), "{log}");
    drop(coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reported_twice_is_merged_and_counted_once() {
    use walplayer::klio::stats::{encode_histogram, new_histogram};
    use walplayer::proto::control::agent_message::Body as Up;
    use walplayer::proto::control::control_client::ControlClient;
    use walplayer::proto::control::coordinator_message::Body as Down;
    use walplayer::proto::control::{
        AgentMessage, Beat, ClusterHistogram, ClusterPlan, FileResult, Finished, Ready, Register,
    };

    const MIB: u64 = 1 << 20;
    let c = Cluster::new();
    let (mut coord, addr) = c.coordinator(&["--agents", "1", "--length", "3", "--wal-size", "1"]);
    let (up, rx) = tokio::sync::mpsc::channel::<AgentMessage>(16);
    let send = |body: Up| {
        let up = up.clone();
        async move { up.send(AgentMessage { body: Some(body) }).await.unwrap() }
    };
    send(Up::Register(Register {
        name: "raw".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        capabilities: vec!["generate".into()],
        free_bytes: 1 << 40,
    }))
    .await;
    let mut client = ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut down = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Some(Down::Assignment(assignment)) = next(&mut down).await else {
        panic!("expected an assignment");
    };
    assert_eq!(assignment.segments_per_cluster, [3]);
    let cluster = "walplayer-raw".to_string();
    let names = [
        "000000010000000000000000",
        "000000010000000000000001",
        "000000010000000000000002",
    ];
    send(Up::Ready(Ready {
        files: 3,
        bytes: 3 * MIB,
        clusters: vec![ClusterPlan {
            cluster: cluster.clone(),
            first_segment: names[0].into(),
            count: 3,
            segment_bytes: MIB,
            wal_names: Vec::new(),
        }],
    }))
    .await;
    let Some(Down::Start(start)) = next(&mut down).await else {
        panic!("expected Start");
    };
    let t0 = start.start_unix_nanos;
    let result = |i: usize| FileResult {
        wal_full_path: format!("/raw/{}", names[i]),
        cluster: cluster.clone(),
        wal_name: names[i].into(),
        start_unix_nanos: t0 + i as i64 * 1_000_000,
        end_unix_nanos: t0 + (i as i64 + 1) * 1_000_000,
        elapsed_ns: 1_000_000,
        bytes: MIB,
        error: String::new(),
        retries: Vec::new(),
        verified: false,
        error_kind: 0,
        ..Default::default()
    };
    send(Up::Beat(Beat {
        files_done: 0,
        bytes_done: 0,
        started_unix_nanos: t0,
    }))
    .await;
    // The first file twice, as an agent that resent after a reconnect would.
    for i in [0, 0, 1, 2] {
        send(Up::File(result(i))).await;
    }
    let mut h = new_histogram();
    for _ in 0..3 {
        h.record(1_000_000).unwrap();
    }
    send(Up::Finished(Finished {
        histogram: encode_histogram(&h).into(),
        clusters: vec![ClusterHistogram {
            cluster: cluster.clone(),
            histogram: encode_histogram(&h).into(),
        }],
        started_unix_nanos: t0,
        ended_unix_nanos: t0 + 3_000_000,
        files_skipped: 0,
        simulation: None,
    }))
    .await;
    assert!(
        next(&mut down).await.is_none(),
        "the session ends after Finished"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = coord.wait(LIMIT);
        (status, coord.text())
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    assert!(
        status.1.contains(
            "agent raw reported walplayer-raw/000000010000000000000000 twice; counted once"
        ),
        "{}",
        status.1
    );

    let lines = c.merged();
    let reported: Vec<&str> = lines
        .iter()
        .map(|l| l["walName"].as_str().unwrap())
        .collect();
    assert_eq!(reported, names, "each file once in the merged output");
    let s = c.summary();
    assert_eq!(s["filesOk"], 3, "{s}");
    assert_eq!(s["filesFailed"], 0);
    assert_eq!(s["filesUnreported"], 0);
    assert_eq!(s["bytes"], 3 * MIB);
}
