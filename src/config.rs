//! Settings: embedded defaults, an optional TOML file, and command-line overrides, in that order.
//!
//! Owns parsing and validation of settings; it never opens sockets or touches the runtime
//! directory. Every key has a default, so chatd runs with no file at all; the defaults follow
//! sshd, Postfix and ngircd where those have an equivalent. `packaging/chatd.toml` lists every key
//! with its default (a unit test keeps the two in step).

use crate::ring::MIN_RING_BYTES;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::accounts::KdfCost;

use crate::logging::{LogTarget, SyslogFormat, SyslogOptions};

/// The group whose members may use chatctl, unless `admin_group` says otherwise.
pub const DEFAULT_ADMIN_GROUP: &str = "chatd-admin";

/// The port chatd listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 2323;

/// The most chat lines a room keeps (for replay after a broker restart, and for newcomers'
/// history): the ceiling of `history_lines`. The broker's rooms take it from here.
pub const RECENT_LINES: usize = 4096;

/// Lines of history a room shows newcomers unless `history_lines` says otherwise.
pub const DEFAULT_HISTORY_LINES: usize = 20;

/// What can be wrong with settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{where_}{key}: {message}")]
    Invalid { where_: String, key: &'static str, message: String },
}

/// sshd's `MaxStartups start:rate:full`: with `start` clients not yet admitted, new ones are
/// refused with probability `rate`%, rising linearly to 100% at `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: usize,
    pub rate: u32,
    pub full: usize,
}

impl FromStr for MaxStartups {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let number =
            |s: &str| s.trim().parse::<usize>().map_err(|_| format!("{s:?} is not a number"));
        let parsed = match parts.as_slice() {
            [full] => MaxStartups { start: number(full)?, rate: 100, full: number(full)? },
            [start, rate, full] => MaxStartups {
                start: number(start)?,
                rate: u32::try_from(number(rate)?).map_err(|_| "rate too large".to_string())?,
                full: number(full)?,
            },
            _ => return Err("expected \"start:rate:full\", like \"10:30:100\"".into()),
        };
        if parsed.start == 0 || parsed.start > parsed.full || parsed.rate > 100 {
            return Err("need 1 <= start <= full and rate <= 100".into());
        }
        Ok(parsed)
    }
}

/// Limits the master applies before it forks a session.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionLimits {
    /// Connected clients at most, admitted or not.
    pub max_clients: usize,
    /// Connected clients per source address (IPv6: per /64).
    pub max_clients_per_ip: usize,
    /// Cap on clients that have not chosen a nickname yet.
    pub max_startups: MaxStartups,
    /// Cap on clients from one source that have not chosen a nickname yet.
    pub max_startups_per_ip: usize,
    /// Trips (refusals, or leaving before choosing a nickname) that put a source in the penalty box.
    pub penalty_trips: u32,
    /// First penalty; each further one doubles, up to `penalty_max`.
    pub penalty: Duration,
    pub penalty_max: Duration,
}

/// What each session child enforces on its client.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionLimits {
    /// How long a client may take to choose a nickname.
    pub login_grace: Duration,
    /// Disconnect a client that sent nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time (and the telnet NOP interval for telnet clients).
    pub keepalive: Duration,
    /// Lines a client may send at once before the rate applies.
    pub flood_burst: u32,
    /// Lines per second after the burst.
    pub flood_lines_per_second: f64,
    /// Lines held back (delayed) before further lines are refused.
    pub flood_queue: usize,
    /// Invalid commands in a row before the client is disconnected.
    pub error_budget: u32,
    /// Bytes waiting for a client that does not read before it is disconnected.
    pub send_queue_bytes: usize,
    /// Bytes without a line end before the client is disconnected.
    pub max_unterminated_bytes: usize,
    /// Offer telnet options as soon as a client connects, not only once it sent a telnet
    /// command: for telnet clients that wait for the server.
    pub telnet: bool,
    /// Passwords are refused on plain connections from other hosts
    /// (`require_tls_for_passwords`).
    pub passwords_need_tls: bool,
    /// The first TLS listener's port, to tell plain clients where to go (set by the master
    /// once its listeners are bound; `None`: no TLS listener).
    pub tls_port: Option<u16>,
    /// The first web listener's port, for the answer to a browser on the telnet port (set by
    /// the master once its listeners are bound; `None`: no web listener).
    pub web_port: Option<u16>,
    /// The web listeners speak HTTPS (`web_tls`), for the same answer's link.
    pub web_tls: bool,
}

/// Effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Addresses to listen on; the defaults are "IPv4 and IPv6 on every interface".
    pub listen: Vec<SocketAddr>,
    /// Whether `listen` came from the defaults (an address family the host lacks is skipped).
    pub listen_is_default: bool,
    /// Where broker.sock lives.
    pub runtime_dir: PathBuf,
    pub log: LogTarget,
    /// Which syslog socket and message format (when `log` is syslog).
    pub syslog: SyslogOptions,
    /// The user to run as after binding, when started as root (`None`: stay as is).
    pub user: Option<String>,
    /// Whether `user` is the default (`chatd`, which may fall back to `nobody`) rather than
    /// one the file names (which must exist).
    pub user_is_default: bool,
    pub admission: AdmissionLimits,
    pub session: SessionLimits,
    /// Bytes the broker queues for one session before dropping it as too slow.
    pub broker_queue_bytes: usize,
    /// Bytes of each room's broadcast ring (a power of two; see `crate::ring`).
    pub ring_bytes: usize,
    /// Most rooms at once (each has a ring of `ring_bytes`).
    pub max_rooms: usize,
    /// Lines of each room's history shown to whoever enters it (0: none).
    pub history_lines: usize,
    /// Where bans, mutes and the message of the day persist (and the embedded database).
    pub state_dir: PathBuf,
    /// Days a line said in a room stays in the store (0: no store, history in memory only).
    pub history_days: u32,
    /// The store `database` names (`None`: the embedded one in `state_dir`), and the file
    /// with its password.
    pub database: Option<Database>,
    pub database_password_file: Option<PathBuf>,
    /// Members of this group may use `chatctl` (besides root and the daemon's user); `None`:
    /// nobody else.
    pub admin_group: Option<String>,
    /// Where to listen for TLS clients (implicit TLS from the first byte). Unset: port 2324 on
    /// the default addresses when `listen` is the default too, and nowhere when `listen` was
    /// set (an operator who chose the plain addresses chooses these too). `[]`: nowhere.
    pub tls_listen: Vec<SocketAddr>,
    pub tls_listen_is_default: bool,
    /// The certificate chain and key (PEM); `None` (both unset): a self-signed certificate
    /// that chatd makes at first start and keeps in `state_dir` ([`SELF_SIGNED_CERT`]).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Who may or must have an account.
    pub accounts: AccountsMode,
    /// The Argon2id cost of new passwords (and of rehashing weaker ones at login).
    pub password_cost: crate::accounts::KdfCost,
    /// The most private lines kept for one registered user while away.
    pub kept_messages: usize,
    /// Where to listen for web browsers (`web_listen`, `--web-listen`): the page, the
    /// dashboard and the WebSocket. Unset: the web port on the default addresses when
    /// `listen` is the default too, nowhere when `listen` was set. `[]`: nowhere.
    pub web_listen: Vec<SocketAddr>,
    pub web_listen_is_default: bool,
    /// Web listeners speak HTTPS (and WSS), on the TLS certificate.
    pub web_tls: bool,
    /// `Origin`s a WebSocket may come from besides the host the page was served from.
    pub web_allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (addresses or networks).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[cluster]`: this host is one chat node of several on one Redis and one PostgreSQL
    /// (`None`: one host on its own, as always).
    pub cluster: Option<ClusterSettings>,
}

/// The `[cluster]` table: where the shared stream lives and what this node is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` (or `rediss://` for TLS to Redis).
    pub redis: String,
    /// A file whose first line is Redis's password (instead of one in the URL).
    pub redis_password_file: Option<PathBuf>,
    /// This node's name, unique in the cluster (default: the host name).
    pub node: String,
}

/// The longest node name: it is shown beside nicknames and is part of Redis keys.
pub const MAX_NODE_NAME: usize = 32;

/// Whether `name` can name a node: 1 to [`MAX_NODE_NAME`] ASCII letters, digits, `-`, `_` or
/// `.` (a host name's characters; nothing that needs quoting in a key or a line).
pub fn is_node_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    redis: Option<String>,
    redis_password_file: Option<PathBuf>,
    node: Option<String>,
}

/// Registered nicknames (`accounts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountsMode {
    /// Guests welcome; registered nicks are their owners' only (the default).
    Optional,
    /// Only logged-in users may talk; a guest may `/register` or `/login`.
    Required,
    /// No accounts: every nick is anyone's, and the account commands say so.
    Off,
}

/// The default TLS port (like IRC's 6697 beside 6667).
pub const DEFAULT_TLS_PORT: u16 = 2324;

/// The default port of the web listener (the page, the dashboard, the WebSocket).
pub const DEFAULT_WEB_PORT: u16 = 8023;

/// The self-signed certificate and its key in `state_dir`, made when no `tls_cert` is set.
pub const SELF_SIGNED_CERT: &str = "tls-cert.pem";
pub const SELF_SIGNED_KEY: &str = "tls-key.pem";

/// The largest room ring an operator may ask for (`ring_bytes`; the smallest is the ring's
/// own, [`MIN_RING_BYTES`]): well below what a ring can be, for every room's ring is shared
/// memory that counts against the machine.
const MAX_RING_BYTES: usize = 64 << 20;

