//! What people and their programs send: a browser or `curl` on the chat port, pastes, and the
//! keys of a line editor.

use std::process::Command;

use crate::util::{Client, Daemon};

/// `curl` on the chat port gets a short, valid HTTP answer at once; twelve probes from one
/// address do not put it in the penalty box (3 trips would), and a person there logs in.
#[test]
fn curl_gets_an_http_answer_and_its_address_is_not_penalised() {
    let daemon = Daemon::start_with_config("penalty_trips = 3\npenalty_seconds = 60\n");
    let url = format!("http://127.0.0.1:{}/", daemon.port);
    for probe in 0..12 {
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--include", "--max-time", "5", &url])
            .output()
            .expect("curl (Debian package curl) must be installed");
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "probe {probe}: curl failed: {}\n{answer}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "probe {probe}: {answer}");
        assert!(answer.contains("telnet <this host>"), "probe {probe}: {answer}");
    }
    let head = Command::new("curl")
        .args(["--silent", "--head", "--max-time", "5", &url])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&head.stdout).starts_with("HTTP/1.0 400"));
    let mut alice = daemon.login("alice");
    alice.send("/who");
    alice.expect_prefix("*** In lobby");
    daemon.wait_for_log("an HTTP request on the chat port, answered");
}

/// A request that arrives only after the greeting (a slow client) is answered too, and the
/// connection closes instead of waiting for a nickname.
#[test]
fn a_late_http_request_line_is_answered_and_closed() {
    let daemon = Daemon::start();
    let mut client = Client::connect(daemon.port);
    client.expect_prefix("*** Please choose a nickname");
    client.send("GET /index.html HTTP/1.1");
    client.send("Host: example");
    client.send("");
    client.expect("HTTP/1.0 400 Bad Request");
    assert!(client.is_closed());
}

/// Reads `reader`'s lines from `sender` until `<sender> end`, returning the texts before it.
fn said_until_end(reader: &mut Client, sender: &str) -> Vec<String> {
    let prefix = format!("<{sender}> ");
    reader
        .expect(&format!("<{sender}> end"))
        .into_iter()
        .filter_map(|line| line.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// A 200-line paste with the default queue: every line is delivered, in order, late rather
/// than never (the rate is raised only to keep the test short).
#[test]
fn a_200_line_paste_is_delivered_whole() {
    let daemon = Daemon::start_with_config("flood_lines_per_second = 100.0\n");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let paste: String = (1..=200).map(|n| format!("paste {n}\r\n")).collect();
    alice.send_raw(paste.as_bytes());
    alice.send("end");
    let expected: Vec<String> = (1..=200).map(|n| format!("paste {n}")).collect();
    assert_eq!(said_until_end(&mut bob, "alice"), expected);
    let refusals: Vec<&String> = alice.seen.iter().filter(|l| l.contains("not sent")).collect();
    assert!(refusals.is_empty(), "{refusals:?}");
}

/// A paste beyond the queue: the lines refused are counted, and the count the user is told
/// is exactly what the others did not get.
#[test]
fn a_paste_beyond_the_queue_is_told_exactly_how_many_lines_were_not_sent() {
    let daemon = Daemon::start_with_config("flood_queue = 20\nflood_lines_per_second = 50.0\n");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let paste: String = (1..=200).map(|n| format!("paste {n}\r\n")).collect();
    alice.send_raw(paste.as_bytes());
    let told = alice.expect_prefix("*** ");
    let told = if told.contains("too fast") { alice.expect_prefix("*** ") } else { told };
    let refused: usize = told
        .strip_prefix("*** ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count in {told:?}"));
    assert!(
        told.ends_with("not sent: you sent faster than 50 lines/s and at most 20 can wait. Send them again, at most 30 at a time."),
        "{told}"
    );
    alice.send("end");
    let delivered = said_until_end(&mut bob, "alice");
    assert_eq!(delivered.len() + refused, 200, "delivered {delivered:?}, told {told:?}");
    let numbers: Vec<u32> =
        delivered.iter().filter_map(|l| l.strip_prefix("paste ")?.parse().ok()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order: {numbers:?}");
}

/// 25 pasted lines that start with a path are chat, and 25 pasted unknown commands are
/// answered: nobody is disconnected for pasting (the budget is 20 invalid commands in a row).
#[test]
fn pasting_paths_and_unknown_commands_never_disconnects() {
    let daemon = Daemon::start_with_config("flood_lines_per_second = 100.0\n");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let paths: String = (1..=25).map(|n| format!("/usr/bin/tool{n} --version\r\n")).collect();
    alice.send_raw(paths.as_bytes());
    alice.send("end");
    let expected: Vec<String> = (1..=25).map(|n| format!("/usr/bin/tool{n} --version")).collect();
    assert_eq!(said_until_end(&mut bob, "alice"), expected);
    let unknown: String = (1..=25).map(|n| format!("/nosuch{n}\r\n")).collect();
    alice.send_raw(unknown.as_bytes());
    alice.expect("*** Unknown command /nosuch25; try /help");
    alice.send("still here");
    bob.expect("<alice> still here");
}

/// `/nick a b` says why the name is refused (a space), before and after login, as the prompt
/// would, rather than a bare usage line.
#[test]
fn a_nickname_of_two_words_is_refused_with_the_reason() {
    let daemon = Daemon::start();
    let why = "*** Invalid nickname \"a b\": \" \" is not allowed in a nickname (use letters";
    let mut client = Client::connect(daemon.port);
    client.expect_prefix("*** Please choose a nickname");
    client.send("/nick a b");
    client.expect_prefix(why);
    client.expect_prefix("*** Please choose a nickname");
    client.send("/nick alice");
    client.expect("*** alice has joined lobby");
    client.send("/nick a b");
    client.expect_prefix(why);
    client.send("/nick");
    client.expect("*** Usage: /nick NAME");
}

/// A netcat user of a `telnet = true` listener sees `*** Welcome`, not `**** Welcome`: the
/// CHARSET offer (option 42, a `*`) waits until the client has sent telnet itself.
#[test]
fn a_telnet_listener_shows_netcat_no_stray_star_and_offers_charset_to_telnet_clients() {
    const IAC: u8 = 255;
    let daemon = Daemon::start_with_config("telnet = true\n");
    let mut netcat = Client::connect(daemon.port);
    let raw = netcat.read_raw_until(b"*** Welcome");
    let before = &raw[..raw.len() - b"*** Welcome".len()];
    assert!(!before.contains(&b'*'), "a stray * before the greeting: {raw:?}");
    assert!(before.starts_with(&[IAC]), "the offer is still made: {raw:?}");
    let mut telnet = Client::connect(daemon.port);
    telnet.read_raw_until(b"Please choose a nickname");
    telnet.send_raw(&[IAC, 252, 99]);
    telnet.read_raw_until(&[IAC, 251, 42]);
}
