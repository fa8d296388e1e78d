//! The web listener, driven by real clients: raw HTTP over TCP, and tungstenite's client side
//! for the WebSocket. `protocol`: requests, their limits and errors, the handshake's checks,
//! and a browser's chat session beside a telnet user's. `listener`: the master's side (refusals
//! in HTTP, socket activation, upgrades). `proxy`: `X-Forwarded-For` from `trusted_proxies`.
//! `json`: what a browser is sent. `browser`: the page and the dashboard in a real Chromium.

mod browser;
mod json;
mod listener;
mod protocol;
mod proxy;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use tungstenite::protocol::WebSocket;
use tungstenite::{Message, Utf8Bytes};

use crate::util::{Daemon, PATIENCE};

/// The settings every test here starts from: one web listener on a loopback port.
pub const WEB_LISTENER: &str = "web_listen = [\"127.0.0.1:0\"]\n";

/// A daemon with a web listener, and that listener's port.
pub struct WebDaemon {
    pub daemon: Daemon,
    pub web_port: u16,
}

impl WebDaemon {
    /// Starts chatd with a web listener and `config`.
    pub fn start(config: &str) -> WebDaemon {
        let daemon = Daemon::start_with_config(&format!("{WEB_LISTENER}{config}"));
        let line = daemon.wait_for_log("listening for web browsers on 127.0.0.1:");
        let web_port = line
            .rsplit(':')
            .next()
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no web port in {line:?}"));
        WebDaemon { daemon, web_port }
    }

    /// A new TCP connection to the web listener.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.web_port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        stream
    }

    /// Sends `request` whole and reads the answer until the server closes.
    pub fn http(&self, request: &str) -> Response {
        let mut stream = self.connect();
        stream.write_all(request.as_bytes()).expect("send the request");
        read_response(&mut stream)
    }

    /// A WebSocket to `/ws` without an Origin (as a non-browser client).
    pub fn websocket(&self) -> WebSocket<TcpStream> {
        websocket_over(self.connect(), self.web_port)
    }
}

/// The client side of a WebSocket handshake over `stream`.
pub fn websocket_over(stream: TcpStream, port: u16) -> WebSocket<TcpStream> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    match tungstenite::client::client(url.as_str(), stream) {
        Ok((socket, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            socket
        }
        Err(err) => panic!("WebSocket handshake failed: {err}"),
    }
}

/// An HTTP answer, split.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The head, each header line with its line end.
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        })
    }
}

/// Reads an answer until the server closes the connection.
pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        // The server closed after its answer; a reset may come instead of the end.
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset && !bytes.is_empty() => {}
        Err(err) => panic!("no answer within {PATIENCE:?}: {err}; got {bytes:?}"),
    }
    parse_response(&bytes)
}

/// Splits an answer's bytes.
pub fn parse_response(bytes: &[u8]) -> Response {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end + 2]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    Response { status, head, body: bytes[end + 4..].to_vec() }
}

/// Sends one text message.
pub fn send(socket: &mut WebSocket<TcpStream>, text: &str) {
    socket.send(Message::Text(Utf8Bytes::from(text.to_string()))).expect("send a message");
}

/// Reads text messages until one satisfies `wanted`; returns it. Fails after [`PATIENCE`]
/// with every message seen.
pub fn expect_message(
    socket: &mut WebSocket<TcpStream>,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no message {what} within {PATIENCE:?}: {seen:#?}");
        match socket.read() {
            Ok(Message::Text(text)) if wanted(text.as_str()) => return text.to_string(),
            Ok(Message::Text(text)) => seen.push(text.to_string()),
            Ok(_) => {}
            Err(err) => panic!("socket ended before a message {what} ({err}): {seen:#?}"),
        }
    }
}

/// Logs in `nick` on a WebSocket: the first message is the nickname, as a telnet user types.
pub fn login(socket: &mut WebSocket<TcpStream>, nick: &str) {
    expect_message(socket, "asking a nickname", |m| {
        m.contains("choose a nickname") || m.contains("\"prompt\"")
    });
    send(socket, nick);
    let known = format!("known as {nick}");
    expect_message(socket, &known, |m| m.contains(&known));
}
