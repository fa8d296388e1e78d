//! Who a peer of the broker is: what a process with the daemon's uid (a compromised session
//! child, or another service running as the same user) can and cannot claim on `broker.sock`,
//! and what a session dropped as too slow is told.
//!
//! The forger here is `socat` run as the daemon's user (`nobody` in these tests), relaying the
//! frames this test encodes with the library's codec: a real second process with the daemon's
//! uid, as the broker sees it through SO_PEERCRED.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use chatd::proto::master::MasterHello;
use chatd::proto::{Event, Failure, Greeting, PROTOCOL_VERSION, Request, SessionHello, codec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{Daemon, PATIENCE};

/// The uid and gid the test daemons run as (`user = "nobody"`, see `util`).
const DAEMON_USER: u32 = 65534;

/// A connection to `broker.sock` made by another process running as the daemon's user.
struct Forger {
    relay: Child,
    input: ChildStdin,
    events: mpsc::Receiver<Event>,
    seen: Vec<Event>,
}

impl Forger {
    /// Connects through `socat` running as the daemon's user. Only root may start a process
    /// as another user: a test that uses it is marked to be ignored unless built as root.
    fn connect(daemon: &Daemon) -> Forger {
        let socket = daemon.runtime_dir().join("broker.sock");
        let mut relay = Command::new("socat")
            .arg("-")
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .uid(DAEMON_USER)
            .gid(DAEMON_USER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run socat (apt-get install socat)");
        let input = relay.stdin.take().expect("socat's stdin");
        let mut output = relay.stdout.take().expect("socat's stdout");
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = output.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some((event, used))) = codec::decode_frame::<Event>(&buf) {
                    buf.drain(..used);
                    if sender.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Forger { relay, input, events, seen: Vec::new() }
    }

    fn send(&mut self, frame: &impl serde::Serialize) {
        let frame = codec::frame(frame).expect("encode");
        self.input.write_all(&frame).expect("write to socat");
        self.input.flush().expect("flush to socat");
    }

    fn hello(&mut self, address: &str) -> u64 {
        self.send(&Greeting::Session(SessionHello {
            version: PROTOCOL_VERSION,
            peer: address.to_string(),
            connected_at: 0,
        }));
        match self.expect("Welcome", |event| matches!(event, Event::Welcome { .. })) {
            Event::Welcome { sender, .. } => sender,
            _ => unreachable!(),
        }
    }

    /// Waits for an event that `matches`; returns it.
    fn expect(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                }
                Err(_) => panic!("no {what} from the broker; seen: {:?}", self.seen),
            }
        }
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}

/// The lobby's ring as root can read it, through the broker's own descriptor: since #15 a
/// room's lines travel there, not over a session's socket (which the forger's relay reads).
struct LobbyTap {
    ring: chatd::ring::RingReader,
    record: Vec<u8>,
    seen: Vec<Event>,
}

impl LobbyTap {
    fn open(daemon: &Daemon) -> LobbyTap {
        let memfd = crate::util::broker_ring(daemon.broker_pid(1), "lobby");
        let memfd = std::fs::File::open(memfd).expect("open the ring").into();
        let doorbell = nix::sys::eventfd::EventFd::new().expect("an eventfd").into();
        let ring = chatd::ring::RingReader::open(memfd, doorbell, 0).expect("a ring");
        LobbyTap { ring, record: Vec::new(), seen: Vec::new() }
    }

    /// Waits for a record that `matches`; returns it as an event.
    fn expect(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let mut found = None;
        crate::util::wait_until(what, || {
            while self.ring.next(self.ring.committed(), &mut self.record).expect("a record") {
                let record: chatd::proto::broadcast::Broadcast<'_> =
                    codec::decode_payload(&self.record).expect("a broadcast");
                let event = record.to_event();
                self.seen.push(event.clone());
                if matches(&event) {
                    found = Some(event);
                    return true;
                }
            }
            false
        });
        found.unwrap_or_else(|| panic!("no {what} in the lobby's ring; seen: {:?}", self.seen))
    }
}

/// When a process started, in clock ticks after boot (field 22 of `/proc/PID/stat`).
fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    fields[19].parse().expect("start time")
}

