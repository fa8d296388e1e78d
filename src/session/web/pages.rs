//! What a web listener answers in plain HTTP: the embedded files (the chat page, the
//! dashboard, their script and style) and every short error, as whole response bytes.
//!
//! It owns the bytes of each answer: the status line, the headers every answer carries
//! (`Content-Length`, `Connection: close`, `X-Content-Type-Options`, `Referrer-Policy`), the
//! page's own (`Cache-Control: no-store`, and for HTML the `Content-Security-Policy` and
//! `X-Frame-Options` that keep the page from running anything but its own script or being
//! framed). The files are compiled into the binary (`include_str!` from `web/`): a session
//! child is confined before it reads its client and could not open them anyway. No I/O here,
//! and no decision about which answer a request gets (`request`).

/// The policy of every HTML answer: only the page's own script, style and socket; no inline
/// script or style, no plugins, no framing, no forms posted anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub content_type: &'static str,
    pub body: &'static str,
}

impl Page {
    fn is_html(&self) -> bool {
        self.content_type == HTML
    }
}

static CHAT_HTML: Page = Page { content_type: HTML, body: include_str!("../../../web/chat.html") };
static CHAT_CSS: Page = Page { content_type: CSS, body: include_str!("../../../web/chat.css") };
static CHAT_JS: Page =
    Page { content_type: JAVASCRIPT, body: include_str!("../../../web/chat.js") };
static ADMIN_HTML: Page =
    Page { content_type: HTML, body: include_str!("../../../web/admin.html") };
static ADMIN_JS: Page =
    Page { content_type: JAVASCRIPT, body: include_str!("../../../web/admin.js") };

/// The embedded file at `path` (without its query), if there is one.
pub fn page(path: &str) -> Option<&'static Page> {
    match path {
        "/" => Some(&CHAT_HTML),
        "/chat.css" => Some(&CHAT_CSS),
        "/chat.js" => Some(&CHAT_JS),
        "/admin" => Some(&ADMIN_HTML),
        "/admin.js" => Some(&ADMIN_JS),
        _ => None,
    }
}

/// The statuses chatd answers with, besides `200` and `101`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    NoContent,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    UpgradeRequired,
    HeaderFieldsTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::NoContent => 204,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::UpgradeRequired => 426,
            Status::HeaderFieldsTooLarge => 431,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::NoContent => "No Content",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
        }
    }

    /// The headers this status needs besides the common ones.
    fn extra_headers(self) -> &'static str {
        match self {
            Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
            // RFC 6455 §4.4: the versions the server speaks.
            Status::UpgradeRequired => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            _ => "",
        }
    }
}

/// The headers every answer carries.
const COMMON: &str =
    "Connection: close\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

/// `200 OK` with `page` (its head only for `HEAD`).
pub fn page_response(page: &Page, head_only: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n{COMMON}\
         Cache-Control: no-store\r\n",
        page.content_type,
        page.body.len()
    );
    if page.is_html() {
        head.push_str(&format!("Content-Security-Policy: {CSP}\r\nX-Frame-Options: DENY\r\n"));
    }
    head.push_str("\r\n");
    let mut response = head.into_bytes();
    if !head_only {
        response.extend_from_slice(page.body.as_bytes());
    }
    response
}

/// A short answer with `status` and a one-line plain text body saying it (none for `HEAD`
/// and `204`).
pub fn status_response(status: Status, head_only: bool) -> Vec<u8> {
    let code = status.code();
    let reason = status.reason();
    if status == Status::NoContent {
        // RFC 9110 §8.6: a 204 carries no Content-Length (and no body).
        return format!("HTTP/1.1 {code} {reason}\r\n{COMMON}Cache-Control: no-store\r\n\r\n")
            .into_bytes();
    }
    let body = format!("{code} {reason}\n");
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\n{COMMON}\
         Cache-Control: no-store\r\n{}\r\n",
        body.len(),
        status.extra_headers()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

/// `101 Switching Protocols` to a WebSocket, with the key's `accept` answer.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap_or_default()
    }

    fn split(response: &[u8]) -> (String, String) {
        let response = text(response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
        // Each header line with its line end, the last one too.
        (format!("{head}\r\n"), body.to_string())
    }

    #[test]
    fn the_routes_name_the_embedded_files() {
        assert_eq!(page("/").map(|p| p.content_type), Some(HTML));
        assert_eq!(page("/admin").map(|p| p.content_type), Some(HTML));
        assert_eq!(page("/chat.css").map(|p| p.content_type), Some(CSS));
        assert_eq!(page("/chat.js").map(|p| p.content_type), Some(JAVASCRIPT));
        assert_eq!(page("/admin.js").map(|p| p.content_type), Some(JAVASCRIPT));
        assert_eq!(page("/index.html"), None);
        assert_eq!(page("/chat.js/"), None);
        assert_eq!(page(""), None);
    }

    #[test]
    fn an_html_page_carries_its_policy_and_length() {
        let (head, body) = split(&page_response(&CHAT_HTML, false));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
        assert_eq!(body, CHAT_HTML.body);
        for header in [
            "Content-Type: text/html; charset=utf-8",
            "Connection: close",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
            "X-Frame-Options: DENY",
            "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ] {
            assert!(head.contains(&format!("{header}\r\n")), "{header} in {head}");
        }
    }

    #[test]
    fn a_script_has_no_page_policy_and_head_has_no_body() {
        let (head, body) = split(&page_response(&CHAT_JS, true));
        assert!(head.contains("Content-Type: text/javascript; charset=utf-8\r\n"), "{head}");
        assert!(!head.contains("Content-Security-Policy"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", CHAT_JS.body.len())), "{head}");
        assert_eq!(body, "", "HEAD: the head only");
    }

    #[test]
    fn errors_are_short_and_say_what_they_need() {
        let (head, body) = split(&status_response(Status::MethodNotAllowed, false));
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{head}");
        assert!(head.contains("Allow: GET, HEAD\r\n"), "{head}");
        assert_eq!(body, "405 Method Not Allowed\n");
        assert!(head.contains("Content-Length: 23\r\n"), "{head}");
        let (head, _) = split(&status_response(Status::UpgradeRequired, false));
        assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
        let (head, body) = split(&status_response(Status::HeaderFieldsTooLarge, true));
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert_eq!(body, "");
        let (head, body) = split(&status_response(Status::NoContent, false));
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
        assert_eq!(body, "");
    }

    #[test]
    fn switching_protocols_names_the_accept_key() {
        let response = text(&switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
    }
}
