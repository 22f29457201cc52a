//! Roles of walplayer's certificates, and the check each server makes of
//! the client certificates it is shown.
//!
//! A certificate's role is a URI subject alternative name
//! `walplayer:role:<role>` (`walplayer certs` writes it; cert-manager writes
//! it from a Certificate's `uris:`). The Klio channel (the sink) refuses a
//! client certificate of a control-channel role (`agent`, `coordinator`) and
//! takes one without any role, as from the user's own PKI; the control
//! channel (the coordinator) takes only `agent` certificates. Clients
//! check servers the same way: a Klio client refuses a server certificate
//! of a control-channel role, an agent takes only a `coordinator` one.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error, SignatureScheme};
use x509_parser::extensions::GeneralName;

/// The URI prefix that marks a walplayer role.
pub const ROLE_URI_PREFIX: &str = "walplayer:role:";

/// What a walplayer certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A Klio WAL server (the sink).
    KlioServer,
    /// A Klio client (play and the agents' uploads).
    KlioClient,
    /// The coordinator on the control channel.
    Coordinator,
    /// An agent on the control channel.
    Agent,
}

impl Role {
    /// The name after [`ROLE_URI_PREFIX`].
    pub fn name(self) -> &'static str {
        match self {
            Role::KlioServer => "klio-server",
            Role::KlioClient => "klio-client",
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
        }
    }

    /// The URI SAN that carries this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.name())
    }
}

/// Which client certificates a server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPolicy {
    /// The Klio channel: any client certificate except walplayer's
    /// control-channel roles.
    KlioChannel,
    /// The control channel: agent certificates only.
    ControlChannel,
}

/// Which server certificates a client takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPolicy {
    /// A Klio server: any certificate except walplayer's control-channel
    /// roles.
    KlioChannel,
    /// The coordinator, as an agent sees it: role `coordinator` only.
    ControlChannel,
}

/// What a certificate says about itself: its Common Name and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marks {
    pub common_name: Option<String>,
    /// Every `walplayer:role:` URI's role, as written.
    pub roles: Vec<String>,
}

impl Marks {
    /// Reads the marks of a DER certificate.
    pub fn of(der: &[u8]) -> Result<Marks, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("cannot parse the certificate: {e}"))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("cannot parse its subject alternative names: {e}"))?;
        let roles = san
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX),
                        _ => None,
                    })
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Marks { common_name, roles })
    }

    /// Whether it carries a control-channel role (`agent`, `coordinator`).
    fn has_control_role(&self) -> bool {
        let control = [Role::Agent.name(), Role::Coordinator.name()];
        self.roles.iter().any(|r| control.contains(&r.as_str()))
    }

    /// Whether its one and only role is `role`.
    fn is_only(&self, role: Role) -> bool {
        self.roles == [role.name()]
    }

    fn found(&self) -> String {
        let cn = self.common_name.as_deref().unwrap_or("(none)");
        match self.roles.as_slice() {
            [] => format!("a certificate with no walplayer role (CN {cn})"),
            [role] => format!("a certificate of role {role} (CN {cn})"),
            roles => format!("a certificate of roles {} (CN {cn})", roles.join(", ")),
        }
    }
}

/// Why a certificate was refused: the role found and the one expected.
#[derive(Debug)]
pub struct RoleRefused(String);

impl fmt::Display for RoleRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RoleRefused {}

impl ClientPolicy {
    /// Whether a client certificate with `marks` may use this channel.
    pub fn check(self, marks: &Marks) -> Result<(), RoleRefused> {
        let found = marks.found();
        match self {
            ClientPolicy::KlioChannel => match marks.has_control_role() {
                false => Ok(()),
                true => Err(RoleRefused(format!(
                    "{found} is for walplayer's control channel; the Klio channel takes role {} (or a certificate without a walplayer role): give the Klio client certificate (client/tls.crt of `walplayer certs`)",
                    Role::KlioClient.name()
                ))),
            },
            ClientPolicy::ControlChannel => {
                if marks.is_only(Role::Agent) {
                    return Ok(());
                }
                Err(RoleRefused(format!(
                    "{found} may not join a run: the control channel takes role {} (URI SAN {}): give the agent certificate (agent/tls.crt of `walplayer certs`, or a certificate with that URI SAN)",
                    Role::Agent.name(),
                    Role::Agent.uri()
                )))
            }
        }
    }
}

