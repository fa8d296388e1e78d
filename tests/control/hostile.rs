//! control.sock against local users who are not operators, and operators' connections that
//! say nothing: the broker's memory and descriptors stay bounded and root keeps a way in.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use super::ok;
use crate::util::{Daemon, PATIENCE, rss_kib, wait_until};

/// Opens `count` connections to control.sock (each with SO_SNDTIMEO 2 s, so that a full
/// backlog cannot hang it), sends on each a header declaring `declared` bytes followed by
/// `body` bytes (nothing if `declared` is 0), prints `ready N` with the number connected, and
/// holds every connection. For each line on its standard input it prints `answered A closed C
/// open O`: how many of its connections have an answer waiting, were closed without one, or
/// are open with nothing to read. It ends when its standard input closes.
const HOLDER: &str = r#"
use strict; use Socket; $| = 1; $SIG{PIPE} = 'IGNORE';
my ($path, $count, $declared, $body) = @ARGV;
my $bytes = 'x' x $body;
my (@held, $connected);
for (1 .. $count) {
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_SNDTIMEO, pack('l!l!', 2, 0));
    next unless connect($s, pack_sockaddr_un($path));
    $connected++;
    if ($declared > 0) { syswrite($s, pack('N', $declared)); syswrite($s, $bytes); }
    push @held, $s;
}
print "ready ", $connected // 0, "\n";
while (<STDIN>) {
    my ($answered, $closed, $open) = (0, 0, 0);
    for my $s (@held) {
        my $got = recv($s, my $buf, 4096, MSG_PEEK | MSG_DONTWAIT);
        if (!defined $got) { $open++ } elsif (length $buf) { $answered++ } else { $closed++ }
    }
    print "answered $answered closed $closed open $open\n";
}
"#;

/// `games` (uid 5, group `games`, gid 60): neither root nor in the test daemons' admin group,
/// unless a test makes `games` that group.
const STRANGER: u32 = 5;
const GAMES_GID: u32 = 60;
/// `nobody`, whom the test daemons run as (a service user chatd switched to from root).
const DAEMON_UID: u32 = 65534;

/// A process of another uid holding connections to control.sock; killed when dropped.
struct Holder {
    child: Child,
    report: BufReader<std::process::ChildStdout>,
    connected: usize,
}

