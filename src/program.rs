//! The `chatd` program: parse the command line and settings, start logging, run the chosen
//! mode. `src/bin/chatd.rs` calls [`main`] with the build's version; a build with another
//! version string (the upgrade tests' `tests/bin/chatd_next.rs`) calls it with its own.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use log::LevelFilter;

use crate::cli::{Cli, Mode};
use crate::config::{ConfigSource, Overrides};
use crate::logging::{self, LogTarget};
use crate::modes;
use crate::release::{self, Compatibility};

/// Runs chatd as the command line says, reporting `version` as its own.
pub fn main(version: &'static str) -> ExitCode {
    release::set_version(version);
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let overrides = Overrides {
        listen: cli.listen,
        web_listen: cli.web_listen,
        runtime_dir: cli.runtime_dir,
        log: cli.log,
    };
    if let Some(file) = cli.check_config {
        let file = file.or(cli.config);
        let shown = file
            .as_ref()
            .map_or_else(|| "built-in defaults".to_string(), |f| f.display().to_string());
        return match (ConfigSource { file, overrides }).load() {
            Ok(_) => {
                println!("{shown}: ok");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("chatd: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.check_upgrade {
        // An upgrading master runs this with its own command line: the settings it will start
        // with, and the versions this build speaks.
        return match (ConfigSource { file: cli.config, overrides }).load() {
            Ok(_) => {
                println!("chatd {version}: {}", Compatibility::running().line());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("chatd: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.daemon && cli.mode.is_some() {
        eprintln!("chatd: --daemon is for the standalone daemon only");
        return ExitCode::from(2);
    }
    if cli.mode == Some(Mode::Session { inetd: false }) {
        eprintln!("chatd: `chatd session` needs --inetd: other sessions are forked by the master");
        return ExitCode::from(2);
    }
    let source = ConfigSource { file: cli.config, overrides };
    let config = match source.load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("chatd: {err}");
            return ExitCode::from(2);
        }
    };
    // Before anything is opened: the settings were good, so the new image will start too.
    let reexec = if cli.mode.is_none() { modes::reexec_with_malloc_tunables() } else { Ok(()) };
    logging::init(config.log, config.syslog.clone(), LevelFilter::Info);
    if let Err(err) = reexec {
        log::warn!("cannot re-execute with smaller malloc settings, going on without: {err}");
    }
    let result = match cli.mode {
        None => {
            let background =
                cli.daemon.then(|| crate::master::Background { pid_file: cli.pid_file.clone() });
            modes::standalone(&config, source, background).map(|()| 0)
        }
        Some(Mode::Broker) => modes::broker_alone(&config, source).map(|()| 0),
        Some(Mode::Inetd { tls }) => modes::inetd_session(&config, tls),
        Some(Mode::Session { .. }) => modes::inetd_session(&config, false),
    };
    match result {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(err) => {
            log::error!("{err}");
            if config.log != LogTarget::Stderr
                && !matches!(cli.mode, Some(Mode::Inetd { .. } | Mode::Session { .. }))
            {
                eprintln!("chatd: {err}");
            }
            ExitCode::FAILURE
        }
    }
}
