//! The core chat behaviour: logging in, talking in rooms, private messages, the commands,
//! refusing bad input, one process per client, shutdown, and the broker socket's defences.
//! Everything a user of one daemon sees; the other modules of this binary take the limits,
//! the failures, the operators and the deployment modes.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{self, Client, Daemon, process_state, wait_until};

#[test]
fn a_line_is_broadcast_to_everyone_in_the_room_sender_included() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send("Hello,all");
    alice.expect("<alice> Hello,all");
    bob.expect("<alice> Hello,all");
}

#[test]
fn the_greeting_asks_for_a_nickname_and_the_newcomer_sees_its_own_join() {
    let daemon = Daemon::start();
    let mut alice = daemon.connect();
    let greeting =
        alice.expect("*** Please choose a nickname (1-24 letters, digits or _-[]{}|^`\\):");
    assert_eq!(greeting, vec!["*** Welcome to chatd 0.1.0.".to_string()]);
    alice.send("alice");
    alice.expect("*** You are now known as alice. Type /help for commands.");
    alice.expect("*** alice has joined lobby");
    alice.expect("*** No topic is set for lobby");
    let mut bob = daemon.connect();
    bob.expect_prefix("*** Please choose a nickname");
    bob.send("/nick bob");
    bob.expect("*** bob has joined lobby");
    alice.expect("*** bob has joined lobby");
}

#[test]
fn nick_changes_are_announced_to_the_room() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send("/nick alicia");
    alice.expect("*** alice is now known as alicia");
    bob.expect("*** alice is now known as alicia");
    bob.send("hi");
    alice.expect("<bob> hi");
    alice.send("back");
    bob.expect("<alicia> back");
    // The old name is free again.
    let _carol = daemon.login("alice");
}

#[test]
fn quit_tells_the_room_says_goodbye_and_closes() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    bob.send("/quit gone fishing");
    let rest = bob.expect_closed();
    assert_eq!(rest.last().map(String::as_str), Some("*** Goodbye."), "{rest:?}");
    alice.expect("*** bob has left (gone fishing)");
    let mut carol = daemon.login_seen_by("carol", &mut [&mut alice]);
    carol.send("/quit");
    alice.expect("*** carol has left (quit)");
}

#[test]
fn a_lost_connection_is_announced() {
    let daemon = Daemon::start();
    let [mut alice, bob] = daemon.room(["alice", "bob"]);
    drop(bob);
    alice.expect("*** bob has left (connection lost)");
}

#[test]
fn rooms_are_isolated_and_moves_are_announced() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send("/join #rust");
    alice.expect("*** alice has joined rust");
    alice.expect("*** No topic is set for rust");
    bob.expect("*** alice has left lobby (joined rust)");

    bob.send("lobby only");
    bob.expect("<bob> lobby only");
    alice.send("rust only");
    alice.expect("<alice> rust only");

    let mut carol = daemon.login("carol");
    carol.send("/join RUST");
    carol.expect("*** carol has joined rust");
    let seen = alice.expect("*** carol has joined rust");
    assert!(
        !seen.iter().any(|l| l.contains("lobby only")),
        "lobby line leaked into rust: {seen:?}"
    );
    carol.send("marker");
    bob.send("marker from lobby");
    let seen = bob.expect("<bob> marker from lobby");
    assert!(!seen.iter().any(|l| l.contains("rust only")), "rust line leaked into lobby: {seen:?}");
    alice.expect("<carol> marker");

    bob.send("/rooms");
    bob.expect("*** Rooms: lobby (1), rust (2)");
    alice.send("/join lobby");
    carol.send("/join lobby");
    // Two sessions, two joins: the broker may take them in either order.
    bob.expect_all(&["*** alice has joined lobby", "*** carol has joined lobby"]);
    bob.send("/rooms");
    bob.expect("*** Rooms: lobby (3)");
}

#[test]
fn a_private_message_is_seen_by_its_target_only() {
    let daemon = Daemon::start();
    let [mut alice, mut bob, mut carol] = daemon.room(["alice", "bob", "carol"]);
    alice.send("/msg BOB the secret");
    alice.expect("-> *bob* the secret");
    bob.expect("*alice* the secret");
    bob.send("marker");
    let seen = carol.expect("<bob> marker");
    assert!(!seen.iter().any(|l| l.contains("secret")), "carol saw the private line: {seen:?}");
    alice.send("/msg nobody hi");
    alice.expect("*** No such nick: nobody");
}

