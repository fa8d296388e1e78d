//! What keeps passwords safe, against the real binary: the throttle after wrong passwords,
//! its log line and the shipped fail2ban filter that reads it, echo turned off for a telnet
//! client while it types a password, passwords refused on a plain port from another host (and
//! taken over TLS from it), and what the database keeps of a password (a verifier only).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::{FAST, PASSWORD, log_in_on, register, register_alone, self_signed_cert, tls_port};
use crate::util::tls_client::connect_tls;
use crate::util::{Client, Daemon, PATIENCE, fail2ban_regex, wait_until};

const IAC: u8 = 255;
const WILL: u8 = 251;
const WONT: u8 = 252;
const DO: u8 = 253;
const DONT: u8 = 254;
const ECHO: u8 = 1;
const SGA: u8 = 3;

#[test]
fn wrong_passwords_are_throttled_logged_and_found_by_fail2ban() {
    let daemon = Daemon::start_with_config(FAST);
    register_alone(&daemon, "alice", PASSWORD);
    let mut client = daemon.connect();
    client.expect_prefix("*** Please choose a nickname");
    let throttled = "*** Too many failed attempts; try again in ";
    // What the nickname prompt answers to `alice`: the password prompt, or the throttle.
    let answer_to_alice = |client: &mut Client| {
        client.send("alice");
        loop {
            let line = client.next_line().expect("an answer to the nick");
            if line == "*** Password for alice:" || line.starts_with(throttled) {
                return line;
            }
        }
    };
    let mut wrong = 0;
    let seconds: u64 = loop {
        let answer = answer_to_alice(&mut client);
        if let Some(rest) = answer.strip_prefix(throttled) {
            let seconds = rest.strip_suffix(" seconds").and_then(|n| n.parse().ok());
            break seconds.unwrap_or_else(|| panic!("{answer:?}"));
        }
        assert!(wrong < 4, "a fifth password was asked for: {:?}", client.seen);
        client.send(&format!("not the password {wrong}"));
        client.expect("*** Wrong password for alice");
        client.expect_prefix("*** Please choose a nickname");
        wrong += 1;
    };
    // 3 failures a minute, then a back-off of 30 s.
    assert!(wrong >= 3, "throttled after {wrong} wrong passwords");
    assert!((1..=30).contains(&seconds), "a back-off of {seconds} seconds");
    // While it lasts, no password is asked for at all.
    client.expect_prefix("*** Please choose a nickname");
    let answer = answer_to_alice(&mut client);
    assert!(answer.starts_with(throttled), "a password was asked for while throttled");

    let logged =
        daemon.wait_for_log_count("authentication failure for alice from 127.0.0.1", wrong);
    assert!(
        logged.ends_with(": notice: authentication failure for alice from 127.0.0.1"),
        "{logged:?}"
    );
    // The shipped filter finds each failure in what the daemon wrote (no other line of it).
    let dir = tempfile::tempdir().expect("temp dir");
    let log_file = dir.path().join("chatd.log");
    let lines = daemon.log();
    std::fs::write(&log_file, lines.join("\n") + "\n").expect("write the log");
    let failures = lines.iter().filter(|line| line.contains("authentication failure")).count();
    let found = fail2ban_regex(&log_file.to_string_lossy());
    assert_eq!(found, vec!["127.0.0.1"; failures], "what fail2ban found");
    // And in syslog's form, for an IPv6 source.
    let syslog =
        "Dec  1 19:00:00 host chatd[4242]: authentication failure for bob from 2001:db8::7";
    assert_eq!(fail2ban_regex(syslog), ["2001:db8::7"], "what fail2ban found");
}

/// A line-mode telnet client (as Linux telnet is by default): it speaks telnet first, refuses
/// what chatd offers (it echoes for itself), and keeps every byte it receives, in order.
struct LineModeTelnet {
    stream: TcpStream,
    received: Vec<u8>,
}

impl LineModeTelnet {
    fn connect(port: u16) -> LineModeTelnet {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut client = LineModeTelnet { stream, received: Vec::new() };
        client.send(&[IAC, WONT, SGA]);
        // chatd answers the first command with its offers, ECHO among them: refuse them all.
        client.wait_for(0, &[IAC, WILL, ECHO]);
        let mut refusals = Vec::new();
        for command in client.received.windows(3).filter(|w| w[0] == IAC) {
            match command[1] {
                WILL => refusals.extend_from_slice(&[IAC, DONT, command[2]]),
                DO => refusals.extend_from_slice(&[IAC, WONT, command[2]]),
                _ => {}
            }
        }
        client.send(&refusals);
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Waits until `needle` was received at or after `from`; returns where it starts.
    fn wait_for(&mut self, from: usize, needle: &[u8]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(at) = self
                .received
                .get(from..)
                .and_then(|tail| tail.windows(needle.len()).position(|window| window == needle))
            {
                return from + at;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never came; received:\n{:?}",
                String::from_utf8_lossy(&self.received)
            );
            let mut buffer = [0u8; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => panic!("closed; received {:?}", String::from_utf8_lossy(&self.received)),
                Ok(n) => self.received.extend_from_slice(&buffer[..n]),
                Err(err) => panic!("read ({err}); received {:?}", self.received),
            }
        }
    }
}