impl Holder {
    /// Runs [`HOLDER`] as `uid` and group `gid` (with a descriptor limit that lets it hold
    /// them all).
    fn open(
        daemon: &Daemon,
        (uid, gid): (u32, u32),
        count: usize,
        declared: usize,
        body: usize,
    ) -> Holder {
        let path = daemon.runtime_dir().join("control.sock");
        let mut child = Command::new("prlimit")
            .args(["--nofile=4096:4096", "--", "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--", "perl", "-e", HOLDER])
            .arg(&path)
            .args([count.to_string(), declared.to_string(), body.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run prlimit, setpriv and perl");
        let mut report = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        report.read_line(&mut line).expect("read the holder's report");
        let connected = line
            .strip_prefix("ready ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the holder said {line:?}"));
        Holder { child, report, connected }
    }

    /// How many of its connections were answered, closed without an answer, or are still
    /// open with nothing said.
    fn states(&mut self) -> (usize, usize, usize) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"count\n").expect("ask the holder");
        let mut line = String::new();
        self.report.read_line(&mut line).expect("read the holder's count");
        let numbers: Vec<usize> =
            line.split_whitespace().filter_map(|word| word.parse().ok()).collect();
        match numbers[..] {
            [answered, closed, open] => (answered, closed, open),
            _ => panic!("the holder said {line:?}"),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Descriptors the process holds.
fn open_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: connects to control.sock as another user (setpriv)"
)]
fn a_stranger_sending_unfinished_one_mib_frames_costs_the_broker_no_memory() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let broker = daemon.broker_pid(1);
    let mut alice = daemon.login("alice");
    let before = rss_kib(broker);
    let holder = Holder::open(&daemon, (STRANGER, GAMES_GID), 256, 1 << 20, (1 << 20) - 16);
    assert!(holder.connected > 0, "the holder connected nowhere");
    // Answered after every connection the holder made was accepted (one backlog, in order).
    ok(daemon.chatctl(&["status"]));
    let after = rss_kib(broker);
    assert!(
        after < before + 8 * 1024,
        "the broker grew from {before} KiB to {after} KiB for {} stranger connections",
        holder.connected
    );
    assert!(open_files(broker) < 64, "the broker holds {} descriptors", open_files(broker));
    alice.send("still here");
    alice.expect("<alice> still here");
    // Once per window, not once per connection.
    daemon.wait_for_log("notice: refused an operator connection from uid 5");
    let refusals =
        daemon.log().iter().filter(|line| line.contains("refused an operator connection")).count();
    assert_eq!(refusals, 1, "{:#?}", daemon.log());
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: connects to control.sock as another user (setpriv)"
)]
fn root_keeps_a_way_in_while_a_stranger_holds_1400_idle_connections() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let broker = daemon.broker_pid(1);
    // More than the broker's descriptor limit (max_clients + 256 = 1280).
    let mut holder = Holder::open(&daemon, (STRANGER, GAMES_GID), 1400, 0, 0);
    assert_eq!(holder.connected, 1400);
    let status = ok(daemon.chatctl(&["status"]));
    // Each was told why (chatctl shows it) and closed: the broker holds none of them.
    assert_eq!(holder.states(), (1400, 0, 0));
    assert!(status.contains(&format!("broker       pid {broker}")), "{status}");
    assert!(open_files(broker) < 64, "the broker holds {} descriptors", open_files(broker));
    let mut bob = daemon.login("bob");
    bob.send("hello");
    bob.expect("<bob> hello");
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: connects to control.sock as another user (setpriv)"
)]
fn operators_connections_are_capped_per_user_and_root_still_gets_in() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start_with_config("admin_group = \"games\"\n");
    let broker = daemon.broker_pid(1);
    // An operator (a member of the admin group) may use chatctl, but not hoard connections.
    let mut holder = Holder::open(&daemon, (STRANGER, GAMES_GID), 100, 0, 0);
    assert_eq!(holder.connected, 100);
    // Answered after the broker accepted all of the holder's (one backlog, in order).
    ok(daemon.chatctl(&["status"]));
    assert!(open_files(broker) < 64, "the broker holds {} descriptors", open_files(broker));
    let (answered, closed, open) = holder.states();
    assert_eq!(answered, 92, "refused at once: all but 8 (closed {closed}, open {open})");
    assert_eq!(closed + open, 8);
    let logged = daemon.wait_for_log("refused an operator connection from uid 5");
    assert!(logged.contains("8 of its own and 8 in all are open"), "{logged}");
    let as_operator = || {
        Command::new("setpriv")
            .args(["--reuid=games", "--regid=games", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_chatctl"))
            .arg("--runtime-dir")
            .arg(daemon.runtime_dir())
            .arg("status")
            .output()
            .expect("run setpriv")
    };
    // The held connections say nothing: they are closed after the request deadline, and the
    // uid may connect again.
    daemon.wait_for_log("no whole request within");
    wait_until("the silent connections are closed", || holder.states().2 == 0);
    ok(as_operator());
}

/// Every session child runs as the daemon's user: a compromised one must not be able to kick,
/// ban or stop. So when chatd switched to that user from root, it is no operator.
#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: runs chatctl as the daemon's user (setpriv)"
)]
fn the_user_the_sessions_run_as_is_no_operator() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let session = daemon.login("alice");
    let holders = daemon.holders_of(&session);
    let status = std::fs::read_to_string(format!("/proc/{}/status", holders[0])).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    assert!(uid_line.contains(&DAEMON_UID.to_string()), "the session runs as nobody: {uid_line}");
    let output = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_chatctl"))
        .arg("--runtime-dir")
        .arg(daemon.runtime_dir())
        .args(["shutdown", "--grace", "0"])
        .output()
        .expect("run setpriv");
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("permission denied: only root"), "{said}");
    assert!(!said.contains("user nobody"), "nobody is not offered as an operator: {said}");
    // Nothing happened: the daemon serves on and root still operates it.
    ok(daemon.chatctl(&["status"]));
    let mut bob = daemon.login("bob");
    bob.send("still open");
    bob.expect("<bob> still open");
}

#[test]
fn an_operators_connection_that_sends_nothing_or_half_a_request_is_closed_soon() {
    let daemon = Daemon::start();
    let path = daemon.runtime_dir().join("control.sock");
    let mut silent = UnixStream::connect(&path).expect("connect");
    let mut partial = UnixStream::connect(&path).expect("connect");
    partial.write_all(&[0, 0, 0, 100, 1, 2, 3]).expect("write");
    for stream in [&mut silent, &mut partial] {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("the broker closes the connection");
        assert!(rest.is_empty(), "no answer: {rest:?}");
    }
    // Closed by the broker (an end of file within PATIENCE, not a read timeout), and said why.
    daemon.wait_for_log("no whole request within");
    ok(daemon.chatctl(&["status"]));
}
