//! The rooms' broadcast rings, end to end: what a member who falls behind gets, the order of a
//! room's ring and a session's socket, new rings after a broker restart, and rings nobody but
//! the broker can write.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::reliability::NO_FLOOD_CONTROL;
use crate::util::{Client, Daemon};

/// The `/proc/PID/maps` lines of the rooms' rings mapped by `pid`.
fn ring_mappings(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("memfd:chatd room"))
        .map(str::to_string)
        .collect()
}

/// The inode of a maps line (its fifth field).
fn inode(mapping: &str) -> u64 {
    mapping.split_whitespace().nth(4).and_then(|field| field.parse().ok()).unwrap_or(0)
}

#[test]
fn a_client_that_never_reads_in_a_flooding_room_is_dropped_as_too_slow() {
    let daemon = Daemon::start_with_config(&format!(
        "ring_bytes = 65536\nsend_queue_bytes = 16384\n{NO_FLOOD_CONTROL}"
    ));
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let mut sleepy =
        crate::util::login_small_window_seen_by(daemon.port, "sleepy", &mut [&mut alice, &mut bob]);
    // From here on, sleepy reads nothing.
    let broker = daemon.broker_pid(1);
    let rss_before = crate::util::rss_kib(broker);
    let line = "y".repeat(400);
    let left = "*** sleepy has left (too slow)";
    let mut seen_left = false;
    for round in 0..2000 {
        alice.send(&format!("{round} {line}"));
        let skipped = bob.expect(&format!("<alice> {round} {line}"));
        seen_left |= skipped.iter().any(|l| l == left);
        if seen_left || (round % 50 == 0 && daemon.log().iter().any(|l| l.contains("fell behind")))
        {
            break;
        }
    }
    if !seen_left {
        bob.expect(left);
    }
    // The broker kept nothing for it: the ring is all the memory a room's backlog takes.
    let rss_after = crate::util::rss_kib(broker);
    assert!(
        rss_after < rss_before + 1024,
        "broker memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    alice.send("the room carries on");
    bob.expect("<alice> the room carries on");
    // Sleepy, reading at last, gets what was on its way and then the truth.
    sleepy.stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let rest = sleepy.expect_closed();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("*** Disconnected: too slow (this connection fell too far behind the room)."),
        "{:?}",
        &rest[rest.len().saturating_sub(3)..]
    );
}

#[test]
fn a_paste_of_lines_and_commands_is_shown_in_the_brokers_order() {
    let daemon = Daemon::start_with_config(NO_FLOOD_CONTROL);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    for round in 0..20 {
        let (me, next) = if round % 2 == 0 { ("alice", "alice_") } else { ("alice_", "alice") };
        // One write: room lines (the ring) and replies and private lines (the socket) mixed.
        let paste = format!(
            "{round} one\r\n/who\r\n{round} two\r\n/msg bob {round} psst\r\n{round} three\r\n\
             /nick {next}\r\n{round} four\r\n/rooms\r\n{round} five\r\n"
        );
        alice.send_raw(paste.as_bytes());
        // What came before the last line of the paste, which `expect` waits for.
        let seen = alice.expect(&format!("<{next}> {round} five"));
        let mut wanted = vec![
            format!("<{me}> {round} one"),
            "*** In lobby (2): ".to_string(),
            format!("<{me}> {round} two"),
            format!("-> *bob* {round} psst"),
            format!("<{me}> {round} three"),
            format!("*** {me} is now known as {next}"),
            format!("<{next}> {round} four"),
            "*** Rooms: lobby (2)".to_string(),
        ];
        let shown: Vec<&String> = seen
            .iter()
            .filter(|line| wanted.iter().any(|w| line.starts_with(w.as_str())))
            .collect();
        assert_eq!(shown.len(), wanted.len(), "round {round}: {seen:?}");
        for (line, want) in shown.iter().zip(wanted.drain(..)) {
            assert!(
                line.starts_with(&want),
                "round {round}: {line:?} where {want:?} was due: {seen:?}"
            );
        }
        // Bob's private line sits between alice's lines as the broker sent them.
        let seen = bob.expect(&format!("<{next}> {round} five"));
        let order: Vec<&String> = seen
            .iter()
            .filter(|l| {
                l.contains(&format!("{round} two"))
                    || l.contains(&format!("{round} psst"))
                    || l.contains(&format!("{round} three"))
            })
            .collect();
        assert_eq!(
            order,
            [
                &format!("<{me}> {round} two"),
                &format!("*{me}* {round} psst"),
                &format!("<{me}> {round} three")
            ],
            "round {round}"
        );
    }
}

#[test]
fn a_restarted_broker_hands_out_new_rings() {
    let daemon = Daemon::start_with_config(NO_FLOOD_CONTROL);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let session = daemon.holders_of(&alice)[0];
    let before = ring_mappings(session);
    assert_eq!(before.len(), 1, "one ring mapped: {before:?}");
    assert!(before[0].split_whitespace().nth(1) == Some("r--s"), "read-only, shared: {before:?}");
    kill(Pid::from_raw(daemon.broker_pid(1)), Signal::SIGKILL).expect("kill the broker");
    daemon.broker_pid(2);
    alice.send("after the restart");
    bob.expect("<alice> after the restart");
    crate::util::wait_until("the old ring is unmapped", || {
        let now = ring_mappings(session);
        now.len() == 1 && inode(&now[0]) != inode(&before[0])
    });
    bob.send("and back");
    alice.expect("<bob> and back");
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: another process's descriptors are root's to open"
)]
fn nobody_but_the_broker_can_write_a_rooms_ring() {
    use std::io::Write;
    use std::os::fd::AsFd;
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let _alice = daemon.login("alice");
    let broker = daemon.broker_pid(1);
    let ring = crate::util::broker_ring(broker, "lobby");
    // Opened afresh for writing (as root could), the sealed ring takes no write ...
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&ring).expect("open");
    let err = file.write(b"forged").expect_err("a write to a sealed ring");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EPERM), "{err}");
    // ... and no writable shared mapping.
    let mapped = unsafe {
        // SAFETY: a fresh mapping of a file we opened, unmapped below if it ever succeeded.
        nix::sys::mman::mmap(
            None,
            std::num::NonZeroUsize::new(4096).expect("non-zero"),
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
            nix::sys::mman::MapFlags::MAP_SHARED,
            file.as_fd(),
            0,
        )
    };
    assert_eq!(mapped.err(), Some(nix::errno::Errno::EPERM), "a writable mapping of the ring");
}

