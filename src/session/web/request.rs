//! A web client's request: its head parsed (httparse) within the limits, and what chatd
//! answers it (a page, an error, or the WebSocket upgrade).
//!
//! It owns the limits of a head ([`MAX_HEAD`], [`MAX_HEADERS`]), what of a request matters
//! (method, path without its query, `Host`, `Origin`, the upgrade's headers,
//! `X-Forwarded-For`), the WebSocket handshake's checks (RFC 6455 §4.2.1: version 13, a
//! 16-byte key, the `Origin` allow-list) and the choice of answer. Pure: no I/O, no clock;
//! reading the bytes in time is `super::run`'s.

use std::net::IpAddr;

use super::pages::{self, Page, Status};

/// The most of a request's head read before it is refused (`431`): a browser's head is a
/// kilobyte or two, cookies included.
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header lines a head may have (a browser sends about fifteen).
pub const MAX_HEADERS: usize = 64;

/// What the bytes read so far make.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet (and still within [`MAX_HEAD`]).
    Partial,
    /// The whole head, and how many bytes of the input it took (what follows is the client's
    /// first WebSocket frames, if it did not wait for the answer).
    Complete(Request, usize),
    /// No head within the limits: `431`, or `400` for what is no HTTP.
    Refused(Status),
}

/// The parts of a request chatd looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The target without its query string or fragment.
    pub path: String,
    pub host: Option<String>,
    pub origin: Option<String>,
    /// `Upgrade` lists `websocket` and `Connection` lists `upgrade`.
    pub upgrade: bool,
    pub websocket_version: Option<String>,
    pub websocket_key: Option<String>,
    /// Every `X-Forwarded-For` line, in order, joined with commas.
    pub forwarded_for: Option<String>,
}

impl Request {
    pub fn head_only(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Parses what was read of a head.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => {
            Parsed::Complete(request(&parsed), length)
        }
        Ok(httparse::Status::Complete(_)) => Parsed::Refused(Status::HeaderFieldsTooLarge),
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            Parsed::Refused(Status::HeaderFieldsTooLarge)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Refused(Status::HeaderFieldsTooLarge),
        Err(_) => Parsed::Refused(Status::BadRequest),
    }
}

fn request(parsed: &httparse::Request<'_, '_>) -> Request {
    let target = parsed.path.unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut request =
        Request { method: parsed.method.unwrap_or("").to_string(), path, ..Request::default() };
    let (mut upgrade_websocket, mut connection_upgrade) = (false, false);
    for header in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else { continue };
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            request.host = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("origin") {
            request.origin = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= lists_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= lists_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            request.websocket_version = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            request.websocket_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let joined = match request.forwarded_for.take() {
                Some(before) => format!("{before}, {value}"),
                None => value.to_string(),
            };
            request.forwarded_for = Some(joined);
        }
    }
    request.upgrade = upgrade_websocket && connection_upgrade;
    request
}

/// Whether a comma-separated header value lists `token` (case-insensitive), as `Connection:
/// keep-alive, Upgrade` does.
fn lists_token(value: &str, token: &str) -> bool {
    value.split(',').any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// What the connection is, as far as `Origin` checks need: the scheme the page came by, and
/// the extra origins allowed.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    pub tls: bool,
    pub allowed_origins: &'a [String],
}

/// What a request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Page(&'static Page),
    Status(Status),
    /// An `Origin` that is neither the page's own nor allowed: `403`, and the operator is told.
    ForeignOrigin(String),
    /// `101` with this `Sec-WebSocket-Accept`.
    Upgrade {
        accept: String,
    },
}

/// Decides what `request` gets.
pub fn answer(request: &Request, site: Site<'_>) -> Answer {
    if request.method != "GET" && request.method != "HEAD" {
        return Answer::Status(Status::MethodNotAllowed);
    }
    if request.path == "/ws" {
        return upgrade(request, site);
    }
    if request.path == "/favicon.ico" {
        return Answer::Status(Status::NoContent);
    }
    match pages::page(&request.path) {
        Some(page) => Answer::Page(page),
        None => Answer::Status(Status::NotFound),
    }
}

/// The WebSocket handshake's checks (RFC 6455 §4.2.1, §4.4, §10.2).
fn upgrade(request: &Request, site: Site<'_>) -> Answer {
    if request.method != "GET" || !request.upgrade {
        return Answer::Status(Status::UpgradeRequired);
    }
    if request.websocket_version.as_deref() != Some("13") {
        return Answer::Status(Status::UpgradeRequired);
    }
    let Some(key) = request.websocket_key.as_deref().filter(|key| valid_key(key)) else {
        return Answer::Status(Status::BadRequest);
    };
    if let Some(origin) = &request.origin
        && !origin_allowed(origin, request.host.as_deref(), site)
    {
        return Answer::ForeignOrigin(origin.clone());
    }
    Answer::Upgrade { accept: tungstenite::handshake::derive_accept_key(key.as_bytes()) }
}

