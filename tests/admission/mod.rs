//! Admission limits the master checks before it forks: total, per source, clients still
//! choosing a nickname, penalties, and rate-limited refusal logging.

use crate::util::{Client, Daemon, PATIENCE, wait_until};
use std::time::Instant;

/// Connects and returns the first line the server says.
fn first_line(client: &mut Client) -> String {
    client.next_line().expect("the server says something first")
}

#[test]
fn a_full_server_refuses_with_one_line_before_any_fork() {
    let daemon = Daemon::start_with_config("max_clients = 2\n");
    let [_a, _b] = daemon.room(["alice", "bob"]);
    let processes = daemon.processes().len();
    let mut third = daemon.connect();
    assert_eq!(first_line(&mut third), "*** The server is full; please try again later.");
    assert!(third.is_closed());
    assert_eq!(daemon.processes().len(), processes, "a refused client cost a process");
    let line = daemon.wait_for_log("server full");
    assert!(line.contains(": notice: refused 127.0.0.1:"), "logged at notice: {line}");
}

#[test]
fn connections_are_limited_per_source_address() {
    let daemon = Daemon::start_with_config("max_clients_per_ip = 2\n");
    let [_a, _b] = daemon.room(["alice", "bob"]);
    let mut third = daemon.connect();
    assert_eq!(
        first_line(&mut third),
        "*** Too many connections from your address; please try again later."
    );
    let mut elsewhere = Client::connect_from(daemon.port, [127, 0, 0, 2]);
    elsewhere.expect_prefix("*** Please choose a nickname");
}

#[test]
fn clients_still_choosing_a_nickname_are_capped() {
    let daemon = Daemon::start_with_config("max_startups = \"2\"\n");
    let mut first = daemon.connect();
    first.expect_prefix("*** Please choose a nickname");
    let mut second = daemon.connect();
    second.expect_prefix("*** Please choose a nickname");
    let mut third = daemon.connect();
    assert_eq!(
        first_line(&mut third),
        "*** Too many people are logging in right now; please try again in a moment."
    );
    first.send("alice");
    first.expect("*** alice has joined lobby");
    let mut fourth = daemon.connect();
    fourth.expect_prefix("*** Please choose a nickname");
}

#[test]
fn a_source_that_keeps_failing_is_penalised_then_forgiven() {
    let daemon = Daemon::start_with_config(
        "penalty_trips = 3\npenalty_seconds = 1\npenalty_max_seconds = 4\n",
    );
    for _ in 0..3 {
        let mut quitter = Client::connect_from(daemon.port, [127, 0, 0, 3]);
        quitter.expect_prefix("*** Please choose a nickname");
    }
    daemon.wait_for_log("source 127.0.0.3 refused for 1 s after repeated trips");
    let mut refused = Client::connect_from(daemon.port, [127, 0, 0, 3]);
    let line = first_line(&mut refused);
    assert!(line.starts_with("*** Your address is refused for "), "{line}");
    // Other sources are not affected.
    let _alice = daemon.login("alice");
    // The penalty expires by itself.
    let started = Instant::now();
    let mut greeted = false;
    wait_until("the penalty expires", || {
        let mut client = Client::connect_from(daemon.port, [127, 0, 0, 3]);
        greeted = first_line(&mut client).starts_with("*** Welcome");
        if greeted {
            client.expect_prefix("*** Please choose a nickname");
            client.send("back_again");
            client.expect("*** back_again has joined lobby");
        }
        greeted
    });
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn refusals_are_logged_once_per_window_with_a_summary() {
    let daemon = Daemon::start_with_config("max_clients = 1\npenalty_trips = 1000\n");
    let _alice = daemon.login("alice");
    for _ in 0..15 {
        let mut refused = daemon.connect();
        assert_eq!(first_line(&mut refused), "*** The server is full; please try again later.");
    }
    daemon.wait_for_log("14 more refused connections (server full) in the last 5 s");
    let logged = daemon.log().iter().filter(|l| l.contains("refused 127.0.0.1")).count();
    assert_eq!(logged, 1, "one line for the first refusal:\n{}", daemon.log().join("\n"));
}

#[test]
fn sighup_reloads_limits_without_dropping_anyone_and_refuses_a_broken_file() {
    let daemon = Daemon::start_with_config("max_clients = 1\n");
    let config = daemon.runtime.path().join("chatd.toml");
    let mut alice = daemon.login("alice");
    let mut refused = daemon.connect();
    assert_eq!(first_line(&mut refused), "*** The server is full; please try again later.");

    std::fs::write(&config, "max_clients = 5\n").expect("rewrite config");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    daemon.wait_for_log("broker reloaded its configuration");
    let mut bob = daemon.login_seen_by("bob", &mut [&mut alice]);
    alice.send("nobody was dropped");
    bob.expect("<alice> nobody was dropped");

    std::fs::write(&config, "max_clients = \"many\"\n").expect("break config");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let line = daemon.wait_for_log("reload failed, keeping the old configuration");
    assert!(line.contains("error") && line.contains("max_clients"), "{line}");
    let _carol = daemon.login("carol");
    alice.send("still fine");
    bob.expect("<alice> still fine");
}

#[test]
fn check_config_names_the_bad_key_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |text: &str| {
        let path = dir.path().join("chatd.toml");
        std::fs::write(&path, text).expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .expect("run chatd --check-config")
    };
    let good = check("max_clients = 10\nlog = \"stderr\"\n");
    assert!(good.status.success());
    assert!(String::from_utf8_lossy(&good.stdout).ends_with("chatd.toml: ok\n"));
    let bad = check("log = \"stderr\"\n\nmax_client = 10\n");
    assert_eq!(bad.status.code(), Some(1));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("max_client") && message.contains("line 3"), "{message}");
    let zero = check("flood_burst = 0\n");
    let message = String::from_utf8_lossy(&zero.stderr);
    assert!(message.contains("line 1: flood_burst: must be at least 1"), "{message}");
    let shipped = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("--check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/chatd.toml"))
        .output()
        .expect("check the shipped config");
    assert!(shipped.status.success(), "{}", String::from_utf8_lossy(&shipped.stderr));
}

