//! A browser or `curl` on the chat port: recognise its request and answer it in HTTP.
//!
//! Owns the recognition of an HTTP request (by its first bytes before the greeting, or by its
//! request line as the first line after it) and the short answer: `400 Bad Request`, a plain
//! text body saying what chatd is and how to connect. The session sends it, closes, and tells
//! the master that this was a probe answered, not a client that left before choosing a
//! nickname: a web browser on the wrong port must not put its address (and everyone behind its
//! NAT) in the penalty box. No I/O here.

/// Methods of HTTP/1.x, and HTTP/2's connection preface (`PRI * HTTP/2.0`).
const METHODS: &[&str] =
    &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PRI"];

/// Whether the first bytes a client sent, before chatd said anything, begin an HTTP request:
/// a method and a space. Nobody types that into a chat before its greeting has arrived.
pub fn starts_request(first_bytes: &[u8]) -> bool {
    METHODS.iter().any(|method| {
        first_bytes.strip_prefix(method.as_bytes()).is_some_and(|rest| rest.first() == Some(&b' '))
    })
}

/// Whether `line` is an HTTP request line (`GET / HTTP/1.1`): method, target, version.
pub fn is_request_line(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else { return false };
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    METHODS.contains(&method)
        && !target.is_empty()
        && version.strip_prefix("HTTP/").is_some_and(|number| {
            !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
}

/// Whether `bytes` hold the whole head of a request (its blank line), so that nothing the
/// client still sends is left unread when the connection closes (which would reset it before
/// the client has read the answer).
pub fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

/// The answer to any request: `400 Bad Request` with a plain text body (none for `HEAD`).
pub fn response(head_only: bool, port: u16) -> Vec<u8> {
    let body = format!(
        "This is chatd, a chat server for telnet and netcat clients, not a web server.\r\n\
         Connect with: telnet <this host> {port}   (or: nc <this host> {port})\r\n"
    );
    let mut response = format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_recognised_and_nicknames_are_not() {
        assert!(starts_request(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(starts_request(b"HEAD "));
        assert!(starts_request(b"PRI * HTTP/2.0\r\n"));
        assert!(!starts_request(b"GETTER\r\n"));
        assert!(!starts_request(b"alice\r\n"));
        assert!(!starts_request(&[255, 251, 24]));
        assert!(is_request_line(b"GET / HTTP/1.1"));
        assert!(is_request_line(b"POST /api?x=1 HTTP/1.0"));
        assert!(!is_request_line(b"GET / HTTP/"));
        assert!(!is_request_line(b"GET /"));
        assert!(!is_request_line(b"get / HTTP/1.1"));
        assert!(!is_request_line(b"GET a b HTTP/1.1"));
    }

    #[test]
    fn the_answer_is_well_formed_http() {
        let response = String::from_utf8(response(false, 2323)).unwrap_or_default();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(body.contains("telnet <this host> 2323"), "{body}");
        let head_only = response_head_only();
        assert!(head_only.ends_with("\r\n\r\n"));
    }

    fn response_head_only() -> String {
        String::from_utf8(response(true, 2323)).unwrap_or_default()
    }

    #[test]
    fn a_head_is_complete_at_its_blank_line() {
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.0\n\n"));
    }
}