impl ServerPolicy {
    /// Whether a server certificate with `marks` is the kind of server
    /// this client means to reach.
    pub fn check(self, marks: &Marks) -> Result<(), RoleRefused> {
        let found = marks.found();
        match self {
            ServerPolicy::KlioChannel => match marks.has_control_role() {
                false => Ok(()),
                true => Err(RoleRefused(format!(
                    "the server showed {found}, which is for walplayer's control channel, not a Klio server (role {}): check the address, or give the Klio server's certificate",
                    Role::KlioServer.name()
                ))),
            },
            ServerPolicy::ControlChannel => {
                if marks.is_only(Role::Coordinator) {
                    return Ok(());
                }
                Err(RoleRefused(format!(
                    "the server showed {found}, not a coordinator's: agents join only a server of role {} (URI SAN {}): check --coordinator, or give the coordinator the certificate `walplayer certs` writes for it (coordinator/tls.crt)",
                    Role::Coordinator.name(),
                    Role::Coordinator.uri()
                )))
            }
        }
    }
}

/// A server verifier that checks the chain with `inner`, then the role.
#[derive(Debug)]
pub struct ServerRoleVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    policy: ServerPolicy,
}

impl ServerRoleVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>, policy: ServerPolicy) -> ServerRoleVerifier {
        ServerRoleVerifier { inner, policy }
    }
}

impl ServerCertVerifier for ServerRoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_der(end_entity, |m| self.policy.check(m))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Reads the marks of a DER certificate and applies `check`, with the
/// error as rustls reports a refused certificate; both verifiers use it.
fn check_der(
    der: &[u8],
    check: impl FnOnce(&Marks) -> Result<(), RoleRefused>,
) -> Result<(), Error> {
    let marks = Marks::of(der).map_err(|e| refused(e.into()))?;
    check(&marks).map_err(|e| refused(Box::new(e)))
}

/// A certificate refused for its role (or unreadable marks), as rustls
/// reports it.
fn refused(e: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::from(e))))
}

/// A client verifier that checks the chain with `inner`, then the role.
#[derive(Debug)]
pub struct RoleVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: ClientPolicy,
}

impl RoleVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, policy: ClientPolicy) -> RoleVerifier {
        RoleVerifier { inner, policy }
    }
}

impl ClientCertVerifier for RoleVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_der(end_entity, |m| self.policy.check(m))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(roles: &[&str]) -> Marks {
        Marks {
            common_name: Some("x".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn each_channel_names_the_role_found_and_the_one_expected() {
        let klio = ClientPolicy::KlioChannel;
        klio.check(&marks(&[])).unwrap();
        klio.check(&marks(&["klio-client"])).unwrap();
        let e = klio.check(&marks(&["agent"])).unwrap_err().to_string();
        assert!(
            e.contains("role agent (CN x)") && e.contains("takes role klio-client"),
            "{e}"
        );
        assert!(klio.check(&marks(&["coordinator"])).is_err());

        let control = ClientPolicy::ControlChannel;
        control.check(&marks(&["agent"])).unwrap();
        let e = control
            .check(&marks(&["klio-client"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("role klio-client (CN x)") && e.contains("takes role agent"),
            "{e}"
        );
        let e = control.check(&marks(&[])).unwrap_err().to_string();
        assert!(e.contains("no walplayer role"), "{e}");
        assert!(control.check(&marks(&["agent", "klio-client"])).is_err());
    }

    #[test]
    fn clients_name_the_server_role_found_and_the_one_expected() {
        let klio = ServerPolicy::KlioChannel;
        klio.check(&marks(&[])).unwrap();
        klio.check(&marks(&["klio-server"])).unwrap();
        let e = klio
            .check(&marks(&["coordinator"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("role coordinator (CN x)") && e.contains("not a Klio server"),
            "{e}"
        );
        assert!(klio.check(&marks(&["agent"])).is_err());

        let control = ServerPolicy::ControlChannel;
        control.check(&marks(&["coordinator"])).unwrap();
        let e = control
            .check(&marks(&["klio-server"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("role klio-server (CN x)") && e.contains("role coordinator"),
            "{e}"
        );
        assert!(control.check(&marks(&[])).is_err());
        assert!(control.check(&marks(&["agent"])).is_err());
    }
}
