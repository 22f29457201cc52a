//! What [`mint`](super::mint) writes besides certificates (the Klio
//! configuration), and writing: every file checked before the first is
//! written, each created with its mode from the start.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::issue::Identity;
use super::{CertSpec, CertsError, MintedCerts, TlsFiles};

const KEY_MODE: u32 = 0o600;
pub(super) const PUBLIC_MODE: u32 = 0o644;

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

pub(super) fn klio_config_yaml(
    minted: &MintedCerts,
    spec: &CertSpec,
) -> Result<String, CertsError> {
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
pub(super) struct Output {
    pub(super) path: PathBuf,
    pub(super) contents: String,
    pub(super) mode: u32,
}

pub(super) fn identity_outputs(files: &TlsFiles, identity: &Identity, ca_pem: &str) -> Vec<Output> {
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

pub(super) fn write_outputs(outputs: &[Output], force: bool) -> Result<(), CertsError> {
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
