//! The sandbox, applied for real: each test forks, the child confines itself as a session does
//! and checks what it can still do, and the parent reads the child's verdict from its exit
//! status (a Landlock domain cannot be left, so the test process itself must stay outside).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::*;

/// Forks a child that runs `checks` and leaves through `_exit` with the 1-based index in
/// `names` of the check that failed (0: none), so that nothing of the test harness runs in it.
fn fork_checking(names: &[&str], checks: impl FnOnce() -> Option<&'static str>) -> Pid {
    // SAFETY: the child runs only `checks` (system calls, and allocations, which glibc makes
    // safe after fork) and `_exit`; it never returns into the harness's frames, takes none of
    // its locks (no printing) and runs no destructor of the parent's objects.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            let failed = checks();
            let index =
                failed.map(|name| names.iter().position(|n| *n == name).map_or(99, |i| i + 1));
            // SAFETY: `_exit` ends the process at once, which is all this child has left to do.
            unsafe { nix::libc::_exit(index.unwrap_or(0) as i32) }
        }
        ForkResult::Parent { child } => child,
    }
}

/// Waits for a child of [`fork_checking`]: the name of the check that failed, if one did.
fn verdict(names: &[&str], child: Pid) -> Option<String> {
    match waitpid(child, None).expect("waitpid") {
        WaitStatus::Exited(_, 0) => None,
        WaitStatus::Exited(_, code) => Some(
            names.get(code as usize - 1).map_or(format!("exit status {code}"), |n| n.to_string()),
        ),
        other => Some(format!("the child ended with {other:?}")),
    }
}

/// Runs `checks` in a forked child: the name of the check that failed, if one did.
pub(crate) fn in_child(
    names: &[&str],
    checks: impl FnOnce() -> Option<&'static str>,
) -> Option<String> {
    let child = fork_checking(names, checks);
    verdict(names, child)
}

/// The errno of a failed result, as the kernel gave it.
fn errno_of<T>(result: io::Result<T>) -> Option<Errno> {
    result.err().and_then(|err| err.raw_os_error()).map(Errno::from_raw)
}

fn assert_kernel_has_landlock() {
    assert_ne!(
        expected_confinement().expect("the ruleset builds"),
        Confinement::None,
        "these tests need a kernel with Landlock (it confines sessions only where it has it)"
    );
}

#[test]
fn a_confined_session_cannot_open_the_state_directory_but_reads_the_local_time() {
    assert_kernel_has_landlock();
    let state = tempfile::tempdir().expect("temp dir");
    let database = state.path().join("chatd.db");
    std::fs::write(&database, "every account's verifier").expect("write");
    let names = [
        "confine",
        "no_new_privs",
        "open the database: EACCES",
        "list the state directory: EACCES",
        "create a file there: EACCES",
        "read /proc/self/status: EACCES",
        "read /etc/localtime",
        "read a zone under /usr/share/zoneinfo",
        "format a local time",
    ];
    let failed = in_child(&names, || {
        if confine_session().ok() != Some(Confinement::Full) {
            return Some("confine");
        }
        if nix::sys::prctl::get_no_new_privs().ok() != Some(true) {
            return Some("no_new_privs");
        }
        if errno_of(std::fs::File::open(&database)) != Some(Errno::EACCES) {
            return Some("open the database: EACCES");
        }
        if errno_of(std::fs::read_dir(state.path())) != Some(Errno::EACCES) {
            return Some("list the state directory: EACCES");
        }
        if errno_of(std::fs::File::create(state.path().join("new"))) != Some(Errno::EACCES) {
            return Some("create a file there: EACCES");
        }
        if errno_of(std::fs::read("/proc/self/status")) != Some(Errno::EACCES) {
            return Some("read /proc/self/status: EACCES");
        }
        if Path::new("/etc/localtime").exists() && std::fs::read("/etc/localtime").is_err() {
            return Some("read /etc/localtime");
        }
        if Path::new("/usr/share/zoneinfo/UTC").exists()
            && std::fs::read("/usr/share/zoneinfo/UTC").is_err()
        {
            return Some("read a zone under /usr/share/zoneinfo");
        }
        if sys::local_hh_mm(0) == "--:--" {
            return Some("format a local time");
        }
        None
    });
    assert_eq!(failed, None, "in a confined child");
}

