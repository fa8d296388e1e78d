//! Limits a session enforces on its client: flood control, the error budget, endless lines,
//! idle clients, keepalive and clients that do not read.

use std::time::{Duration, Instant};

use crate::util::{Client, Daemon, PATIENCE};

#[test]
fn a_paste_is_delayed_not_dropped() {
    let daemon = Daemon::start_with_config("flood_burst = 5\nflood_lines_per_second = 20.0\n");
    let mut alice = daemon.login("alice");
    let mut bob = daemon.login("bob");
    alice.expect("*** bob has joined lobby");
    let paste: String = (1..=30).map(|n| format!("pasted {n}\r\n")).collect();
    let started = Instant::now();
    alice.send_raw(paste.as_bytes());
    bob.expect("<alice> pasted 30");
    let took = started.elapsed();
    let got: Vec<&str> =
        bob.seen.iter().filter_map(|l| l.strip_prefix("<alice> pasted ")).collect();
    let want: Vec<String> = (1..=30).map(|n| n.to_string()).collect();
    assert_eq!(got, want, "every pasted line arrives once, in order");
    // 5 at once, then 25 at 20/s: at least ~1.2 s. Bounded below only: the point is the delay.
    assert!(took >= Duration::from_millis(1000), "the paste was not slowed down ({took:?})");
    assert!(!alice.seen.iter().any(|l| l.contains("too fast")), "{:?}", alice.seen);
}

#[test]
fn a_flood_beyond_the_queue_is_refused_and_the_client_told_once() {
    let daemon = Daemon::start_with_config(
        "flood_burst = 2\nflood_lines_per_second = 5.0\nflood_queue = 5\n",
    );
    let mut alice = daemon.login("alice");
    let mut bob = daemon.login("bob");
    alice.expect("*** bob has joined lobby");
    let flood: String = (1..=40).map(|n| format!("flood {n}\r\n")).collect();
    alice.send_raw(flood.as_bytes());
    alice.expect("*** You are sending too fast; lines are being dropped until you slow down.");
    // The burst (2 tokens, one of them maybe spent on the nickname) goes at once and 5 lines
    // wait; when the 6th is out, the queue has room for the next command again.
    alice.expect("<alice> flood 6");
    alice.send("/who");
    alice.expect_prefix("*** In lobby (2)");
    let told = alice.seen.iter().filter(|l| l.contains("too fast")).count();
    assert_eq!(told, 1, "told once: {:?}", alice.seen);
    let delivered: Vec<&String> =
        alice.seen.iter().filter(|l| l.starts_with("<alice> flood ")).collect();
    assert!(
        (6..=7).contains(&delivered.len()),
        "the burst and the queue go, the rest is refused: {delivered:?}"
    );
    // Nobody is banned: after a pause the burst is back.
    alice.send("calm again");
    bob.expect("<alice> calm again");
}

#[test]
fn too_many_invalid_commands_in_a_row_disconnect() {
    let daemon = Daemon::start_with_config("error_budget = 5\n");
    let mut alice = daemon.login("alice");
    let mut bob = daemon.login("bob");
    for _ in 0..4 {
        alice.send("/bogus");
        alice.expect("*** Unknown command /bogus; try /help");
    }
    alice.send("a valid line resets the count");
    for _ in 0..4 {
        alice.send("/who extra");
        alice.expect("*** Usage: /who");
    }
    alice.send("/nosuch");
    let rest = alice.expect_closed();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("*** 5 invalid commands in a row; goodbye."),
        "{rest:?}"
    );
    bob.expect("*** alice has left (connection lost)");
}

#[test]
fn megabytes_without_a_line_end_disconnect_with_bounded_memory() {
    let daemon = Daemon::start_with_config("max_unterminated_bytes = 1000000\n");
    let mut alice = daemon.login("alice");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent <= 1_000_000 {
        alice.send_raw(&chunk);
        sent += chunk.len();
    }
    alice.expect("*** More than 1000000 bytes without a line end; goodbye.");
    assert!(alice.is_closed());
    daemon.wait_for_log("too many bytes without a line end");
}

#[test]
fn an_idle_client_is_warned_then_disconnected_and_the_room_told_why() {
    let daemon = Daemon::start_with_config("idle_timeout_seconds = 2\n");
    let mut alice = daemon.login("alice");
    let mut bob = daemon.login("bob");
    alice.expect("*** bob has joined lobby");
    // bob keeps talking; alice says nothing.
    bob.send("still here");
    alice.expect_prefix("*** You have been idle; you will be disconnected in");
    bob.send("still here too");
    let rest = alice.expect_closed();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("*** Disconnected after 2 s of inactivity."),
        "{rest:?}"
    );
    bob.expect("*** alice has left (idle for 2 s)");
}

#[test]
fn keepalive_is_on_for_client_connections() {
    let daemon = Daemon::start_with_config("keepalive_seconds = 30\n");
    let alice = daemon.login("alice");
    let port = alice.stream.local_addr().expect("addr").port();
    // Right after a write the retransmission timer shows instead; wait for the quiet socket.
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        let output = std::process::Command::new("ss")
            .args(["-tnoH", "state", "established"])
            .output()
            .expect("run ss (iproute2)");
        let all = String::from_utf8_lossy(&output.stdout).to_string();
        let server_side = all
            .lines()
            .find(|l| {
                // Recv-Q Send-Q Local Peer ...: the server side is local = the daemon's port.
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.get(2) == Some(&format!("127.0.0.1:{}", daemon.port).as_str())
                    && fields.get(3) == Some(&format!("127.0.0.1:{port}").as_str())
            })
            .map(str::to_string);
        match server_side {
            Some(line) if line.contains("timer:(keepalive") => break line,
            other => assert!(
                Instant::now() < deadline,
                "no keepalive timer on the server socket: {other:?}\n{all}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains("timer:(keepalive"), "keepalive not armed: {line}");
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_the_room_carries_on() {
    let daemon = Daemon::start_with_config(&format!(
        "send_queue_bytes = 16384\n{}",
        crate::reliability::NO_FLOOD_CONTROL
    ));
    let mut alice = daemon.login("alice");
    let mut bob = daemon.login("bob");
    let mut sleepy = Client::connect_small_window(daemon.port);
    sleepy.expect_prefix("*** Please choose a nickname");
    sleepy.send("sleepy");
    sleepy.expect("*** sleepy has joined lobby");
    // From here on, sleepy reads nothing.
    alice.expect("*** sleepy has joined lobby");
    bob.expect("*** sleepy has joined lobby");
    let broker = daemon.broker_pid(1);
    let rss_before = crate::util::rss_kib(broker);
    let line = "y".repeat(400);
    let mut worst = Duration::ZERO;
    let mut dropped = false;
    for round in 0..4000 {
        let sent_at = Instant::now();
        alice.send(&format!("{round} {line}"));
        bob.expect(&format!("<alice> {round} {line}"));
        worst = worst.max(sent_at.elapsed());
        if round % 50 == 0
            && daemon.log().iter().any(|l| l.contains("client does not read its output"))
        {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the non-reading client was never dropped");
    bob.expect("*** sleepy has left (connection lost)");
    assert!(worst < Duration::from_millis(100), "others waited {worst:?} for a line");
    let rss_after = crate::util::rss_kib(broker);
    assert!(
        rss_after < rss_before + 8 * 1024,
        "broker memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(sleepy);
}
