//! The session's sandbox and the children's hardening, seen from outside on the real daemon:
//! no process can be dumped or traced by its own user, sessions run with `no_new_privs` under
//! Landlock, have room for a password derivation within their memory limit, and still find
//! the broker again after it was killed. What Landlock refuses a session is checked from the
//! inside, by the unit tests of `sandbox` (a forked child confines itself and tries).

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::reliability::{soft_limit, status_field};
use crate::util::{Daemon, process_state, wait_until};

/// The uid `setpriv` starts chatd as: `nobody`.
const NOBODY: u32 = 65534;

/// chatd started directly as `nobody`, not as root: no change of user makes its processes
/// undumpable or sets `no_new_privs` on the way, so whatever is seen is chatd's own doing.
fn started_as_nobody() -> Daemon {
    let runtime = tempfile::tempdir().expect("temp runtime dir");
    nix::unistd::chown(runtime.path(), Some(NOBODY.into()), Some(NOBODY.into()))
        .expect("give the runtime dir to nobody");
    let launcher = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"];
    Daemon::start_on_through(Arc::new(runtime), &launcher, "")
}

/// A line of /proc/PID/status as a number of KiB (`VmPeak:   17888 kB`).
fn status_kib(pid: i32, label: &str) -> u64 {
    let field = status_field(pid, label);
    field.trim_end_matches("kB").trim().parse().unwrap_or_else(|_| panic!("{label} {field:?}"))
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: starts chatd as another user (setpriv)")]
fn no_process_is_dumpable_and_sessions_are_confined_with_room_to_derive_a_password() {
    crate::util::assert_root_as_built();
    let daemon = started_as_nobody();
    daemon.wait_for_log("sessions are confined by Landlock");
    let alice = daemon.login("alice");
    let session = daemon.holders_of(&alice)[0];
    let broker = daemon.broker_pid(1);
    for (role, pid) in [("master", daemon.pid()), ("broker", broker), ("session", session)] {
        assert_eq!(
            status_field(pid, "Uid:"),
            "65534\t65534\t65534\t65534",
            "{role} runs as nobody"
        );
        // Not dumpable: the kernel gives its /proc files to root, so that nobody's other
        // processes cannot read its memory, its descriptors or its environment, nor trace it.
        let status = std::fs::metadata(format!("/proc/{pid}/status")).expect("stat");
        assert_eq!(status.uid(), 0, "the {role}'s /proc/{pid}/status belongs to root");
        assert_eq!(soft_limit(pid, "Max core file size"), "0", "core files of the {role}");
    }
    // Set by the sandbox: chatd switched no user here, which is what sets it otherwise.
    assert_eq!(status_field(session, "NoNewPrivs:"), "1", "no_new_privs of the session");
    // Its memory limit leaves room, beyond all it used so far, for a derivation at the default
    // cost (the unit test `master::children::tests` derives in that room).
    let limit: u64 = soft_limit(session, "Max address space").parse().expect("a limit");
    let peak = status_kib(session, "VmPeak:") * 1024;
    let derivation = u64::from(chatd::accounts::KdfCost::DEFAULT.memory_kib) * 1024;
    assert!(
        limit >= peak + derivation,
        "limit {limit} bytes, peak {peak}: no room for a derivation of {derivation}"
    );
}

#[test]
fn a_confined_session_finds_the_broker_again_after_it_was_killed() {
    let daemon = Daemon::start();
    daemon.wait_for_log("sessions are confined by Landlock");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let broker = daemon.broker_pid(1);
    kill(Pid::from_raw(broker), Signal::SIGKILL).expect("kill the broker");
    assert_ne!(daemon.broker_pid(2), broker);
    wait_until("the old broker is reaped", || process_state(broker).is_none());
    for client in [&mut alice, &mut bob] {
        client.expect("*** The chat service restarted; you are still in lobby.");
    }
    alice.send("still here, behind Landlock");
    bob.expect("<alice> still here, behind Landlock");
    bob.send("/who");
    let listing = bob.expect_prefix("*** In lobby (");
    assert!(listing.contains("alice") && listing.contains("bob"), "{listing}");
    assert!(
        !daemon.log().iter().any(|line| line.contains("cannot confine")),
        "every session confined itself:\n{}",
        daemon.log().join("\n")
    );
}