/// The longest retention an operator may ask for (`history_days`): a century.
const MAX_HISTORY_DAYS: u32 = 36_500;

/// The exit status of a broker whose settings cannot work (sysexits' `EX_CONFIG`), such as a
/// database that is not one: the master stops rather than restart it.
pub const EXIT_UNUSABLE_SETTINGS: i32 = 78;

/// The database file in `state_dir` when `database` names none.
pub const DATABASE_FILE: &str = "chatd.db";

/// What `database` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file at this absolute path.
    File(PathBuf),
    /// A PostgreSQL server (`postgres://` or `postgresql://` URL).
    Postgres(String),
}

impl Database {
    fn parse(text: &str) -> Result<Database, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Database::Postgres(text.to_string()));
        }
        let path = PathBuf::from(text);
        if path.is_absolute() {
            return Ok(Database::File(path));
        }
        Err("a postgres:// URL or the absolute path of an SQLite file".into())
    }
}

/// The settings file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    runtime_dir: Option<PathBuf>,
    log: Option<LogTarget>,
    syslog_socket: Option<PathBuf>,
    syslog_format: Option<SyslogFormat>,
    user: Option<String>,
    login_grace_seconds: Option<u64>,
    max_clients: Option<usize>,
    max_clients_per_ip: Option<usize>,
    max_startups: Option<String>,
    max_startups_per_ip: Option<usize>,
    penalty_trips: Option<u32>,
    penalty_seconds: Option<u64>,
    penalty_max_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    keepalive_seconds: Option<u64>,
    flood_burst: Option<u32>,
    flood_lines_per_second: Option<f64>,
    flood_queue: Option<usize>,
    error_budget: Option<u32>,
    send_queue_bytes: Option<usize>,
    broker_queue_bytes: Option<usize>,
    ring_bytes: Option<usize>,
    max_rooms: Option<usize>,
    max_unterminated_bytes: Option<usize>,
    telnet: Option<bool>,
    history_lines: Option<usize>,
    state_dir: Option<PathBuf>,
    history_days: Option<u32>,
    database: Option<String>,
    database_password_file: Option<PathBuf>,
    admin_group: Option<String>,
    tls_listen: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    accounts: Option<AccountsMode>,
    require_tls_for_passwords: Option<bool>,
    password_memory_kib: Option<u32>,
    password_passes: Option<u32>,
    kept_messages: Option<usize>,
    web_listen: Option<Vec<String>>,
    web_tls: Option<bool>,
    web_allowed_origins: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    cluster: Option<ClusterFile>,
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub web_listen: Vec<String>,
    pub runtime_dir: Option<PathBuf>,
    pub log: Option<LogTarget>,
}

/// Where settings come from, kept so that they can be read again on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.file.as_deref(), self.overrides.clone())
    }
}

impl Config {
    /// Settings that only take effect at start; a reload that changes them says so.
    pub fn needs_restart_to_change(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("listen");
        }
        if self.runtime_dir != new.runtime_dir {
            keys.push("runtime_dir");
        }
        if self.log != new.log {
            keys.push("log");
        }
        if self.user != new.user {
            keys.push("user");
        }
        if self.state_dir != new.state_dir {
            keys.push("state_dir");
        }
        if self.database != new.database {
            keys.push("database");
        }
        if self.database_password_file != new.database_password_file {
            keys.push("database_password_file");
        }
        if (self.history_days == 0) != (new.history_days == 0) {
            keys.push("history_days (between 0 and another value)");
        }
        if self.tls_listen != new.tls_listen {
            keys.push("tls_listen");
        }
        if self.web_listen != new.web_listen {
            keys.push("web_listen");
        }
        if self.web_tls != new.web_tls {
            keys.push("web_tls");
        }
        keys
    }

    /// The store these settings name, or `None` when nothing is kept on disk
    /// (`history_days = 0`).
    pub fn store_target(&self) -> Option<crate::store::Target> {
        use crate::store::Target;
        if self.history_days == 0 {
            return None;
        }
        Some(match &self.database {
            None => Target::Sqlite(self.state_dir.join(DATABASE_FILE)),
            Some(Database::File(path)) => Target::Sqlite(path.clone()),
            Some(Database::Postgres(url)) => Target::Postgres {
                url: url.clone(),
                password_file: self.database_password_file.clone(),
            },
        })
    }
}

