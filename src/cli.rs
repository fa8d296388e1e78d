//! The `chatd` command line. Parsing only: `bin/chatd.rs` turns it into settings and a role.

use std::path::PathBuf;

use clap::Parser;

use crate::logging::LogTarget;

/// A small, hardened chat daemon: connect with telnet or netcat, pick a nickname, talk in rooms.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about)]
pub struct Cli {
    /// Address to listen on, as ADDR:PORT (repeatable). Default: 0.0.0.0:2323 and [::]:2323.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<String>,

    /// Directory for broker.sock. Default: /run/chatd as root, else $XDG_RUNTIME_DIR/chatd.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Where to log. Default: syslog (facility daemon).
    #[arg(long, value_enum, value_name = "TARGET")]
    pub log: Option<LogTarget>,

    /// TOML settings file. Optional: chatd runs with built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check a settings file (default: the --config file) and exit: 0 if it is valid, 1 with
    /// the bad key and line if not. For ExecReload and packaging scripts.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub check_config: Option<Option<PathBuf>>,
}
