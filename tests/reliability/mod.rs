//! Reliability behaviour: what happens when processes die and peers misbehave.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::talkers::crowd;
use crate::util::{Client, Daemon, process_state, wait_until};

/// Settings that let a test client send as fast as it can.
pub const NO_FLOOD_CONTROL: &str = "flood_burst = 100000\nflood_lines_per_second = 100000.0\n";

/// Each client says a marker and waits for every client's marker, so that everything sent
/// before is consumed and what comes after can be counted.
fn sync_markers(clients: &mut [(Client, String, &str)], tag: &str) {
    for (client, nick, _) in clients.iter_mut() {
        client.send(&format!("{tag} from {nick}"));
    }
    let everyone: Vec<(String, String)> =
        clients.iter().map(|(_, nick, room)| (nick.clone(), room.to_string())).collect();
    for (client, _, room) in clients.iter_mut() {
        let mut missing: HashSet<String> = everyone
            .iter()
            .filter(|(_, other_room)| other_room == room)
            .map(|(other, _)| format!("<{other}> {tag} from {other}"))
            .collect();
        while !missing.is_empty() {
            let line = client.next_line().expect("connection open");
            missing.remove(&line);
        }
    }
}

/// How many of `total` clients, dealt round-robin over `rooms`, land in room number `index`.
fn clients_per_room(total: usize, rooms: usize, index: usize) -> usize {
    total / rooms + usize::from(index < total % rooms)
}

#[test]
fn killing_the_broker_disconnects_nobody() {
    let daemon = Daemon::start_with_config("max_clients_per_ip = 50\n");
    let rooms = ["lobby", "rust", "tea"];
    let mut clients = crowd(daemon.port, 50, &rooms);
    sync_markers(&mut clients, "before");
    let seen_before: Vec<usize> = clients.iter().map(|(client, _, _)| client.seen.len()).collect();

    let broker = daemon.broker_pid(1);
    let killed = Instant::now();
    kill(Pid::from_raw(broker), Signal::SIGKILL).expect("kill the broker");
    let restarted = daemon.broker_pid(2);
    assert_ne!(restarted, broker);
    wait_until("the old broker is reaped", || process_state(broker).is_none());

    for (client, _, room) in clients.iter_mut() {
        client.expect(&format!("*** The chat service restarted; you are still in {room}."));
    }
    // One member of each room speaks; everyone in the room hears it.
    for room in rooms {
        let speaker = clients.iter().position(|(_, _, r)| *r == room).expect("a member");
        let nick = clients[speaker].1.clone();
        clients[speaker].0.send("back again");
        for (client, _, _) in clients.iter_mut().filter(|(_, _, r)| *r == room) {
            client.expect(&format!("<{nick}> back again"));
        }
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(2), "chatting again took {took:?}");
    sync_markers(&mut clients, "after");

    for ((client, _, room), before) in clients.iter_mut().zip(seen_before) {
        let lines_since_kill = &client.seen[before..];
        let system: Vec<&String> =
            lines_since_kill.iter().filter(|l| l.starts_with("*** ")).collect();
        assert_eq!(system.len(), 1, "in {room}, expected one *** line, saw {system:?}");
    }
    for room in rooms {
        let (client, _, _) = clients.iter_mut().find(|(_, _, r)| *r == room).expect("a member");
        client.send("/who");
        let listing = client.expect_prefix(&format!("*** In {room} ("));
        let count = listing.split(": ").nth(1).map_or(0, |names| names.split(", ").count());
        let expected =
            clients_per_room(50, rooms.len(), rooms.iter().position(|r| *r == room).unwrap_or(0));
        assert_eq!(count, expected, "{listing}");
    }
    assert_eq!(daemon.processes().len(), 52, "master, broker and 50 sessions");
}