/// Where a key is set in the file, for error messages ("FILE line N: ").
fn place(path: Option<&Path>, text: &str, key: &str) -> String {
    let Some(path) = path else { return String::new() };
    let line = text.lines().position(|line| {
        line.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    match line {
        Some(index) => format!("{} line {}: ", path.display(), index + 1),
        None => format!("{}: ", path.display()),
    }
}

impl Config {
    /// Builds the effective settings from an optional file and the command line.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?,
            None => String::new(),
        };
        let parsed: FileConfig = toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: file.map(Path::to_path_buf).unwrap_or_default(),
            message: plain_error(&text, &err).unwrap_or_else(|| one_line_error(&text, &err)),
        })?;
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            where_: place(file, &text, key),
            key,
            message,
        };
        let positive = |key: &'static str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(invalid(key, "must be at least 1".into())),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        let positive_size = |key: &'static str, value: Option<usize>, default: usize| {
            positive(key, value.map(|v| v as u64), default as u64).map(|v| v as usize)
        };

        let listen_strings =
            if overrides.listen.is_empty() { parsed.listen } else { Some(overrides.listen) };
        let listen_is_default = listen_strings.is_none();
        let listen = match listen_strings {
            Some(list) => addresses(invalid, "listen", &list, DEFAULT_PORT)?,
            None => default_listen(),
        };
        let on_default_addresses = |port: u16| -> Vec<SocketAddr> {
            match listen_is_default {
                true => {
                    default_listen().into_iter().map(|a| SocketAddr::new(a.ip(), port)).collect()
                }
                // An operator who chose the plain addresses chooses these too.
                false => Vec::new(),
            }
        };
        let tls_listen_is_default = parsed.tls_listen.is_none();
        let tls_listen = match parsed.tls_listen {
            Some(list) => addresses(invalid, "tls_listen", &list, DEFAULT_TLS_PORT)?,
            None => on_default_addresses(DEFAULT_TLS_PORT),
        };
        let web_strings = if overrides.web_listen.is_empty() {
            parsed.web_listen
        } else {
            Some(overrides.web_listen)
        };
        let web_listen_is_default = web_strings.is_none();
        let web_listen = match web_strings {
            Some(list) => addresses(invalid, "web_listen", &list, DEFAULT_WEB_PORT)?,
            None => on_default_addresses(DEFAULT_WEB_PORT),
        };
        let web_allowed_origins = parsed.web_allowed_origins.unwrap_or_default();
        if let Some(origin) = web_allowed_origins.iter().find(|o| !is_origin(o)) {
            return Err(invalid(
                "web_allowed_origins",
                format!(
                    "invalid origin {origin:?}: expected SCHEME://HOST[:PORT], like https://chat.example.org"
                ),
            ));
        }
        let trusted_proxies = parsed
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "trusted_proxies",
                            format!("invalid address {text:?}: expected an address or a network, like 127.0.0.1 or 10.0.0.0/8"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls_cert = absolute(parsed.tls_cert, "tls_cert").map_err(|m| invalid("tls_cert", m))?;
        let tls_key = absolute(parsed.tls_key, "tls_key").map_err(|m| invalid("tls_key", m))?;
        if tls_cert.is_some() != tls_key.is_some() {
            let key = if tls_cert.is_some() { "tls_key" } else { "tls_cert" };
            return Err(invalid(key, "tls_cert and tls_key are set together, or neither".into()));
        }
        let password_memory_kib = parsed.password_memory_kib.unwrap_or(KdfCost::DEFAULT.memory_kib);
        if !(8..=crate::accounts::MAX_MEMORY_KIB).contains(&password_memory_kib) {
            return Err(invalid(
                "password_memory_kib",
                format!("from 8 to {}", crate::accounts::MAX_MEMORY_KIB),
            ));
        }
        let password_passes = parsed.password_passes.unwrap_or(KdfCost::DEFAULT.passes);
        if !(1..=crate::accounts::MAX_PASSES).contains(&password_passes) {
            return Err(invalid(
                "password_passes",
                format!("from 1 to {}", crate::accounts::MAX_PASSES),
            ));
        }
        let max_startups = match parsed.max_startups {
            Some(text) => text.parse().map_err(|message| invalid("max_startups", message))?,
            None => MaxStartups { start: 10, rate: 30, full: 100 },
        };
        let flood_lines_per_second = parsed.flood_lines_per_second.unwrap_or(2.0);
        if !(flood_lines_per_second > 0.0 && flood_lines_per_second.is_finite()) {
            return Err(invalid("flood_lines_per_second", "must be a positive number".into()));
        }
        let penalty = Duration::from_secs(positive("penalty_seconds", parsed.penalty_seconds, 15)?);
        let penalty_max =
            Duration::from_secs(positive("penalty_max_seconds", parsed.penalty_max_seconds, 600)?);
        if penalty_max < penalty {
            return Err(invalid("penalty_max_seconds", "must be at least penalty_seconds".into()));
        }
        let user_is_default = parsed.user.is_none();
        let user = match parsed.user {
            Some(user) if user.is_empty() => None,
            Some(user) => Some(user),
            None => Some("chatd".to_string()),
        };
        let mut config = Config {
            listen,
            listen_is_default,
            runtime_dir: overrides
                .runtime_dir
                .or(parsed.runtime_dir)
                .unwrap_or_else(default_runtime_dir),
            log: overrides.log.or(parsed.log).unwrap_or(LogTarget::Syslog),
            syslog: SyslogOptions {
                socket: parsed.syslog_socket,
                format: parsed.syslog_format.unwrap_or_default(),
            },
            user,
            user_is_default,
            admission: AdmissionLimits {
                max_clients: positive_size("max_clients", parsed.max_clients, 1024)?,
                max_clients_per_ip: positive_size(
                    "max_clients_per_ip",
                    parsed.max_clients_per_ip,
                    8,
                )?,
                max_startups,
                max_startups_per_ip: positive_size(
                    "max_startups_per_ip",
                    parsed.max_startups_per_ip,
                    3,
                )?,
                penalty_trips: positive("penalty_trips", parsed.penalty_trips.map(u64::from), 10)?
                    as u32,
                penalty,
                penalty_max,
            },
            session: SessionLimits {
                login_grace: Duration::from_secs(positive(
                    "login_grace_seconds",
                    parsed.login_grace_seconds,
                    60,
                )?),
                idle_timeout: parsed
                    .idle_timeout_seconds
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs),
                keepalive: Duration::from_secs(positive(
                    "keepalive_seconds",
                    parsed.keepalive_seconds,
                    60,
                )?),
                flood_burst: positive("flood_burst", parsed.flood_burst.map(u64::from), 10)? as u32,
                flood_lines_per_second,
                flood_queue: parsed.flood_queue.unwrap_or(250),
                error_budget: positive("error_budget", parsed.error_budget.map(u64::from), 20)?
                    as u32,
                send_queue_bytes: positive_size(
                    "send_queue_bytes",
                    parsed.send_queue_bytes,
                    64 * 1024,
                )?,
                max_unterminated_bytes: positive_size(
                    "max_unterminated_bytes",
                    parsed.max_unterminated_bytes,
                    10 * 1024 * 1024,
                )?,
                telnet: parsed.telnet.unwrap_or(false),
                passwords_need_tls: parsed.require_tls_for_passwords.unwrap_or(true),
                tls_port: None,
                web_port: None,
                web_tls: parsed.web_tls.unwrap_or(false),
            },
            broker_queue_bytes: positive_size(
                "broker_queue_bytes",
                parsed.broker_queue_bytes,
                4 << 20,
            )?,
            ring_bytes: match parsed.ring_bytes {
                Some(bytes) if !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&bytes) => {
                    return Err(invalid(
                        "ring_bytes",
                        format!("from {MIN_RING_BYTES} to {MAX_RING_BYTES}"),
                    ));
                }
                Some(bytes) => bytes.next_power_of_two(),
                None => crate::ring::DEFAULT_RING_BYTES,
            },
            max_rooms: positive_size("max_rooms", parsed.max_rooms, 256)?,
            history_lines: match parsed.history_lines {
                Some(lines) if lines > RECENT_LINES => {
                    return Err(invalid("history_lines", format!("at most {}", RECENT_LINES)));
                }
                Some(lines) => lines,
                None => DEFAULT_HISTORY_LINES,
            },
            state_dir: parsed.state_dir.unwrap_or_else(default_state_dir),
            history_days: match parsed.history_days {
                Some(days) if days > MAX_HISTORY_DAYS => {
                    return Err(invalid("history_days", format!("at most {MAX_HISTORY_DAYS}")));
                }
                Some(days) => days,
                None => 30,
            },
            database: match parsed.database {
                Some(text) if text.is_empty() => None,
                Some(text) => Some(Database::parse(&text).map_err(|why| invalid("database", why))?),
                None => None,
            },
            database_password_file: match parsed.database_password_file {
                Some(path) if !path.is_absolute() => {
                    return Err(invalid("database_password_file", "an absolute path".into()));
                }
                path => path,
            },
            admin_group: match parsed.admin_group {
                Some(group) if group.is_empty() => None,
                Some(group) => Some(group),
                None => Some(DEFAULT_ADMIN_GROUP.to_string()),
            },
            tls_listen,
            tls_listen_is_default,
            tls_cert,
            tls_key,
            accounts: parsed.accounts.unwrap_or(AccountsMode::Optional),
            password_cost: KdfCost { memory_kib: password_memory_kib, passes: password_passes },
            kept_messages: positive_size("kept_messages", parsed.kept_messages, 50)?,
            web_listen,
            web_listen_is_default,
            web_tls: parsed.web_tls.unwrap_or(false),
            web_allowed_origins,
            trusted_proxies,
            cluster: None,
        };
        config.cluster =
            cluster_settings(parsed.cluster, config.database.as_ref(), config.history_days)
                .map_err(|(key, message)| invalid(key, message))?;
        Ok(config)
    }
}

