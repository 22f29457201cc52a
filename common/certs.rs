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
use rustls_pki_types::CertificateDer;
use serde::Serialize;

/// Where the Klio-compatible sink listens unless told otherwise.
pub const DEFAULT_SINK_ADDRESS: &str = "127.0.0.1:52000";
/// Cluster name written in the client certificate and the Klio configuration.
pub const DEFAULT_CLUSTER: &str = "walplayer";
/// Names the server certificates are valid for unless told otherwise.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// How long minted certificates stay valid unless told otherwise.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
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
    let dir = absolute_dir(dir)?;
    let minted = MintedCerts {
        ca: dir.join("ca").join("ca.crt"),
        server: TlsFiles::in_dir(&dir.join("server")),
        client: TlsFiles::in_dir(&dir.join("client")),
        coordinator: TlsFiles::in_dir(&dir.join("coordinator")),
        agent: TlsFiles::in_dir(&dir.join("agent")),
        klio_config: dir.join("klio-config.yaml"),
        dir,
    };

    let validity = Validity::days_from_now(spec.validity_days);
    let ca_key = new_key("CA")?;
    let mut ca = ca_params();
    validity.apply(&mut ca);
    let ca_pem = ca.self_signed(&ca_key).map_err(mint_err("CA"))?.pem();
    let ca_identity = Identity {
        cert: ca_pem.clone(),
        key: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca, ca_key);

    let server_auth = [ExtendedKeyUsagePurpose::ServerAuth];
    let client_auth = [ExtendedKeyUsagePurpose::ClientAuth];
    let both = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let client_cn = format!("{KLIO_USER}@{}", spec.cluster);
    let no_hosts: &[String] = &[];
    let leaves = [
        (
            "server",
            &minted.server,
            spec.hosts[0].as_str(),
            &spec.hosts[..],
            &server_auth[..],
        ),
        (
            "client",
            &minted.client,
            client_cn.as_str(),
            no_hosts,
            &client_auth[..],
        ),
        (
            "coordinator",
            &minted.coordinator,
            COORDINATOR_COMMON_NAME,
            &spec.hosts[..],
            &both[..],
        ),
        (
            "agent",
            &minted.agent,
            AGENT_COMMON_NAME,
            no_hosts,
            &client_auth[..],
        ),
    ];

    let mut outputs = identity_outputs(
        &TlsFiles::in_dir(&minted.dir.join("ca")),
        &ca_identity,
        &ca_pem,
    );
    for (what, files, cn, hosts, usages) in leaves {
        let params = leaf_params(cn, hosts, usages, validity).map_err(mint_err(what))?;
        let identity = issue(&params, &issuer, what)?;
        outputs.extend(identity_outputs(files, &identity, &ca_pem));
    }
    outputs.push(Output {
        contents: klio_config_yaml(&minted, spec)?,
        path: minted.klio_config.clone(),
        mode: PUBLIC_MODE,
    });
    write_outputs(&outputs, spec.force)?;
    Ok(minted)
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
    let (hosts, validity, what) = match variant {
        ServerVariant::Expired => (&spec.hosts[..], Validity::expired(), "expired server"),
        ServerVariant::WrongHost => (
            &wrong_host[..],
            Validity::days_from_now(spec.validity_days),
            "wrong-host server",
        ),
    };
    let usages = [ExtendedKeyUsagePurpose::ServerAuth];
    let params = leaf_params(&hosts[0], hosts, &usages, validity).map_err(mint_err(what))?;
    let identity = issue(&params, &issuer, what)?;
    write_outputs(&identity_outputs(&files, &identity, &ca_pem), spec.force)?;
    Ok(files)
}

fn validate(spec: &CertSpec) -> Result<(), CertsError> {
    if spec.hosts.is_empty() || spec.hosts.iter().any(|h| h.is_empty()) {
        return Err(CertsError::InvalidSpec(
            "hosts must list at least one non-empty name".into(),
        ));
    }
    // Klio rejects any other character in cluster_name, so a certificate
    // naming such a cluster could never be used.
    let klio_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if spec.cluster.is_empty() || !spec.cluster.chars().all(klio_char) {
        return Err(CertsError::InvalidSpec(format!(
            "cluster {:?} must be non-empty and use only letters, digits, '_', '-' and '.'",
            spec.cluster
        )));
    }
    if spec.validity_days == 0 {
        return Err(CertsError::InvalidSpec(
            "validity_days must be at least 1".into(),
        ));
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

fn leaf_params(
    common_name: &str,
    hosts: &[String],
    usages: &[ExtendedKeyUsagePurpose],
    validity: Validity,
) -> Result<CertificateParams, rcgen::Error> {
    // new() turns IP literals into IP SANs and everything else into DNS SANs.
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    Ok(params)
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

fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    what: &'static str,
) -> Result<Identity, CertsError> {
    let key = new_key(what)?;
    let cert = params.signed_by(&key, issuer).map_err(mint_err(what))?;
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
