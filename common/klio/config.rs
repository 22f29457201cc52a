//! Klio client settings: Klio's configuration file, environment and flags.
//!
//! Precedence is the seed's: a flag beats the environment, which beats the
//! file. The file is found as Klio's (viper) finds it, and may be a whole
//! Klio configuration: the keys of Klio's that the player does not use are
//! accepted silently, only unknown keys are warned about by name. Every
//! missing setting is reported in one error, before anything connects.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use walplayer_wal::walname::check_cluster_name;

/// One Klio client setting: its YAML key, environment variable and flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    ClusterName,
    Address,
    ServerCert,
    ClientCert,
    ClientKey,
}

impl Key {
    /// Every key, in the order errors list them.
    pub const ALL: [Key; 5] = [
        Key::ClusterName,
        Key::Address,
        Key::ServerCert,
        Key::ClientCert,
        Key::ClientKey,
    ];

    /// The dotted YAML path, as the seed's configuration names it.
    pub fn yaml(self) -> &'static str {
        match self {
            Key::ClusterName => "client.cluster_name",
            Key::Address => "client.wal.address",
            Key::ServerCert => "client.wal.server_cert_path",
            Key::ClientCert => "client.wal.client_cert_path",
            Key::ClientKey => "client.wal.client_key_path",
        }
    }

    /// The environment variable: the key upper-cased, `.` turned into `_`.
    pub fn env(self) -> &'static str {
        match self {
            Key::ClusterName => "CLIENT_CLUSTER_NAME",
            Key::Address => "CLIENT_WAL_ADDRESS",
            Key::ServerCert => "CLIENT_WAL_SERVER_CERT_PATH",
            Key::ClientCert => "CLIENT_WAL_CLIENT_CERT_PATH",
            Key::ClientKey => "CLIENT_WAL_CLIENT_KEY_PATH",
        }
    }

    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Key::ClusterName => "--cluster-name",
            Key::Address => "--address",
            Key::ServerCert => "--server-cert",
            Key::ClientCert => "--client-cert",
            Key::ClientKey => "--client-key",
        }
    }
}

/// Settings from one layer (file, environment or flags); unset is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer(pub BTreeMap<Key, String>);

impl Layer {
    /// Sets `key` when `value` is present and not empty.
    pub fn set(&mut self, key: Key, value: Option<String>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.0.insert(key, v);
        }
    }

    /// The environment layer, read through `lookup` (so tests need not touch
    /// the process environment).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Layer {
        let mut layer = Layer::default();
        for key in Key::ALL {
            layer.set(key, lookup(key.env()));
        }
        layer
    }
}

/// Complete, validated settings for talking to one Klio WAL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlioConfig {
    pub cluster_name: String,
    pub address: String,
    /// CA that signed the server's certificate (`server_cert_path`).
    pub server_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// What went wrong assembling the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid {format}: {message}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("configuration file {path}: key {key} must be a string, found {found}")]
    NotAString {
        path: PathBuf,
        key: String,
        found: &'static str,
    },
    #[error("configuration file {path}: {key} must be a mapping of settings (as in `client:` then `  wal:` on the next lines), found {found}")]
    NotAMapping {
        path: PathBuf,
        key: String,
        found: &'static str,
    },
    #[error("{}", missing_message(.0))]
    Missing(Vec<Key>),
    #[error("{0}")]
    Invalid(String),
}

fn missing_message(keys: &[Key]) -> String {
    let mut text = String::from(
        "missing Klio client settings (set each in the config file, the environment or a flag):",
    );
    for key in keys {
        text.push_str(&format!(
            "\n  {} (env {}, flag {})",
            key.yaml(),
            key.env(),
            key.flag()
        ));
    }
    text
}

/// A file layer and the warnings reading it produced.
#[derive(Debug, Default)]
pub struct FileLayer {
    pub layer: Layer,
    pub warnings: Vec<String>,
}

/// The names Klio looks for in `$HOME` when no `--config` is given, in
/// viper's order: its extensions json, toml, yaml, yml, then the bare
/// name (Klio sets a config type, which lets viper take it).
pub const DEFAULT_FILE_NAMES: [&str; 5] = [
    ".klio.json",
    ".klio.toml",
    ".klio.yaml",
    ".klio.yml",
    ".klio",
];