/// Checks `[cluster]`: a Redis URL, an absolute password file, a node name (the host name by
/// default), and a PostgreSQL `database`, without which the nodes would keep separate
/// accounts and histories.
fn cluster_settings(
    file: Option<ClusterFile>,
    database: Option<&Database>,
    history_days: u32,
) -> Result<Option<ClusterSettings>, (&'static str, String)> {
    let Some(file) = file else { return Ok(None) };
    let redis = match file.redis {
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => url,
        Some(_) => return Err(("redis", "a redis:// or rediss:// URL".into())),
        None => return Err(("redis", "is required in [cluster] (redis://HOST:PORT/DB)".into())),
    };
    if let Some(path) = &file.redis_password_file
        && !path.is_absolute()
    {
        return Err(("redis_password_file", "an absolute path".into()));
    }
    let node = match file.node {
        Some(node) => node,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .map(|name| name.split('.').next().unwrap_or_default().to_string())
            .unwrap_or_default(),
    };
    if !is_node_name(&node) {
        return Err((
            "node",
            format!(
                "{node:?} cannot name a node: 1 to {MAX_NODE_NAME} letters, digits, '-', '_' or '.'"
            ),
        ));
    }
    if !matches!(database, Some(Database::Postgres(_))) || history_days == 0 {
        return Err((
            "database",
            "a cluster needs database = \"postgres://...\" (shared accounts and history) and history_days above 0".into(),
        ));
    }
    Ok(Some(ClusterSettings { redis, redis_password_file: file.redis_password_file, node }))
}