/// A `Sec-WebSocket-Key` is 16 random bytes in base64.
fn valid_key(key: &str) -> bool {
    data_encoding::BASE64.decode(key.as_bytes()).is_ok_and(|bytes| bytes.len() == 16)
}

/// Whether a browser's `Origin` may open the socket: the page's own (`http(s)://` and the
/// `Host` it asked for) or one of `web_allowed_origins`. Another site's page must not make
/// its visitors' browsers chat (or act as an admin) here: the socket carries the browser's
/// login, not the site's.
pub fn origin_allowed(origin: &str, host: Option<&str>, site: Site<'_>) -> bool {
    let scheme = if site.tls { "https" } else { "http" };
    // Schemes and host names are case-insensitive (RFC 6454 §4 lowercases both).
    let own = host.is_some_and(|host| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")));
    own || site.allowed_origins.iter().any(|allowed| allowed == origin)
}

/// The client's own address in a trusted proxy's `X-Forwarded-For`: the right-most entry,
/// the one the proxy in front of chatd added. `None` if it is no address.
pub fn forwarded_client(forwarded_for: &str) -> Option<IpAddr> {
    let last = forwarded_for.rsplit(',').next()?.trim();
    if let Ok(addr) = last.parse::<IpAddr>() {
        return Some(addr);
    }
    // Some proxies add the port: `203.0.113.7:51234`, `[2001:db8::1]:51234`.
    last.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip())
}

