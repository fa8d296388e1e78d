//! Settings: embedded defaults, an optional TOML file, and command-line overrides, in that order.
//!
//! Owns parsing and validation of settings; it never opens sockets or touches the runtime
//! directory. Every key has a default, so chatd runs with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::logging::LogTarget;

/// The port chatd listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 2323;

/// What can be wrong with settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid listen address {0:?}: expected ADDR:PORT, like 0.0.0.0:2323 or [::]:2323")]
    Listen(String),
    #[error("{key} must be at least 1")]
    Zero { key: &'static str },
}

/// The settings file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    runtime_dir: Option<PathBuf>,
    log: Option<LogTarget>,
    login_grace_seconds: Option<u64>,
}

/// Effective settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on; the defaults are "IPv4 and IPv6 on every interface".
    pub listen: Vec<SocketAddr>,
    /// Whether `listen` came from the defaults (an address family the host lacks is skipped).
    pub listen_is_default: bool,
    /// Where broker.sock lives.
    pub runtime_dir: PathBuf,
    pub log: LogTarget,
    /// How long a client may take to choose a nickname.
    pub login_grace: Duration,
}

/// Command-line values that override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub runtime_dir: Option<PathBuf>,
    pub log: Option<LogTarget>,
}

impl Config {
    /// Builds the effective settings from an optional file and the command line.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(path) => parse_file(path)?,
            None => FileConfig::default(),
        };
        let listen_strings =
            if !overrides.listen.is_empty() { Some(overrides.listen) } else { from_file.listen };
        let listen_is_default = listen_strings.is_none();
        let listen = match listen_strings {
            Some(list) => list
                .iter()
                .map(|s| s.parse().map_err(|_| ConfigError::Listen(s.clone())))
                .collect::<Result<Vec<_>, _>>()?,
            None => default_listen(),
        };
        let login_grace_seconds = from_file.login_grace_seconds.unwrap_or(60);
        if login_grace_seconds == 0 {
            return Err(ConfigError::Zero { key: "login_grace_seconds" });
        }
        Ok(Config {
            listen,
            listen_is_default,
            runtime_dir: overrides
                .runtime_dir
                .or(from_file.runtime_dir)
                .unwrap_or_else(default_runtime_dir),
            log: overrides.log.or(from_file.log).unwrap_or(LogTarget::Syslog),
            login_grace: Duration::from_secs(login_grace_seconds),
        })
    }
}

fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text)
        .map_err(|err| ConfigError::Parse { path: path.to_path_buf(), message: err.to_string() })
}

fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        SocketAddr::from(([0u16; 8], DEFAULT_PORT)),
    ]
}

/// `/run/chatd` for root; otherwise `$XDG_RUNTIME_DIR/chatd`, or a per-user directory in /tmp.
fn default_runtime_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/chatd");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("chatd"),
        _ => PathBuf::from(format!("/tmp/chatd-{uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, Overrides::default()).expect("defaults");
        assert_eq!(config.listen.len(), 2);
        assert!(config.listen_is_default);
        assert_eq!(config.login_grace, Duration::from_secs(60));
        assert_eq!(config.log, LogTarget::Syslog);
    }

    #[test]
    fn file_values_apply_and_the_command_line_wins() {
        let f = file("listen = [\"127.0.0.1:9\"]\nlogin_grace_seconds = 5\nlog = \"stderr\"\n");
        let config = Config::load(Some(f.path()), Overrides::default()).expect("valid");
        assert_eq!(config.listen, vec!["127.0.0.1:9".parse().expect("addr")]);
        assert_eq!(config.login_grace, Duration::from_secs(5));
        let overrides = Overrides { listen: vec!["[::1]:7".into()], ..Overrides::default() };
        let config = Config::load(Some(f.path()), overrides).expect("valid");
        assert_eq!(config.listen, vec!["[::1]:7".parse().expect("addr")]);
        assert!(!config.listen_is_default);
    }

    /// The shipped example lists every key commented out; uncommented, it must still parse and
    /// equal the defaults.
    #[test]
    fn the_shipped_example_documents_every_key_with_its_default() {
        let example = include_str!("../packaging/chatd.toml");
        let uncommented: String = example
            .lines()
            .filter_map(|line| {
                line.strip_prefix('#').filter(|rest| !rest.starts_with(' ') && !rest.is_empty())
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let f = file(&uncommented);
        let config = Config::load(Some(f.path()), Overrides::default()).expect("example parses");
        let defaults = Config::load(None, Overrides::default()).expect("defaults");
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.log, defaults.log);
        assert_eq!(config.login_grace, defaults.login_grace);
        for key in ["listen", "runtime_dir", "log", "login_grace_seconds"] {
            assert!(
                uncommented.contains(&format!("{key} =")),
                "{key} missing from packaging/chatd.toml"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let f = file("login_grace = 5\n");
        let err = Config::load(Some(f.path()), Overrides::default()).expect_err("unknown key");
        assert!(err.to_string().contains("login_grace"), "{err}");
        let f = file("login_grace_seconds = 0\n");
        assert!(Config::load(Some(f.path()), Overrides::default()).is_err());
        let overrides = Overrides { listen: vec!["nonsense".into()], ..Overrides::default() };
        assert!(matches!(Config::load(None, overrides), Err(ConfigError::Listen(_))));
    }
}
