//! Development certificates: a CA, Klio's server and client identities, and
//! the pair for walplayer's own control channel, written where cert-manager
//! would put them so the same paths work in Kubernetes.
//!
//! `walplayer certs DIR` calls [`mint`], which writes:
//!
//! ```text
//! DIR/ca/{tls.crt,tls.key,ca.crt}           the CA itself
//! DIR/server/{tls.crt,tls.key,ca.crt}       Klio WAL server (server auth, SANs = hosts)
//! DIR/client/{tls.crt,tls.key,ca.crt}       Klio client, CN klio@<cluster> (client auth)
//! DIR/coordinator/{tls.crt,tls.key,ca.crt}  control channel (server + client auth, SANs = hosts)
//! DIR/agent/{tls.crt,tls.key,ca.crt}        control channel, CN walplayer-agent (client auth)
//! DIR/klio-config.yaml                      the seed player's configuration, absolute paths
//! ```
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, created with mode 0600.
//! [`mint_server_variant`] mints broken server certificates from the same CA
//! (expired, wrong host) so tests can check that clients refuse them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use walplayer_wal::walname::has_only_name_chars;

/// Where the Klio-compatible sink listens unless told otherwise.
pub const DEFAULT_SINK_ADDRESS: &str = "127.0.0.1:52000";
/// Cluster name written in the client certificate and the Klio configuration.
pub const DEFAULT_CLUSTER: &str = "walplayer";
/// Names the server certificates are valid for unless told otherwise.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// How long minted certificates stay valid unless told otherwise.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// Longest accepted lifetime; rcgen's dates stop at year 9999.
pub const MAX_VALIDITY_DAYS: u32 = 100 * 366;
/// Common Name of the development CA.
pub const CA_COMMON_NAME: &str = "walplayer development CA";
/// Common Name of the agent's control-channel certificate.
pub const AGENT_COMMON_NAME: &str = "walplayer-agent";
/// Common Name of the coordinator's control-channel certificate.
pub const COORDINATOR_COMMON_NAME: &str = "walplayer-coordinator";
/// The only name a [`ServerVariant::WrongHost`] certificate is valid for.
pub const WRONG_HOST: &str = "wrong-host.walplayer.invalid";
/// The user part of the client certificate's `user@cluster` Common Name.
const KLIO_USER: &str = "klio";

const KEY_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Agents run on other machines whose clocks may run a little behind ours.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

/// What to mint: names, lifetime, and whether existing files may be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// DNS names and IP literals of the server and coordinator certificates.
    pub hosts: Vec<String>,
    /// Cluster name: client CN `klio@<cluster>` and `client.cluster_name`.
    pub cluster: String,
    /// `client.wal.address` in the Klio configuration.
    pub sink_address: String,
    /// Lifetime of every certificate, counted from now.
    pub validity_days: u32,
    /// Replace existing files instead of refusing.
    pub force: bool,
}

impl Default for CertSpec {
    fn default() -> Self {
        CertSpec {
            hosts: DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect(),
            cluster: DEFAULT_CLUSTER.to_string(),
            sink_address: DEFAULT_SINK_ADDRESS.to_string(),
            validity_days: DEFAULT_VALIDITY_DAYS,
            force: false,
        }
    }
}

/// The files of one identity, named as in a cert-manager secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls.crt`: the certificate.
    pub cert: PathBuf,
    /// `tls.key`: its private key (mode 0600).
    pub key: PathBuf,
    /// `ca.crt`: the CA that signed it, to verify the peer with.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The cert-manager file names inside `dir`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        }
    }
}

/// Absolute paths of everything [`mint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedCerts {
    /// The output directory.
    pub dir: PathBuf,
    /// `DIR/ca/ca.crt`: the CA certificate.
    pub ca: PathBuf,
    /// Klio WAL server identity.
    pub server: TlsFiles,
    /// Klio client identity, CN `klio@<cluster>`.
    pub client: TlsFiles,
    /// Coordinator identity on the control channel.
    pub coordinator: TlsFiles,
    /// Agent identity on the control channel.
    pub agent: TlsFiles,
    /// `DIR/klio-config.yaml`.
    pub klio_config: PathBuf,
}

