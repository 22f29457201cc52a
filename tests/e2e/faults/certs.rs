//! Server certificates the player must not trust: expired, for another
//! host, or from a CA it does not know. Each fails every file, so `play`
//! finds it up front: exit status 2, the address and rustls's reason named,
//! nothing sent.

use walplayer::certs::{self, CertSpec, ServerVariant, TlsFiles};

use super::*;

/// A sink presenting `identity`, trusting this env's clients.
fn sink_with(env: &TestEnv, identity: &TlsFiles) -> SinkProcess {
    let mut cmd = env.walplayer(&["sink", "--listen", "127.0.0.1:0", "--fsync", "none"]);
    cmd.arg("--data")
        .arg(env.path("data"))
        .arg("--tls-cert")
        .arg(&identity.cert)
        .arg("--tls-key")
        .arg(&identity.key)
        .arg("--client-ca")
        .arg(&env.certs.server.ca);
    SinkProcess::start(cmd)
}

/// A broken server certificate signed by this env's own CA.
fn variant(env: &TestEnv, variant: ServerVariant, name: &str) -> TlsFiles {
    certs::mint_server_variant(
        &env.certs.dir,
        &env.path(name),
        variant,
        &CertSpec::default(),
    )
    .expect("mint variant")
}

fn assert_refused_up_front(env: &TestEnv, sink: &SinkProcess, tag: &str, causes: &[&str]) {
    let wal = env.generate(&format!("wal-{tag}"), 2, 1, &[]);
    let run = play(env, &wal, &sink.address, tag, &[]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.lines.is_empty(), "no file was attempted");
    assert_says(&run.stderr, &[&sink.address]);
    assert!(
        causes.iter().any(|c| run.stderr.contains(c)),
        "{:?} names none of {causes:?}",
        run.stderr
    );
    assert!(
        !env.path("data").join("walplayer").exists(),
        "nothing reached the sink"
    );
}

#[test]
fn expired_server_certificate_is_refused_up_front() {
    let env = TestEnv::new();
    let expired = variant(&env, ServerVariant::Expired, "expired");
    let sink = sink_with(&env, &expired);
    assert_refused_up_front(&env, &sink, "expired", &["certificate expired", "Expired"]);
}

#[test]
fn server_certificate_for_another_host_is_refused_up_front() {
    let env = TestEnv::new();
    let wrong = variant(&env, ServerVariant::WrongHost, "wrong-host");
    let sink = sink_with(&env, &wrong);
    assert_refused_up_front(
        &env,
        &sink,
        "wrong-host",
        &["certificate not valid for name", "NotValidForName"],
    );
}

#[test]
fn server_certificate_from_an_unknown_ca_is_refused_up_front() {
    let env = TestEnv::new();
    let other = TestEnv::new();
    let sink = sink_with(&env, &other.certs.server);
    assert_refused_up_front(&env, &sink, "untrusted", &["UnknownIssuer", "BadSignature"]);
}