/// What each key wants, in the words an operator would use (the rest of a wrong-type or empty
/// value error: TOML's own says "string values must be quoted" for a value left empty, and
/// "expected u32" for a word).
fn wants(key: &str) -> Option<&'static str> {
    Some(match key {
        "login_grace_seconds"
        | "idle_timeout_seconds"
        | "keepalive_seconds"
        | "penalty_seconds"
        | "penalty_max_seconds"
        | "max_clients"
        | "max_clients_per_ip"
        | "max_startups_per_ip"
        | "flood_queue"
        | "send_queue_bytes"
        | "broker_queue_bytes"
        | "ring_bytes"
        | "max_rooms"
        | "max_unterminated_bytes"
        | "history_lines"
        | "history_days"
        | "password_memory_kib"
        | "password_passes"
        | "kept_messages" => "a whole number, without quotes",
        "penalty_trips" | "flood_burst" | "error_budget" => {
            "a whole number from 0 to 4294967295, without quotes"
        }
        "flood_lines_per_second" => "a number, without quotes (a decimal point is allowed)",
        "telnet" | "require_tls_for_passwords" | "web_tls" => "true or false, without quotes",
        "tls_listen" | "web_listen" => {
            "a list of \"ADDR:PORT\" strings in square brackets (`[]` for none)"
        }
        "web_allowed_origins" => "a list of \"https://HOST\" strings in square brackets",
        "trusted_proxies" => "a list of addresses or networks (\"10.0.0.0/8\") in square brackets",
        "tls_cert" | "tls_key" => "a path in double quotes",
        "accounts" => "\"optional\", \"required\" or \"off\", in double quotes",
        "listen" => "a list of \"ADDR:PORT\" strings in square brackets",
        "log" => "\"syslog\" or \"stderr\", in double quotes",
        "syslog_format" => "\"rfc3164\" or \"rfc5424\", in double quotes",
        "max_startups" => "\"start:rate:full\" in double quotes",
        "user" | "admin_group" => "a name in double quotes (\"\" for none)",
        "redis" => "a redis:// or rediss:// URL in double quotes",
        "node" => "a name in double quotes (letters, digits, '-', '_', '.')",
        "runtime_dir"
        | "state_dir"
        | "syslog_socket"
        | "database_password_file"
        | "redis_password_file" => "a path in double quotes",
        "database" => "a postgres:// URL or an absolute file path, in double quotes",
        _ => return None,
    })
}

/// The example line for `key` in the shipped settings file (`key = default`).
fn example(key: &str) -> Option<&'static str> {
    include_str!("../packaging/chatd.toml").lines().find_map(|line| {
        let setting = line.strip_prefix('#')?;
        let (name, _) = setting.split_once(" = ")?;
        (name == key).then_some(setting)
    })
}

/// A wrong-type or empty value in plain words: "line N: KEY has no value: it wants a whole
/// number, without quotes, like `max_clients = 1024` (or remove the line for the default)".
/// `None` for other errors (an unknown key, broken syntax), which TOML words well enough.
fn plain_error(text: &str, err: &toml::de::Error) -> Option<String> {
    let span = err.span()?;
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1)?;
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    let wants = wants(key)?;
    let message = err.message();
    let type_error = message.contains("invalid type")
        || message.contains("invalid value")
        || message.contains("string values must be quoted")
        || message.contains("expected");
    if !type_error || message.contains("unknown field") {
        return None;
    }
    let value = value.split('#').next().unwrap_or("").trim();
    let like = example(key).map(|line| format!(", like `{line}`")).unwrap_or_default();
    if value.is_empty() {
        Some(format!(
            "line {number}: {key} has no value: it wants {wants}{like} (or remove the line for \
             the default)"
        ))
    } else {
        Some(format!("line {number}: {key} = {value} is not what it wants: {wants}{like}"))
    }
}