/// Clock ticks since boot (`/proc/uptime`, in hundredths of a second like USER_HZ).
fn uptime_ticks() -> u64 {
    let uptime = std::fs::read_to_string("/proc/uptime").expect("read uptime");
    let seconds: f64 =
        uptime.split_whitespace().next().and_then(|s| s.parse().ok()).expect("uptime");
    (seconds * 100.0) as u64
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: forges a session as the daemon's user")]
fn a_forged_sender_id_and_line_number_cannot_silence_anyone() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let mut forger = Forger::connect(&daemon);
    let forged = forger.hello("127.0.0.1:1");
    forger.send(&Request::Login { nick: "mallory".into(), tls: false });
    forger.expect("LoggedIn", |event| matches!(event, Event::LoggedIn { .. }));
    alice.expect("*** mallory has joined lobby");
    // The forger learns alice's sender id from her lines...
    alice.send("first");
    bob.expect("<alice> first");
    let mut lobby = LobbyTap::open(&daemon);
    let Event::Chat { sender: alice_id, seq: alice_seq, .. } =
        lobby.expect("alice's line", |e| matches!(e, Event::Chat { from, .. } if from == "alice"))
    else {
        unreachable!()
    };
    // ...but lines are stamped with the id the broker gave its connection, not one it claims.
    assert_ne!(forged, alice_id, "the broker gave the forger alice's sender id");
    // A line numbered 2^62, which would have raised every receiver's high-water mark for that
    // sender, is refused and logged.
    let huge = 1u64 << 62;
    forger.send(&Request::Say { seq: huge, text: "silence alice".into() });
    forger.expect("the refusal", |e| {
        matches!(e, Event::Rejected { seq, failure: Failure::OutOfSequence { .. } } if *seq == huge)
    });
    daemon.wait_for_log(&format!("refused line number {huge}"));
    // Its own well-numbered lines go through, with its own id.
    forger.send(&Request::Say { seq: 1, text: "hello from mallory".into() });
    lobby.expect(
        "its own line",
        |e| matches!(e, Event::Chat { from, sender, .. } if from == "mallory" && *sender == forged),
    );
    bob.expect("<mallory> hello from mallory");
    // alice's later lines still reach bob, numbered after the ones before.
    for n in 0..3 {
        alice.send(&format!("still heard {n}"));
        bob.expect(&format!("<alice> still heard {n}"));
    }
    let Event::Chat { seq, .. } = lobby.expect(
        "alice's last line",
        |e| matches!(e, Event::Chat { text, .. } if text == "still heard 2"),
    ) else {
        unreachable!()
    };
    assert_eq!(seq, alice_seq + 3);
    assert!(!bob.seen.iter().any(|l| l.contains("silence alice")), "{:?}", bob.seen);
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: forges a session as the daemon's user")]
fn a_forged_resume_is_held_to_the_login_rules_and_its_address_is_never_shown() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    // Start times are in clock ticks: let the forger start in a later tick than the broker.
    let broker_started = start_ticks(daemon.broker_pid(1));
    crate::util::wait_until("a clock tick after the broker started", || {
        uptime_ticks() > broker_started + 1
    });
    let mut forger = Forger::connect(&daemon);
    let forged_address = "203.0.113.66:6666";
    forger.hello(forged_address);
    // An invalid nick is refused, as at login.
    forger.send(&Request::Resume {
        nick: "9lives".into(),
        room: "lobby".into(),
        topic: None,
        tls: false,
        token: None,
    });
    forger.expect("the refusal", |e| matches!(e, Event::Failed(Failure::InvalidNick { .. })));
    // A lookalike of someone online does not get that name: it enters as a variant that passes
    // for nobody, announced to the room.
    forger.send(&Request::Resume {
        nick: "\u{430}lice".into(),
        room: "lobby".into(),
        topic: None,
        tls: false,
        token: None,
    });
    forger
        .expect("Resumed", |e| matches!(e, Event::Resumed { nick, .. } if nick == "\u{430}lice_2"));
    alice.expect("*** \u{430}lice_2 has joined lobby");
    forger.send(&Request::Quit { reason: None });
    alice.expect("*** \u{430}lice_2 has left (quit)");
    let mut forger = Forger::connect(&daemon);
    forger.hello(forged_address);
    // Any other nick enters announced: this process started after the broker, so it cannot
    // have been registered with an earlier one.
    forger.send(&Request::Resume {
        nick: "mallory".into(),
        room: "lobby".into(),
        topic: None,
        tls: false,
        token: None,
    });
    forger.expect("Resumed", |e| matches!(e, Event::Resumed { nick, .. } if nick == "mallory"));
    alice.expect("*** mallory has joined lobby");
    let who = daemon.chatctl(&["who"]);
    let table = String::from_utf8_lossy(&who.stdout).to_string();
    assert!(who.status.success(), "{table}{}", String::from_utf8_lossy(&who.stderr));
    assert!(!table.contains("203.0.113.66"), "the forged address is shown:\n{table}");
    assert!(
        !table.lines().any(|l| l.starts_with("\u{430}lice ")),
        "the lookalike got in:\n{table}"
    );
    let mallory = table.lines().find(|l| l.starts_with("mallory ")).expect("mallory listed");
    assert!(mallory.contains("unvouched"), "{table}");
    assert!(mallory.contains(&forger.relay.id().to_string()), "its pid is the kernel's: {table}");
    // alice's row has what the master vouched for: her address and her session's pid.
    let address = alice.stream.local_addr().expect("local address").to_string();
    let session = daemon.holders_of(&alice);
    let alice_row = table.lines().find(|l| l.starts_with("alice ")).expect("alice listed");
    assert!(alice_row.contains(&address), "{table}");
    assert!(alice_row.contains(&session[0].to_string()), "{table}");
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: forges a session as the daemon's user")]
fn a_fake_master_hello_is_refused_while_the_master_lives_and_reload_still_works() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let mut forger = Forger::connect(&daemon);
    forger.send(&Greeting::Master(MasterHello {
        version: PROTOCOL_VERSION,
        pid: 1,
        started_at: 0,
    }));
    daemon.wait_for_log("refused a MasterHello on broker.sock from pid");
    let reload = daemon.chatctl(&["reload"]);
    assert!(
        reload.status.success(),
        "chatctl reload failed: {}{}",
        String::from_utf8_lossy(&reload.stdout),
        String::from_utf8_lossy(&reload.stderr)
    );
    daemon.wait_for_log("an operator asked for a reload");
    let status = daemon.chatctl(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains(&daemon.pid().to_string()), "the master is still linked:\n{status}");
    alice.send("still here");
    alice.expect("<alice> still here");
}

