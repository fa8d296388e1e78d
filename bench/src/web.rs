//! The load generator's WebSocket clients (`--protocol web`, against a `web_listen` port): the
//! upgrade request to `/ws` (sent with the nickname's frame behind it, as a browser may send
//! its first message as soon as it can), masked text frames out, and each text message in
//! turned back into the line a terminal would show, so that the rest of the bench (admission,
//! delivery, loss) reads web clients as it reads telnet ones.
//!
//! It owns the client side of RFC 6455 only, as much as the bench needs: no fragmentation
//! (chatd sends one message per frame), no extensions.

use std::net::SocketAddr;

use serde_json::Value;

/// The upgrade request for `/ws` on `addr` (no `Origin`: a non-browser client).
pub fn upgrade_request(addr: SocketAddr) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

/// Appends `payload` to `out` as one masked frame of `opcode` (1 text, 10 pong).
pub fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    // Any mask will do for a load generator; a fixed one keeps this allocation-free.
    let mask = [0x5au8, 0x3c, 0x96, 0x0f];
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
}

/// Takes the answer's head off `inbuf` once it is whole: `Some(Ok)` for `101`, `Some(Err)`
/// with the status line for anything else, `None` while it is incomplete.
pub fn take_head(inbuf: &mut Vec<u8>) -> Option<Result<(), String>> {
    let end = inbuf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head: Vec<u8> = inbuf.drain(..end).collect();
    let status = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
    Some(if status.starts_with("HTTP/1.1 101 ") { Ok(()) } else { Err(status) })
}

/// Takes one whole frame off `inbuf`: its opcode and payload (server frames are unmasked).
pub fn take_frame(inbuf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let (&first, &second) = (inbuf.first()?, inbuf.get(1)?);
    let (length, header) = match second & 0x7f {
        126 => (usize::from(u16::from_be_bytes(inbuf.get(2..4)?.try_into().ok()?)), 4),
        127 => (usize::try_from(u64::from_be_bytes(inbuf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        short => (usize::from(short), 2),
    };
    if inbuf.len() < header + length {
        return None;
    }
    let payload = inbuf[header..header + length].to_vec();
    inbuf.drain(..header + length);
    Some((first & 0x0f, payload))
}

/// The terminal lines one text message stands for: a `line` object as the terminal shows it
/// (`*** ...` for a system line, `<nick> text` for a room line), a `joined` object as the
/// join notice; a message that is not JSON is taken as terminal text itself.
pub fn terminal_lines(message: &str) -> Vec<String> {
    let Ok(object) = serde_json::from_str::<Value>(message) else {
        return message.lines().map(|line| line.trim_end_matches('\r').to_string()).collect();
    };
    let text = |key: &str| object[key].as_str().unwrap_or("").to_string();
    match object["t"].as_str() {
        Some("line") => match object["kind"].as_str() {
            Some("system") if text("text").starts_with("*** ") => vec![text("text")],
            Some("system") => vec![format!("*** {}", text("text"))],
            Some("chat") | Some("history") => vec![format!("<{}> {}", text("nick"), text("text"))],
            _ => vec![text("text")],
        },
        Some("joined") => vec![format!("*** {} has joined {}", text("nick"), text("room"))],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_messages_read_as_terminal_lines() {
        let mut out = Vec::new();
        frame(&mut out, 1, b"hello");
        assert_eq!(out[..2], [0x81, 0x85]);
        let unmasked: Vec<u8> =
            out[6..].iter().enumerate().map(|(i, b)| b ^ out[2 + i % 4]).collect();
        assert_eq!(unmasked, b"hello");
        let mut inbuf =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi".to_vec();
        assert_eq!(take_head(&mut inbuf), Some(Ok(())));
        assert_eq!(take_frame(&mut inbuf), Some((1, b"hi".to_vec())));
        assert_eq!(take_frame(&mut inbuf), None);
        let chat =
            r#"{"t":"line","kind":"chat","nick":"b1","text":"m 0 1 2","at":0,"action":false}"#;
        assert_eq!(terminal_lines(chat), ["<b1> m 0 1 2"]);
        let joined = r#"{"t":"joined","nick":"b1","room":"lobby"}"#;
        assert_eq!(terminal_lines(joined), ["*** b1 has joined lobby"]);
        assert_eq!(terminal_lines("*** Welcome\r\n"), ["*** Welcome"]);
    }
}
