//! `chatd`: parse the command line and settings, start logging, run the master.

use std::process::ExitCode;

use clap::Parser;
use log::LevelFilter;

use chatd::cli::Cli;
use chatd::config::{ConfigSource, Overrides};
use chatd::logging::{self, LogTarget};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides { listen: cli.listen, runtime_dir: cli.runtime_dir, log: cli.log };
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
    let source = ConfigSource { file: cli.config, overrides };
    let config = match source.load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("chatd: {err}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log, LevelFilter::Info);
    match chatd::master::run(&config, source) {
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
