//! chatd built with another version string: the "new release" the upgrade tests install
//! (tests/upgrade), as `CARGO_BIN_EXE_chatd-next`; never packaged.

fn main() -> std::process::ExitCode {
    chatd::program::main(concat!(env!("CARGO_PKG_VERSION"), "+next"))
}
