//! The two CAs and the leaf certificates they sign: names, roles, key
//! usages, extended key usages and validity, all ECDSA P-256.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use walplayer_klio::role::Role;

use super::{
    CertSpec, CertsError, MintedCerts, TlsFiles, AGENT_COMMON_NAME, CA_COMMON_NAME,
    CONTROL_CA_COMMON_NAME, COORDINATOR_COMMON_NAME,
};

/// Which CA signs a leaf: Klio's or the control channel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Klio,
    Control,
}

impl Channel {
    /// The directory of this channel's CA.
    pub(super) fn ca_dir(self) -> &'static str {
        match self {
            Channel::Klio => "ca",
            Channel::Control => "control-ca",
        }
    }

    pub(super) fn ca_common_name(self) -> &'static str {
        match self {
            Channel::Klio => CA_COMMON_NAME,
            Channel::Control => CONTROL_CA_COMMON_NAME,
        }
    }
}

pub(super) const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Agents run on other machines whose clocks may run a little behind ours.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

pub(super) const SERVER_AUTH: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ServerAuth];
pub(super) const CLIENT_AUTH: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ClientAuth];
const SERVER_AND_CLIENT_AUTH: &[ExtendedKeyUsagePurpose] = &[
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
];

/// One certificate to sign with the CA, and where it goes.
pub(super) struct Leaf<'a> {
    pub(super) what: &'static str,
    pub(super) files: &'a TlsFiles,
    pub(super) common_name: &'a str,
    pub(super) hosts: &'a [String],
    pub(super) usages: &'static [ExtendedKeyUsagePurpose],
    pub(super) role: Role,
    pub(super) channel: Channel,
}

pub(super) fn leaves<'a>(
    minted: &'a MintedCerts,
    spec: &'a CertSpec,
    client_cn: &'a str,
) -> [Leaf<'a>; 4] {
    [
        Leaf {
            what: "server",
            files: &minted.server,
            common_name: &spec.hosts[0],
            hosts: &spec.hosts,
            usages: SERVER_AUTH,
            role: Role::KlioServer,
            channel: Channel::Klio,
        },
        Leaf {
            what: "client",
            files: &minted.client,
            common_name: client_cn,
            hosts: &[],
            usages: CLIENT_AUTH,
            role: Role::KlioClient,
            channel: Channel::Klio,
        },
        Leaf {
            what: "coordinator",
            files: &minted.coordinator,
            common_name: COORDINATOR_COMMON_NAME,
            hosts: &spec.hosts,
            usages: SERVER_AND_CLIENT_AUTH,
            role: Role::Coordinator,
            channel: Channel::Control,
        },
        Leaf {
            what: "agent",
            files: &minted.agent,
            common_name: AGENT_COMMON_NAME,
            hosts: &[],
            usages: CLIENT_AUTH,
            role: Role::Agent,
            channel: Channel::Control,
        },
    ]
}

/// The CA's issuing parameters. They are rebuilt, not parsed, when minting
/// variants (parsing needs rcgen's `x509-parser` feature), so they must not
/// depend on anything but constants: the issuer name written into a leaf
/// must equal the CA's subject byte for byte.
pub(super) fn ca_params(channel: Channel) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, channel.ca_common_name());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

#[cfg(any(test, feature = "test-certs"))]
pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A certificate and its private key, both PEM.
pub(super) struct Identity {
    pub(super) cert: String,
    pub(super) key: String,
}

fn new_key(what: &'static str) -> Result<KeyPair, CertsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_err(what))
}

pub(super) fn mint_ca(
    channel: Channel,
    validity: Validity,
) -> Result<(Issuer<'static, KeyPair>, Identity), CertsError> {
    let key = new_key("CA")?;
    let mut params = ca_params(channel);
    validity.apply(&mut params);
    let cert = params.self_signed(&key).map_err(mint_err("CA"))?.pem();
    let identity = Identity {
        cert,
        key: key.serialize_pem(),
    };
    Ok((Issuer::new(params, key), identity))
}

pub(super) fn issue(
    leaf: &Leaf<'_>,
    validity: Validity,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Identity, CertsError> {
    // new() turns IP literals into IP SANs and everything else into DNS SANs.
    let mut params = CertificateParams::new(leaf.hosts).map_err(mint_err(leaf.what))?;
    let role = leaf.role.uri().try_into().map_err(mint_err(leaf.what))?;
    params.subject_alt_names.push(SanType::URI(role));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, leaf.common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = leaf.usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);

    let key = new_key(leaf.what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(mint_err(leaf.what))?;
    Ok(Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn mint_err(what: &'static str) -> impl Fn(rcgen::Error) -> CertsError {
    move |source| CertsError::Mint { what, source }
}

/// Start and end of validity, converted to rcgen's time type on use (rcgen
/// does not re-export `time`, so we cannot name it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Validity {
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
}

impl Validity {
    pub(super) fn days_from_now(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + DAY * days,
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        params.not_before = epoch + since_epoch(self.not_before);
        params.not_after = epoch + since_epoch(self.not_after);
    }
}