/// A deliberately broken server certificate, signed by a minted CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVariant {
    /// Valid for the spec's hosts, but its validity ended yesterday.
    Expired,
    /// Currently valid, but only for [`WRONG_HOST`].
    WrongHost,
}

/// Why minting failed; the cause is in [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A field of [`CertSpec`] cannot produce usable certificates.
    #[error("invalid certificate spec: {0}")]
    InvalidSpec(String),
    /// An output file exists and `force` was not set.
    #[error("{} already exists; pass --force to overwrite it", path.display())]
    Exists { path: PathBuf },
    /// An output directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An output file could not be written (or removed, with `force`).
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An input file (the CA, for variants) could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// rcgen refused to build a certificate or key.
    #[error("cannot mint the {what} certificate")]
    Mint {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// The CA directory does not hold a CA minted by this module.
    #[error("{} does not hold a walplayer development CA: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    /// The Klio configuration could not be serialised.
    #[error("cannot write the Klio configuration {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
}

/// Mint a CA and every identity into `dir`, refusing to overwrite unless `spec.force`.
///
/// Everything is generated before anything is written, and existing files
/// are checked before the first write, so a refusal leaves `dir` untouched.
pub fn mint(dir: &Path, spec: &CertSpec) -> Result<MintedCerts, CertsError> {
    validate(spec)?;
    let minted = MintedCerts::under(absolute_dir(dir)?);
    let validity = Validity::days_from_now(spec.validity_days);
    let (issuer, ca) = mint_ca(validity)?;
    let ca_files = TlsFiles::in_dir(&minted.dir.join("ca"));
    let mut outputs = identity_outputs(&ca_files, &ca, &ca.cert);

    let client_cn = format!("{KLIO_USER}@{}", spec.cluster);
    for leaf in leaves(&minted, spec, &client_cn) {
        let identity = issue(&leaf, validity, &issuer)?;
        outputs.extend(identity_outputs(leaf.files, &identity, &ca.cert));
    }
    outputs.push(Output {
        contents: klio_config_yaml(&minted, spec)?,
        path: minted.klio_config.clone(),
        mode: PUBLIC_MODE,
    });
    write_outputs(&outputs, spec.force)?;
    Ok(minted)
}

impl MintedCerts {
    fn under(dir: PathBuf) -> MintedCerts {
        MintedCerts {
            ca: dir.join("ca").join("ca.crt"),
            server: TlsFiles::in_dir(&dir.join("server")),
            client: TlsFiles::in_dir(&dir.join("client")),
            coordinator: TlsFiles::in_dir(&dir.join("coordinator")),
            agent: TlsFiles::in_dir(&dir.join("agent")),
            klio_config: dir.join("klio-config.yaml"),
            dir,
        }
    }
}

const SERVER_AUTH: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ServerAuth];
const CLIENT_AUTH: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ClientAuth];
const SERVER_AND_CLIENT_AUTH: &[ExtendedKeyUsagePurpose] = &[
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
];

/// One certificate to sign with the CA, and where it goes.
struct Leaf<'a> {
    what: &'static str,
    files: &'a TlsFiles,
    common_name: &'a str,
    hosts: &'a [String],
    usages: &'static [ExtendedKeyUsagePurpose],
}

fn leaves<'a>(minted: &'a MintedCerts, spec: &'a CertSpec, client_cn: &'a str) -> [Leaf<'a>; 4] {
    [
        Leaf {
            what: "server",
            files: &minted.server,
            common_name: &spec.hosts[0],
            hosts: &spec.hosts,
            usages: SERVER_AUTH,
        },
        Leaf {
            what: "client",
            files: &minted.client,
            common_name: client_cn,
            hosts: &[],
            usages: CLIENT_AUTH,
        },
        Leaf {
            what: "coordinator",
            files: &minted.coordinator,
            common_name: COORDINATOR_COMMON_NAME,
            hosts: &spec.hosts,
            usages: SERVER_AND_CLIENT_AUTH,
        },
        Leaf {
            what: "agent",
            files: &minted.agent,
            common_name: AGENT_COMMON_NAME,
            hosts: &[],
            usages: CLIENT_AUTH,
        },
    ]
}

