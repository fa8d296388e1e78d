//! The master's side of web listeners (`web_listen`): refusals in HTTP rather than telnet
//! text, web listeners passed by systemd (socket activation) by the name `web` (the fd store's
//! name for them is checked in `modes`),
//! and web listeners that survive `chatctl upgrade`. Also the helpers the proxy tests share: a
//! raw HTTP request and a minimal WebSocket client over a real TCP connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use crate::control::ok;
use crate::util::{Client, Daemon, PATIENCE, Spawned, free_port, login, runtime_dir};

/// Settings with one web listener on an ephemeral loopback port.
pub const WEB: &str = "web_listen = [\"127.0.0.1:0\"]\n";

/// The port of the daemon's first web listener, from its start-up line.
pub fn web_port(daemon: &Spawned) -> u16 {
    let line = daemon.wait_for_log("listening for web browsers on 127.0.0.1:");
    line.rsplit(':')
        .next()
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// Connects to `port` from the loopback address `source` (127.0.0.x), as a browser or a proxy.
pub fn connect_from(port: u16, source: [u8; 4]) -> TcpStream {
    let stream = Client::connect_from(port, source).stream;
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream
}

/// Everything the server says until it closes the connection (a reset ends it too: a refusal
/// may race with the rest of a request).
pub fn read_to_close(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!("no end of the answer within {PATIENCE:?} ({err}); got {seen:?}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Sends `GET path` from `source` to `port` and returns the whole answer.
pub fn get(port: u16, source: [u8; 4], path: &str) -> String {
    let mut stream = connect_from(port, source);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send the request");
    read_to_close(&mut stream)
}

/// A WebSocket client: the upgraded connection and the bytes read past the answer's head.
pub struct WebSocket {
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl WebSocket {
    /// `GET /ws` from `source` with the upgrade headers and `extra` header lines (each ending
    /// in CR LF); returns the answer's head and, after a `101`, the socket.
    pub fn open(port: u16, source: [u8; 4], extra: &str) -> (String, Option<WebSocket>) {
        let mut stream = connect_from(port, source);
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).expect("send the handshake");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut buf) {
                Ok(0) => return (String::from_utf8_lossy(&seen).into_owned(), None),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (String::from_utf8_lossy(&seen).into_owned(), None);
                }
                Err(err) => panic!("no answer within {PATIENCE:?} ({err}); got {seen:?}"),
            }
        };
        let head = String::from_utf8_lossy(&seen[..head_end]).into_owned();
        let socket = head
            .starts_with("HTTP/1.1 101 ")
            .then(|| WebSocket { stream, buffered: seen[head_end..].to_vec() });
        (head, socket)
    }

    /// Sends `text` as one masked text frame (a browser masks every frame).
    pub fn send(&mut self, text: &str) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send a frame");
    }

    /// The next text message; `None` once the server closes (a Close frame or the end of the
    /// connection). Pings and other control frames are skipped.
    pub fn next_text(&mut self) -> Option<String> {
        loop {
            let (opcode, payload) = self.next_frame()?;
            match opcode {
                0x1 => return Some(String::from_utf8(payload).expect("text frames are UTF-8")),
                0x8 => return None,
                _ => {}
            }
        }
    }

    /// Reads until the server ends the WebSocket (Close or the end of the connection).
    pub fn expect_closed(&mut self) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(text) = self.next_text() {
            texts.push(text);
        }
        texts
    }

    fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let header = self.take(2)?;
        let (opcode, short) = (header[0] & 0x0f, usize::from(header[1] & 0x7f));
        let len = match short {
            126 => usize::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            127 => usize::try_from(u64::from_be_bytes(self.take(8)?.try_into().ok()?)).ok()?,
            len => len,
        };
        assert_eq!(header[1] & 0x80, 0, "a server's frames are not masked");
        Some((opcode, self.take(len)?))
    }

    /// `count` bytes of the stream; `None` if it ends first.
    fn take(&mut self, count: usize) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        while self.buffered.len() < count {
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.buffered.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(err) => panic!("no frame within {PATIENCE:?}: {err}"),
            }
        }
        Some(self.buffered.drain(..count).collect())
    }
}

/// The head and the body of an HTTP answer.
fn split(answer: &str) -> (&str, &str) {
    answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {answer:?}"))
}

#[test]
fn a_web_client_refused_before_fork_gets_a_short_http_answer_not_a_telnet_line() {
    let daemon = Daemon::start_with_config(&format!("{WEB}max_clients_per_ip = 1\n"));
    let port = web_port(&daemon);
    let _alice = login(daemon.port, "alice");
    let answer = get(port, [127, 0, 0, 1], "/");
    let (head, body) = split(&answer);
    assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    for header in ["Connection: close", "Content-Type: text/plain; charset=utf-8"] {
        assert!(head.lines().any(|line| line == header), "no {header:?} in:\n{answer}");
    }
    assert_eq!(body, "Too many connections from your address; please try again later.\n");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{answer}");
    // An address ban is a 403, with the ban's reason.
    ok(daemon.chatctl(&["ban", "127.0.0.2", "spam"]));
    let answer = get(port, [127, 0, 0, 2], "/");
    let (head, body) = split(&answer);
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert_eq!(body, "You are banned from this server (spam).\n");
    // The telnet port still refuses in telnet words.
    let mut telnet = Client::connect(daemon.port);
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
    // The first connection starts chatd; a browser's request on the web socket is answered.
    let answer = get(web, [127, 0, 0, 1], "/");
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    daemon.wait_for_log("using 2 listening socket(s) from systemd");
    daemon.wait_for_log(&format!("listening for web browsers on 127.0.0.1:{web}"));
    // The unit's own name is the plain listener's.
    daemon.wait_for_log(&format!("listening on 127.0.0.1:{plain}"));
    login(plain, "alice");
}

/// Needs the web helper's branch (h19-web): before it, a web connection runs a chat session,
/// whose answer to `GET /` is the telnet port's `400`.
#[test]
fn a_web_listener_survives_an_upgrade_as_a_web_listener() {
    let daemon = Daemon::start_with_config(WEB);
    let port = web_port(&daemon);
    let before = get(port, [127, 0, 0, 1], "/");
    assert!(before.starts_with("HTTP/1.1 200 OK\r\n"), "{before}");
    let said = ok(daemon.chatctl(&["upgrade"]));
    assert!(said.starts_with("upgraded: "), "{said}");
    daemon.wait_for_log("upgraded to chatd ");
    let after = get(port, [127, 0, 0, 1], "/");
    assert!(after.starts_with("HTTP/1.1 200 OK\r\n"), "after the upgrade: {after}");
    assert_eq!(split(&after).1, split(&before).1, "the same page");
    // And the telnet port is still a telnet one.
    login(daemon.port, "alice");
}