/// A TOML error as one log-friendly line: "line N: what is wrong (in `the line`)".
fn one_line_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let number = text[..start].matches('\n').count() + 1;
            let line = text.lines().nth(number - 1).unwrap_or("").trim();
            format!("line {number}: {message} (in `{line}`)")
        }
        None => message,
    }
}

/// An optional path that must be absolute (the daemon changes directory).
fn absolute(path: Option<PathBuf>, key: &str) -> Result<Option<PathBuf>, String> {
    match path {
        Some(path) if !path.is_absolute() => Err(format!("{key} is an absolute path")),
        path => Ok(path),
    }
}

/// A list of listen addresses, each `ADDR:PORT`; `key` names the setting in errors.
fn addresses(
    invalid: impl Fn(&'static str, String) -> ConfigError,
    key: &'static str,
    list: &[String],
    example_port: u16,
) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse().map_err(|_| {
                invalid(
                    key,
                    format!(
                        "invalid address {s:?}: expected ADDR:PORT, like 0.0.0.0:{example_port} or [::]:{example_port}"
                    ),
                )
            })
        })
        .collect()
}

/// Whether `text` is a web origin as browsers send it: `http://` or `https://`, a host, maybe
/// a port, and nothing after (no path, no trailing slash).
fn is_origin(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@'])
}

fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        SocketAddr::from(([0u16; 8], DEFAULT_PORT)),
    ]
}

/// `/var/lib/chatd` for root; otherwise `$XDG_STATE_HOME/chatd`, or `~/.local/state/chatd`.
fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/chatd");
    }
    match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
        (Some(dir), _) if !dir.is_empty() => PathBuf::from(dir).join("chatd"),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".local/state/chatd"),
        _ => PathBuf::from(format!("/tmp/chatd-state-{}", nix::unistd::geteuid())),
    }
}