/// Mint a broken server certificate into `out/{tls.crt,tls.key,ca.crt}`,
/// signed by the CA that [`mint`] wrote into `dir`.
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
    let ca_files = TlsFiles::in_dir(&dir.join("ca"));
    let (issuer, ca_pem) = load_ca(&ca_files)?;
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
    };
    let leaf = Leaf {
        what,
        files: &files,
        common_name: &hosts[0],
        hosts,
        usages: SERVER_AUTH,
    };
    let identity = issue(&leaf, validity, &issuer)?;
    write_outputs(&identity_outputs(&files, &identity, &ca_pem), spec.force)?;
    Ok(files)
}

fn validate(spec: &CertSpec) -> Result<(), CertsError> {
    if spec.hosts.is_empty() {
        return Err(CertsError::InvalidSpec(
            "hosts must list at least one name".into(),
        ));
    }
    // rcgen would embed any ASCII string; a name TLS clients cannot match
    // only shows up later as a handshake failure.
    let usable = |h: &str| ServerName::try_from(h.strip_prefix("*.").unwrap_or(h)).is_ok();
    if let Some(host) = spec.hosts.iter().find(|h| !usable(h)) {
        return Err(CertsError::InvalidSpec(format!(
            "host {host:?} is neither an IP address nor a DNS name"
        )));
    }
    // Klio rejects any other character in cluster_name, so a certificate
    // naming such a cluster could never be used.
    if spec.cluster.is_empty() || !has_only_name_chars(&spec.cluster) {
        return Err(CertsError::InvalidSpec(format!(
            "cluster {:?} must be non-empty and use only letters, digits, '_', '-' and '.'",
            spec.cluster
        )));
    }
    if !(1..=MAX_VALIDITY_DAYS).contains(&spec.validity_days) {
        return Err(CertsError::InvalidSpec(format!(
            "validity_days {} must be between 1 and {MAX_VALIDITY_DAYS}",
            spec.validity_days
        )));
    }
    Ok(())
}

fn absolute_dir(dir: &Path) -> Result<PathBuf, CertsError> {
    let create_err = |source| CertsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(create_err)?;
    dir.canonicalize().map_err(create_err)
}

/// The CA's issuing parameters. They are rebuilt, not parsed, when minting
/// variants (parsing needs rcgen's `x509-parser` feature), so they must not
/// depend on anything but constants: the issuer name written into a leaf
/// must equal the CA's subject byte for byte.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Read back the CA written by [`mint`] and check its key matches its certificate.
fn load_ca(files: &TlsFiles) -> Result<(Issuer<'static, KeyPair>, String), CertsError> {
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
    if !contains(&der, CA_COMMON_NAME.as_bytes()) {
        return Err(bad(
            &files.cert,
            format!("its subject is not {CA_COMMON_NAME:?}"),
        ));
    }
    Ok((Issuer::new(ca_params(), key), ca_pem))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A certificate and its private key, both PEM.
struct Identity {
    cert: String,
    key: String,
}

fn new_key(what: &'static str) -> Result<KeyPair, CertsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_err(what))
}

fn mint_ca(validity: Validity) -> Result<(Issuer<'static, KeyPair>, Identity), CertsError> {
    let key = new_key("CA")?;
    let mut params = ca_params();
    validity.apply(&mut params);
    let cert = params.self_signed(&key).map_err(mint_err("CA"))?.pem();
    let identity = Identity {
        cert,
        key: key.serialize_pem(),
    };
    Ok((Issuer::new(params, key), identity))
}

fn issue(
    leaf: &Leaf<'_>,
    validity: Validity,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Identity, CertsError> {
    // new() turns IP literals into IP SANs and everything else into DNS SANs.
    let mut params = CertificateParams::new(leaf.hosts).map_err(mint_err(leaf.what))?;
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
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    fn days_from_now(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + DAY * days,
        }
    }

    fn expired() -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - DAY * 30,
            not_after: now - DAY,
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        params.not_before = epoch + since_epoch(self.not_before);
        params.not_after = epoch + since_epoch(self.not_after);
    }
}

/// The seed player's configuration (`client.*` keys, read by Viper).
#[derive(Serialize)]
struct KlioConfig<'a> {
    client: KlioClient<'a>,
}

#[derive(Serialize)]
struct KlioClient<'a> {
    cluster_name: &'a str,
    wal: KlioWal<'a>,
}

