//! Development certificates: a CA for the Klio channel with Klio's server
//! and client identities, and a separate CA for walplayer's own control
//! channel with the coordinator's and agents' identities, written where
//! cert-manager would put them so the same paths work in Kubernetes.
//!
//! `walplayer certs DIR` calls [`mint`], which writes:
//!
//! ```text
//! DIR/ca/{tls.crt,tls.key,ca.crt}           the Klio channel's CA
//! DIR/server/{tls.crt,tls.key,ca.crt}       Klio WAL server (server auth, SANs = hosts)
//! DIR/client/{tls.crt,tls.key,ca.crt}       Klio client, CN klio@<cluster> (client auth)
//! DIR/control-ca/{tls.crt,tls.key,ca.crt}   the control channel's CA
//! DIR/coordinator/{tls.crt,tls.key,ca.crt}  control channel (server + client auth, SANs = hosts)
//! DIR/agent/{tls.crt,tls.key,ca.crt}        control channel, CN walplayer-agent (client auth)
//! DIR/klio-config.yaml                      the seed player's configuration, absolute paths
//! ```
//!
//! Each leaf carries its role as a URI SAN (`walplayer:role:klio-server`,
//! `klio-client`, `coordinator`, `agent`; see [`walplayer_klio::role`]), so
//! the sink refuses control-channel identities and the coordinator takes
//! only agents, even when one CA signed them all. Keys are ECDSA P-256 in
//! PKCS#8 PEM, created with mode 0600.
//!
//! # Layout
//!
//! - this file: what to mint ([`CertSpec`]), where it goes ([`TlsFiles`],
//!   [`MintedCerts`]), its errors, and [`mint`] itself.
//! - `issue`: the CA and the leaf certificates it signs, with their names,
//!   usages and validity.
//! - `files`: the Klio configuration and writing the files, all checked
//!   before the first is written, keys created private.
//! - `variants` (feature `test-certs`, which the tests enable and a plain
//!   `cargo build` leaves out): `mint_server_variant` mints broken server
//!   certificates from the same CA (expired, wrong host) so tests can check
//!   that clients refuse them.
//! - `tests`: unit tests, including full rustls handshakes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustls_pki_types::ServerName;
use walplayer_wal::walname::has_only_name_chars;

mod files;
mod issue;
#[cfg(test)]
mod tests;
#[cfg(feature = "test-certs")]
mod variants;

#[cfg(feature = "test-certs")]
pub use variants::{mint_client_variant, mint_server_variant, ServerVariant, WRONG_HOST};

use files::{identity_outputs, klio_config_yaml, write_outputs, Output, PUBLIC_MODE};
pub use issue::Channel;
use issue::{issue, leaves, mint_ca, Validity};

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
/// Common Name of the development CA of the Klio channel.
pub const CA_COMMON_NAME: &str = "walplayer development CA";
/// Common Name of the development CA of the control channel.
pub const CONTROL_CA_COMMON_NAME: &str = "walplayer control CA";
/// Common Name of the agent's control-channel certificate.
pub const AGENT_COMMON_NAME: &str = "walplayer-agent";
/// Common Name of the coordinator's control-channel certificate.
pub const COORDINATOR_COMMON_NAME: &str = "walplayer-coordinator";
/// The user part of the client certificate's `user@cluster` Common Name.
const KLIO_USER: &str = "klio";

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
    /// `DIR/ca/ca.crt`: the Klio channel's CA certificate.
    pub ca: PathBuf,
    /// `DIR/control-ca/ca.crt`: the control channel's CA certificate.
    pub control_ca: PathBuf,
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
    let mut outputs = Vec::new();
    let mut cas = Vec::new();
    for channel in [Channel::Klio, Channel::Control] {
        let (issuer, ca) = mint_ca(channel, validity)?;
        let ca_files = TlsFiles::in_dir(&minted.dir.join(channel.ca_dir()));
        outputs.extend(identity_outputs(&ca_files, &ca, &ca.cert));
        cas.push((channel, issuer, ca.cert));
    }

    let client_cn = format!("{KLIO_USER}@{}", spec.cluster);
    for leaf in leaves(&minted, spec, &client_cn) {
        let (_, issuer, ca_pem) = cas
            .iter()
            .find(|(channel, _, _)| *channel == leaf.channel)
            .expect("a CA was minted for each channel");
        let identity = issue(&leaf, validity, issuer)?;
        outputs.extend(identity_outputs(leaf.files, &identity, ca_pem));
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
            ca: dir.join(Channel::Klio.ca_dir()).join("ca.crt"),
            control_ca: dir.join(Channel::Control.ca_dir()).join("ca.crt"),
            server: TlsFiles::in_dir(&dir.join("server")),
            client: TlsFiles::in_dir(&dir.join("client")),
            coordinator: TlsFiles::in_dir(&dir.join("coordinator")),
            agent: TlsFiles::in_dir(&dir.join("agent")),
            klio_config: dir.join("klio-config.yaml"),
            dir,
        }
    }
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
