//! Build script: tells the behaviour tests (`tests/`) whether they were built as root.
//!
//! Some behaviour tests can only run as root (chatd drops root, connects as other users,
//! installs a package). libtest has no way for a test to declare itself ignored while it
//! runs, so the decision is made here, at build time: built by a non-root user, the crate gets
//! `--cfg chatd_tests_unprivileged`, and each such test carries
//! `#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: ...")]`, so `cargo test` reports
//! it as ignored with its reason instead of as passed. Each of those tests also checks at run
//! time that it really is root (`util::assert_root_as_built`), so a binary built as root and
//! run as another user fails loudly rather than passing.
//!
//! It owns that one decision and nothing else: it generates no code, reads nothing but this
//! process's own status, and must never change what the library or the binaries do (no
//! `src/` file may name the cfg).

use std::fs;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(chatd_tests_unprivileged)");
    println!("cargo::rerun-if-changed=build.rs");
    // The effective uid is not an input cargo can track; a change of user shows in these.
    // (A binary built as one user and run as another is caught at run time instead.)
    for variable in ["USER", "LOGNAME", "SUDO_UID"] {
        println!("cargo::rerun-if-env-changed={variable}");
    }
    if effective_uid() != Some(0) {
        println!("cargo::rustc-cfg=chatd_tests_unprivileged");
    }
}

/// The effective uid of this build, from `/proc/self/status` (`Uid: real effective saved fs`);
/// None if it cannot be read, which counts as unprivileged.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}