#[test]
fn nicknames_collide_without_regard_to_case() {
    let daemon = Daemon::start();
    let _alice = daemon.login("alice");
    let mut other = daemon.connect();
    other.expect_prefix("*** Please choose a nickname");
    other.send("ALICE");
    other.expect("*** The nickname ALICE is already in use");
    other.expect_prefix("*** Please choose a nickname");
    other.send("alice2");
    other.expect("*** alice2 has joined lobby");
    other.send("/nick Alice");
    other.expect("*** The nickname Alice is already in use");
}

#[test]
fn invalid_nicknames_get_the_reason_and_the_prompt_again() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    client.expect_prefix("*** Please choose a nickname");
    for bad in ["9lives", "-dash", "has space", "abcdefghijklmnopqrstuvwxy", "<alice>", "***"] {
        client.send(bad);
        let reason = client.expect_prefix("*** Invalid nickname");
        assert!(reason.contains(':'), "no reason in {reason:?}");
        client.expect_prefix("*** Please choose a nickname");
    }
    client.send("/who");
    client.expect("*** Choose a nickname first.");
    client.send("ok_nick");
    client.expect("*** ok_nick has joined lobby");
}

#[test]
fn lines_over_512_bytes_are_refused_not_cut() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send(&"x".repeat(513));
    alice.expect("*** Line too long (more than 512 bytes); it was not sent.");
    let exact = "y".repeat(512);
    alice.send(&exact);
    let seen = bob.expect(&format!("<alice> {exact}"));
    assert!(!seen.iter().any(|l| l.contains("xxx")), "part of the long line was sent: {seen:?}");
    // A megabyte without a newline costs the session bounded memory and is refused once.
    alice.send(&"z".repeat(1 << 20));
    alice.expect("*** Line too long (more than 512 bytes); it was not sent.");
    alice.send("still here");
    bob.expect("<alice> still here");
}

#[test]
fn invalid_utf8_is_refused_with_a_message() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send_raw(b"caf\xe9 \xfe\r\n");
    alice.expect_prefix("*** Your line was not valid utf-8 and was not sent. If your terminal uses another character set, type /charset");
    alice.send("café ok");
    let seen = bob.expect("<alice> café ok");
    assert!(!seen.iter().any(|l| l.starts_with("<alice> caf")), "{seen:?}");
    // Told once: later lines go as they decode, so nothing typed is lost.
    alice.send_raw(b"caf\xe9 again\r\n");
    bob.expect("<alice> caf\u{FFFD} again");
    alice.expect("<alice> caf\u{FFFD} again");
    // After /charset latin1 the same bytes are what the user meant.
    alice.send("/charset latin1");
    alice.expect("*** Your character set is now latin1.");
    alice.send_raw(b"caf\xe9 latin\r\n");
    bob.expect("<alice> café latin");
}

#[test]
fn nobody_can_forge_a_system_line_or_another_nick() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send_raw(b"\r*** bob has left (quit)\n");
    alice.send_raw(b"x\x1b[2K\x1b[1G<bob> I owe alice money\x07\r\n");
    alice.send("\u{202e}txet desrever");
    let expected = [
        // What starts chatd's own lines is defused wherever it is (issue #13.7).
        "<alice> (***) bob has left (quit)",
        "<alice> x(bob) I owe alice money",
        "<alice> txet desrever",
    ];
    for line in expected {
        bob.expect(line);
    }
    for line in &bob.seen {
        assert!(
            !line.chars().any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "control character reached bob: {line:?}"
        );
    }
}

#[test]
fn commands_topic_who_me_help_and_escapes() {
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    alice.send("/topic Rust and tea");
    alice.expect("*** alice set the topic of lobby to: Rust and tea");
    alice.send("/topic");
    alice.expect("*** Topic for lobby: Rust and tea");
    let mut bob = daemon.login_seen_by("bob", &mut [&mut alice]);
    bob.expect("*** Topic for lobby: Rust and tea");
    bob.send("/who");
    bob.expect("*** In lobby (2): alice, bob");
    bob.send("/me waves");
    alice.expect("* bob waves");
    bob.send("//etc/passwd is a path");
    alice.expect("<bob> /etc/passwd is a path");
    bob.send("/frobnicate");
    bob.expect("*** Unknown command /frobnicate; try /help");
    bob.send("/who is there");
    bob.expect("*** Usage: /who");
    bob.send("/help");
    let help = bob.expect("*** Anything else you type is sent to everyone in your room.");
    for command in ["/nick", "/join", "/who", "/rooms", "/topic", "/me", "/msg", "/quit", "/help"] {
        assert!(help.iter().any(|l| l.contains(command)), "{command} missing from /help: {help:?}");
    }
}

