//! `chatd`: the daemon ([`chatd::program`]).

fn main() -> std::process::ExitCode {
    chatd::program::main(env!("CARGO_PKG_VERSION"))
}