/// The host of a `Host` header without its port: `chat.example.org:8023` →
/// `chat.example.org`, `[::1]:8023` → `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn complete(head: &str) -> Request {
        match parse(head.as_bytes()) {
            Parsed::Complete(request, length) => {
                assert_eq!(length, head.len());
                request
            }
            other => panic!("{other:?} for {head:?}"),
        }
    }

    fn site() -> Site<'static> {
        Site { tls: false, allowed_origins: &[] }
    }

    fn ws_head(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8023\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\n{extra}\r\n"
        )
    }

    #[test]
    fn a_head_is_partial_until_its_blank_line_and_refused_past_the_limit() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(big.as_bytes()), Parsed::Refused(Status::HeaderFieldsTooLarge));
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(big.as_bytes()), Parsed::Refused(Status::HeaderFieldsTooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes()), Parsed::Refused(Status::HeaderFieldsTooLarge));
        assert_eq!(parse(b"alice\r\n\r\n"), Parsed::Refused(Status::BadRequest));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"),
            Parsed::Refused(Status::BadRequest)
        );
    }

    #[test]
    fn what_follows_the_head_is_left_for_the_socket() {
        let head = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        let bytes = format!("{head}\u{81}\u{5}");
        match parse(bytes.as_bytes()) {
            Parsed::Complete(_, length) => assert_eq!(length, head.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes_ignore_the_query_and_refuse_other_methods() {
        let get =
            |target: &str| answer(&complete(&format!("GET {target} HTTP/1.1\r\n\r\n")), site());
        assert_eq!(get("/"), Answer::Page(pages::page("/").expect("page")));
        assert_eq!(get("/?nick=alice#x"), Answer::Page(pages::page("/").expect("page")));
        assert_eq!(get("/admin"), Answer::Page(pages::page("/admin").expect("page")));
        assert_eq!(get("/chat.js?v=2"), Answer::Page(pages::page("/chat.js").expect("page")));
        assert_eq!(get("/favicon.ico"), Answer::Status(Status::NoContent));
        assert_eq!(get("/etc/passwd"), Answer::Status(Status::NotFound));
        assert_eq!(get("/ws"), Answer::Status(Status::UpgradeRequired), "no upgrade headers");
        let head = complete("HEAD /chat.css HTTP/1.0\r\n\r\n");
        assert!(head.head_only());
        assert_eq!(answer(&head, site()), Answer::Page(pages::page("/chat.css").expect("page")));
        let post = complete("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(answer(&post, site()), Answer::Status(Status::MethodNotAllowed));
        let delete = complete(&ws_head("Sec-WebSocket-Version: 13\r\n").replace("GET", "DELETE"));
        assert_eq!(answer(&delete, site()), Answer::Status(Status::MethodNotAllowed));
    }

    #[test]
    fn the_upgrade_needs_version_13_and_a_16_byte_key() {
        let good = complete(&ws_head(&format!(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
        )));
        // RFC 6455 §1.3's example.
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string();
        assert_eq!(answer(&good, site()), Answer::Upgrade { accept });
        let old = complete(&ws_head(&format!(
            "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n"
        )));
        assert_eq!(answer(&old, site()), Answer::Status(Status::UpgradeRequired));
        let none = complete(&ws_head(&format!("Sec-WebSocket-Key: {KEY}\r\n")));
        assert_eq!(answer(&none, site()), Answer::Status(Status::UpgradeRequired));
        for key in ["", "dGhlIHNhbXBsZQ==", "not base64 at all!", "dGhlIHNhbXBsZSBub25jZQ"] {
            let bad = complete(&ws_head(&format!(
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            )));
            assert_eq!(answer(&bad, site()), Answer::Status(Status::BadRequest), "key {key:?}");
        }
        let no_key = complete(&ws_head("Sec-WebSocket-Version: 13\r\n"));
        assert_eq!(answer(&no_key, site()), Answer::Status(Status::BadRequest));
        let no_connection = complete(&format!(
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {KEY}\r\n\r\n"
        ));
        assert_eq!(answer(&no_connection, site()), Answer::Status(Status::UpgradeRequired));
        let head = complete(
            &ws_head(&format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"))
                .replace("GET", "HEAD"),
        );
        assert_eq!(answer(&head, site()), Answer::Status(Status::UpgradeRequired));
    }

    #[test]
    fn the_origin_must_be_the_pages_own_or_allowed() {
        let with_origin = |origin: &str| {
            complete(&ws_head(&format!(
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: {origin}\r\n"
            )))
        };
        let upgraded = |answer: Answer| matches!(answer, Answer::Upgrade { .. });
        assert!(upgraded(answer(&with_origin("http://127.0.0.1:8023"), site())));
        assert!(upgraded(answer(&with_origin("HTTP://127.0.0.1:8023"), site())));
        let evil = with_origin("http://evil.example");
        assert_eq!(answer(&evil, site()), Answer::ForeignOrigin("http://evil.example".into()));
        let tls = Site { tls: true, allowed_origins: &[] };
        assert!(!upgraded(answer(&with_origin("http://127.0.0.1:8023"), tls)), "the scheme counts");
        assert!(upgraded(answer(&with_origin("https://127.0.0.1:8023"), tls)));
        assert!(!upgraded(answer(&with_origin("http://127.0.0.1"), site())), "the port counts");
        assert!(!upgraded(answer(&with_origin("null"), site())));
        let allowed = ["https://chat.example.org".to_string()];
        let listed = Site { tls: false, allowed_origins: &allowed };
        assert!(upgraded(answer(&with_origin("https://chat.example.org"), listed)));
        assert!(!upgraded(answer(&with_origin("https://chat.example.org.evil"), listed)));
        let no_origin = complete(&ws_head(&format!(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
        )));
        assert!(upgraded(answer(&no_origin, site())), "a non-browser client sends none");
        assert!(!origin_allowed("http://x", None, site()), "no Host: only the allow-list");
    }

    #[test]
    fn headers_are_read_case_insensitively_and_forwarded_for_lines_join() {
        let request = complete(
            "GET / HTTP/1.1\r\nhOsT: a.example\r\nX-Forwarded-For: 198.51.100.1\r\n\
             x-forwarded-for: 203.0.113.7\r\n\r\n",
        );
        assert_eq!(request.host.as_deref(), Some("a.example"));
        let forwarded = request.forwarded_for.expect("forwarded");
        assert_eq!(forwarded, "198.51.100.1, 203.0.113.7");
        assert_eq!(forwarded_client(&forwarded), Some("203.0.113.7".parse().expect("ip")));
        assert_eq!(forwarded_client("2001:db8::1"), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(forwarded_client("[2001:db8::1]:443"), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(forwarded_client("1.2.3.4, unknown"), None);
        assert_eq!(forwarded_client(""), None);
    }

    #[test]
    fn a_host_loses_its_port() {
        assert_eq!(host_without_port("chat.example.org:8023"), "chat.example.org");
        assert_eq!(host_without_port("chat.example.org"), "chat.example.org");
        assert_eq!(host_without_port("[::1]:2323"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("127.0.0.1:2323"), "127.0.0.1");
        assert_eq!(host_without_port("::1"), "::1");
    }
}