#[test]
fn quit_works_before_login() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    client.expect_prefix("*** Please choose a nickname");
    client.send("/quit");
    assert_eq!(client.expect_closed(), vec!["*** Goodbye.".to_string()]);
}

#[test]
fn a_client_without_a_nickname_is_closed_after_the_login_grace() {
    let daemon = Daemon::start_with_config("login_grace_seconds = 1\n");
    let mut client = daemon.connect();
    let started = Instant::now();
    client.expect_prefix("*** Please choose a nickname");
    client.expect("*** No nickname chosen within 1 second; goodbye.");
    assert!(client.is_closed());
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early");
    daemon.wait_for_log("no nickname within the login grace time");
}

#[test]
fn every_connection_is_served_by_its_own_child_process() {
    let daemon = Daemon::start();
    let clients: Vec<Client> = ["a1", "a2", "a3"].iter().map(|nick| daemon.login(nick)).collect();
    let mut holders = Vec::new();
    for client in &clients {
        let pids = daemon.holders_of(client);
        assert_eq!(pids.len(), 1, "server socket held by {pids:?}, expected exactly one process");
        assert_ne!(pids[0], daemon.pid(), "the master holds a client connection");
        assert_eq!(
            util::parent_of(pids[0]),
            Some(daemon.pid()),
            "session is not the master's child"
        );
        holders.push(pids[0]);
    }
    assert_eq!(util::distinct(&holders), 3, "sessions share a process: {holders:?}");
}

#[test]
fn a_killed_session_is_announced_within_a_second_and_reaped() {
    let daemon = Daemon::start();
    let [mut alice, bob] = daemon.room(["alice", "bob"]);
    let bob_pid = daemon.holders_of(&bob)[0];
    let killed = Instant::now();
    kill(Pid::from_raw(bob_pid), Signal::SIGKILL).expect("kill bob's session");
    alice.expect("*** bob has left (connection lost)");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(1), "the room heard after {took:?}");
    wait_until("the killed session is reaped (no zombie)", || process_state(bob_pid).is_none());
    daemon.wait_for_log(&format!("session pid {bob_pid} for 127.0.0.1:"));
    alice.send("still works");
    alice.expect("<alice> still works");
}

#[test]
fn sigterm_tells_clients_and_everything_exits_cleanly() {
    let mut daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let mut waiting = daemon.connect();
    waiting.expect_prefix("*** Please choose a nickname");
    let group = daemon.pid();
    assert!(util::processes_in_group(group).len() >= 5, "master, broker and three sessions");
    daemon.signal(Signal::SIGTERM);
    for client in [&mut alice, &mut bob, &mut waiting] {
        let rest = client.expect_closed();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("*** The server is shutting down. Goodbye."),
            "{rest:?}"
        );
        assert!(
            !rest.iter().any(|l| l.contains("has left")),
            "departures announced at shutdown: {rest:?}"
        );
    }
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "master exit status");
    wait_until("every chatd process is gone", || util::processes_in_group(group).is_empty());
    assert!(!daemon.runtime_dir().join("broker.sock").exists(), "broker.sock left behind");
}

#[test]
fn one_broadcast_reaches_two_hundred_clients() {
    // All 200 come from 127.0.0.1, and log in one after another.
    let daemon = Daemon::start_with_config("max_clients_per_ip = 200\n");
    let mut clients: Vec<Client> = (0..200).map(|i| daemon.login(&format!("user{i}"))).collect();
    clients[0].send("hello two hundred");
    for (i, client) in clients.iter_mut().enumerate() {
        client.expect("<user0> hello two hundred");
        assert!(!client.seen.is_empty(), "client {i}");
    }
    assert_eq!(util::processes_in_group(daemon.pid()).len(), 202, "master + broker + 200 sessions");
}

/// Writes raw bytes to broker.sock as a misbehaving peer would.
fn raw_peer(daemon: &Daemon, bytes: &[u8]) {
    let mut peer =
        UnixStream::connect(daemon.runtime_dir().join("broker.sock")).expect("connect broker.sock");
    peer.write_all(bytes).expect("write to broker");
}

