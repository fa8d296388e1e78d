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
    let _a = daemon.login("alice");
    let _b = daemon.login("bob");
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
    let _a = daemon.login("alice");
    let _b = daemon.login("bob");
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
