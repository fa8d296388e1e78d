//! `chatctl`: control a running chatd over its control socket. See `chatd::ctl`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ExitCode::from(chatd::ctl::run(chatd::ctl::Ctl::parse()))
}