/// Issue 13: 100 idle connections from 13 addresses (as an attacker with a few addresses
/// would hold them for the login grace), then 20 newcomers from 20 other addresses.
/// Measured on 18d658b: 5 to 12 of the 20 got in (5 runs), the attack holding 53-63; now 14
/// to 20 (10 runs, mean 16.5), the attack holding at most 39.
#[test]
fn a_few_addresses_holding_idle_connections_do_not_shut_out_newcomers() {
    let daemon = Daemon::start();
    let mut idle = Vec::new();
    let mut held = 0;
    for n in 0..100u8 {
        let mut client = Client::connect_from(daemon.port, [127, 0, 0, 2 + n % 13]);
        if first_line(&mut client).starts_with("*** Welcome") {
            held += 1;
        }
        idle.push(client);
    }
    let mut admitted = 0;
    for n in 1..=20u8 {
        let mut newcomer = Client::connect_from(daemon.port, [127, 0, 1, n]);
        if first_line(&mut newcomer).starts_with("*** Welcome") {
            newcomer.expect_prefix("*** Please choose a nickname");
            newcomer.send(&format!("newcomer{n}"));
            newcomer.expect(&format!("*** newcomer{n} has joined lobby"));
            admitted += 1;
        }
    }
    eprintln!("attack held {held} of 100 connections; newcomers admitted: {admitted} of 20");
    assert!(held <= 39, "at most 3 waiting per source: {held}");
    // Each newcomer is refused with about 17% probability: 10 or more get in but for one run
    // in several thousand.
    assert!(admitted >= 10, "newcomers admitted under the attack: {admitted} of 20");
}

#[test]
fn check_config_says_what_an_empty_or_mistyped_value_wants() {
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |text: &str| {
        let path = dir.path().join("chatd.toml");
        std::fs::write(&path, text).expect("write");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .expect("run chatd --check-config");
        assert_eq!(output.status.code(), Some(1), "{text}");
        String::from_utf8_lossy(&output.stderr).trim_end().to_string()
    };
    let empty = check("log = \"stderr\"\nmax_clients =\n");
    assert!(
        empty.ends_with(
            "chatd.toml line 2: max_clients has no value: it wants a whole number, without \
             quotes, like `max_clients = 1024` (or remove the line for the default)"
        ),
        "{empty}"
    );
    assert!(!empty.contains("must be quoted"), "{empty}");
    let mistyped = check("\n\n\nerror_budget = \"twenty\"\n");
    assert!(
        mistyped.ends_with(
            "chatd.toml line 4: error_budget = \"twenty\" is not what it wants: a whole number \
             from 0 to 4294967295, without quotes, like `error_budget = 20`"
        ),
        "{mistyped}"
    );
    assert!(!mistyped.contains("u32"), "{mistyped}");
    let unquoted = check("state_dir = /var/lib/chatd\n");
    assert!(
        unquoted.contains(
            "line 1: state_dir = /var/lib/chatd is not what it wants: a path in double quotes"
        ),
        "{unquoted}"
    );
}