#[test]
fn a_paste_of_many_joins_lands_in_the_last_room() {
    let daemon = Daemon::start_with_config(NO_FLOOD_CONTROL);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    // Each join hands over a ring with two descriptors: more in one paste than a socket queue
    // keeps at once.
    let paste: String = (0..30).map(|n| format!("/join room{n}\r\n")).collect();
    alice.send_raw(format!("{paste}/join lobby\r\nback home\r\n").as_bytes());
    bob.expect("<alice> back home");
    alice.expect("<alice> back home");
    alice.send("/rooms");
    alice.expect("*** Rooms: lobby (2)");
}

#[test]
fn a_room_the_system_cannot_give_a_ring_is_refused_and_nobody_is_dropped() {
    // Every room with members holds two of the broker's descriptors (its ring and doorbell):
    // with 64 in all, rooms run out long before the 40 clients the master admits.
    let daemon = Daemon::start_through(
        &["prlimit", "--nofile=64:64", "--"],
        &format!("max_clients_per_ip = 1000\nmax_startups = \"1000:30:1000\"\n{NO_FLOOD_CONTROL}"),
    );
    let mut clients: Vec<Client> = (0..30).map(|n| daemon.login(&format!("user{n}"))).collect();
    let mut refused = None;
    for (n, client) in clients.iter_mut().enumerate() {
        client.send(&format!("/join room{n}"));
        // The answer comes after whatever the lobby said meanwhile (later logins, say).
        let joined = format!("*** user{n} has joined room{n}");
        let answer = loop {
            let line = client.next_line().expect("an answer to /join");
            if line.contains("the server cannot open another room now") || line == joined {
                break line;
            }
        };
        if answer != joined {
            refused = Some(n);
            break;
        }
    }
    let refused = refused.expect("some room was refused for want of descriptors");
    daemon.wait_for_log("cannot make a ring for room");
    // The one refused is still in the lobby, and served; so is everyone else.
    let last = clients.len() - 1;
    clients[refused].send("still here");
    clients[last].expect(&format!("<user{refused}> still here"));
    clients[0].send("/rooms");
    clients[0].expect_prefix("*** Rooms: ");
}

#[test]
fn a_crowd_logging_in_at_once_is_told_each_arrival_once_and_before_its_lines() {
    // Arrivals wait for the room's slower pace; a line said meanwhile brings them with it.
    let daemon = Daemon::start_with_config(&format!(
        "max_clients_per_ip = 20\nmax_startups_per_ip = 20\nmax_startups = \"20\"\n{NO_FLOOD_CONTROL}"
    ));
    let mut host = daemon.login("host");
    host.expect("*** No topic is set for lobby");
    let mut crowd: Vec<Client> = (0..12)
        .map(|_| {
            let mut client = daemon.connect();
            client.expect_prefix("*** Please choose a nickname");
            client
        })
        .collect();
    // Every nick at once, then each says a line as soon as it is in.
    for (n, client) in crowd.iter_mut().enumerate() {
        client.send(&format!("guest{n}"));
    }
    for (n, client) in crowd.iter_mut().enumerate() {
        let nick = format!("guest{n}");
        client.expect(&format!("*** You are now known as {nick}. Type /help for commands."));
        // Its own arrival, and then its topic: nothing of the room comes between.
        assert_eq!(client.next_line(), Some(format!("*** {nick} has joined lobby")));
        assert_eq!(client.next_line().as_deref(), Some("*** No topic is set for lobby"));
        client.send(&format!("hello from {nick}"));
    }
    let mut seen = Vec::new();
    while (0..12).any(|n| !seen.contains(&format!("<guest{n}> hello from guest{n}"))) {
        seen.push(host.next_line().expect("the room's lines"));
    }
    for n in 0..12 {
        let arrival = format!("*** guest{n} has joined lobby");
        let arrivals: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == arrival).collect();
        assert_eq!(arrivals.len(), 1, "{arrival} once: {seen:?}");
        let line = seen.iter().position(|l| *l == format!("<guest{n}> hello from guest{n}"));
        assert!(line > Some(arrivals[0]), "guest{n} was seen arriving before its line: {seen:?}");
    }
    assert_eq!(seen.len(), 24, "nothing but the arrivals and the lines: {seen:?}");
    // Nobody is told its own arrival twice (once on its socket, once more from the ring).
    for (n, client) in crowd.iter_mut().enumerate() {
        let nick = format!("guest{n}");
        let before = client.expect(&format!("<{nick}> hello from {nick}"));
        let own = format!("*** {nick} has joined lobby");
        assert!(!before.contains(&own), "{own} again: {before:?}");
    }
    // And everyone is in.
    host.send("/who");
    host.expect_prefix("*** In lobby (13): ");
}
