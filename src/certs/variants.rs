//! Deliberately broken server certificates, and client certificates of a
//! role signed by the other channel's CA, from the CAs that
//! [`mint`](super::mint) wrote, so tests can check that peers refuse them.
//!
//! Test-only: compiled with the `test-certs` feature, which the tests enable
//! (a dev-dependency of the package on itself) and the product leaves out.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use rcgen::{Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::files::{identity_outputs, write_outputs};
use walplayer_klio::role::Role;

use super::issue::{
    ca_params, contains, issue, Channel, Leaf, Validity, CLIENT_AUTH, DAY, SERVER_AUTH,
};
use super::{absolute_dir, validate, CertSpec, CertsError, TlsFiles};

/// The only name a [`ServerVariant::WrongHost`] certificate is valid for.
pub const WRONG_HOST: &str = "wrong-host.walplayer.invalid";

/// A deliberately broken server certificate, signed by a minted CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVariant {
    /// Valid for the spec's hosts, but its validity ended yesterday.
    Expired,
    /// Currently valid, but only for [`WRONG_HOST`].
    WrongHost,
    /// Valid for the spec's hosts and signed by the channel's CA, but of
    /// another role: a server of the wrong kind (e.g. a Klio server's
    /// certificate shown on the control channel).
    OtherRole(Role, Channel),
}

/// Mint a broken server certificate into `out/{tls.crt,tls.key,ca.crt}`,
/// signed by the CA that [`mint`](super::mint) wrote into `dir`.
///
/// `spec` gives the hosts (for [`ServerVariant::Expired`]), the lifetime (for
/// [`ServerVariant::WrongHost`]) and `force`; its other fields are unused.
pub fn mint_server_variant(
    dir: &Path,
    out: &Path,
    variant: ServerVariant,
    spec: &CertSpec,
) -> Result<TlsFiles, CertsError> {
    validate(spec)?;
    let channel = match variant {
        ServerVariant::OtherRole(_, channel) => channel,
        _ => Channel::Klio,
    };
    let (issuer, ca_pem) = load_ca(dir, channel)?;
    let out = absolute_dir(out)?;
    let files = TlsFiles::in_dir(&out);

    let wrong_host = [WRONG_HOST.to_string()];
    let (what, hosts, validity) = match variant {
        ServerVariant::Expired => ("expired server", &spec.hosts[..], Validity::expired()),
        ServerVariant::WrongHost => (
            "wrong-host server",
            &wrong_host[..],
            Validity::days_from_now(spec.validity_days),
        ),
        ServerVariant::OtherRole(..) => (
            "server of another role",
            &spec.hosts[..],
            Validity::days_from_now(spec.validity_days),
        ),
    };
    let role = match variant {
        ServerVariant::OtherRole(role, _) => role,
        _ => Role::KlioServer,
    };
    let leaf = Leaf {
        what,
        files: &files,
        common_name: &hosts[0],
        hosts,
        usages: SERVER_AUTH,
        role,
        channel,
    };
    let identity = issue(&leaf, validity, &issuer)?;
    write_outputs(&identity_outputs(&files, &identity, &ca_pem), spec.force)?;
    Ok(files)
}

/// Mint a client certificate of `role` signed by `channel`'s CA into
/// `out/{tls.crt,tls.key,ca.crt}`: an agent certificate from Klio's CA, or
/// a Klio client certificate from the control CA, as one CA for everything
/// would give. Its `ca.crt` is that CA.
pub fn mint_client_variant(
    dir: &Path,
    out: &Path,
    role: Role,
    channel: Channel,
    spec: &CertSpec,
) -> Result<TlsFiles, CertsError> {
    validate(spec)?;
    let (issuer, ca_pem) = load_ca(dir, channel)?;
    let out = absolute_dir(out)?;
    let files = TlsFiles::in_dir(&out);
    let common_name = format!("{}-from-{}", role.name(), channel.ca_dir());
    let leaf = Leaf {
        what: "client variant",
        files: &files,
        common_name: &common_name,
        hosts: &[],
        usages: CLIENT_AUTH,
        role,
        channel,
    };
    let identity = issue(&leaf, Validity::days_from_now(spec.validity_days), &issuer)?;
    write_outputs(&identity_outputs(&files, &identity, &ca_pem), spec.force)?;
    Ok(files)
}

/// Read back `channel`'s CA written by [`mint`](super::mint) and check its
/// key matches its certificate.
fn load_ca(dir: &Path, channel: Channel) -> Result<(Issuer<'static, KeyPair>, String), CertsError> {
    let files = &TlsFiles::in_dir(&dir.join(channel.ca_dir()));
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| CertsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let bad = |path: &Path, reason: String| CertsError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let ca_pem = read(&files.cert)?;
    let key = KeyPair::from_pem(&read(&files.key)?)
        .map_err(|e| bad(&files.key, format!("unreadable key: {e}")))?;
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| bad(&files.cert, format!("no PEM certificate: {e}")))?;
    if !contains(&der, key.public_key_raw()) {
        return Err(bad(&files.key, "the key does not match tls.crt".into()));
    }
    let name = channel.ca_common_name();
    if !contains(&der, name.as_bytes()) {
        return Err(bad(&files.cert, format!("its subject is not {name:?}")));
    }
    Ok((Issuer::new(ca_params(channel), key), ca_pem))
}

impl Validity {
    fn expired() -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - DAY * 30,
            not_after: now - DAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::CertificateError;

    use super::super::tests::{handshake, minted};
    use super::super::DEFAULT_HOSTS;
    use super::*;

    #[test]
    fn an_expired_server_certificate_fails_the_handshake() {
        let (tmp, m) = minted(&CertSpec::default());
        let out = tmp.path().join("expired");
        let variant =
            mint_server_variant(&m.dir, &out, ServerVariant::Expired, &CertSpec::default())
                .unwrap();
        assert_eq!(variant, TlsFiles::in_dir(&out.canonicalize().unwrap()));
        let err = handshake(&m.client, &variant, "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn a_wrong_host_server_certificate_fails_the_handshake() {
        let (tmp, m) = minted(&CertSpec::default());
        let out = tmp.path().join("wrong-host");
        let variant =
            mint_server_variant(&m.dir, &out, ServerVariant::WrongHost, &CertSpec::default())
                .unwrap();
        // Same CA, so only the name is wrong: it works for the name it has.
        handshake(&m.client, &variant, WRONG_HOST).unwrap();
        for name in DEFAULT_HOSTS {
            let err = handshake(&m.client, &variant, name).unwrap_err();
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. }
                    )
                ),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains("not valid for name"), "{err}");
        }
    }

    #[test]
    fn variants_need_the_ca_that_mint_wrote() {
        let (tmp, m) = minted(&CertSpec::default());
        let (_other_tmp, other) = minted(&CertSpec::default());
        fs::copy(other.dir.join("ca/tls.key"), m.dir.join("ca/tls.key")).unwrap();
        let out = tmp.path().join("variant");
        let err = mint_server_variant(&m.dir, &out, ServerVariant::Expired, &CertSpec::default())
            .unwrap_err();
        assert!(matches!(err, CertsError::BadCa { .. }), "{err:?}");
    }
}
