//! A web browser's connection: HTTP requests (the page, the dashboard), and the WebSocket that
//! carries a chat session like any telnet client's.
//!
//! One forked session child per connection, as for telnet. [`run`] finishes the connection's
//! own opening (a TLS handshake on a `web_tls` listener), reads one request head within
//! [`request::MAX_HEAD`] bytes and [`HEAD_TIMEOUT`] (slowloris), and answers it: a page or an
//! error (`pages`), then closes — or, for `/ws`, `101 Switching Protocols` and an ordinary
//! [`crate::session::run`] over a [`socket::WebSocketTransport`]. It tells the master what became
//! of the client on the admission datagram: an answered request is no client that gave up
//! logging in (a browser is never penalised for fetching a page), and a trusted proxy's
//! client is reported by its own address before the session starts. What a request gets is
//! decided in `request`, pure; this file only does the I/O, with its deadlines.
//!
//! INTERFACE #19: the lead writes `json` (what the session sends a browser).

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Events, Interest, Poll, Token};

use crate::master::WebStart;
use crate::proto::report::{REPORT_HTTP_ANSWERED, forwarded};
use crate::session::SessionSettings;
use crate::session::transport::ClientTransport;
use crate::sys;

pub mod json;
pub mod pages;
pub mod request;
pub mod socket;

use pages::Status;
use request::{Answer, Parsed, Site};

/// How long a client may take to open its connection (TLS) and send its request head: a
/// browser sends it at once; a client that trickles it (slowloris) holds a process for no
/// more than this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an answer may take to leave (the largest is the page's script).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after its answer the connection is read and dropped until the client closes:
/// closing with unread bytes would reset the connection under the answer.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The most of an answer queued at once (the transport's queue is `send_queue_bytes`).
const CHUNK: usize = 16 * 1024;

const CLIENT: Token = Token(0);

/// Serves one web connection: reads its request, answers it, and runs a chat session on its
/// WebSocket if it asked for one. Returns the exit status of the session child.
pub fn run(
    mut client: Box<dyn ClientTransport>,
    peer: SocketAddr,
    settings: SessionSettings,
    reporter: Option<StdUnixDatagram>,
    web: WebStart,
) -> i32 {
    // The title's area is found now (reading /proc/self/stat, once): from here on no file can
    // be opened. The request is read confined, as a telnet client's first byte is; the chat
    // session confines itself again (a second Landlock layer, the same rules).
    // SAFETY: a session starts no thread, and it began as the copy of the thread-less master:
    // it is single-threaded.
    unsafe { sys::set_process_title(&format!("chatd: (web) [{peer}]")) };
    crate::sandbox::confine_session_or_log();
    let mut poll = match Poll::new() {
        Ok(poll) => poll,
        Err(err) => {
            log::error!("cannot start a web session for {peer}: {err}");
            return 1;
        }
    };
    let readiness = Interest::READABLE | Interest::WRITABLE;
    if let Err(err) = poll.registry().register(client.source(), CLIENT, readiness) {
        log::error!("cannot start a web session for {peer}: {err}");
        return 1;
    }
    let mut connection = Connection {
        client: &mut *client,
        poll: &mut poll,
        events: Events::with_capacity(4),
        chunk: settings.limits.send_queue_bytes.clamp(1, CHUNK),
    };
    let deadline = Instant::now() + HEAD_TIMEOUT;
    if !connection.open(peer, deadline) {
        return 0;
    }
    let (request, head_length, head) = match connection.read_head(deadline) {
        Head::Complete { request, length, bytes } => (request, length, bytes),
        Head::Nothing => {
            // A browser's speculative connection, opened and never used: no client that gave
            // up logging in.
            debug!("web connection from {peer} closed without a request");
            report(&reporter, &[REPORT_HTTP_ANSWERED]);
            connection.client.close(None);
            return 0;
        }
        Head::Gone => {
            debug!("web client {peer} left before its request was complete");
            return 0;
        }
        Head::Refused(status) => {
            info!("web request from {peer} refused: {} ", status.code());
            connection.answer(&pages::status_response(status, false));
            return 0;
        }
    };
    let site = Site { tls: connection.client.is_tls(), allowed_origins: &web.allowed_origins };
    let head_only = request.head_only();
    let accept = match request::answer(&request, site) {
        Answer::Page(page) => {
            report(&reporter, &[REPORT_HTTP_ANSWERED]);
            connection.answer(&pages::page_response(page, head_only));
            return 0;
        }
        Answer::Status(status) => {
            debug!(
                "web request {} {} from {peer}: {}",
                request.method,
                request.path,
                status.code()
            );
            report(&reporter, &[REPORT_HTTP_ANSWERED]);
            connection.answer(&pages::status_response(status, head_only));
            return 0;
        }
        Answer::ForeignOrigin(origin) => {
            info!("web socket from {origin} refused for {peer}: not an allowed origin");
            // The browser's user did nothing wrong: another site's page tried.
            report(&reporter, &[REPORT_HTTP_ANSWERED]);
            connection.answer(&pages::status_response(Status::Forbidden, head_only));
            return 0;
        }
        Answer::Upgrade { accept } => accept,
    };
    let peer = match (web.trusted_proxy, request.forwarded_for.as_deref()) {
        (true, Some(forwarded_for)) => match request::forwarded_client(forwarded_for) {
            Some(ip) => {
                info!("web client {ip} through the proxy {peer}");
                send_report(&reporter, &forwarded(std::process::id() as i32, ip));
                // The proxy's port says nothing about the client.
                SocketAddr::new(ip, 0)
            }
            None => {
                info!("web client through the proxy {peer}: no address in X-Forwarded-For");
                peer
            }
        },
        (false, Some(_)) => {
            debug!("X-Forwarded-For from {peer} ignored: not a trusted proxy");
            peer
        }
        (_, None) => peer,
    };
    if connection.client.queue(&pages::switching_protocols(&accept)).is_err() {
        return 0;
    }
    let _ = connection.client.flush();
    // The session's own poller registers the connection again.
    let _ = poll.registry().deregister(client.source());
    drop(poll);
    let leftover = head[head_length..].to_vec();
    let send_queue_bytes = settings.limits.send_queue_bytes;
    let socket = socket::WebSocketTransport::new(client, leftover, send_queue_bytes);
    crate::session::run(Box::new(socket), peer, settings, reporter)
}