/// `/run/chatd` for root; otherwise `$XDG_RUNTIME_DIR/chatd`, or a per-user directory in /tmp.
pub fn default_runtime_dir() -> PathBuf {
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
        assert_eq!(config.session.login_grace, Duration::from_secs(60));
        assert_eq!(config.log, LogTarget::Syslog);
        assert_eq!(config.user.as_deref(), Some("chatd"));
        assert_eq!(config.admission.max_clients, 1024);
        assert_eq!(config.admission.max_clients_per_ip, 8);
        assert_eq!(config.admission.max_startups, MaxStartups { start: 10, rate: 30, full: 100 });
        assert_eq!(config.session.idle_timeout, None);
        assert_eq!(config.session.flood_burst, 10);
        assert_eq!(config.session.send_queue_bytes, 64 * 1024);
    }

    #[test]
    fn file_values_apply_and_the_command_line_wins() {
        let f = file(
            "listen = [\"127.0.0.1:9\"]\nlogin_grace_seconds = 5\nlog = \"stderr\"\nuser = \"\"\n",
        );
        let config = Config::load(Some(f.path()), Overrides::default()).expect("valid");
        assert_eq!(config.listen, vec!["127.0.0.1:9".parse().expect("addr")]);
        assert_eq!(config.session.login_grace, Duration::from_secs(5));
        assert_eq!(config.user, None);
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
        // The [cluster] table comes last, and needs a PostgreSQL database: checked below.
        let (top, cluster) = example.split_once("\n#[cluster]\n").expect("a [cluster] table");
        let uncommented: String = top
            .lines()
            .filter_map(|line| {
                line.strip_prefix('#').filter(|rest| !rest.starts_with(' ') && !rest.is_empty())
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let f = file(&uncommented);
        let mut config =
            Config::load(Some(f.path()), Overrides::default()).expect("example parses");
        let defaults = Config::load(None, Overrides::default()).expect("defaults");
        // The example names /dev/log, where the default search finds syslog on Linux.
        assert_eq!(config.syslog.socket.take(), Some(PathBuf::from("/dev/log")));
        // And the password file an operator would make (none by default).
        assert_eq!(
            config.database_password_file.take(),
            Some(PathBuf::from("/etc/chatd/db-password"))
        );
        // And a certificate from a CA (none by default: a self-signed one).
        assert_eq!(config.tls_cert.take(), Some(PathBuf::from("/etc/chatd/tls/fullchain.pem")));
        assert_eq!(config.tls_key.take(), Some(PathBuf::from("/etc/chatd/tls/privkey.pem")));
        assert_eq!(
            Config {
                listen_is_default: true,
                tls_listen_is_default: true,
                web_listen_is_default: true,
                // Named in the file, the user must exist; by default it may fall back.
                user_is_default: true,
                runtime_dir: defaults.runtime_dir.clone(),
                state_dir: defaults.state_dir.clone(),
                ..config
            },
            defaults
        );
        let keys = example
            .lines()
            .filter(|line| {
                line.strip_prefix('#').is_some_and(|rest| !rest.starts_with(' '))
                    && line.contains(" = ")
            })
            .count();
        assert_eq!(keys, 47, "packaging/chatd.toml should list all 47 keys");
        // The [cluster] table, uncommented below a PostgreSQL database, parses as written.
        let cluster_keys: String = cluster
            .lines()
            .filter_map(|line| line.strip_prefix('#').filter(|rest| rest.contains(" = ")))
            .map(|line| format!("{line}\n"))
            .collect();
        let f = file(&format!("database = \"postgres://chatd@/chatd\"\n[cluster]\n{cluster_keys}"));
        let config = Config::load(Some(f.path()), Overrides::default()).expect("cluster parses");
        assert_eq!(
            config.cluster,
            Some(ClusterSettings {
                redis: "redis://10.0.0.10:6379/0".into(),
                redis_password_file: Some(PathBuf::from("/etc/chatd/redis.password")),
                node: "a".into(),
            })
        );
    }

    #[test]
    fn a_cluster_needs_postgresql_and_a_node_name() {
        let sqlite = file("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\nnode = \"a\"\n");
        let err = Config::load(Some(sqlite.path()), Overrides::default()).expect_err("sqlite");
        assert!(err.to_string().contains("a cluster needs database"), "{err}");
        let bad_node = file(
            "database = \"postgres://x@/y\"\n[cluster]\nredis = \"redis://h:1/0\"\nnode = \"a b\"\n",
        );
        let err = Config::load(Some(bad_node.path()), Overrides::default()).expect_err("node");
        assert!(err.to_string().contains("cannot name a node"), "{err}");
        let no_url = file("database = \"postgres://x@/y\"\n[cluster]\nnode = \"a\"\n");
        let err = Config::load(Some(no_url.path()), Overrides::default()).expect_err("redis");
        assert!(err.to_string().contains("redis"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let f = file("log = \"stderr\"\nlogin_grace = 5\n");
        let err = Config::load(Some(f.path()), Overrides::default()).expect_err("unknown key");
        assert!(
            err.to_string().contains("login_grace") && err.to_string().contains("line 2"),
            "{err}"
        );
        let f = file("\n\nmax_clients = 0\n");
        let err = Config::load(Some(f.path()), Overrides::default()).expect_err("zero");
        assert!(err.to_string().contains("line 3: max_clients: must be at least 1"), "{err}");
        let f = file("max_startups = \"30:10:5\"\n");
        assert!(Config::load(Some(f.path()), Overrides::default()).is_err());
        let overrides = Overrides { listen: vec!["nonsense".into()], ..Overrides::default() };
        assert!(Config::load(None, overrides).is_err());
    }

    #[test]
    fn max_startups_forms() {
        assert_eq!("10:30:100".parse(), Ok(MaxStartups { start: 10, rate: 30, full: 100 }));
        assert_eq!("5".parse(), Ok(MaxStartups { start: 5, rate: 100, full: 5 }));
        assert!("0:10:5".parse::<MaxStartups>().is_err());
        assert!("1:200:5".parse::<MaxStartups>().is_err());
    }

    #[test]
    fn an_empty_or_wrong_value_says_what_the_key_wants_in_plain_words() {
        let message = |text: &str| {
            let f = file(text);
            Config::load(Some(f.path()), Overrides::default()).expect_err("invalid").to_string()
        };
        let empty = message("log = \"stderr\"\nmax_clients =\n");
        assert!(
            empty.ends_with(
                "line 2: max_clients has no value: it wants a whole number, without quotes, like \
                 `max_clients = 1024` (or remove the line for the default)"
            ),
            "{empty}"
        );
        let word = message("penalty_trips = \"many\"\n");
        assert!(
            word.ends_with(
                "line 1: penalty_trips = \"many\" is not what it wants: a whole number from 0 to \
                 4294967295, without quotes, like `penalty_trips = 10`"
            ),
            "{word}"
        );
        assert!(!word.contains("u32"), "{word}");
        assert!(message("user =  # who\n").contains("user has no value: it wants a name"));
        assert!(message("telnet = \"yes\"\n").contains("is not what it wants: true or false"));
        assert!(message("user = chatd\n").contains("user = chatd is not what it wants: a name in"));
        let unknown = message("login_grace = 5\n");
        assert!(unknown.contains("unknown field `login_grace`"), "left to TOML: {unknown}");
    }
}
