//! The `chatd` command line. Parsing only: `bin/chatd.rs` turns it into settings and a mode.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogTarget;

/// A small, hardened chat daemon: connect with telnet or netcat, pick a nickname, talk in rooms.
///
/// Without a subcommand, chatd runs standalone: it listens, and forks a broker and one session
/// per client. `chatd broker` and `chatd inetd` split that up for inetd-style deployments.
///
/// What rooms say is kept for `history_days` (30) in <state-dir>/chatd.db (SQLite), or in the
/// PostgreSQL server `database` names (chatd.toml(5)): newcomers see a room's last lines after
/// a restart too, and users type `/history [N]` for earlier pages and `/search WORDS` to find
/// lines (`/help` lists every command). Operators use chatctl(1): `backup`, `history`,
/// `forget`, `status`.
///
/// TLS: `tls_listen` (port 2324 by default, beside the default plain port) serves TLS from the
/// first byte, with telnet inside. Without `tls_cert`/`tls_key`, chatd makes a self-signed
/// certificate at first start, keeps it in <state-dir>/tls-cert.pem, and logs its SHA-256
/// fingerprint (also in `chatctl status` and the plain port's greeting). SIGHUP reads the
/// certificate again for new connections; a broken pair is refused and the old one kept.
///
/// Upgrades: `chatctl upgrade` (or SIGUSR2 to the master) runs the installed binary with
/// --check-upgrade, then executes it in place of the master (the same pid) and replaces the
/// broker; nobody is disconnected, and sessions keep their code until their clients leave.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,

    /// Address to listen on, as ADDR:PORT (repeatable). Default: 0.0.0.0:2323 and [::]:2323.
    /// Ignored when systemd passes listening sockets (LISTEN_FDS).
    #[arg(long = "listen", value_name = "ADDR:PORT", global = true)]
    pub listen: Vec<String>,
    /// Address to serve web browsers on (the page, the dashboard, the WebSocket), as ADDR:PORT
    /// (repeatable). Default: 0.0.0.0:8023 and [::]:8023, and none when --listen is given.
    /// Ignored when systemd passes listening sockets (one named "web" is a web listener).
    #[arg(long = "web-listen", value_name = "ADDR:PORT", global = true)]
    pub web_listen: Vec<String>,

    /// Directory for broker.sock. Default: /run/chatd as root, else $XDG_RUNTIME_DIR/chatd.
    #[arg(long, value_name = "DIR", global = true)]
    pub runtime_dir: Option<PathBuf>,

    /// Where to log. Default: syslog (facility daemon).
    #[arg(long, value_enum, value_name = "TARGET", global = true)]
    pub log: Option<LogTarget>,

    /// TOML settings file. Optional: chatd runs with built-in defaults.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Run in the background (double fork, setsid, chdir /, no terminal) for inits without
    /// systemd; the command returns once the daemon is ready. Standalone mode only.
    #[arg(long)]
    pub daemon: bool,

    /// With --daemon, write the daemon's pid here (removed when it stops). Put it in the
    /// runtime directory, which the daemon's user owns.
    #[arg(long, value_name = "FILE", requires = "daemon")]
    pub pid_file: Option<PathBuf>,

    /// Check a settings file (default: the --config file) and exit: 0 if it is valid, 1 with
    /// the bad key and line if not. For ExecReload and packaging scripts.
    #[arg(long, value_name = "FILE", num_args = 0..=1, global = true)]
    pub check_config: Option<Option<PathBuf>>,

    /// Check that this binary can take over a running chatd started with the same command
    /// line: exit 0 printing the protocol versions it speaks, or 1 with the settings' error.
    /// `chatctl upgrade` runs it first (its pre-flight).
    #[arg(long, conflicts_with = "check_config")]
    pub check_upgrade: bool,
}

/// What this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Mode {
    /// Serve only <runtime-dir>/broker.sock, for sessions started by inetd or systemd.
    Broker,
    /// Serve one client on standard input and output, as started by inetd, xinetd or a systemd
    /// socket with Accept=yes; the broker must be running.
    Inetd {
        /// The client speaks TLS from its first byte (a TLS port): the certificate is
        /// tls_cert/tls_key, or the self-signed one a standalone chatd made in state_dir.
        #[arg(long)]
        tls: bool,
    },
    /// One session; `chatd session --inetd` is `chatd inetd`.
    Session {
        /// The client is on standard input and output.
        #[arg(long)]
        inetd: bool,
    },
}
