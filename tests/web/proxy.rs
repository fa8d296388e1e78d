//! Behind a reverse proxy (`trusted_proxies`): `X-Forwarded-For` is believed only from a
//! trusted peer, and then the client's own address is what `chatctl who` shows and what
//! admission (per-address limits) and address bans count; the proxy's address is not limited
//! per source.
//!
//! These drive the real flow (an HTTP upgrade to `/ws` with the header, then a nickname), so
//! they need the web helper's session side (branch h19-web): before it, a web connection is
//! an ordinary chat session that answers the upgrade with the telnet port's `400`.

use super::listener::{WEB, WebSocket, web_port};
use crate::control::ok;
use crate::util::{Client, Daemon, login_on, wait_until};

/// A proxy on 127.0.0.1 is trusted; one address may hold one connection.
fn behind_a_proxy() -> (Daemon, u16) {
    let daemon = Daemon::start_with_config(&format!(
        "{WEB}trusted_proxies = [\"127.0.0.1/32\"]\nmax_clients_per_ip = 1\n"
    ));
    let port = web_port(&daemon);
    (daemon, port)
}

/// A browser behind the proxy at `proxy` whose address the proxy says is `client`.
fn through(port: u16, proxy: [u8; 4], client: &str) -> (String, Option<WebSocket>) {
    WebSocket::open(port, proxy, &format!("X-Forwarded-For: {client}\r\n"))
}

/// The row `chatctl who` shows for `nick`, once it lists it.
fn who_row(daemon: &Daemon, nick: &str) -> String {
    let mut row = String::new();
    wait_until(&format!("chatctl who lists {nick}"), || {
        let table = ok(daemon.chatctl(&["who"]));
        row = table.lines().find(|line| line.starts_with(&format!("{nick} "))).unwrap_or("").into();
        !row.is_empty()
    });
    row
}

#[test]
fn a_trusted_proxys_forwarded_address_is_the_one_who_limits_and_bans_see() {
    let (daemon, port) = behind_a_proxy();
    let (head, alice) = through(port, [127, 0, 0, 1], "198.51.100.7");
    let mut alice = alice.unwrap_or_else(|| panic!("no upgrade: {head}"));
    let line = daemon.wait_for_log("forwarded by proxy 127.0.0.1");
    assert!(line.contains(": client 198.51.100.7 forwarded by proxy 127.0.0.1"), "{line}");
    alice.send("alice");
    let row = who_row(&daemon, "alice");
    assert!(row.contains("198.51.100.7"), "chatctl who shows the proxy's address: {row}");
    // Another client through the same proxy: the proxy's address is not held to one.
    let (head, bob) = through(port, [127, 0, 0, 1], "198.51.100.8");
    let mut bob = bob.unwrap_or_else(|| panic!("no upgrade for bob: {head}"));
    bob.send("bob");
    assert!(who_row(&daemon, "bob").contains("198.51.100.8"));
    // Nor is a direct client from the proxy's own address.
    let _carol = login_on(Client::connect(daemon.port), "carol");
    // A second client from alice's address is one too many, whatever the proxy's address.
    let (_, second) = through(port, [127, 0, 0, 1], "198.51.100.7");
    if let Some(mut second) = second {
        second.expect_closed();
    }
    let line = daemon.wait_for_log("refused 198.51.100.7:0 (forwarded by proxy 127.0.0.1)");
    assert!(line.ends_with("too many connections from this source"), "{line}");
    // A ban of bob's own address ends his session and refuses him through the proxy.
    ok(daemon.chatctl(&["ban", "198.51.100.8"]));
    bob.expect_closed();
    let (_, again) = through(port, [127, 0, 0, 1], "198.51.100.8");
    if let Some(mut again) = again {
        again.expect_closed();
    }
    let line = daemon.wait_for_log("refused 198.51.100.8:0 (forwarded by proxy 127.0.0.1)");
    assert!(line.contains("banned (198.51.100.8"), "{line}");
    // Alice, the proxy and its other clients are untouched.
    let (head, dave) = through(port, [127, 0, 0, 1], "198.51.100.9");
    dave.unwrap_or_else(|| panic!("the proxy was refused: {head}")).send("dave");
    who_row(&daemon, "dave");
    who_row(&daemon, "alice");
}

#[test]
fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (daemon, port) = behind_a_proxy();
    // 127.0.0.2 is no trusted proxy: its header is anyone's word.
    let (head, mallory) = through(port, [127, 0, 0, 2], "198.51.100.66");
    let mut mallory = mallory.unwrap_or_else(|| panic!("no upgrade: {head}"));
    mallory.send("mallory");
    let row = who_row(&daemon, "mallory");
    assert!(row.contains("127.0.0.2:"), "{row}");
    assert!(!row.contains("198.51.100.66"), "the forged address is believed: {row}");
    assert!(
        !daemon.log().iter().any(|line| line.contains("forwarded by proxy")),
        "{:#?}",
        daemon.log()
    );
    // And its per-address limit is its own: a second connection from 127.0.0.2 is refused
    // before fork, in HTTP.
    let (head, second) = through(port, [127, 0, 0, 2], "198.51.100.67");
    assert!(second.is_none() && head.starts_with("HTTP/1.1 503 "), "{head}");
}