/// Which configuration file to read: `--config`, else the first of
/// [`DEFAULT_FILE_NAMES`] in `home` that is a file.
pub fn config_file_path(explicit: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => {
            let home = home?;
            DEFAULT_FILE_NAMES
                .iter()
                .map(|name| home.join(name))
                .find(|p| p.is_file())
        }
    }
}

/// Reads a configuration file: JSON or TOML by its extension, YAML
/// otherwise (as Klio reads every file).
pub fn read_file(path: &Path) -> Result<FileLayer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("json") => parse_json(path, &text),
        Some("toml") => parse_toml(path, &text),
        _ => parse_yaml(path, &text),
    }
}

/// Parses YAML configuration text; `path` only names it in messages.
pub fn parse_yaml(path: &Path, text: &str) -> Result<FileLayer, ConfigError> {
    let value = serde_norway::from_str(text).map_err(|e| parse_error(path, "YAML", e))?;
    parse_value(path, value)
}

/// Parses JSON configuration text.
pub fn parse_json(path: &Path, text: &str) -> Result<FileLayer, ConfigError> {
    let value = serde_json::from_str(text).map_err(|e| parse_error(path, "JSON", e))?;
    parse_value(path, value)
}

/// Parses TOML configuration text.
pub fn parse_toml(path: &Path, text: &str) -> Result<FileLayer, ConfigError> {
    let value = toml::from_str(text).map_err(|e| parse_error(path, "TOML", e))?;
    parse_value(path, value)
}

fn parse_error(path: &Path, format: &'static str, e: impl fmt::Display) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        format,
        message: e.to_string(),
    }
}

/// Keys of a Klio configuration that the player does not use: accepted
/// silently. `*` stands for any key below (sections Klio itself checks).
const KLIO_KEYS: [&str; 16] = [
    "client.wal.tier2_address",
    "client.base.url",
    "client.base.tier2_url",
    "client.base.server_cert_path",
    "client.base.client_cert_path",
    "client.base.client_key_path",
    "source.dsn",
    "source.standard_dsn",
    "source.slot",
    "source.standby_message_timeout_seconds",
    "source.flush_timeout_ms",
    "source.buffer_size",
    "retention",
    "retention.*",
    "tier2_retention",
    "tier2_retention.*",
];

/// Where older Klio releases kept the cluster name: read when
/// `client.cluster_name` is not set.
const OLD_CLUSTER_NAME: &str = "client.wal.cluster_name";

/// Whether `dotted` is a Klio key the player does not use.
fn klio_only_key(dotted: &str) -> bool {
    KLIO_KEYS.iter().any(|k| match k.strip_suffix(".*") {
        Some(section) => dotted
            .get(..section.len() + 1)
            .is_some_and(|head| head.eq_ignore_ascii_case(&format!("{section}."))),
        None => k.eq_ignore_ascii_case(dotted),
    })
}

/// Whether `dotted` names one setting the player reads.
fn setting_key(dotted: &str) -> bool {
    dotted.eq_ignore_ascii_case(OLD_CLUSTER_NAME)
        || Key::ALL
            .iter()
            .any(|k| k.yaml().eq_ignore_ascii_case(dotted))
}