#[test]
fn a_session_dropped_as_too_slow_ends_and_says_why_instead_of_resuming() {
    let daemon = Daemon::start_with_config(&format!(
        "broker_queue_bytes = 65536\nsend_queue_bytes = 4194304\n{}",
        crate::reliability::NO_FLOOD_CONTROL
    ));
    let [mut alice, mut stuck] = daemon.room(["alice", "stuck"]);
    // The session child stops reading the broker (as if starved of CPU).
    let session = daemon.holders_of(&stuck)[0];
    kill(Pid::from_raw(session), Signal::SIGSTOP).expect("stop the session");
    let line = "z".repeat(500);
    let mut n = 0;
    while !daemon.log().iter().any(|l| l.contains("too slow")) {
        assert!(n < 5000, "the stopped session was never dropped");
        alice.send(&format!("{n} {line}"));
        alice.expect(&format!("<alice> {n} {line}"));
        n += 1;
    }
    // A wait for alice's echo may already have read the departure past.
    let left = "*** stuck has left (too slow)";
    if !alice.seen.iter().any(|l| l == left) {
        alice.expect(left);
    }
    kill(Pid::from_raw(session), Signal::SIGCONT).expect("continue the session");
    // It shows what it had received, then the truth, and closes; it does not come back (on
    // 18d658b it resumed, was dropped again by the replay, resumed again, ... for ever).
    let mut rest = Vec::new();
    while let Some(line) = stuck.next_line() {
        assert!(!line.contains("restarted"), "the dropped session came back: {line}");
        rest.push(line);
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("*** Disconnected: too slow (this connection fell too far behind the room)."),
        "{:?}",
        &rest[rest.len().saturating_sub(3)..]
    );
    crate::util::wait_until("the session child exits", || {
        crate::util::process_state(session).is_none_or(|state| state == 'Z')
    });
    alice.send("after the drop");
    let since = alice.expect("<alice> after the drop");
    assert!(!since.iter().any(|l| l.contains("stuck")), "stuck came back: {since:?}");
    // One drop, one log line.
    let drops: Vec<String> = daemon.log().into_iter().filter(|l| l.contains("too slow")).collect();
    assert_eq!(drops.len(), 1, "{drops:#?}");
}

#[test]
fn chatctl_shutdown_logs_no_warning_for_the_pipes_it_closes() {
    // Whether a session still writes to the broker after it left is a race: several daemons
    // with several talking clients each give it every chance.
    for _ in 0..5 {
        let mut daemon = Daemon::start();
        let mut clients: Vec<_> = (0..6).map(|n| daemon.login(&format!("user{n}"))).collect();
        for (n, client) in clients.iter_mut().enumerate() {
            client.send(&format!("line {n}"));
            client.expect(&format!("<user{n}> line {n}"));
        }
        let said = daemon.chatctl(&["shutdown", "--grace", "1"]);
        assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));
        for client in &mut clients {
            client.expect_closed();
        }
        assert!(daemon.wait_exit().success());
        let log = daemon.whole_log();
        // From the operator's request on (the start may warn, e.g. about running as nobody).
        assert!(log.iter().any(|l| l.contains("operator asked for a shutdown")), "{log:#?}");
        let warnings: Vec<&String> = log
            .iter()
            .skip_while(|l| !l.contains("operator asked for a shutdown"))
            .filter(|l| {
                l.contains("warn:") || l.contains("Broken pipe") || l.contains("reset by peer")
            })
            .collect();
        assert!(warnings.is_empty(), "{warnings:#?}\n{}", log.join("\n"));
    }
}
