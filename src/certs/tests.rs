//! Unit tests of minting: files, modes, names, refusals, and full rustls
//! handshakes between the identities.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, ClientConnection, Connection, RootCertStore};
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::issue::contains;
use super::*;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(ca: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca) {
        roots.add(cert).unwrap();
    }
    Arc::new(roots)
}

/// A server that requires a client certificate signed by `files.ca`.
fn server_config(files: &TlsFiles) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca), provider())
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&files.cert),
            PrivateKeyDer::from_pem_file(&files.key).unwrap(),
        )
        .unwrap();
    Arc::new(config)
}

fn client_config(files: &TlsFiles) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&files.ca))
        .with_client_auth_cert(
            certs(&files.cert),
            PrivateKeyDer::from_pem_file(&files.key).unwrap(),
        )
        .unwrap();
    Arc::new(config)
}

/// Run a full in-memory handshake; the first error of either side wins.
pub(super) fn handshake(
    client: &TlsFiles,
    server: &TlsFiles,
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut client: Connection = ClientConnection::new(client_config(client), name)?.into();
    let mut server: Connection = ServerConnection::new(server_config(server))?.into();
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        pump(&mut client, &mut server)?;
        pump(&mut server, &mut client)?;
    }
    panic!("handshake did not finish in 10 round trips");
}

fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

pub(super) fn minted(spec: &CertSpec) -> (tempfile::TempDir, MintedCerts) {
    let tmp = tempfile::tempdir().unwrap();
    let minted = mint(&tmp.path().join("certs"), spec).unwrap();
    (tmp, minted)
}

/// Every identity minted, with the CA certificate that signed it.
fn identities(m: &MintedCerts) -> Vec<(TlsFiles, &Path)> {
    let ca = TlsFiles::in_dir(&m.dir.join("ca"));
    let control_ca = TlsFiles::in_dir(&m.dir.join("control-ca"));
    vec![
        (ca, &m.ca),
        (m.server.clone(), &m.ca),
        (m.client.clone(), &m.ca),
        (control_ca, &m.control_ca),
        (m.coordinator.clone(), &m.control_ca),
        (m.agent.clone(), &m.control_ca),
    ]
}

#[test]
fn mint_writes_every_file_with_absolute_paths() {
    let (_tmp, m) = minted(&CertSpec::default());
    for (files, ca) in identities(&m) {
        for path in [&files.cert, &files.key, &files.ca] {
            assert!(path.is_absolute() && path.is_file(), "{}", path.display());
        }
        assert_eq!(
            fs::read(&files.ca).unwrap(),
            fs::read(ca).unwrap(),
            "{}",
            files.ca.display()
        );
    }
    assert_eq!(m.ca, m.dir.join("ca/ca.crt"));
    assert_eq!(m.control_ca, m.dir.join("control-ca/ca.crt"));
    assert_eq!(
        fs::read(m.dir.join("ca/tls.crt")).unwrap(),
        fs::read(&m.ca).unwrap()
    );
    assert_ne!(fs::read(&m.ca).unwrap(), fs::read(&m.control_ca).unwrap());
    assert!(m.klio_config.is_absolute() && m.klio_config.is_file());
}

#[test]
fn key_files_are_private_and_certificates_are_not() {
    let (_tmp, m) = minted(&CertSpec::default());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (files, _) in identities(&m) {
        assert_eq!(mode(&files.key), 0o600, "{}", files.key.display());
        assert_eq!(mode(&files.cert) & 0o600, 0o600, "{}", files.cert.display());
    }
}