#[test]
fn no_line_is_lost_or_duplicated_when_the_broker_dies() {
    let daemon = Daemon::start_with_config(NO_FLOOD_CONTROL);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let first: String = (1..=100).map(|n| format!("line {n}\r\n")).collect();
    alice.send_raw(first.as_bytes());
    kill(Pid::from_raw(daemon.broker_pid(1)), Signal::SIGKILL).expect("kill the broker");
    let second: String = (101..=200).map(|n| format!("line {n}\r\n")).collect();
    alice.send_raw(second.as_bytes());
    daemon.broker_pid(2);
    for (who, client) in [("bob", &mut bob), ("alice", &mut alice)] {
        client.expect("<alice> line 200");
        let got: Vec<&str> =
            client.seen.iter().filter_map(|l| l.strip_prefix("<alice> line ")).collect();
        let want: Vec<String> = (1..=200).map(|n| n.to_string()).collect();
        assert_eq!(
            got,
            want,
            "{who} did not see every line exactly once, in order; all lines:\n{}\nlog:\n{}",
            client.seen.join("\n"),
            daemon.log().join("\n")
        );
    }
}

#[test]
fn a_login_in_progress_survives_a_broker_restart() {
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let mut waiting = daemon.connect();
    waiting.expect_prefix("*** Please choose a nickname");
    kill(Pid::from_raw(daemon.broker_pid(1)), Signal::SIGKILL).expect("kill the broker");
    daemon.broker_pid(2);
    alice.expect("*** The chat service restarted; you are still in lobby.");
    waiting.send("carol");
    waiting.expect("*** carol has joined lobby");
    alice.expect("*** carol has joined lobby");
    waiting.send("hi");
    alice.expect("<carol> hi");
}

/// A line of /proc/PID/status, without its label.
pub fn status_field(pid: i32, label: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_default()
}

/// A soft limit from /proc/PID/limits.
pub fn soft_limit(pid: i32, name: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line[name.len()..].split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: chatd drops privileges only when started as root"
)]
fn started_as_root_no_process_keeps_root_or_capabilities() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let alice = daemon.login("alice");
    daemon.wait_for_log("running as user nobody (uid 65534");
    let session = daemon.holders_of(&alice)[0];
    let broker = daemon.broker_pid(1);
    for pid in daemon.processes() {
        assert_eq!(status_field(pid, "Uid:"), "65534\t65534\t65534\t65534", "uids of {pid}");
        assert_eq!(status_field(pid, "Gid:"), "65534\t65534\t65534\t65534", "gids of {pid}");
        assert_eq!(status_field(pid, "Groups:"), "65534", "groups of {pid}");
        assert_eq!(
            status_field(pid, "CapEff:"),
            "0000000000000000",
            "effective capabilities of {pid}"
        );
        assert_eq!(
            status_field(pid, "CapPrm:"),
            "0000000000000000",
            "permitted capabilities of {pid}"
        );
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "no_new_privs of {pid}");
    }
    for pid in [session, broker] {
        assert_eq!(soft_limit(pid, "Max core file size"), "0", "core dumps of {pid}");
    }
    assert_eq!(soft_limit(session, "Max open files"), "64");
    let address_space = chatd::master::session_address_space(
        chatd::ring::DEFAULT_RING_BYTES,
        chatd::accounts::KdfCost::DEFAULT,
    );
    assert_eq!(soft_limit(session, "Max address space"), address_space.to_string());
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: the refusal applies only to root")]
fn root_without_a_user_to_switch_to_is_refused() {
    crate::util::assert_root_as_built();
    let dir = tempfile::tempdir().expect("temp dir");
    for (setting, expected) in [
        ("user = \"\"\n", "refusing to run as root without a user to switch to"),
        ("user = \"no_such_user_here\"\n", "user no_such_user_here does not exist"),
        ("user = \"root\"\n", "user root is root"),
    ] {
        let config = dir.path().join("chatd.toml");
        std::fs::write(&config, setting).expect("write config");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--listen", "127.0.0.1:0", "--log", "stderr", "--runtime-dir"])
            .arg(dir.path().join("run"))
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run chatd");
        assert_eq!(output.status.code(), Some(1), "{setting}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{setting}: {stderr}");
    }
}

#[test]
fn sigquit_ends_everything_at_once() {
    let mut daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let group = daemon.pid();
    let started = Instant::now();
    daemon.signal(Signal::SIGQUIT);
    assert!(daemon.wait_exit().success(), "master exit status");
    wait_until("every process is gone", || crate::util::processes_in_group(group).is_empty());
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(alice.is_closed());
}