#[test]
fn malformed_frames_on_broker_sock_do_not_harm_the_broker() {
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    // A header declaring 4 GiB.
    raw_peer(&daemon, &[0xff, 0xff, 0xff, 0xff]);
    daemon.wait_for_log("frame declares 4294967295 bytes");
    // A payload that is not a message.
    raw_peer(&daemon, &[0, 0, 0, 3, 0xc8, 0xc8, 0xc8]);
    daemon.wait_for_log("undecodable frame payload");
    // A valid frame that is not Hello.
    raw_peer(&daemon, &[0, 0, 0, 1, 7]);
    daemon.wait_for_log("first frame was not Hello");
    // Half a frame, then the peer vanishes.
    raw_peer(&daemon, &[0, 0, 0, 40, 0, 1]);
    daemon.wait_for_log("vanished mid-frame");
    // A zero-length frame.
    raw_peer(&daemon, &[0, 0, 0, 0]);
    daemon.wait_for_log("empty payload");

    let mut bob = daemon.login_seen_by("bob", &mut [&mut alice]);
    alice.send("broker still fine");
    bob.expect("<alice> broker still fine");
    let drops = daemon.log().iter().filter(|l| l.contains("dropping session")).count();
    assert_eq!(drops, 4, "each bad peer is logged once:\n{}", daemon.log().join("\n"));
}

#[test]
fn a_second_daemon_on_the_same_runtime_dir_refuses_to_start() {
    let daemon = Daemon::start();
    // With the first one's settings (its user): as another user, the directory would be
    // refused as someone else's before the running daemon is found.
    let settings = daemon.runtime_dir().parent().expect("the test's directory").join("chatd.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--listen", "127.0.0.1:0", "--log", "stderr", "--config"])
        .arg(&settings)
        .arg("--runtime-dir")
        .arg(daemon.runtime_dir())
        .output()
        .expect("run a second chatd");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another chatd is already serving"), "{stderr}");
}

#[test]
fn help_version_and_bad_arguments() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(args)
            .output()
            .expect("run chatd")
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for option in ["--listen", "--runtime-dir", "--log", "--config"] {
        assert!(text.contains(option), "{option} missing from --help:\n{text}");
    }
    let version = run(&["--version"]);
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "chatd 0.1.0");
    let bad = run(&["--listen", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("listen: invalid address \"not-an-address\"")
    );
}

#[test]
fn stale_broker_socket_from_a_crash_is_replaced() {
    let runtime = tempfile::tempdir().expect("temp dir");
    let stale = runtime.path().join("broker.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a socket nobody serves"));
    let config = runtime.path().join("chatd.toml");
    let state = runtime.path().join("state");
    std::fs::write(&config, format!("state_dir = \"{}\"\n", state.display())).expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--listen", "127.0.0.1:0", "--log", "stderr", "--runtime-dir"])
        .arg(runtime.path())
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn chatd");
    let stderr = child.stderr.take().expect("stderr");
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = String::new();
    let ready = loop {
        line.clear();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
            break false;
        }
        if line.contains("listening on") {
            break true;
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, Signal::SIGTERM);
    let _ = child.wait();
    wait_until("the daemon's processes are gone", || {
        util::processes_in_group(pgid.as_raw()).is_empty()
    });
    assert!(ready, "chatd did not start over a stale socket");
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: connects to broker.sock as another uid")]
fn the_broker_refuses_peers_of_another_uid() {
    crate::util::assert_root_as_built();
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    // Open the socket to everyone, as a careless admin might; SO_PEERCRED is what still keeps
    // other users out. (chatd itself runs as nobody here: it was started as root.)
    let socket = daemon.runtime_dir().join("broker.sock");
    for (path, mode) in [(daemon.runtime_dir(), 0o755), (socket.clone(), 0o666)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let status = std::process::Command::new("socat")
        .arg("-u")
        .arg("OPEN:/dev/null")
        .arg(format!("UNIX-CONNECT:{}", socket.display()))
        .uid(2)
        .gid(2)
        .status()
        .expect("run socat (apt-get install socat)");
    assert!(status.success(), "socat could not connect at all: {status}");
    daemon.wait_for_log(
        "refused a broker connection from uid 2: only uid 65534 (and root) may connect",
    );
    alice.send("still here");
    alice.expect("<alice> still here");
}
