//! Raw command-line flags shared by the binaries, and their validation.
//!
//! Binaries parse flags into these structs and turn them into validated
//! options once; the rest of the program never sees raw flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::config::{self, ConfigError, Key, KlioConfig, Layer};
use crate::settings::{BlockSize, Jobs, UploadSettings, MAX_RETRIES};

/// Default per-file timeout.
pub const DEFAULT_TIMEOUT: &str = "5m";

/// Klio client settings as flags (the seed's names).
#[derive(Debug, Clone, Default, Args)]
pub struct KlioArgs {
    /// Klio configuration file, YAML (JSON or TOML by extension) [default: the first of $HOME/.klio.json, .klio.toml, .klio.yaml, .klio.yml, .klio]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cluster name to upload as (client.cluster_name)
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Klio WAL server: host:port, [v6]:port or dns:///host:port (client.wal.address)
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// CA certificate that signed the server's certificate, or that certificate itself (client.wal.server_cert_path)
    #[arg(long, value_name = "FILE")]
    pub server_cert: Option<String>,
    /// Client certificate, PEM (client.wal.client_cert_path)
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<String>,
    /// Client private key, PEM: PKCS#1, SEC1 or PKCS#8 (client.wal.client_key_path)
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<String>,
}

impl KlioArgs {
    fn flag_layer(&self) -> Layer {
        let mut layer = Layer::default();
        layer.set(Key::ClusterName, self.cluster_name.clone());
        layer.set(Key::Address, self.address.clone());
        layer.set(Key::ServerCert, self.server_cert.clone());
        layer.set(Key::ClientCert, self.client_cert.clone());
        layer.set(Key::ClientKey, self.client_key.clone());
        layer
    }

    /// Resolves file, environment and flags into one configuration;
    /// warnings (unknown YAML keys) are logged.
    pub fn resolve(&self) -> Result<KlioConfig, ConfigError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let file = match config::config_file_path(self.config.as_deref(), home.as_deref()) {
            Some(path) => {
                let file = config::read_file(&path)?;
                for warning in &file.warnings {
                    tracing::warn!("{warning}");
                }
                file.layer
            }
            None => Layer::default(),
        };
        let env = Layer::from_env(|name| std::env::var(name).ok());
        config::resolve(&file, &env, &self.flag_layer())
    }
}

/// How uploads are made: the seed's `--jobs` and `--block-size`, and a
/// per-file timeout.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// Parallel uploads, each on its own connection
    #[arg(short, long, default_value_t = Jobs::ONE, value_parser = Jobs::parse)]
    pub jobs: Jobs,
    /// Block size in KiB sent per request (1 to 8192)
    #[arg(long, value_name = "KIB", default_value_t = BlockSize::DEFAULT, value_parser = BlockSize::parse_kib)]
    pub block_size: BlockSize,
    /// Longest one file may take before it fails (e.g. 30s, 5m)
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    /// Further attempts after a failure that may pass (connection lost, server unavailable, timeout)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=MAX_RETRIES as i64))]
    pub retries: u32,
    /// Read every stored file back with Get and compare it with what was sent
    #[arg(long)]
    pub verify: bool,
}

impl UploadArgs {
    pub fn settings(&self) -> UploadSettings {
        UploadSettings {
            block: self.block_size,
            timeout: self.timeout,
            retries: self.retries,
            verify: self.verify,
        }
    }
}

/// Where results go.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Write per-file JSON lines here instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the run's summary as JSON here
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Write a self-contained HTML report of the run here (charts, tables; open it in a browser)
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// No progress display on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

/// The Prometheus endpoint (`play`, the agent, the coordinator).
#[derive(Debug, Clone, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464; port 0 picks a free one)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Add a cluster label to the per-file metrics: one series per cluster, so only for a bounded number of clusters
    #[arg(long, requires = "metrics_listen")]
    pub metrics_cluster_labels: bool,
}

/// Parses a duration such as `30s`, `2m`, `1h30m` or `500ms`; must be > 0.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s, 5m or 500ms"))?;
    if d.is_zero() {
        return Err("a duration of zero would fail everything; give e.g. 30s".into());
    }
    Ok(d)
}

/// Where a directory argument must exist and be a directory.
pub fn existing_dir(path: &Path, what: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{what} {} is not a directory", path.display())),
        Err(e) => Err(format!("{what} {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
    }
}
