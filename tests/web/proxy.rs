//! Behind a reverse proxy (`trusted_proxies`): `X-Forwarded-For` is believed only from a
//! trusted peer, and then the client's own address is what `chatctl who` shows and what
//! admission (per-address limits) and address bans count; the proxy's own address is held to
//! the totals only. The real flow: an upgrade to `/ws` with the header, then a nickname.

use std::net::TcpStream;

use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;

use super::listener::connect_from;
use super::{WebDaemon, login};
use crate::control::ok;
use crate::util::{Client, Spawned, free_port, login_on, runtime_dir, wait_until};

/// A proxy on 127.0.0.1 is trusted; one address may hold one connection.
fn behind_a_proxy() -> WebDaemon {
    WebDaemon::start("trusted_proxies = [\"127.0.0.1/32\"]\nmax_clients_per_ip = 1\n")
}

/// A WebSocket from `proxy` whose `X-Forwarded-For` says `client`; `Err` with the answer's
/// status when the server does not upgrade (0: it closed without one).
fn through(web: &WebDaemon, proxy: [u8; 4], client: &str) -> Result<WebSocket<TcpStream>, u16> {
    through_port(web.web_port, proxy, client)
}

/// [`through`] to the web listener on `port`.
fn through_port(port: u16, proxy: [u8; 4], client: &str) -> Result<WebSocket<TcpStream>, u16> {
    let stream = connect_from(port, proxy);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert("X-Forwarded-For", client.parse().expect("a header value"));
    match tungstenite::client::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(_) => Err(0),
    }
}

/// Reads until the server ends the WebSocket (a Close, or the end of the connection).
fn expect_closed(socket: &mut WebSocket<TcpStream>) {
    while let Ok(message) = socket.read() {
        if let Message::Close(_) = message {
            // The rest of the close handshake, then the end.
            while socket.read().is_ok() {}
            return;
        }
    }
}

/// The row `chatctl who` shows for `nick`, once it lists it.
fn who_row(web: &WebDaemon, nick: &str) -> String {
    let mut row = String::new();
    wait_until(&format!("chatctl who lists {nick}"), || {
        let table = ok(web.daemon.chatctl(&["who"]));
        let mine = table.lines().find(|line| line.starts_with(&format!("{nick} ")));
        row = mine.unwrap_or("").to_string();
        !row.is_empty()
    });
    row
}

#[test]
fn a_trusted_proxys_forwarded_address_is_the_one_who_limits_and_bans_see() {
    let web = behind_a_proxy();
    let daemon = &web.daemon;
    let mut alice = through(&web, [127, 0, 0, 1], "198.51.100.7").expect("an upgrade");
    let line = daemon.wait_for_log("forwarded by proxy 127.0.0.1");
    assert!(line.contains(": client 198.51.100.7 forwarded by proxy 127.0.0.1"), "{line}");
    login(&mut alice, "alice");
    let row = who_row(&web, "alice");
    assert!(row.contains("198.51.100.7"), "chatctl who shows the proxy's address: {row}");
    // Another client through the same proxy: the proxy's address is not held to one.
    let mut bob = through(&web, [127, 0, 0, 1], "198.51.100.8").expect("an upgrade for bob");
    login(&mut bob, "bob");
    assert!(who_row(&web, "bob").contains("198.51.100.8"));
    // Nor is a direct client from the proxy's own address.
    let _carol = login_on(Client::connect(daemon.port), "carol");
    // A second client from alice's address is one too many, whatever the proxy's address.
    if let Ok(mut second) = through(&web, [127, 0, 0, 1], "198.51.100.7") {
        expect_closed(&mut second);
    }
    let line = daemon.wait_for_log("refused 198.51.100.7:0 (forwarded by proxy 127.0.0.1)");
    assert!(line.ends_with("too many connections from this source"), "{line}");
    // A ban of bob's own address ends his session, and refuses him through the proxy.
    ok(daemon.chatctl(&["ban", "198.51.100.8"]));
    expect_closed(&mut bob);
    if let Ok(mut again) = through(&web, [127, 0, 0, 1], "198.51.100.8") {
        expect_closed(&mut again);
    }
    let line = daemon.wait_for_log("refused 198.51.100.8:0 (forwarded by proxy 127.0.0.1)");
    assert!(line.contains("banned (198.51.100.8"), "{line}");
    // The proxy and its other clients are untouched.
    let mut dave = through(&web, [127, 0, 0, 1], "198.51.100.9").expect("the proxy refused");
    login(&mut dave, "dave");
    who_row(&web, "alice");
}

