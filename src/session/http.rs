//! A browser or `curl` on the chat port: recognise its request and answer it in HTTP.
//!
//! Owns the recognition of an HTTP request (by its first bytes before the greeting, or by its
//! request line as the first line after it) and the short answer: `400 Bad Request`, a plain
//! text body saying what chatd is and how to connect, or, when chatd has a web listener, a
//! short page linking to the web client there. The session sends it, closes, and tells
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

/// Where the web client is, for the answer's link: the web listener's port, and the host the
/// browser asked for (its `Host` header without the port; `None` when it sent none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebClient<'a> {
    pub host: Option<&'a str>,
    pub port: u16,
    /// The web listener speaks HTTPS.
    pub tls: bool,
}

/// The answer to any request: `400 Bad Request` (none of the body for `HEAD`). With a web
/// listener, a short HTML page linking to it; without, plain text saying how to connect.
pub fn response(head_only: bool, port: u16, web: Option<WebClient<'_>>) -> Vec<u8> {
    let (content_type, body) = match web {
        Some(web) => ("text/html; charset=utf-8", web_page(port, web)),
        None => (
            "text/plain; charset=utf-8",
            format!(
                "This is chatd, a chat server for telnet and netcat clients, not a web server.\r\n\
                 Connect with: telnet <this host> {port}   (or: nc <this host> {port})\r\n"
            ),
        ),
    };
    let mut response = format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

/// The page that sends a browser to the web client. The host comes from the request: it is
/// used only if it is a plain host name or address (so nothing of it can be markup).
fn web_page(port: u16, web: WebClient<'_>) -> String {
    let scheme = if web.tls { "https" } else { "http" };
    let telnet = format!("telnet &lt;this host&gt; {port}");
    match web.host.filter(|host| plain_host(host)) {
        Some(host) => {
            let url = format!("{scheme}://{host}:{}/", web.port);
            format!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>chatd</title>\
                 <p>This is chatd's port for telnet and netcat clients ({telnet}).</p>\
                 <p>The web client is at <a href=\"{url}\">{url}</a>.</p></html>\n"
            )
        }
        None => format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>chatd</title>\
             <p>This is chatd's port for telnet and netcat clients ({telnet}).</p>\
             <p>The web client is on port {} of this host ({scheme}).</p></html>\n",
            web.port
        ),
    }
}

/// A host name, an IPv4 address or a bracketed IPv6 address, and nothing else.
fn plain_host(host: &str) -> bool {
    let bracketed = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']'));
    match bracketed {
        Some(v6) => {
            !v6.is_empty() && v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        }
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    }
}

/// The `Host` header of what was read of a request head, without its port.
pub fn host_header(head: &[u8]) -> Option<&str> {
    let head = std::str::from_utf8(head).ok()?;
    let value = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("host").then(|| value.trim())
    })?;
    let host = crate::session::web::request::host_without_port(value);
    (!host.is_empty()).then_some(host)
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
        let response = String::from_utf8(response(false, 2323, None)).unwrap_or_default();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(body.contains("telnet <this host> 2323"), "{body}");
        let head_only = response_head_only();
        assert!(head_only.ends_with("\r\n\r\n"));
    }

    fn response_head_only() -> String {
        String::from_utf8(response(true, 2323, None)).unwrap_or_default()
    }

    #[test]
    fn a_head_is_complete_at_its_blank_line() {
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.0\n\n"));
    }

    #[test]
    fn with_a_web_listener_the_answer_links_to_it() {
        let web = WebClient { host: Some("chat.example.org"), port: 8023, tls: false };
        let answer = String::from_utf8(response(false, 2323, Some(web))).unwrap_or_default();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains("Content-Type: text/html; charset=utf-8"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(body.contains("<a href=\"http://chat.example.org:8023/\">"), "{body}");
        let tls = WebClient { host: Some("[::1]"), port: 8443, tls: true };
        let answer = String::from_utf8(response(false, 2323, Some(tls))).unwrap_or_default();
        assert!(answer.contains("https://[::1]:8443/"), "{answer}");
        let evil = WebClient { host: Some("<script>x</script>"), port: 8023, tls: false };
        let answer = String::from_utf8(response(false, 2323, Some(evil))).unwrap_or_default();
        assert!(!answer.contains("<script>"), "{answer}");
        assert!(answer.contains("port 8023 of this host"), "{answer}");
    }

    #[test]
    fn the_host_is_read_from_the_head_without_its_port() {
        assert_eq!(
            host_header(b"GET / HTTP/1.1\r\nhost: a.example:2323\r\n\r\n"),
            Some("a.example")
        );
        assert_eq!(host_header(b"GET / HTTP/1.1\r\nHost: [::1]:2323\r\n"), Some("[::1]"));
        assert_eq!(host_header(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(host_header(b""), None);
    }
}