#[test]
fn a_password_prompt_turns_echo_off_and_a_wrong_password_turns_it_on_again() {
    let daemon = Daemon::start_with_config(FAST);
    register_alone(&daemon, "alice", PASSWORD);

    let mut telnet = LineModeTelnet::connect(daemon.port);
    telnet.wait_for(0, b"Please choose a nickname");
    let asked = telnet.received.len();
    telnet.send(b"alice\r\n");
    let prompt = telnet.wait_for(asked, b"Password for alice:");
    let will_echo = telnet.wait_for(asked, &[IAC, WILL, ECHO]);
    assert!(will_echo < prompt, "IAC WILL ECHO came after the password prompt");
    // The client stops echoing; what it types next is not echoed by chatd either.
    telnet.send(&[IAC, DO, ECHO]);
    let typed = telnet.received.len();
    telnet.send(b"not the password\r\n");
    telnet.wait_for(typed, b"Wrong password for alice");
    telnet.wait_for(typed, &[IAC, WONT, ECHO]);
    telnet.send(&[IAC, DONT, ECHO]);
    let again = telnet.wait_for(typed, b"Please choose a nickname");
    let shown = &telnet.received[typed..again];
    assert!(
        !shown.windows(16).any(|w| w == b"not the password"),
        "the password was echoed: {:?}",
        String::from_utf8_lossy(shown)
    );
    telnet.send(b"bob\r\n");
    telnet.wait_for(again, b"You are now known as bob.");

    // A client that never spoke telnet is told that its terminal shows what it types.
    let mut plain = daemon.connect();
    plain.expect_prefix("*** Please choose a nickname");
    plain.send("alice");
    let before = plain.expect("*** Password for alice:");
    assert!(
        before.iter().any(|line| line == "*** Your terminal will show what you type next."),
        "{before:?}"
    );
}

/// A veth interface with an address of TEST-NET-2 on the host, for a machine whose only
/// address is loopback; deleted when dropped.
struct LocalAddress {
    interface: String,
}

impl LocalAddress {
    fn add() -> (LocalAddress, Ipv4Addr) {
        let id = std::process::id() % 100_000;
        let interface = format!("chatd{id}");
        let address = Ipv4Addr::new(198, 51, 100, (id % 200 + 20) as u8);
        let ip = |args: &[&str]| {
            let output = Command::new("ip").args(args).output().expect("run ip (iproute2)");
            assert!(
                output.status.success(),
                "ip {args:?} (the test needs root, or an address other than loopback): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        ip(&["link", "add", &interface, "type", "veth", "peer", "name", &format!("{interface}p")]);
        let added = LocalAddress { interface };
        ip(&["addr", "add", &format!("{address}/32"), "dev", &added.interface]);
        ip(&["link", "set", &added.interface, "up"]);
        (added, address)
    }
}

impl Drop for LocalAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.interface]).output();
    }
}