#[test]
fn a_second_sigterm_does_not_wait_for_the_grace_time() {
    let mut daemon = Daemon::start();
    let _alice = daemon.login("alice");
    let group = daemon.pid();
    let started = Instant::now();
    daemon.signal(Signal::SIGTERM);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit().success(), "master exit status");
    wait_until("every process is gone", || crate::util::processes_in_group(group).is_empty());
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[test]
fn sessions_outlive_their_master_and_a_replacement_adopts_them() {
    let mut first = Daemon::start();
    let [mut alice, mut bob] = first.room(["alice", "bob"]);
    let old_broker = first.broker_pid(1);
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    alice.send("the master is gone");
    bob.expect("<alice> the master is gone");

    let second = first.start_sharing();
    second.wait_for_log(&format!("adopting broker pid {old_broker}"));
    let mut carol = second.login_seen_by("carol", &mut [&mut alice]);
    carol.send("hello old-timers");
    bob.expect("<carol> hello old-timers");

    // When the adopted broker dies, the replacement starts its own and everyone re-registers.
    kill(Pid::from_raw(old_broker), Signal::SIGKILL).expect("kill the adopted broker");
    second.wait_for_log("starting a broker of our own");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect("*** The chat service restarted; you are still in lobby.");
    }
    alice.send("all together again");
    carol.expect("<alice> all together again");
    bob.expect("<alice> all together again");

    // Stopping the replacement stops everyone, the first master's orphans included.
    let mut second = second;
    second.signal(Signal::SIGTERM);
    for client in [&mut alice, &mut bob, &mut carol] {
        let rest = client.expect_closed();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("*** The server is shutting down. Goodbye."),
            "{rest:?}"
        );
    }
    assert!(second.wait_exit().success());
    let orphans = first.pid();
    wait_until("the orphans are gone", || crate::util::processes_in_group(orphans).is_empty());
}

#[test]
fn a_crash_loop_is_throttled_logged_once_and_recovers_by_itself() {
    // The doomed sessions count as logging in until the master has reaped them, which may be
    // after their clients saw the close: room for all five from one address.
    let daemon = Daemon::start_with_config("penalty_trips = 1000\nmax_startups_per_ip = 10\n");
    let mut alice = daemon.login("alice");
    // Without broker.sock, every new session dies at once.
    std::fs::remove_file(daemon.runtime_dir().join("broker.sock")).expect("remove broker.sock");
    for _ in 0..5 {
        let mut doomed = daemon.connect();
        doomed.expect("*** The chat service is unavailable; please try again later.");
        assert!(doomed.is_closed());
    }
    daemon.wait_for_log(
        "5 sessions in a row died before serving anyone; pausing new connections, first for 2 s",
    );
    // The pause began before its log line was seen.
    let paused = Instant::now();
    daemon.wait_for_log("broker.sock was removed or replaced; re-creating it");
    alice.expect("*** The chat service restarted; you are still in lobby.");
    // The next client waits out the pause in the listen backlog, then is served.
    let mut bob = daemon.login_seen_by("bob", &mut [&mut alice]);
    let waited = paused.elapsed();
    assert!(waited >= Duration::from_millis(1500), "served {waited:?} into a 2 s pause");
    bob.send("hi alice");
    alice.expect("<bob> hi alice");
    daemon.wait_for_log("sessions are being served again");
    let loop_lines =
        daemon.log().iter().filter(|l| l.contains("died before serving anyone")).count();
    assert_eq!(loop_lines, 1, "the crash loop is logged once:\n{}", daemon.log().join("\n"));
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: runs chatd as a user of its own (games)"
)]
fn process_exhaustion_pauses_accepting_and_established_sessions_keep_chatting() {
    crate::util::assert_root_as_built();
    // As user `games`, which nothing else runs as, RLIMIT_NPROC = 5 leaves room for the master,
    // the broker, its database thread (threads count too) and two sessions.
    let daemon = Daemon::start_through(&["prlimit", "--nproc=5:5", "--"], "user = \"games\"\n");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let mut turned_away = daemon.connect();
    turned_away.expect("*** The server is busy; please try again later.");
    let line = daemon.wait_for_log("cannot fork a session for 127.0.0.1:");
    assert!(line.contains("Resource temporarily unavailable"), "{line}");
    alice.send("we are still talking");
    bob.expect("<alice> we are still talking");
    // A second refusal while the trouble lasts is not logged again.
    let mut again = daemon.connect();
    again.expect("*** The server is busy; please try again later.");
    // When a session ends, forking works again.
    bob.send("/quit");
    alice.expect("*** bob has left (quit)");
    let mut carol = Client::connect(daemon.port);
    let mut served = false;
    wait_until("a session can be forked again", || {
        served = carol.next_line().is_some_and(|line| line.starts_with("*** Welcome"));
        if !served {
            carol = Client::connect(daemon.port);
        }
        served
    });
    daemon.wait_for_log("accepting again after");
    let complaints = daemon.log().iter().filter(|l| l.contains("cannot fork a session")).count();
    assert_eq!(complaints, 1, "logged once:\n{}", daemon.log().join("\n"));
}

