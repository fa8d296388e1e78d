//! The master's side of web listeners (`web_listen`): refusals in HTTP rather than telnet
//! text, web listeners passed by systemd (socket activation) by the name `web` (the fd store's
//! name for them is checked in `modes`), and web listeners that survive `chatctl upgrade`.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

use super::{Response, WebDaemon, read_response};
use crate::control::ok;
use crate::util::{Client, PATIENCE, Spawned, free_port, login, runtime_dir};

/// Connects to `port` from the loopback address `source` (127.0.0.x), as a browser or a proxy.
pub fn connect_from(port: u16, source: [u8; 4]) -> TcpStream {
    let stream = Client::connect_from(port, source).stream;
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream
}

/// `GET path` from `source` to `port`, and the whole answer.
fn get(port: u16, source: [u8; 4], path: &str) -> Response {
    let mut stream = connect_from(port, source);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send the request");
    read_response(&mut stream)
}

#[test]
fn a_web_client_refused_before_fork_gets_a_short_http_answer_not_a_telnet_line() {
    let web = WebDaemon::start("max_clients_per_ip = 1\n");
    let _alice = login(web.daemon.port, "alice");
    let refused = get(web.web_port, [127, 0, 0, 1], "/");
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(refused.head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{}", refused.head);
    assert_eq!(refused.header("connection").as_deref(), Some("close"));
    assert_eq!(refused.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
    let body = "Too many connections from your address; please try again later.\n";
    assert_eq!(String::from_utf8_lossy(&refused.body), body);
    assert_eq!(refused.header("content-length"), Some(body.len().to_string()));
    // An address ban is a 403, with the ban's reason.
    ok(web.daemon.chatctl(&["ban", "127.0.0.2", "spam"]));
    let banned = get(web.web_port, [127, 0, 0, 2], "/");
    assert_eq!(banned.status, 403, "{}", banned.head);
    assert_eq!(String::from_utf8_lossy(&banned.body), "You are banned from this server (spam).\n");
    // The telnet port still refuses in telnet words.
    let mut telnet = Client::connect(web.daemon.port);
    assert_eq!(
        telnet.next_line().as_deref(),
        Some("*** Too many connections from your address; please try again later.")
    );
}

#[test]
fn a_socket_systemd_passes_as_web_is_a_web_listener() {
    let dir = runtime_dir();
    let (plain, web) = (free_port(), free_port());
    let state = dir.path().join("state");
    let config = dir.path().join("chatd.toml");
    std::fs::write(&config, format!("user = \"nobody\"\nstate_dir = \"{}\"\n", state.display()))
        .expect("write the settings");
    let daemon = Spawned::spawn(
        Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{plain}"), "-l", &format!("127.0.0.1:{web}")])
            .args(["--fdname=chatd.socket:web", env!("CARGO_BIN_EXE_chatd"), "--log", "stderr"])
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .arg("--config")
            .arg(&config),
    );
    daemon.wait_for_log("Listening on");
    // The first connection starts chatd; a browser's request on the web socket gets the page.
    let page = get(web, [127, 0, 0, 1], "/");
    assert_eq!(page.status, 200, "{}", page.head);
    daemon.wait_for_log("using 2 listening socket(s) from systemd");
    daemon.wait_for_log(&format!("listening for web browsers on 127.0.0.1:{web}"));
    // The unit's own name is the plain listener's.
    daemon.wait_for_log(&format!("listening on 127.0.0.1:{plain}"));
    login(plain, "alice");
}

#[test]
fn a_web_listener_survives_an_upgrade_as_a_web_listener() {
    let web = WebDaemon::start("");
    let before = get(web.web_port, [127, 0, 0, 1], "/");
    assert_eq!(before.status, 200, "{}", before.head);
    let said = ok(web.daemon.chatctl(&["upgrade"]));
    assert!(said.starts_with("upgraded: "), "{said}");
    web.daemon.wait_for_log("upgraded to chatd ");
    let after = get(web.web_port, [127, 0, 0, 1], "/");
    assert_eq!(after.status, 200, "after the upgrade: {}", after.head);
    assert_eq!(after.body, before.body, "the same page");
    // And the telnet port is still a telnet one.
    login(web.daemon.port, "alice");
}
