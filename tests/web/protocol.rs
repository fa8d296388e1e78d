//! The web listener's HTTP and WebSocket protocol: pages and their headers, every error
//! status, the request head's limits (size, time), the handshake's checks, and a browser's
//! chat session (lines both ways with a telnet user, a message too big, a client that never
//! reads).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use super::{WebDaemon, expect_message, login, read_response, send};
use crate::util::{Client, PATIENCE};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(port: u16, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\n{extra}\r\n"
    )
}

#[test]
fn the_page_comes_with_its_headers_and_head_without_its_body() {
    let web = WebDaemon::start("");
    let page = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/web/chat.html")).expect("page");
    let got = web.http("GET /?from=test HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(got.status, 200, "{}", got.head);
    assert_eq!(got.body, page);
    assert_eq!(got.header("content-length"), Some(page.len().to_string()));
    assert_eq!(got.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    assert_eq!(got.header("connection").as_deref(), Some("close"));
    assert_eq!(got.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(got.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(got.header("referrer-policy").as_deref(), Some("no-referrer"));
    assert_eq!(got.header("x-frame-options").as_deref(), Some("DENY"));
    let csp = got.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'none'; script-src 'self';"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let head = web.http("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(page.len().to_string()));
    assert!(head.body.is_empty(), "HEAD has no body: {:?}", head.body);
    let script = web.http("GET /chat.js HTTP/1.0\r\n\r\n");
    assert_eq!(script.status, 200);
    assert_eq!(script.header("content-type").as_deref(), Some("text/javascript; charset=utf-8"));
    let admin = web.http("GET /admin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(admin.status, 200);
    assert!(admin.header("content-security-policy").is_some());
}

#[test]
fn unknown_paths_other_methods_and_the_favicon_get_short_answers() {
    let web = WebDaemon::start("");
    let missing = web.http("GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(missing.status, 404, "{}", missing.head);
    assert_eq!(missing.header("content-length"), Some(missing.body.len().to_string()));
    let post = web.http("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(post.status, 405, "{}", post.head);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
    let icon = web.http("GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(icon.status, 204, "{}", icon.head);
    assert!(icon.body.is_empty());
    let garbage = web.http("this is no http\r\n\r\n");
    assert_eq!(garbage.status, 400, "{}", garbage.head);
}

#[test]
fn a_head_over_8_kib_is_refused_with_431() {
    let web = WebDaemon::start("");
    let mut stream = web.connect();
    let cookie = "c".repeat(9 * 1024);
    // Written without its end: the server answers as soon as it has 8 KiB.
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let got = read_response(&mut stream);
    assert_eq!(got.status, 431, "{}", got.head);
}

#[test]
fn a_head_that_trickles_is_cut_off_with_408() {
    let web = WebDaemon::start("");
    let mut stream = web.connect();
    stream.set_read_timeout(Some(Duration::from_secs(12))).expect("timeout");
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").expect("half a head");
    let got = read_response(&mut stream);
    assert_eq!(got.status, 408, "{}", got.head);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(12), "{waited:?}");
}

#[test]
fn the_handshake_checks_version_key_and_origin() {
    let web = WebDaemon::start("");
    let port = web.web_port;
    let old = web.http(&upgrade_request(
        port,
        &format!("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n"),
    ));
    assert_eq!(old.status, 426, "{}", old.head);
    assert_eq!(old.header("sec-websocket-version").as_deref(), Some("13"));
    let bad_key = web
        .http(&upgrade_request(port, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n"));
    assert_eq!(bad_key.status, 400, "{}", bad_key.head);
    let plain = web.http(&format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"));
    assert_eq!(plain.status, 426, "{}", plain.head);
    let foreign = web.http(&upgrade_request(
        port,
        &format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: http://evil.example\r\n"),
    ));
    assert_eq!(foreign.status, 403, "{}", foreign.head);
    web.daemon.wait_for_log("web socket from http://evil.example refused for 127.0.0.1:");
    // The page's own origin, and none at all (a non-browser client), are let in.
    for origin in [format!("Origin: http://127.0.0.1:{port}\r\n"), String::new()] {
        let mut stream = web.connect();
        let request = upgrade_request(
            port,
            &format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{origin}"),
        );
        stream.write_all(request.as_bytes()).expect("send");
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{origin:?}: {head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
    }
}

/// Reads up to the end of a head (the connection stays open).
fn read_head(stream: &mut TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("head ended ({other:?}): {:?}", String::from_utf8_lossy(&head)),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn a_browser_and_a_telnet_user_talk_both_ways() {
    let web = WebDaemon::start("");
    let mut bob = crate::util::login(web.daemon.port, "bob");
    let mut alice = web.websocket();
    login(&mut alice, "alice");
    bob.expect("*** alice has joined lobby");
    send(&mut alice, "hello from the browser");
    bob.expect("<alice> hello from the browser");
    bob.send("hello from telnet");
    expect_message(&mut alice, "with bob's line", |m| {
        m.contains("bob") && m.contains("hello from telnet")
    });
    // Two lines in one message are two lines, as in a paste.
    send(&mut alice, "first\nsecond");
    bob.expect("<alice> first");
    bob.expect("<alice> second");
    alice.close(None).expect("close");
    bob.expect_prefix("*** alice has left");
}

#[test]
fn a_message_over_4_kib_is_closed_with_1009() {
    let web = WebDaemon::start("");
    let mut alice = web.websocket();
    login(&mut alice, "alice");
    send(&mut alice, &"x".repeat(5000));
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no Close within {PATIENCE:?}");
        match alice.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
                break;
            }
            Ok(Message::Close(None)) => panic!("a Close without its code"),
            Ok(_) => {}
            Err(err) => panic!("the socket ended without a Close: {err}"),
        }
    }
}

#[test]
fn a_browser_that_never_reads_is_dropped_and_the_room_sees_it_leave() {
    let web = WebDaemon::start(&format!(
        "send_queue_bytes = 16384\n{}",
        crate::reliability::NO_FLOOD_CONTROL
    ));
    let [mut alice, mut bob] = web.daemon.room(["alice", "bob"]);
    let small = Client::connect_small_window(web.web_port);
    let mut sleepy = super::websocket_over(small.stream.try_clone().expect("clone"), web.web_port);
    login(&mut sleepy, "sleepy");
    alice.expect("*** sleepy has joined lobby");
    bob.expect("*** sleepy has joined lobby");
    // From here on, sleepy reads nothing.
    let line = "y".repeat(400);
    let left = "*** sleepy has left (too slow)";
    let mut seen_left = false;
    let mut dropped = false;
    for round in 0..4000 {
        alice.send(&format!("{round} {line}"));
        let skipped = bob.expect(&format!("<alice> {round} {line}"));
        seen_left |= skipped.iter().any(|l| l == left);
        if round % 50 == 0 && web.daemon.log().iter().any(|l| l.contains("fell behind")) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the non-reading browser was never dropped");
    if !seen_left {
        bob.expect(left);
    }
    drop(sleepy);
}

#[test]
fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let web = WebDaemon::start("");
    let mut stream = web.connect();
    let request = upgrade_request(
        web.web_port,
        &format!(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nX-Forwarded-For: 203.0.113.9\r\n"
        ),
    );
    stream.write_all(request.as_bytes()).expect("send");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    web.daemon.wait_for_log("connection from 127.0.0.1:");
    assert!(
        !web.daemon.log().iter().any(|line| line.contains("203.0.113.9")),
        "{:#?}",
        web.daemon.log()
    );
}

#[test]
fn a_browser_on_the_chat_port_is_sent_to_the_web_listener() {
    let web = WebDaemon::start("");
    let mut stream = TcpStream::connect(("127.0.0.1", web.daemon.port)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let request = format!("GET / HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", web.daemon.port);
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{answer}");
    let link = format!("<a href=\"http://localhost:{}/\">", web.web_port);
    assert!(answer.contains(&link), "{link} in {answer}");
}

#[test]
fn page_views_and_unused_connections_put_nobody_in_the_penalty_box() {
    let web = WebDaemon::start("penalty_trips = 2\npenalty_seconds = 60\n");
    for _ in 0..4 {
        // A browser's speculative connection, never used.
        drop(web.connect());
        assert_eq!(web.http("GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n").status, 404);
        assert_eq!(web.http("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    }
    // A penalised source would be refused here (two trips would do).
    let mut alice = web.websocket();
    login(&mut alice, "alice");
    let log = web.daemon.log();
    let trouble =
        |line: &&String| line.contains("repeated trips") || line.contains("cannot confine");
    assert!(!log.iter().any(|line| trouble(&line)), "{log:#?}");
}