/// Reads the settings out of a parsed document of any format.
fn parse_value(path: &Path, value: serde_norway::Value) -> Result<FileLayer, ConfigError> {
    check_sections(path, &value)?;
    let mut out = FileLayer::default();
    let mut leaves = Vec::new();
    flatten(&value, String::new(), &mut leaves);
    let mut old_cluster_name = None;
    for (dotted, leaf) in leaves {
        let old = dotted.eq_ignore_ascii_case(OLD_CLUSTER_NAME);
        let key = Key::ALL
            .iter()
            .copied()
            .find(|k| k.yaml().eq_ignore_ascii_case(&dotted));
        if key.is_none() && !old {
            if !dotted.is_empty() && !klio_only_key(&dotted) {
                out.warnings.push(unknown_key_warning(path, &dotted));
            }
            continue;
        }
        let text = match leaf {
            serde_norway::Value::String(s) => s.clone(),
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Null => continue,
            other => {
                return Err(ConfigError::NotAString {
                    path: path.to_path_buf(),
                    key: dotted,
                    found: yaml_kind(other),
                })
            }
        };
        match key {
            Some(key) => out.layer.set(key, Some(text)),
            None => old_cluster_name = Some(text),
        }
    }
    if let Some(old) = old_cluster_name.filter(|v| !v.is_empty()) {
        match out.layer.0.get(&Key::ClusterName) {
            None => out.layer.set(Key::ClusterName, Some(old)),
            Some(new) if *new != old => out.warnings.push(format!(
                "configuration file {}: client.cluster_name {new:?} and the older {OLD_CLUSTER_NAME} {old:?} differ; using client.cluster_name",
                path.display()
            )),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// The top level, `client` and `client.wal` hold settings: anything else
/// there would otherwise be ignored with a warning and then reported as
/// every setting missing.
fn check_sections(path: &Path, value: &serde_norway::Value) -> Result<(), ConfigError> {
    use serde_norway::Value;
    let not_a_mapping = |key: &str, found: &Value| ConfigError::NotAMapping {
        path: path.to_path_buf(),
        key: key.to_string(),
        found: yaml_kind(found),
    };
    let mut current = match value {
        Value::Null => return Ok(()),
        Value::Mapping(map) => map,
        other => return Err(not_a_mapping("the top level", other)),
    };
    for section in ["client", "client.wal"] {
        let last = section.rsplit('.').next().unwrap_or(section);
        let found = current.iter().find_map(|(k, v)| match k {
            Value::String(s) if s.eq_ignore_ascii_case(last) => Some(v),
            _ => None,
        });
        current = match found {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Mapping(map)) => map,
            Some(other) => return Err(not_a_mapping(section, other)),
        };
    }
    Ok(())
}

fn flatten<'a>(
    value: &'a serde_norway::Value,
    prefix: String,
    out: &mut Vec<(String, &'a serde_norway::Value)>,
) {
    match value {
        serde_norway::Value::Mapping(map) => {
            for (k, v) in map {
                let name = match k {
                    serde_norway::Value::String(s) => s.clone(),
                    serde_norway::Value::Number(n) => n.to_string(),
                    serde_norway::Value::Bool(b) => b.to_string(),
                    other => format!("{other:?}"),
                };
                let dotted = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                // A setting that holds a mapping is reported as such, and a
                // section of Klio's own is not walked into.
                if setting_key(&dotted) || klio_only_key(&dotted) {
                    out.push((dotted, v));
                } else {
                    flatten(v, dotted, out);
                }
            }
        }
        serde_norway::Value::Null if prefix.is_empty() => {}
        leaf => out.push((prefix, leaf)),
    }
}

fn yaml_kind(v: &serde_norway::Value) -> &'static str {
    match v {
        serde_norway::Value::Bool(_) => "a boolean",
        serde_norway::Value::Sequence(_) => "a list",
        serde_norway::Value::Mapping(_) => "a mapping",
        serde_norway::Value::String(_) => "a string",
        serde_norway::Value::Number(_) => "a number",
        _ => "a value of another type",
    }
}

fn unknown_key_warning(path: &Path, dotted: &str) -> String {
    let last = dotted.rsplit('.').next().unwrap_or(dotted);
    let hint = Key::ALL
        .iter()
        .find(|k| k.yaml().rsplit('.').next() == Some(last))
        .map(|k| format!(" (did you mean {}?)", k.yaml()))
        .unwrap_or_default();
    format!(
        "configuration file {}: unknown key {dotted} is ignored{hint}",
        path.display()
    )
}

/// Merges the layers (flags beat environment beat file) and validates.
pub fn resolve(file: &Layer, env: &Layer, flags: &Layer) -> Result<KlioConfig, ConfigError> {
    let get = |key: Key| {
        flags
            .0
            .get(&key)
            .or_else(|| env.0.get(&key))
            .or_else(|| file.0.get(&key))
            .cloned()
    };
    let missing: Vec<Key> = Key::ALL.into_iter().filter(|k| get(*k).is_none()).collect();
    if !missing.is_empty() {
        return Err(ConfigError::Missing(missing));
    }
    let value = |key| get(key).unwrap_or_default();
    let address = normalize_address(&value(Key::Address))
        .map_err(|e| ConfigError::Invalid(format!("client.wal.address {e}")))?;
    let config = KlioConfig {
        cluster_name: value(Key::ClusterName),
        address,
        server_ca: PathBuf::from(value(Key::ServerCert)),
        client_cert: PathBuf::from(value(Key::ClientCert)),
        client_key: PathBuf::from(value(Key::ClientKey)),
    };
    check_cluster_name(&config.cluster_name)
        .map_err(|e| ConfigError::Invalid(format!("client.cluster_name: {e}")))?;
    Ok(config)
}

/// The forms of a Klio address walplayer dials, as grpc-go's naming
/// accepts them, for messages.
pub const ADDRESS_FORMS: &str =
    "host:port, [v6]:port, dns:///host:port or dns:host:port (e.g. klio.example:52000, 127.0.0.1:52000, [::1]:52000, dns:///klio.example:52000)";

/// Turns an address in one of grpc-go's forms ([`ADDRESS_FORMS`]; the
/// `dns` scheme with no authority, or `passthrough:///`) into the
/// `host:port` walplayer dials with the system's resolver.
pub fn normalize_address(address: &str) -> Result<String, String> {
    let bad = |why: String| format!("{address:?} {why}: write {ADDRESS_FORMS}");
    let target = if let Some(rest) = address.strip_prefix("dns://") {
        match rest.split_once('/') {
            Some(("", target)) => target,
            Some((authority, _)) => {
                return Err(bad(format!(
                    "names the DNS server {authority}, which walplayer cannot use (it resolves with the system's resolver)"
                )))
            }
            None => return Err(bad("has no host after dns://".into())),
        }
    } else if let Some(rest) = address
        .strip_prefix("dns:")
        // A host named dns (dns:52000) stays a host.
        .filter(|rest| split_host_port(rest).is_ok() || split_host_port(address).is_err())
    {
        rest
    } else if let Some(rest) = address.strip_prefix("passthrough:///") {
        rest
    } else if let Some((scheme, _)) = address.split_once("://") {
        return Err(bad(format!(
            "has the scheme {scheme}://, which walplayer does not dial"
        )));
    } else {
        address
    };
    let (host, port) = split_host_port(target).map_err(|why| bad(why.into()))?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals) into host and port.
pub fn split_address(address: &str) -> Result<(String, u16), String> {
    split_host_port(address).map_err(|why| {
        format!("client.wal.address {address:?} {why}: write it as host:port, e.g. 127.0.0.1:52000 or [::1]:52000")
    })
}

fn split_host_port(address: &str) -> Result<(String, u16), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("has no port")?;
    let port: u16 = port.parse().map_err(|_| "has no valid port")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or("has an unclosed '['")?,
        None if host.contains(':') => return Err("is an IPv6 address without brackets"),
        None => host,
    };
    if host.is_empty() || host.contains('/') || host.contains('[') || host.contains(']') {
        return Err("has no host");
    }
    Ok((host.to_string(), port))
}