#[derive(Serialize)]
struct KlioWal<'a> {
    address: &'a str,
    server_cert_path: &'a Path,
    client_cert_path: &'a Path,
    client_key_path: &'a Path,
}

fn klio_config_yaml(minted: &MintedCerts, spec: &CertSpec) -> Result<String, CertsError> {
    let config = KlioConfig {
        client: KlioClient {
            cluster_name: &spec.cluster,
            wal: KlioWal {
                address: &spec.sink_address,
                server_cert_path: &minted.client.ca,
                client_cert_path: &minted.client.cert,
                client_key_path: &minted.client.key,
            },
        },
    };
    serde_norway::to_string(&config).map_err(|source| CertsError::Config {
        path: minted.klio_config.clone(),
        source,
    })
}

/// One file to write, with the mode it is created with.
struct Output {
    path: PathBuf,
    contents: String,
    mode: u32,
}

fn identity_outputs(files: &TlsFiles, identity: &Identity, ca_pem: &str) -> Vec<Output> {
    let output = |path: &PathBuf, contents: &str, mode| Output {
        path: path.clone(),
        contents: contents.to_string(),
        mode,
    };
    vec![
        output(&files.cert, &identity.cert, PUBLIC_MODE),
        output(&files.key, &identity.key, KEY_MODE),
        output(&files.ca, ca_pem, PUBLIC_MODE),
    ]
}

fn write_outputs(outputs: &[Output], force: bool) -> Result<(), CertsError> {
    if !force {
        // symlink_metadata: a dangling symlink is still a file we would replace.
        if let Some(o) = outputs
            .iter()
            .find(|o| fs::symlink_metadata(&o.path).is_ok())
        {
            return Err(CertsError::Exists {
                path: o.path.clone(),
            });
        }
    }
    for output in outputs {
        write_output(output, force)?;
    }
    Ok(())
}

fn write_output(output: &Output, force: bool) -> Result<(), CertsError> {
    let path = &output.path;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| CertsError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let write_err = |source| CertsError::Write {
        path: path.clone(),
        source,
    };
    // Truncating an existing file would keep its old (maybe world-readable)
    // mode, so replace it: remove, then create with our mode from the start.
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(write_err(e)),
            _ => {}
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(output.mode)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => CertsError::Exists { path: path.clone() },
            _ => write_err(e),
        })?;
    file.write_all(output.contents.as_bytes())
        .map_err(write_err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rustls::crypto::CryptoProvider;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, ClientConfig, ClientConnection, Connection, RootCertStore};
    use rustls::{ServerConfig, ServerConnection};
    use rustls_pki_types::PrivateKeyDer;

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
    fn handshake(client: &TlsFiles, server: &TlsFiles, name: &str) -> Result<(), rustls::Error> {
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

    fn minted(spec: &CertSpec) -> (tempfile::TempDir, MintedCerts) {
        let tmp = tempfile::tempdir().unwrap();
        let minted = mint(&tmp.path().join("certs"), spec).unwrap();
        (tmp, minted)
    }

    fn identities(m: &MintedCerts) -> Vec<TlsFiles> {
        let ca = TlsFiles::in_dir(&m.dir.join("ca"));
        vec![
            ca,
            m.server.clone(),
            m.client.clone(),
            m.coordinator.clone(),
            m.agent.clone(),
        ]
    }

    #[test]
    fn mint_writes_every_file_with_absolute_paths() {
        let (_tmp, m) = minted(&CertSpec::default());
        let ca_pem = fs::read(&m.ca).unwrap();
        for files in identities(&m) {
            for path in [&files.cert, &files.key, &files.ca] {
                assert!(path.is_absolute() && path.is_file(), "{}", path.display());
            }
            assert_eq!(
                fs::read(&files.ca).unwrap(),
                ca_pem,
                "{}",
                files.ca.display()
            );
        }
        assert_eq!(m.ca, m.dir.join("ca/ca.crt"));
        assert_eq!(fs::read(m.dir.join("ca/tls.crt")).unwrap(), ca_pem);
        assert!(m.klio_config.is_absolute() && m.klio_config.is_file());
    }

    #[test]
    fn key_files_are_private_and_certificates_are_not() {
        let (_tmp, m) = minted(&CertSpec::default());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for files in identities(&m) {
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