/// An IPv4 address of this machine that is not loopback: one its interfaces have, or one
/// added for the test (with what removes it again).
fn address_other_than_loopback() -> (Ipv4Addr, Option<LocalAddress>) {
    let existing = nix::ifaddrs::getifaddrs().ok().and_then(|mut addresses| {
        addresses.find_map(|interface| {
            let up = interface.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let ip = interface.address?.as_sockaddr_in()?.ip();
            (up && !ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
    });
    match existing {
        Some(ip) => (ip, None),
        None => {
            let (added, ip) = LocalAddress::add();
            (ip, Some(added))
        }
    }
}

#[test]
fn a_plain_port_refuses_passwords_from_another_host_and_tls_takes_them() {
    let (ip, _added) = address_other_than_loopback();
    // Plain and TLS listeners on that address, besides the harness's loopback one.
    let script = format!("exec \"$0\" \"$@\" --listen {ip}:0");
    let daemon = Daemon::start_through(
        &["sh", "-c", &script],
        &format!("{FAST}tls_listen = [\"{ip}:0\"]\n"),
    );
    let plain_line = daemon.wait_for_log(&format!("listening on {ip}:"));
    let plain_port: u16 = plain_line.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let tls = tls_port(&daemon, &ip.to_string());
    // Loopback is exempt: alice registers from there.
    register_alone(&daemon, "alice", PASSWORD);

    let mut remote = Client::connect_to(SocketAddr::from((ip, plain_port)));
    let source = remote.stream.local_addr().expect("local address").ip();
    assert!(!source.is_loopback(), "the client's address is {source}");
    remote.expect_prefix("*** Please choose a nickname");
    remote.send("alice");
    remote.expect(&format!(
        "*** alice is registered; passwords are accepted only over TLS (port {tls})"
    ));
    remote.expect_prefix("*** Please choose a nickname");
    remote.send("carol");
    remote.expect("*** You are now known as carol. Type /help for commands.");
    remote.send("/register");
    remote.expect(&format!("*** passwords are accepted only over TLS (port {tls})"));

    let secure = connect_tls(SocketAddr::from((ip, tls)), &self_signed_cert(&daemon));
    let mut secure = log_in_on(secure, "alice", PASSWORD);
    secure.expect("*** alice has joined lobby");
    remote.expect("*** alice has joined lobby");
}

/// `sqlite3 -readonly DB SQL`: its output lines (list mode, `|` between columns).
fn sqlite(db: &Path, sql: &str) -> Option<Vec<String>> {
    let output = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (apt-get install sqlite3)");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect())
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|at| u8::from_str_radix(&hex[2 * at..2 * at + 2], 16).expect("hex from sqlite3"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn the_database_keeps_a_verifier_of_the_tag_and_neither_the_tag_nor_the_password() {
    let (memory_kib, passes) = (64, 2);
    let daemon = Daemon::start_with_config(&format!(
        "password_memory_kib = {memory_kib}\npassword_passes = {passes}\n"
    ));
    let mut alice = daemon.login("alice");
    register(&mut alice, "alice", PASSWORD);
    let state = daemon.runtime.path().join("state");
    let db = state.join("chatd.db");
    wait_until("the account is stored", || {
        sqlite(&db, "SELECT count(*) FROM accounts").is_some_and(|rows| rows == ["1"])
    });

    // Every value of the row, as bytes (text as UTF-8, numbers as their digits).
    let columns = sqlite(&db, "SELECT name FROM pragma_table_info('accounts')").expect("columns");
    let values: Vec<(String, String, Vec<u8>)> = columns
        .iter()
        .map(|column| {
            let sql = format!("SELECT typeof(\"{column}\"), hex(\"{column}\") FROM accounts");
            let row = sqlite(&db, &sql).expect("a value").concat();
            let (kind, hex) = row.split_once('|').unwrap_or_else(|| panic!("{row:?}"));
            (column.clone(), kind.to_string(), unhex(hex))
        })
        .collect();
    let (_, kind, verifier) = values
        .iter()
        .find(|(column, _, _)| column == "verifier")
        .unwrap_or_else(|| panic!("no verifier column among {columns:?}"));
    assert_eq!((kind.as_str(), verifier.len()), ("blob", 32), "the verifier");

    // The scheme, pinned: verifier = SHA-256(Argon2id(password, salt)), salt from the row.
    let params = argon2::Params::new(memory_kib, passes, 1, Some(32)).expect("parameters");
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let tag = values
        .iter()
        .filter(|(_, kind, _)| kind == "blob")
        .find_map(|(_, _, salt)| {
            let mut tag = vec![0u8; 32];
            argon2.hash_password_into(PASSWORD.as_bytes(), salt, &mut tag).ok()?;
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&tag);
            (digest.as_slice() == verifier.as_slice()).then_some(tag)
        })
        .unwrap_or_else(|| panic!("no salt in the row gives the verifier: {values:?}"));

    for (column, _, value) in &values {
        assert!(!contains(value, PASSWORD.as_bytes()), "the password is in {column}");
        assert!(!contains(value, &tag), "the tag is in {column}");
    }
    // Nor anywhere in the files (the write-ahead log included).
    let files = std::fs::read_dir(&state).expect("the state directory");
    for file in files.filter_map(Result::ok) {
        let name = file.file_name().to_string_lossy().into_owned();
        if !name.starts_with("chatd.db") {
            continue;
        }
        let bytes = std::fs::read(file.path()).expect("read a database file");
        assert!(!contains(&bytes, PASSWORD.as_bytes()), "the password is in {name}");
        assert!(!contains(&bytes, &tag), "the tag is in {name}");
    }
}

/// Each wrong password is a penalty trip for the address in the master's admission: a guesser
/// that goes on reconnecting is refused at connect, as a scanner is.
#[test]
fn wrong_passwords_earn_the_address_a_penalty() {
    let config = format!("{FAST}penalty_trips = 2\npenalty_seconds = 60\n");
    let daemon = Daemon::start_with_config(&config);
    register_alone(&daemon, "alice", PASSWORD);
    let mut guesser = daemon.connect();
    for _ in 0..2 {
        guesser.expect_prefix("*** Please choose a nickname");
        guesser.send("alice");
        guesser.expect("*** Password for alice:");
        guesser.send("not the password");
        guesser.expect("*** Wrong password for alice");
    }
    // The session reported each failure before its client was told; the master reads the
    // reports before it decides on a new connection.
    let mut next = daemon.connect();
    next.expect_prefix("*** Your address is refused for");
}