/// What a broker restart asks of a session: connecting to `broker.sock` again, even where the
/// socket (and its directory) were made after the session confined itself, as when the runtime
/// directory was removed and re-created. The kernel (6.18 here, Landlock ABI 7) checks no right
/// for connecting to a pathname socket; creating one, a right the session lacks, is refused.
#[test]
fn a_confined_session_reconnects_to_a_broker_socket_made_after_it_was_confined() {
    assert_kernel_has_landlock();
    let top = tempfile::tempdir().expect("temp dir");
    let socket = top.path().join("run").join("broker.sock");
    let (mut to_parent, mut to_child) = UnixStream::pair().expect("socket pair");
    let names = [
        "confine",
        "tell the parent",
        "hear the socket is there",
        "connect to broker.sock",
        "bind a socket of its own: EACCES",
    ];
    let child_socket = socket.clone();
    let own = top.path().join("own.sock");
    // The child's side first: the parent's side below runs while the child waits.
    let run_child = move || {
        if confine_session().ok() != Some(Confinement::Full) {
            return Some("confine");
        }
        if to_parent.write_all(b"c").is_err() {
            return Some("tell the parent");
        }
        let mut byte = [0u8; 1];
        if to_parent.read_exact(&mut byte).is_err() {
            return Some("hear the socket is there");
        }
        if UnixStream::connect(&child_socket).is_err() {
            return Some("connect to broker.sock");
        }
        if errno_of(UnixListener::bind(&own)) != Some(Errno::EACCES) {
            return Some("bind a socket of its own: EACCES");
        }
        None
    };
    let child = fork_checking(&names, run_child);
    let mut byte = [0u8; 1];
    let confined = to_child.read_exact(&mut byte).is_ok();
    if confined {
        std::fs::create_dir(top.path().join("run")).expect("mkdir run");
        let listener = UnixListener::bind(&socket).expect("bind broker.sock");
        to_child.write_all(b"s").expect("tell the child");
        assert_eq!(verdict(&names, child), None, "in a confined child");
        drop(listener);
    } else {
        panic!("the child did not confine itself: {:?}", verdict(&names, child));
    }
}

#[test]
fn a_confined_session_cannot_reach_tcp_or_signal_outside_its_sandbox() {
    assert_kernel_has_landlock();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let parent = nix::unistd::getpid();
    let names =
        ["confine", "connect to a TCP port: EACCES", "signal the parent: EPERM", "signal itself"];
    let failed = in_child(&names, || {
        if confine_session().ok() != Some(Confinement::Full) {
            return Some("confine");
        }
        if errno_of(std::net::TcpStream::connect(address)) != Some(Errno::EACCES) {
            return Some("connect to a TCP port: EACCES");
        }
        if nix::sys::signal::kill(parent, None) != Err(Errno::EPERM) {
            return Some("signal the parent: EPERM");
        }
        if nix::sys::signal::kill(nix::unistd::getpid(), None).is_err() {
            return Some("signal itself");
        }
        None
    });
    assert_eq!(failed, None, "in a confined child");
}

#[test]
fn the_check_at_start_expects_what_a_session_gets() {
    let expected = expected_confinement().expect("the ruleset builds");
    let names = ["confined as expected"];
    let failed = in_child(&names, move || {
        (confine_session().ok() != Some(expected)).then_some("confined as expected")
    });
    assert_eq!(failed, None, "expected {expected:?}");
}

#[test]
fn the_warning_says_why_sessions_are_not_confined_and_what_to_do() {
    let filtered = why_no_landlock(Some(Errno::EPERM));
    assert!(filtered.contains("SystemCallFilter=landlock_create_ruleset"), "{filtered}");
    assert!(why_no_landlock(Some(Errno::EOPNOTSUPP)).contains("lsm="));
    assert!(why_no_landlock(Some(Errno::ENOSYS)).contains("has no Landlock"));
    // This kernel has it, and nothing here filters the call.
    assert!(sys::landlock_abi().is_ok_and(|abi| abi >= 1), "{:?}", sys::landlock_abi());
}

/// Installs a seccomp filter in this (child) process that refuses Landlock's three calls with
/// EPERM, as systemd's `SystemCallFilter=@system-service` does without the shipped addition.
fn refuse_landlock_calls() -> bool {
    use nix::libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO, sock_filter, sock_fprog,
    };
    let statement = |code: u32, k: u32| sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump_if = |k: i64, jt: u8| sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf: 0,
        k: k as u32,
    };
    let filter = [
        // The system call's number (the first word of `struct seccomp_data`).
        statement(BPF_LD | BPF_W | BPF_ABS, 0),
        jump_if(nix::libc::SYS_landlock_create_ruleset, 3),
        jump_if(nix::libc::SYS_landlock_add_rule, 2),
        jump_if(nix::libc::SYS_landlock_restrict_self, 1),
        statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | Errno::EPERM as u32),
    ];
    let program = sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    if nix::sys::prctl::set_no_new_privs().is_err() {
        return false;
    }
    // SAFETY: `program` points at `filter`, both alive for the call, which copies them.
    let installed = unsafe {
        nix::libc::prctl(
            nix::libc::PR_SET_SECCOMP,
            nix::libc::SECCOMP_MODE_FILTER,
            &program as *const sock_fprog,
        )
    };
    installed == 0
}

/// Under a filter that refuses Landlock (the shipped units' `@system-service` alone), the check
/// at start sees it and says why, and a session goes on unconfined instead of failing.
#[test]
fn under_a_filter_that_refuses_landlock_sessions_go_on_unconfined_and_the_check_says_why() {
    let names = ["install the filter", "the kernel says EPERM", "expected: none", "go on"];
    let failed = in_child(&names, || {
        if !refuse_landlock_calls() {
            return Some("install the filter");
        }
        if sys::landlock_abi() != Err(Errno::EPERM) {
            return Some("the kernel says EPERM");
        }
        if expected_confinement().ok() != Some(Confinement::None) {
            return Some("expected: none");
        }
        (confine_session().ok() != Some(Confinement::None)).then_some("go on")
    });
    assert_eq!(failed, None, "in a filtered child");
}
