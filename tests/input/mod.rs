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