#[test]
fn force_replaces_a_world_readable_key_with_a_private_one() {
    let (_tmp, m) = minted(&CertSpec::default());
    fs::set_permissions(&m.client.key, fs::Permissions::from_mode(0o644)).unwrap();
    let spec = CertSpec {
        force: true,
        ..CertSpec::default()
    };
    mint(&m.dir, &spec).unwrap();
    let mode = fs::metadata(&m.client.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// The DER of a Common Name attribute: OID 2.5.4.3, then a UTF8String.
fn common_name_der(cn: &str) -> Vec<u8> {
    let mut der = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, cn.len() as u8];
    der.extend_from_slice(cn.as_bytes());
    der
}

#[test]
fn client_and_agent_certificates_carry_their_common_names() {
    let spec = CertSpec {
        cluster: "pg-main.eu_1".into(),
        ..CertSpec::default()
    };
    let (_tmp, m) = minted(&spec);
    let client = &certs(&m.client.cert)[0];
    assert!(contains(client, &common_name_der("klio@pg-main.eu_1")));
    let agent = &certs(&m.agent.cert)[0];
    assert!(contains(agent, &common_name_der(AGENT_COMMON_NAME)));
    let ca = &certs(&m.ca)[0];
    assert!(contains(ca, &common_name_der(CA_COMMON_NAME)));
    let control_ca = &certs(&m.control_ca)[0];
    assert!(contains(
        control_ca,
        &common_name_der(CONTROL_CA_COMMON_NAME)
    ));
}

#[test]
fn every_identity_carries_its_role_and_the_channels_take_only_their_own() {
    use walplayer_klio::role::{ClientPolicy, Marks};
    let (_tmp, m) = minted(&CertSpec::default());
    let roles = |files: &TlsFiles| Marks::of(&certs(&files.cert)[0]).unwrap().roles;
    assert_eq!(roles(&m.server), ["klio-server"]);
    assert_eq!(roles(&m.client), ["klio-client"]);
    assert_eq!(roles(&m.coordinator), ["coordinator"]);
    assert_eq!(roles(&m.agent), ["agent"]);
    let marks = |files: &TlsFiles| Marks::of(&certs(&files.cert)[0]).unwrap();
    ClientPolicy::KlioChannel.check(&marks(&m.client)).unwrap();
    ClientPolicy::ControlChannel
        .check(&marks(&m.agent))
        .unwrap();
    assert!(ClientPolicy::KlioChannel.check(&marks(&m.agent)).is_err());
    assert!(ClientPolicy::KlioChannel
        .check(&marks(&m.coordinator))
        .is_err());
    assert!(ClientPolicy::ControlChannel
        .check(&marks(&m.client))
        .is_err());
}

#[test]
fn the_control_channel_has_its_own_ca() {
    let (_tmp, m) = minted(&CertSpec::default());
    // A Klio client certificate is not even signed by the control CA.
    let err = handshake(&m.client, &m.coordinator, "localhost").unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn klio_config_names_the_client_files() {
    let spec = CertSpec {
        cluster: "pg1".into(),
        ..CertSpec::default()
    };
    let (_tmp, m) = minted(&spec);
    let yaml = fs::read_to_string(&m.klio_config).unwrap();
    let config: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
    let client = &config["client"];
    assert_eq!(client["cluster_name"].as_str(), Some("pg1"));
    let wal = &client["wal"];
    assert_eq!(wal["address"].as_str(), Some(DEFAULT_SINK_ADDRESS));
    for (key, expected) in [
        ("server_cert_path", &m.client.ca),
        ("client_cert_path", &m.client.cert),
        ("client_key_path", &m.client.key),
    ] {
        let path = Path::new(wal[key].as_str().unwrap());
        assert!(
            path.is_absolute() && path.is_file(),
            "{key}: {}",
            path.display()
        );
        assert_eq!(path, expected);
    }
}

#[test]
fn refuses_to_overwrite_without_force() {
    let (_tmp, m) = minted(&CertSpec::default());
    let before = fs::read(&m.ca).unwrap();
    let err = mint(&m.dir, &CertSpec::default()).unwrap_err();
    assert!(matches!(err, CertsError::Exists { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("--force"), "{message}");
    assert!(message.contains(m.dir.to_str().unwrap()), "{message}");
    assert_eq!(fs::read(&m.ca).unwrap(), before);

    let spec = CertSpec {
        force: true,
        ..CertSpec::default()
    };
    mint(&m.dir, &spec).unwrap();
    assert_ne!(fs::read(&m.ca).unwrap(), before);
}

#[test]
fn a_partial_directory_is_not_overwritten_either() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("klio-config.yaml");
    fs::write(&config, "mine").unwrap();
    let err = mint(tmp.path(), &CertSpec::default()).unwrap_err();
    assert!(matches!(err, CertsError::Exists { .. }), "{err:?}");
    assert!(
        !tmp.path().join("ca").exists(),
        "nothing written before refusing"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), "mine");
}

#[test]
fn rejects_specs_klio_could_not_use() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = [
        CertSpec {
            cluster: "pg/main".into(),
            ..CertSpec::default()
        },
        CertSpec {
            hosts: vec![],
            ..CertSpec::default()
        },
        CertSpec {
            hosts: vec!["no spaces.example".into()],
            ..CertSpec::default()
        },
        CertSpec {
            validity_days: 0,
            ..CertSpec::default()
        },
        CertSpec {
            validity_days: u32::MAX,
            ..CertSpec::default()
        },
    ];
    for spec in bad {
        let err = mint(tmp.path(), &spec).unwrap_err();
        assert!(matches!(err, CertsError::InvalidSpec(_)), "{err:?}");
    }
}

#[test]
fn klio_client_and_server_complete_a_mutual_handshake() {
    let (_tmp, m) = minted(&CertSpec::default());
    for name in DEFAULT_HOSTS {
        handshake(&m.client, &m.server, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn agent_and_coordinator_complete_a_mutual_handshake() {
    let spec = CertSpec {
        hosts: vec![
            "coordinator.example".into(),
            "10.0.0.7".into(),
            "*.agents.example".into(),
        ],
        ..CertSpec::default()
    };
    let (_tmp, m) = minted(&spec);
    for name in ["coordinator.example", "10.0.0.7", "a1.agents.example"] {
        handshake(&m.agent, &m.coordinator, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The coordinator's certificate also serves as a client identity.
    handshake(&m.coordinator, &m.coordinator, "10.0.0.7").unwrap();
}

#[test]
fn server_rejects_a_client_from_another_ca() {
    let (_tmp, m) = minted(&CertSpec::default());
    let (_other_tmp, other) = minted(&CertSpec::default());
    let stranger = TlsFiles {
        ca: m.client.ca.clone(),
        ..other.client
    };
    let err = handshake(&stranger, &m.server, "localhost").unwrap_err();
    // Every minted CA has the same subject, so the server finds a
    // candidate issuer by name and then rejects the signature.
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}
