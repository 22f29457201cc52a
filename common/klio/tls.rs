//! rustls configurations from PEM files, for the Klio client and the sink.
//!
//! Keys load as cert-manager and openssl write them: RSA PKCS#1, EC (SEC1)
//! and PKCS#8. Every error names the file and what is wrong with it.
//!
//! Klio's `server_cert_path` may name the CA that signed the server's
//! certificate or, as Klio's Go client allows, the server's own
//! certificate: [`PinnedOrCa`] trusts a presented certificate
//! byte-identical to one in that file, its host name still checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::role::{ClientPolicy, RoleVerifier, ServerPolicy, ServerRoleVerifier};

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

/// What the three files of a client identity are called in messages, and
/// whether a server certificate in the CA file is trusted as itself.
struct ClientFiles {
    ca: &'static str,
    cert: &'static str,
    key: &'static str,
    pin_end_entity: bool,
    /// Which server certificates, by role, this client takes.
    policy: ServerPolicy,
}

/// Verifies a server as webpki does with the file's certificates as roots;
/// a certificate no root signed (`UnknownIssuer`) is still trusted when it
/// is byte-identical to one in the file (the server's own certificate, as
/// Go's verifier trusts a leaf that is in its root pool) and valid for the
/// host name. Everything else (expiry, names, signatures, a certificate
/// used as a CA) is webpki's verdict, unchanged.
#[derive(Debug)]
pub struct PinnedOrCa {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl PinnedOrCa {
    /// A verifier trusting `certs` as roots and as pinned certificates.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        roots: RootCertStore,
    ) -> Result<PinnedOrCa, rustls::server::VerifierBuilderError> {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
        Ok(PinnedOrCa {
            webpki,
            pinned: certs,
        })
    }
}

impl ServerCertVerifier for PinnedOrCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            // webpki reports an unknown issuer only once the certificate
            // itself passed its validity, basic-constraints and usage checks.
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
        pin_end_entity: true,
        policy: ServerPolicy::KlioChannel,
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
        pin_end_entity: false,
        policy: ServerPolicy::ControlChannel,
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
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let unusable = |e: String| TlsError::Unusable {
        what: files.ca,
        path: server_ca.to_path_buf(),
        detail: format!("cannot verify servers: {e}"),
    };
    let verifier: Arc<dyn ServerCertVerifier> = if files.pin_end_entity {
        Arc::new(
            PinnedOrCa::new(load_certs(files.ca, server_ca)?, roots)
                .map_err(|e| unusable(e.to_string()))?,
        )
    } else {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| unusable(e.to_string()))?
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerRoleVerifier::new(
            verifier,
            files.policy,
        )));
    let mut config =
        builder
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
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };

    /// A CA: its issuer and its certificate.
    fn ca() -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "walplayer test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        (Issuer::new(params, key), cert)
    }

    fn leaf_params(host: &str) -> CertificateParams {
        let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params
    }

    fn signed(host: &str, issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        leaf_params(host)
            .signed_by(&key, issuer)
            .unwrap()
            .der()
            .clone()
    }

    fn self_signed(params: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    /// The verifier `client_config` builds from a server_cert_path file
    /// holding `file`.
    fn verifier(file: &[CertificateDer<'static>]) -> PinnedOrCa {
        let mut roots = RootCertStore::empty();
        for cert in file {
            roots.add(cert.clone()).unwrap();
        }
        PinnedOrCa::new(file.to_vec(), roots).unwrap()
    }

    /// The verdict on `presented` for `host`: the certificate error, if any.
    fn verify(
        v: &PinnedOrCa,
        presented: &CertificateDer<'_>,
        host: &str,
    ) -> Result<(), CertificateError> {
        let name = ServerName::try_from(host.to_string()).unwrap();
        match v.verify_server_cert(presented, &[], &name, &[], UnixTime::now()) {
            Ok(_) => Ok(()),
            Err(rustls::Error::InvalidCertificate(e)) => Err(e),
            Err(other) => panic!("not a certificate error: {other}"),
        }
    }

    fn unknown_issuer(e: CertificateError) -> bool {
        matches!(e, CertificateError::UnknownIssuer)
    }

    #[test]
    fn the_servers_own_certificate_is_trusted_with_its_host_name_checked() {
        let (issuer, _) = ca();
        let server = signed("klio.example", &issuer);
        let pinned = verifier(std::slice::from_ref(&server));
        verify(&pinned, &server, "klio.example").unwrap();
        let e = verify(&pinned, &server, "other.example").unwrap_err();
        assert!(
            matches!(
                e,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ),
            "{e:?}"
        );
        // A sibling signed by the same CA is not the pinned certificate.
        let sibling = signed("klio.example", &issuer);
        let e = verify(&pinned, &sibling, "klio.example").unwrap_err();
        assert!(unknown_issuer(e.clone()), "{e:?}");
    }

    #[test]
    fn an_unrelated_self_signed_certificate_is_still_refused() {
        let (issuer, ca_cert) = ca();
        let server = signed("klio.example", &issuer);
        // Named like the server (so webpki, finding its issuer's name in the
        // file, tries and fails its signature), or named otherwise.
        let same_name = self_signed(leaf_params("klio.example"));
        let mut other = leaf_params("klio.example");
        other.distinguished_name = DistinguishedName::new();
        other
            .distinguished_name
            .push(DnType::CommonName, "stranger");
        let other_name = self_signed(other);
        for file in [vec![server.clone()], vec![ca_cert]] {
            let v = verifier(&file);
            let e = verify(&v, &same_name, "klio.example").unwrap_err();
            assert!(
                matches!(e, CertificateError::BadSignature) || unknown_issuer(e.clone()),
                "{e:?}"
            );
            let e = verify(&v, &other_name, "klio.example").unwrap_err();
            assert!(unknown_issuer(e.clone()), "{e:?}");
        }
    }

    #[test]
    fn a_ca_file_works_as_before_and_nothing_else_is_loosened() {
        let (issuer, ca_cert) = ca();
        let server = signed("klio.example", &issuer);
        let v = verifier(&[ca_cert]);
        verify(&v, &server, "klio.example").unwrap();
        assert!(verify(&v, &server, "other.example").is_err());
        // An expired certificate stays refused, pinned or not.
        let mut old = leaf_params("klio.example");
        old.not_before = rcgen::date_time_ymd(2000, 1, 1);
        old.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = self_signed(old);
        let e = verify(
            &verifier(std::slice::from_ref(&expired)),
            &expired,
            "klio.example",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            "{e:?}"
        );
    }

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