/// Tells the master what became of the client: this process's pid and `detail`
/// (`proto::report`).
fn report(reporter: &Option<StdUnixDatagram>, detail: &[u8]) {
    let mut datagram = (std::process::id() as i32).to_le_bytes().to_vec();
    datagram.extend_from_slice(detail);
    send_report(reporter, &datagram);
}

/// Sends a whole report datagram.
fn send_report(reporter: &Option<StdUnixDatagram>, datagram: &[u8]) {
    if let Some(reporter) = reporter {
        let _ = reporter.send(datagram);
    }
}

/// What reading a head came to.
enum Head {
    /// The head, its length, and every byte read (frames may follow the head).
    Complete { request: Box<request::Request>, length: usize, bytes: Vec<u8> },
    /// The client closed or timed out without sending a byte.
    Nothing,
    /// The client closed in the middle of its head, or the connection failed.
    Gone,
    /// `431`, `400`, or `408` (too slow).
    Refused(Status),
}

/// The connection before it is a WebSocket, with its poller.
struct Connection<'a> {
    client: &'a mut dyn ClientTransport,
    poll: &'a mut Poll,
    events: Events,
    chunk: usize,
}

impl Connection<'_> {
    /// Waits until the connection is ready or `deadline`; false once it has passed.
    fn wait(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        sys::wait(self.poll, &mut self.events, Some(left)).is_ok()
            && Instant::now() < deadline + Duration::from_millis(1)
    }

    /// Finishes the connection's own opening (TLS); false if it failed or took too long.
    fn open(&mut self, peer: SocketAddr, deadline: Instant) -> bool {
        loop {
            match self.client.handshake() {
                Ok(true) => return true,
                Ok(false) => {}
                Err(err) => {
                    info!("TLS handshake with {peer} failed: {err}");
                    return false;
                }
            }
            if !self.wait(deadline) {
                info!("TLS handshake with {peer} timed out");
                self.client.close(None);
                return false;
            }
        }
    }

    /// Reads the request head until it is complete, refused, or [`HEAD_TIMEOUT`] passed.
    fn read_head(&mut self, deadline: Instant) -> Head {
        let mut bytes = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        loop {
            match self.client.read(&mut chunk) {
                Ok(0) if bytes.is_empty() => return Head::Nothing,
                Ok(0) => return Head::Gone,
                Ok(n) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    match request::parse(&bytes) {
                        Parsed::Partial => {}
                        Parsed::Complete(request, length) => {
                            return Head::Complete { request: Box::new(request), length, bytes };
                        }
                        Parsed::Refused(status) => return Head::Refused(status),
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if !self.wait(deadline) {
                        return match bytes.is_empty() {
                            true => Head::Nothing,
                            false => Head::Refused(Status::RequestTimeout),
                        };
                    }
                }
                Err(_) => return Head::Gone,
            }
        }
    }

    /// Sends `response` whole (or until [`ANSWER_TIMEOUT`]), then closes the connection after
    /// the client's own close or [`CLOSE_GRACE`].
    fn answer(&mut self, response: &[u8]) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut rest = response;
        loop {
            while !rest.is_empty() {
                let n = rest.len().min(self.chunk);
                if self.client.queue(&rest[..n]).is_err() {
                    break;
                }
                rest = &rest[n..];
            }
            if self.client.flush().is_err() {
                break;
            }
            if rest.is_empty() && self.client.queued() == 0 {
                break;
            }
            if !self.wait(deadline) {
                break;
            }
        }
        self.client.close(Some(Instant::now() + CLOSE_GRACE));
    }
}