impl fmt::Display for KlioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {} at {}", self.cluster_name, self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: &str = "client:\n  cluster_name: walplayer\n  wal:\n    address: localhost:52000\n    server_cert_path: /s/ca.crt\n    client_cert_path: /c/tls.crt\n    client_key_path: /c/tls.key\n";

    fn file(text: &str) -> FileLayer {
        parse_yaml(Path::new("klio.yaml"), text).unwrap()
    }

    #[test]
    fn seed_file_resolves() {
        let f = file(FULL);
        assert!(f.warnings.is_empty());
        let c = resolve(&f.layer, &Layer::default(), &Layer::default()).unwrap();
        assert_eq!(c.cluster_name, "walplayer");
        assert_eq!(c.address, "localhost:52000");
        assert_eq!(c.client_key, PathBuf::from("/c/tls.key"));
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let f = file(FULL);
        let env = Layer::from_env(|k| match k {
            "CLIENT_CLUSTER_NAME" => Some("from-env".into()),
            "CLIENT_WAL_ADDRESS" => Some("env:1".into()),
            "CLIENT_WAL_CLIENT_KEY_PATH" => Some(String::new()),
            _ => None,
        });
        let mut flags = Layer::default();
        flags.set(Key::Address, Some("flag:2".into()));
        let c = resolve(&f.layer, &env, &flags).unwrap();
        assert_eq!(c.cluster_name, "from-env");
        assert_eq!(c.address, "flag:2");
        // An empty variable counts as unset.
        assert_eq!(c.client_key, PathBuf::from("/c/tls.key"));
    }

    #[test]
    fn missing_settings_reported_together() {
        let f = file("client:\n  cluster_name: x\n");
        let e = resolve(&f.layer, &Layer::default(), &Layer::default()).unwrap_err();
        let text = e.to_string();
        for key in &Key::ALL[1..] {
            assert!(text.contains(key.yaml()), "{text}");
            assert!(text.contains(key.env()), "{text}");
            assert!(text.contains(key.flag()), "{text}");
        }
        assert!(!text.contains("client.cluster_name"), "{text}");
    }

    #[test]
    fn unknown_key_is_named_with_a_hint() {
        let f = file(
            "client:\n  base:\n    cluster_name: oops\n  wal:\n    adress: x\nwal:\n  address: y\n",
        );
        assert_eq!(f.warnings.len(), 3, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("client.base.cluster_name"));
        assert!(f.warnings[0].contains("did you mean client.cluster_name"));
        assert!(f.warnings[1].contains("client.wal.adress"));
        assert!(f.warnings[2].contains("unknown key wal.address"));
        assert!(f.warnings[2].contains("did you mean client.wal.address"));
    }

    /// A whole Klio configuration (tests/fixtures/klio-full-config.yaml,
    /// every client key present) reads without a warning.
    #[test]
    fn a_full_klio_configuration_is_accepted_silently() {
        let f = file(include_str!("../../tests/fixtures/klio-full-config.yaml"));
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        let c = resolve(&f.layer, &Layer::default(), &Layer::default()).unwrap();
        assert_eq!(c.cluster_name, "pg-main");
        assert_eq!(c.address, "klio.klio-system.svc:52000");
        assert_eq!(c.server_ca, PathBuf::from("/projected/klio/server/ca.crt"));
        assert_eq!(
            c.client_key,
            PathBuf::from("/projected/klio/client/tls.key")
        );
    }

    /// No key of Klio's is ever warned about or pointed elsewhere, in any
    /// case, whatever its value.
    #[test]
    fn no_klio_key_gets_a_warning_or_a_hint() {
        let keys = KLIO_KEYS
            .iter()
            .copied()
            .filter(|k| !k.ends_with(".*"))
            .chain(Key::ALL.iter().map(|k| k.yaml()))
            .chain([
                OLD_CLUSTER_NAME,
                "retention.anything.below",
                "tier2_retention.x",
            ]);
        for dotted in keys {
            for spelled in [dotted.to_string(), dotted.to_uppercase()] {
                let parts: Vec<&str> = spelled.split('.').collect();
                let mut text = String::new();
                for (depth, part) in parts.iter().enumerate() {
                    let value = if depth + 1 == parts.len() { " 7" } else { "" };
                    text.push_str(&format!("{}{part}:{value}\n", "  ".repeat(depth)));
                }
                let f = parse_yaml(Path::new("k.yaml"), &text)
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                assert!(f.warnings.is_empty(), "{text}: {:?}", f.warnings);
            }
        }
    }

    #[test]
    fn older_klios_cluster_name_is_read_when_the_newer_is_absent() {
        let old = file("client:\n  wal:\n    cluster_name: old-style\n");
        assert!(old.warnings.is_empty(), "{:?}", old.warnings);
        assert_eq!(old.layer.0[&Key::ClusterName], "old-style");
        let both = file("client:\n  cluster_name: new\n  wal:\n    cluster_name: old\n");
        assert_eq!(both.layer.0[&Key::ClusterName], "new");
        assert!(
            both.warnings[0].contains("differ; using client.cluster_name"),
            "{:?}",
            both.warnings
        );
        let same = file("client:\n  cluster_name: a\n  wal:\n    cluster_name: a\n");
        assert!(same.warnings.is_empty());
    }

    #[test]
    fn json_and_toml_files_read_like_yaml() {
        let yaml = file(FULL).layer;
        let json = r#"{"client": {"cluster_name": "walplayer", "wal": {"address": "localhost:52000",
            "server_cert_path": "/s/ca.crt", "client_cert_path": "/c/tls.crt", "client_key_path": "/c/tls.key"}}}"#;
        let toml = "[client]\ncluster_name = \"walplayer\"\n[client.wal]\naddress = \"localhost:52000\"\nserver_cert_path = \"/s/ca.crt\"\nclient_cert_path = \"/c/tls.crt\"\nclient_key_path = \"/c/tls.key\"\n[client.base]\nurl = \"https://k:51515\"\n";
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("k.json", json), ("k.toml", toml), ("k.yml", FULL)] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let f = read_file(&path).unwrap();
            assert_eq!(f.layer, yaml, "{name}");
            assert!(f.warnings.is_empty(), "{name}: {:?}", f.warnings);
        }
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "client = [").unwrap();
        let e = read_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml is not valid TOML"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let e = read_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.json is not valid JSON"), "{e}");
    }

    #[test]
    fn the_default_file_is_found_where_and_in_the_order_klio_looks() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        assert_eq!(config_file_path(None, Some(h)), None);
        // viper's order, last to first: bare name, yml, yaml, toml, json.
        for name in DEFAULT_FILE_NAMES.iter().rev() {
            std::fs::write(h.join(name), FULL).unwrap();
            assert_eq!(
                config_file_path(None, Some(h)),
                Some(h.join(name)),
                "{name}"
            );
        }
        // A directory of that name is not a file.
        std::fs::remove_file(h.join(".klio.json")).unwrap();
        std::fs::create_dir(h.join(".klio.json")).unwrap();
        assert_eq!(config_file_path(None, Some(h)), Some(h.join(".klio.toml")));
        // --config wins.
        let explicit = h.join("mine.yaml");
        assert_eq!(config_file_path(Some(&explicit), Some(h)), Some(explicit));
        assert_eq!(config_file_path(None, None), None);
    }

    #[test]
    fn addresses_in_grpc_go_forms() {
        for (given, dialed) in [
            ("klio:52000", "klio:52000"),
            ("dns:///klio.example:52000", "klio.example:52000"),
            ("dns:klio.example:52000", "klio.example:52000"),
            ("passthrough:///10.0.0.5:52000", "10.0.0.5:52000"),
            ("[::1]:52000", "[::1]:52000"),
            ("dns:///[::1]:52000", "[::1]:52000"),
            ("dns:52000", "dns:52000"),
        ] {
            assert_eq!(normalize_address(given).unwrap(), dialed, "{given}");
        }
        for (given, why) in [
            ("dns://8.8.8.8/klio:52000", "DNS server 8.8.8.8"),
            ("unix:///run/klio.sock", "scheme unix://"),
            ("dns:///klio", "no port"),
            ("klio", "no port"),
            ("::1:52000", "without brackets"),
            ("dns://", "no host"),
        ] {
            let e = normalize_address(given).unwrap_err();
            assert!(e.contains(why), "{given}: {e}");
            assert!(
                e.contains("dns:///host:port") && e.contains("[v6]:port"),
                "{e}"
            );
        }
        let mut f = file(FULL).layer;
        f.0.insert(Key::Address, "dns:///klio.example:1".into());
        let c = resolve(&f, &Layer::default(), &Layer::default()).unwrap();
        assert_eq!(c.address, "klio.example:1");
        f.0.insert(Key::Address, "https://klio:1".into());
        let e = resolve(&f, &Layer::default(), &Layer::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("client.wal.address \"https://klio:1\""),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_bad_yaml_are_errors() {
        let e = parse_yaml(Path::new("k.yaml"), "client:\n  cluster_name: [a]\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("client.cluster_name must be a string, found a list"),
            "{e}"
        );
        let e = parse_yaml(Path::new("k.yaml"), "client: [\n").unwrap_err();
        assert!(e.to_string().contains("k.yaml is not valid YAML"), "{e}");
        assert!(parse_yaml(Path::new("k.yaml"), "")
            .unwrap()
            .layer
            .0
            .is_empty());
    }

    #[test]
    fn sections_of_the_wrong_type_are_errors() {
        for (text, key, found) in [
            ("client:\n  wal: \"string\"\n", "client.wal", "a string"),
            ("client: 5\n", "client", "a number"),
            ("- a\n- b\n", "the top level", "a list"),
            ("Client:\n  WAL: [x]\n", "client.wal", "a list"),
        ] {
            let e = parse_yaml(Path::new("k.yaml"), text)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{key} must be a mapping")) && e.contains(found),
                "{text:?}: {e}"
            );
        }
        // Empty sections are simply unset.
        assert!(file("client:\n  wal:\n").layer.0.is_empty());
        // Keys that are not strings are named plainly.
        let f = file("client:\n  1: x\n");
        assert!(
            f.warnings[0].contains("unknown key client.1 "),
            "{:?}",
            f.warnings
        );
    }

    #[test]
    fn bad_values_are_named() {
        let mut f = file(FULL).layer;
        f.0.insert(Key::ClusterName, "a/b".into());
        let e = resolve(&f, &Layer::default(), &Layer::default()).unwrap_err();
        assert!(e.to_string().contains("client.cluster_name"), "{e}");
        let mut f = file(FULL).layer;
        f.0.insert(Key::Address, "nohost".into());
        let e = resolve(&f, &Layer::default(), &Layer::default()).unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
    }

    #[test]
    fn addresses_split() {
        assert_eq!(split_address("[::1]:5").unwrap(), ("::1".into(), 5));
        assert_eq!(split_address("a.b:52000").unwrap(), ("a.b".into(), 52000));
        assert!(split_address("::1:5").is_err());
        assert!(split_address(":5").is_err());
        assert!(split_address("a:99999").is_err());
    }

    fn yaml_leaf() -> impl Strategy<Value = serde_norway::Value> {
        use serde_norway::Value;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>().prop_map(|n| Value::Number(n.into())),
            "\\PC{0,30}".prop_map(Value::String),
            "[a-z0-9./:\\[\\]-]{0,30}".prop_map(Value::String),
        ]
    }

    fn yaml_key() -> impl Strategy<Value = serde_norway::Value> {
        use serde_norway::Value;
        prop_oneof![
            4 => prop::sample::select(vec![
                "client", "wal", "cluster_name", "address", "server_cert_path",
                "client_cert_path", "client_key_path", "CLIENT", "Wal", "",
            ])
            .prop_map(|k| Value::String(k.to_string())),
            1 => "\\PC{0,10}".prop_map(Value::String),
            1 => any::<i32>().prop_map(|n| Value::Number(n.into())),
            1 => any::<bool>().prop_map(Value::Bool),
        ]
    }

    fn yaml_document() -> impl Strategy<Value = serde_norway::Value> {
        use serde_norway::{Mapping, Value};
        yaml_leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::vec((yaml_key(), inner), 0..6)
                    .prop_map(|pairs| { Value::Mapping(pairs.into_iter().collect::<Mapping>()) }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn config_loader_never_panics(text in "\\PC{0,200}") {
            if let Ok(f) = parse_yaml(Path::new("fuzz.yaml"), &text) {
                let _ = resolve(&f.layer, &Layer::default(), &Layer::default());
            }
        }

        /// Documents shaped like the real one (the real keys, in any
        /// case, at any depth) holding values of every YAML type.
        #[test]
        fn config_loader_never_panics_on_near_misses(doc in yaml_document()) {
            let text = serde_norway::to_string(&doc).unwrap();
            match parse_yaml(Path::new("fuzz.yaml"), &text) {
                Ok(f) => {
                    let _ = resolve(&f.layer, &Layer::default(), &Layer::default());
                }
                Err(e) => prop_assert!(e.to_string().contains("fuzz.yaml"), "{}", e),
            }
        }

        #[test]
        fn address_splitter_never_panics(text in "\\PC{0,40}") {
            let _ = split_address(&text);
        }
    }
}
