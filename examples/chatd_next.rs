//! chatd built with another version string: the "new release" the upgrade tests install
//! (tests/upgrade). Built by `cargo test --all-targets`; never packaged.

fn main() -> std::process::ExitCode {
    chatd::program::main(concat!(env!("CARGO_PKG_VERSION"), "+next"))
}