#[test]
fn a_nick_taken_while_the_broker_restarted_goes_to_the_first_and_the_other_is_told() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    // Hold alice's session still while the broker restarts, so that someone else can take
    // her nickname before she re-registers.
    let alice_session = Pid::from_raw(daemon.holders_of(&alice)[0]);
    kill(alice_session, Signal::SIGSTOP).expect("stop alice's session");
    kill(Pid::from_raw(daemon.broker_pid(1)), Signal::SIGKILL).expect("kill the broker");
    daemon.broker_pid(2);
    bob.expect("*** The chat service restarted; you are still in lobby.");
    let mut impostor = daemon.login("alice");
    kill(alice_session, Signal::SIGCONT).expect("continue alice's session");
    alice.expect(
        "*** The chat service restarted and alice was taken meanwhile; you are now alice_2.",
    );
    alice.send("it is still me");
    bob.expect("<alice_2> it is still me");
    impostor.expect("<alice_2> it is still me");
}

/// Sets the soft descriptor limit of `pid`, a process of user `nobody`, as that user (root
/// may lack CAP_SYS_RESOURCE in a container; the owner may always move its soft limit).
fn set_soft_nofile(pid: i32, limit: usize) {
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "prlimit"])
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid={pid} --nofile={limit}:");
}

/// The lowest descriptor number `pid` does not use: with that as its limit, it has none left.
pub fn lowest_free_descriptor(pid: i32) -> usize {
    let used: HashSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).unwrap_or(0)
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: raises a lowered descriptor limit again"
)]
fn a_broker_out_of_descriptors_logs_it_once_and_serves_the_waiting_sessions_later() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start_with_config(
        "max_clients_per_ip = 100\nmax_startups = \"100:30:200\"\nmax_startups_per_ip = 100\n",
    );
    let broker = daemon.broker_pid(1);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    // No descriptor to spare: every new session's connection stays in the backlog, and each
    // arrives as a readiness event of its own.
    set_soft_nofile(broker, lowest_free_descriptor(broker));
    let mut waiting: Vec<Client> = (0..10).map(|_| daemon.connect()).collect();
    for client in &mut waiting {
        client.expect_prefix("*** Please choose a nickname");
    }
    daemon.wait_for_log("broker cannot accept a session");
    alice.send("we are still talking");
    bob.expect("<alice> we are still talking");
    set_soft_nofile(broker, 1024);
    // The next connection is the readiness event that lets the broker take the whole backlog.
    let mut carol = daemon.login("carol");
    for (n, client) in waiting.iter_mut().enumerate() {
        client.send(&format!("waiting{n}"));
        client.expect(&format!("*** waiting{n} has joined lobby"));
    }
    carol.send("all here");
    alice.expect("<carol> all here");
    let complaints: Vec<String> =
        daemon.log().into_iter().filter(|l| l.contains("cannot accept")).collect();
    assert_eq!(complaints.len(), 1, "one event, one line:\n{}", complaints.join("\n"));
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: so that chatd, as nobody, cannot re-create the directory"
)]
fn removing_the_runtime_directory_disconnects_nobody_and_it_recovers_when_recreated() {
    crate::util::assert_root_as_built();
    // The newcomers below come one after another from one address, each session dying as it
    // fails to reach the broker: the master may not have reaped the last ones yet when the
    // next connects, and must not count them as clients still logging in (that refusal is
    // another test's), nor as trips.
    let daemon = Daemon::start_with_config(
        "penalty_trips = 1000\nmax_startups_per_ip = 100\nmax_startups = \"100:30:200\"\n",
    );
    let first_broker = daemon.broker_pid(1);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    // A careless cleaner. The master runs as nobody and the parent is root's: it cannot
    // re-create the directory.
    let run = daemon.runtime_dir();
    std::fs::remove_dir_all(&run).expect("rm -rf the runtime directory");
    for _ in 0..8 {
        let mut newcomer = daemon.connect();
        let lines = newcomer.expect_closed();
        assert_eq!(
            lines,
            ["*** The chat service is unavailable; please try again later."],
            "a newcomer is told the truth"
        );
    }
    daemon.wait_for_log("cannot re-create it");
    alice.send("still here?");
    bob.expect("<alice> still here?");
    bob.send("yes");
    alice.expect("<bob> yes");
    assert_eq!(process_state(first_broker).map(|s| s != 'Z'), Some(true), "the broker lives");
    // The operator re-creates it, as tmpfiles.d would.
    std::fs::create_dir(&run).expect("mkdir");
    nix::unistd::chown(&run, Some(65534.into()), Some(65534.into())).expect("chown to nobody");
    daemon.wait_for_log("is back: serving new clients again");
    // The broker is restarted on the new sockets; the pair re-registers, nobody leaves.
    alice.expect("*** The chat service restarted; you are still in lobby.");
    bob.expect("*** The chat service restarted; you are still in lobby.");
    let mut carol = daemon.login_seen_by("carol", &mut [&mut alice]);
    carol.send("hello");
    alice.expect("<carol> hello");
    bob.expect("<carol> hello");
    alice.send("and we never left");
    bob.expect("<alice> and we never left");
    let log = daemon.log();
    let told = log.iter().filter(|l| l.contains("cannot re-create it")).count();
    assert_eq!(told, 1, "what is wrong is said once:\n{}", log.join("\n"));
    for client in [&alice, &bob] {
        assert!(!client.seen.iter().any(|l| l.contains("has left")), "{:?}", client.seen);
    }
    let ctl = daemon.chatctl(&["who"]);
    assert!(ctl.status.success(), "chatctl works again: {ctl:?}");
}

