//! `chatd`: parse the command line and settings, start logging, run the master.

use std::process::ExitCode;

use clap::Parser;
use log::LevelFilter;

use chatd::cli::Cli;
use chatd::config::{Config, Overrides};
use chatd::logging::{self, LogTarget};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides { listen: cli.listen, runtime_dir: cli.runtime_dir, log: cli.log };
    let config = match Config::load(cli.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("chatd: {err}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log, LevelFilter::Info);
    match chatd::master::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err}");
            if config.log != LogTarget::Stderr {
                eprintln!("chatd: {err}");
            }
            ExitCode::FAILURE
        }
    }
}
