//! rustls configurations from PEM files, for the Klio client and the sink.
//!
//! Keys load as cert-manager and openssl write them: RSA PKCS#1, EC (SEC1)
//! and PKCS#8. Every error names the file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::role::{ClientPolicy, RoleVerifier};

/// ALPN protocol id of HTTP/2, which gRPC runs on.
const ALPN_H2: &[u8] = b"h2";

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected}: {detail}")]
    NotPem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
        detail: String,
    },
    #[error("{what} {path} {detail}")]
    Unusable {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
}

/// The crypto provider walplayer uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Loads every certificate of a PEM file (at least one).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let not_pem = |detail: String| TlsError::NotPem {
        what,
        path: path.to_path_buf(),
        expected: "certificate",
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem(
            "expected a '-----BEGIN CERTIFICATE-----' block".into(),
        ));
    }
    Ok(certs)
}

/// Loads a private key: PKCS#1 RSA, SEC1 EC or PKCS#8.
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NotPem {
        what,
        path: path.to_path_buf(),
        expected: "private key (PKCS#1, SEC1 or PKCS#8)",
        detail: e.to_string(),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        store.add(cert).map_err(|e| TlsError::Unusable {
            what,
            path: path.to_path_buf(),
            detail: format!("is not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// What the three files of a client identity are called in messages.
struct ClientFiles {
    ca: &'static str,
    cert: &'static str,
    key: &'static str,
}

/// Client side of mutual TLS to Klio: trust `server_ca`, present the
/// client pair. Errors name the Klio settings.
pub fn client_config(
    server_ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let files = ClientFiles {
        ca: "server CA certificate (server_cert_path)",
        cert: "client certificate (client_cert_path)",
        key: "client key (client_key_path)",
    };
    client_config_for(&files, server_ca, cert, key)
}

/// Client side of the agent's control channel; errors name the agent's
/// `--control-*` flags, not the Klio settings.
pub fn control_client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let files = ClientFiles {
        ca: "coordinator CA certificate (--control-ca)",
        cert: "agent certificate (--control-cert)",
        key: "agent key (--control-key)",
    };
    client_config_for(&files, ca, cert, key)
}

fn client_config_for(
    files: &ClientFiles,
    server_ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(files.ca, server_ca)?;
    let chain = load_certs(files.cert, cert)?;
    let key_der = load_key(files.key, key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| TlsError::Unusable {
            what: files.cert,
            path: cert.to_path_buf(),
            detail: format!("and key {} do not form a usable pair: {e}", key.display()),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Server side of mutual TLS on the Klio channel (the sink): present
/// `cert`/`key`, require client certificates signed by `client_ca` and not
/// of a control-channel role.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(cert, key, client_ca, ClientPolicy::KlioChannel)
}

/// Server side of the control channel (the coordinator): present
/// `cert`/`key`, require agent certificates signed by `client_ca`.
pub fn control_server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(cert, key, client_ca, ClientPolicy::ControlChannel)
}

fn server_config_for(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    policy: ClientPolicy,
) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = roots("client CA certificate", client_ca)?;
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Unusable {
            what: "client CA certificate",
            path: client_ca.to_path_buf(),
            detail: format!("cannot verify clients: {e}"),
        })?;
    let verifier = Arc::new(RoleVerifier::new(webpki, policy));
    let chain = load_certs("server certificate", cert)?;
    let key_der = load_key("server key", key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Unusable {
            what: "server certificate",
            path: cert.to_path_buf(),
            detail: format!("and key {} do not form a usable pair: {e}", key.display()),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let e = load_certs("server CA certificate", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read server CA certificate") && e.contains("nope.crt"),
            "{e}"
        );
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "hello").unwrap();
        let e = load_certs("client certificate", &junk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("junk.crt holds no PEM certificate"), "{e}");
        let e = load_key("client key", &junk).unwrap_err().to_string();
        assert!(e.contains("junk.crt holds no PEM private key"), "{e}");
        let e = load_certs("client certificate", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read client certificate"), "{e}");
    }
}