#[test]
fn an_untrusted_peers_forwarded_address_is_not_what_who_shows_or_limits_count() {
    let web = behind_a_proxy();
    // 127.0.0.2 is no trusted proxy: its header is anyone's word.
    let mut mallory = through(&web, [127, 0, 0, 2], "198.51.100.66").expect("an upgrade");
    login(&mut mallory, "mallory");
    let row = who_row(&web, "mallory");
    assert!(row.contains("127.0.0.2:"), "{row}");
    assert!(!row.contains("198.51.100.66"), "the forged address is believed: {row}");
    let log = web.daemon.log();
    assert!(!log.iter().any(|line| line.contains("forwarded by proxy")), "{log:#?}");
    // Its per-address limit is its own: a second connection from 127.0.0.2 is refused before
    // a session is forked, in HTTP.
    assert_eq!(through(&web, [127, 0, 0, 2], "198.51.100.67").err(), Some(503));
}

/// A socket systemd binds on `[::]` for both families (BindIPv6Only=both, as chatd-web.socket
/// does) shows its IPv4 clients as `::ffff:127.0.0.1`: still the trusted `127.0.0.1/32`.
#[test]
fn an_ipv4_proxy_on_a_dual_stack_socket_from_systemd_is_trusted() {
    let dir = runtime_dir();
    let port = free_port();
    let config = dir.path().join("chatd.toml");
    let settings = format!(
        "user = \"nobody\"\nstate_dir = \"{}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        dir.path().join("state").display()
    );
    std::fs::write(&config, settings).expect("write the settings");
    let daemon = Spawned::spawn(
        std::process::Command::new("systemd-socket-activate")
            .args(["-l", &format!("[::]:{port}"), "--fdname=web"])
            .args([env!("CARGO_BIN_EXE_chatd"), "--log", "stderr", "--runtime-dir"])
            .arg(dir.path().join("run"))
            .arg("--config")
            .arg(&config),
    );
    daemon.wait_for_log("Listening on");
    let mut alice = through_port(port, [127, 0, 0, 1], "198.51.100.7").expect("an upgrade");
    let line = daemon.wait_for_log("forwarded by proxy");
    assert!(line.contains(": client 198.51.100.7 forwarded by proxy 127.0.0.1"), "{line}");
    login(&mut alice, "alice");
}

/// A WebSocket through a trusted proxy that ended the browser's TLS: `X-Forwarded-Proto:
/// https`, and the `Origin` of the page the browser had over https.
fn through_tls_proxy(
    web: &WebDaemon,
    client: &str,
    proto: &str,
) -> Result<WebSocket<TcpStream>, u16> {
    let stream = connect_from(web.web_port, [127, 0, 0, 1]);
    let url = format!("ws://127.0.0.1:{}/ws", web.web_port);
    let mut request = url.into_client_request().expect("a request");
    let headers = request.headers_mut();
    headers.insert("X-Forwarded-For", client.parse().expect("a header value"));
    headers.insert("X-Forwarded-Proto", proto.parse().expect("a header value"));
    let origin = format!("https://127.0.0.1:{}", web.web_port);
    headers.insert("Origin", origin.parse().expect("a header value"));
    match tungstenite::client::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(_) => Err(0),
    }
}

#[test]
fn behind_a_proxy_that_ends_tls_the_origin_is_https_and_passwords_and_admin_work() {
    let web = WebDaemon::start(&format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{}",
        crate::accounts::FAST
    ));
    // Over http, the page's https origin is a foreign one.
    assert_eq!(through_tls_proxy(&web, "198.51.100.30", "http").err(), Some(403));
    let mut alice = through_tls_proxy(&web, "198.51.100.30", "https").expect("an upgrade");
    login(&mut alice, "alice");
    // A password from another host is taken: the proxy says the browser used TLS.
    super::send(&mut alice, "/register");
    super::expect_message(&mut alice, "the password prompt", |m| m.contains("Choose a password"));
    super::send(&mut alice, crate::accounts::PASSWORD);
    super::expect_message(&mut alice, "the second prompt", |m| m.contains("Type it again"));
    super::send(&mut alice, crate::accounts::PASSWORD);
    super::expect_message(&mut alice, "the registration", |m| m.contains("is registered"));
    ok(web.daemon.chatctl(&["accounts", "grant", "alice", "admin"]));
    super::send(&mut alice, "/admin who");
    let users = super::expect_message(&mut alice, "the who-list", |m| m.contains("\"admin\""));
    assert!(users.contains("198.51.100.30") && users.contains("\"tls\":true"), "{users}");
}