/// Runs chatd (as root, dropping to nobody) on `runtime_dir` until it fails or listens; returns
/// whether it listened, and its standard error.
fn start_on_runtime_dir(
    runtime_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> (bool, String) {
    let settings = format!("user = \"nobody\"\nstate_dir = \"{}\"\n", state_dir.display());
    start_with_settings(runtime_dir, &settings)
}

/// Like [`start_on_runtime_dir`], with the whole settings file given.
fn start_with_settings(runtime_dir: &std::path::Path, settings: &str) -> (bool, String) {
    start_through(&[], runtime_dir, settings)
}

/// Like [`start_with_settings`], through a launcher that execs chatd (`launcher` + chatd's
/// path + its arguments).
fn start_through(
    launcher: &[&std::ffi::OsStr],
    runtime_dir: &std::path::Path,
    settings: &str,
) -> (bool, String) {
    let config_dir = crate::util::runtime_dir();
    let config = config_dir.path().join("chatd.toml");
    std::fs::write(&config, settings).expect("write config");
    let chatd = std::ffi::OsStr::new(env!("CARGO_BIN_EXE_chatd"));
    let (program, args) = launcher.split_first().unwrap_or((&chatd, &[]));
    let mut command = std::process::Command::new(program);
    if !launcher.is_empty() {
        command.args(args).arg(chatd);
    }
    let mut daemon = crate::util::Spawned::spawn(
        command
            .args(["--listen", "127.0.0.1:0", "--log", "stderr", "--runtime-dir"])
            .arg(runtime_dir)
            .arg("--config")
            .arg(&config),
    );
    let mut listened = false;
    wait_until("chatd listens or fails", || {
        listened = daemon.log().iter().any(|l| l.contains("listening on"));
        listened || daemon.log().iter().any(|l| l.contains("error:"))
    });
    if listened {
        daemon.signal(Signal::SIGTERM);
        daemon.wait_exit();
    } else {
        assert!(!daemon.wait_exit().success(), "a refusal is a failure exit");
    }
    (listened, daemon.whole_log().join("\n"))
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: makes directories as other users")]
fn a_runtime_or_state_directory_someone_else_could_have_made_is_refused() {
    crate::util::assert_root_as_built();
    let top = crate::util::runtime_dir();
    let state = top.path().join("state");
    // Made first by another local user (games, uid 5), as a squatter in /tmp would.
    let squatted = top.path().join("squatted");
    std::fs::create_dir(&squatted).expect("mkdir");
    nix::unistd::chown(&squatted, Some(5.into()), Some(60.into())).expect("chown to games");
    let (listened, log) = start_on_runtime_dir(&squatted, &state);
    assert!(!listened, "{log}");
    assert!(
        log.contains(&format!("refusing the runtime directory {}", squatted.display())),
        "{log}"
    );
    assert!(log.contains("belongs to user games, not to nobody"), "{log}");
    // Anyone may write to it.
    let open = top.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod 0777");
    let (listened, log) = start_on_runtime_dir(&open, &state);
    assert!(!listened, "{log}");
    assert!(log.contains("others may write to it (mode 0777)"), "{log}");
    assert!(!open.join("broker.sock").exists() && !open.join("control.sock").exists());
    // The same for the state directory.
    let (listened, log) = start_on_runtime_dir(&top.path().join("run"), &open);
    assert!(!listened, "{log}");
    assert!(log.contains(&format!("refusing the state directory {}", open.display())), "{log}");
    // A directory of its own is used, and the log says where operators find control.sock.
    let run = top.path().join("run");
    let (listened, log) = start_on_runtime_dir(&run, &state);
    assert!(listened, "{log}");
    assert!(
        log.contains(&format!(
            "operators: chatctl --runtime-dir {}, through {}",
            run.display(),
            run.join("control.sock").display()
        )),
        "{log}"
    );
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: creates a directory that nobody could then reach"
)]
fn a_runtime_directory_the_daemon_user_could_not_reach_is_refused_before_anything_is_made() {
    crate::util::assert_root_as_built();
    let top = crate::util::runtime_dir();
    let private = top.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod 0700");
    let run = private.join("deeper/run");
    let (listened, log) = start_on_runtime_dir(&run, &top.path().join("state"));
    assert!(!listened, "{log}");
    assert!(
        log.contains(&format!("is inside {} (owner user root, mode 0700)", private.display())),
        "the error names the parent nobody can enter:\n{log}"
    );
    assert!(!log.contains("control.sock"), "{log}");
    assert_eq!(std::fs::read_dir(&private).expect("read").count(), 0, "nothing was created");
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: only root switches users")]
fn without_its_own_user_chatd_falls_back_to_nobody_only_saying_loudly_why_that_is_weaker() {
    crate::util::assert_root_as_built();
    let top = crate::util::runtime_dir();
    // Where the package was installed (here or by the .deb test), the chatd user exists: chatd
    // runs in a mount namespace of its own that sees a copy of /etc/passwd without it.
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let without_chatd: String =
        passwd.lines().filter(|l| !l.starts_with("chatd:")).map(|l| format!("{l}\n")).collect();
    let hidden = top.path().join("passwd");
    std::fs::write(&hidden, without_chatd).expect("write the copy of /etc/passwd");
    let launcher = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/passwd && exec \"$@\"",
    ]
    .map(std::ffi::OsStr::new);
    let launcher = [&launcher[..], &[hidden.as_os_str()]].concat();
    let state = format!("state_dir = \"{}\"\n", top.path().join("state").display());
    // No `user` in the file: the default falls back, and says why that is weaker.
    let (listened, log) = start_through(&launcher, &top.path().join("run"), &state);
    assert!(listened, "{log}");
    let warning = log
        .lines()
        .find(|l| l.contains("running as nobody because user chatd does not exist"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains(": warn: "), "{warning}");
    for needed in ["could then connect to broker.sock", "create the chatd user", "user = \"chatd\""]
    {
        assert!(warning.contains(needed), "{needed:?} in {warning}");
    }
    assert_eq!(log.matches("running as nobody").count(), 1, "said once:\n{log}");
    // Named in the file, the user must exist: no fallback.
    let (listened, log) =
        start_through(&launcher, &top.path().join("run2"), &format!("user = \"chatd\"\n{state}"));
    assert!(!listened, "{log}");
    assert!(log.contains("user chatd does not exist (the package creates it"), "{log}");
    assert!(!log.contains("running as nobody"), "{log}");
    assert!(!top.path().join("run2").exists(), "nothing was created");
}

/// The times (seconds since the epoch) of the failed connections to broker.sock in an
/// `strace -ttt -e trace=connect` output.
fn refused_connects(trace: &str) -> Vec<f64> {
    trace
        .lines()
        .filter(|line| line.contains("broker.sock") && line.contains(") = -1 "))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Seen from outside, in the times of the session's connect() calls (strace: apt-get install
/// strace): once its broker is gone and broker.sock cannot be reached, the first attempt is at
/// once, and each failed one doubles the wait (50 ms, 100 ms, ...) up to 1 s. (The unit test
/// in session/link.rs sees only the first attempt.)
#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: strace attaches to another user's session"
)]
fn a_session_that_lost_its_broker_retries_at_once_and_then_backs_off() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let session = daemon.holders_of(&alice)[0];
    let broker = daemon.broker_pid(1);
    let trace = tempfile::NamedTempFile::new().expect("temp file");
    let strace = crate::util::Spawned::spawn(
        std::process::Command::new("strace")
            .args(["-ttt", "-e", "trace=connect", "-e", "signal=none", "-o"])
            .arg(trace.path())
            .args(["-p", &session.to_string()]),
    );
    strace.wait_for_log("attached");
    // The master holds broker.sock's listener, where a connection waits for the next broker:
    // attempts fail only while the name is gone. The master would start a new broker at once:
    // hold it still meanwhile.
    let master = Pid::from_raw(daemon.pid());
    kill(master, Signal::SIGSTOP).expect("stop the master");
    let socket = daemon.runtime_dir().join("broker.sock");
    let away = daemon.runtime_dir().join("broker.sock.away");
    std::fs::rename(&socket, &away).expect("move broker.sock away");
    let killed = std::time::SystemTime::now();
    kill(Pid::from_raw(broker), Signal::SIGKILL).expect("kill the broker");
    let read = || std::fs::read_to_string(trace.path()).expect("read the trace");
    let mut attempts = Vec::new();
    // 0, 50, 100, 200, 400, 800, 1000, 1000 ms apart: 3.55 s in all.
    let deadline = Instant::now() + Duration::from_secs(3) + crate::util::PATIENCE;
    while attempts.len() < 8 {
        assert!(Instant::now() < deadline, "fewer than 8 attempts:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
        attempts = refused_connects(&read());
    }
    std::fs::rename(&away, &socket).expect("put broker.sock back");
    kill(master, Signal::SIGCONT).expect("continue the master");
    drop(strace);
    alice.expect("*** The chat service restarted; you are still in lobby.");

    let since_epoch = killed.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let first = attempts[0] - since_epoch;
    assert!(first < 0.045, "the first attempt came {first:.3} s after the broker died");
    let gaps: Vec<f64> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    let shown = format!("gaps {gaps:.3?} in\n{}", read());
    for (gap, least) in gaps.iter().zip([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]) {
        assert!(*gap >= least * 0.95, "a wait shorter than {least} s: {shown}");
    }
    assert!(gaps[5] < 1.5 && gaps[6] < 1.5, "the wait grew beyond 1 s: {shown}");
}
