//! The session's connection to its client: bytes in, bytes out, and closing.
//!
//! Owns the one interface ([`ClientTransport`]) every client connection offers the session,
//! and its plain implementation ([`PlainTransport`]): a non-blocking TCP stream (a listener's
//! connection, or inetd's standard input, which is the same kind of socket) with its bounded
//! output queue and its TCP options (keepalive, the send-buffer cap, no Nagle delay). TLS
//! ([`super::tls`]) and WebSocket connections are further implementations; above this file
//! only the start of the session (a TLS handshake before the greeting) knows which one it
//! has. It does not interpret the bytes (telnet, lines and HTTP answers are the session's)
//! and decides nothing about who is disconnected for what: it reports, the session decides.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::outbuf::{OutBuf, Overflow};
use crate::session::http;

/// How long a new connection waits for the client to speak first before greeting it: a
/// browser or `curl` sends its request at once, and must get an answer in HTTP, not a greeting
/// before it. Telnet clients that negotiate speak at once too; netcat users never notice 50 ms.
const HTTP_SNIFF: Duration = Duration::from_millis(50);

/// A client that opened with an HTTP request (seen before anything was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SniffedHttp {
    /// `HEAD`: the answer has no body.
    pub head_only: bool,
}

/// One client connection as the session sees it. Reads and writes never block; output waits
/// in the transport's bounded queue until [`flush`](ClientTransport::flush) takes it out.
pub trait ClientTransport {
    /// The poller registers this; edge-triggered, readable and writable.
    fn source(&mut self) -> &mut dyn mio::event::Source;
    /// Reads what the client sent into `buf`: `Ok(0)` is the end of the connection,
    /// `WouldBlock` that nothing more is there now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Queues `bytes` whole, or nothing when the queue would grow past its limit.
    fn queue(&mut self, bytes: &[u8]) -> Result<(), Overflow>;
    /// Bytes queued and not yet written.
    fn queued(&self) -> usize;
    /// Writes what the client takes without blocking; returns how many bytes it took.
    fn flush(&mut self) -> io::Result<usize>;
    /// Forgets what is queued: the client can no longer be written to.
    fn discard_output(&mut self);
    /// Forgets what is queued but takes more: a client that fell behind gets the news, not
    /// the backlog.
    fn drop_backlog(&mut self);
    /// Ends the connection after what was flushed. With `drain_until`, first reads and drops
    /// what the client still sends, until it closes or the moment passes (closing with unread
    /// bytes would reset the connection under the last answer).
    fn close(&mut self, drain_until: Option<Instant>);
    /// Whether telnet is spoken on this connection (offered, and its commands decoded).
    fn is_telnet(&self) -> bool;
    /// Waits briefly for the client to speak first, without reading: an HTTP request if it
    /// opened with one. Transports that carry no HTTP on the chat port answer `None`.
    fn sniff_http(&self) -> Option<SniffedHttp>;
    /// The port the client connected to, for the HTTP answer's link (0 when unknown).
    fn local_port(&self) -> u16;
    /// Whether the connection is encrypted (TLS), for `/who` and the broker.
    fn is_tls(&self) -> bool {
        false
    }
    /// Whether this is a browser's WebSocket: each [`queue`](ClientTransport::queue) is then
    /// one message (the session writes one JSON object per event, `session::web::json`), and
    /// each message the browser sends is one typed line.
    fn is_web(&self) -> bool {
        false
    }
    /// Moves the connection's own opening (a TLS handshake) on with what the client sent:
    /// `Ok(true)` once the session may greet the client and read its bytes, `Ok(false)` while
    /// it waits for more, an error if it failed. Plain connections have none.
    fn handshake(&mut self) -> io::Result<bool> {
        Ok(true)
    }
}

/// A plain TCP connection (or inetd's socket on standard input).
pub struct PlainTransport {
    stream: TcpStream,
    out: OutBuf,
    telnet: bool,
}

impl PlainTransport {
    /// Wraps `stream`: `send_queue_bytes` bounds both the session's queue and the kernel's
    /// send buffer, `keepalive` is when TCP starts probing a silent peer, and `telnet` says
    /// whether to speak telnet on it.
    pub fn new(
        stream: TcpStream,
        send_queue_bytes: usize,
        keepalive: Duration,
        telnet: bool,
    ) -> PlainTransport {
        tune_socket(&stream, send_queue_bytes, keepalive);
        PlainTransport { stream, out: OutBuf::new(send_queue_bytes), telnet }
    }
}

impl ClientTransport for PlainTransport {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.stream
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.out.push(bytes)
    }

    fn queued(&self) -> usize {
        self.out.len()
    }

    fn flush(&mut self) -> io::Result<usize> {
        let queued = self.out.len();
        let written = self.out.write_to(&mut self.stream);
        let sent = queued.saturating_sub(self.out.len());
        written.map(|_| sent)
    }

    fn discard_output(&mut self) {
        self.out = OutBuf::new(0);
    }

    fn drop_backlog(&mut self) {
        self.out = OutBuf::new(self.out.limit());
    }

    fn close(&mut self, drain_until: Option<Instant>) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        if let Some(deadline) = drain_until {
            drain_until_closed(&mut self.stream, deadline);
        }
    }

    fn is_telnet(&self) -> bool {
        self.telnet
    }

    fn sniff_http(&self) -> Option<SniffedHttp> {
        sniff_http(&self.stream)
    }

    fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |addr| addr.port())
    }
}

/// The TCP options of every client connection: no Nagle delay (small lines must leave at
/// once; batching is done by the session, per loop turn), keepalive after `keepalive`, and a
/// send buffer no larger than the session's own queue.
pub(super) fn tune_socket(stream: &TcpStream, send_queue_bytes: usize, keepalive: Duration) {
    let _ = stream.set_nodelay(true);
    set_keepalive(stream, keepalive);
    cap_send_buffer(stream, send_queue_bytes);
}

/// Waits up to [`HTTP_SNIFF`] for the client to speak first; an HTTP request if it did with
/// one. Looks without reading (the bytes stay for the session's loop) and uses `poll(2)` on
/// the socket, which leaves the session's edge-triggered registration as it was.
fn sniff_http(client: &TcpStream) -> Option<SniffedHttp> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(client.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(HTTP_SNIFF).unwrap_or(PollTimeout::ZERO);
    if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
        return None;
    }
    let mut first = [0u8; 8];
    let n = client.peek(&mut first).ok()?;
    http::starts_request(&first[..n])
        .then(|| SniffedHttp { head_only: first[..n].starts_with(b"HEAD ") })
}

/// Reads and discards what the client still sends until it closes or `deadline` passes.
pub(super) fn drain_until_closed(client: &mut TcpStream, deadline: Instant) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut chunk = [0u8; 4096];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [PollFd::new(client.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, timeout).is_err() {
            return;
        }
    }
}

/// Turns on TCP keepalive so that a peer that vanished without a FIN (a crashed machine, a cut
/// cable) is noticed and its nickname freed: probes start after `idle` and give up after three.
fn set_keepalive(client: &TcpStream, idle: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let idle_secs = u32::try_from(idle.as_secs()).unwrap_or(u32::MAX).max(1);
    let _ = setsockopt(client, sockopt::KeepAlive, &true);
    let _ = setsockopt(client, sockopt::TcpKeepIdle, &idle_secs);
    let _ = setsockopt(client, sockopt::TcpKeepInterval, &(idle_secs / 6).max(1));
    let _ = setsockopt(client, sockopt::TcpKeepCount, &3);
}

/// Caps the kernel's send buffer for a client at the session's own queue size. Without it, a
/// client that stops reading can pin megabytes of kernel memory (loopback and fast links grow
/// the buffer to 4 MiB) before the session notices; with it, `send_queue_bytes` means what it
/// says.
fn cap_send_buffer(client: &TcpStream, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(client, sockopt::SndBuf, &bytes);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream as StdTcpStream};

    use super::*;

    /// A plain transport on one end of a loopback connection, the client on the other.
    fn connected(limit: usize) -> (PlainTransport, StdTcpStream, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let client = StdTcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let transport =
            PlainTransport::new(TcpStream::from_std(server), limit, Duration::from_secs(60), true);
        (transport, client, port)
    }

    /// Waits (briefly) until the transport has something to read.
    fn read_soon(transport: &mut PlainTransport, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match transport.read(buf) {
                Err(err)
                    if err.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn queued_bytes_reach_the_client_when_flushed() {
        let (mut transport, mut client, port) = connected(64);
        assert!(transport.is_telnet());
        assert_eq!(transport.local_port(), port);
        transport.queue(b"hello ").expect("room");
        transport.queue(b"world").expect("room");
        assert_eq!(transport.queued(), 11);
        assert_eq!(transport.flush().expect("flush"), 11);
        assert_eq!(transport.queued(), 0);
        transport.close(None);
        let mut got = String::new();
        client.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello world", "and the close ends the stream");
    }

    #[test]
    fn the_queue_refuses_what_would_pass_its_limit_and_can_be_discarded() {
        let (mut transport, _client, _) = connected(8);
        transport.queue(b"12345").expect("room");
        assert!(transport.queue(b"6789").is_err());
        assert_eq!(transport.queued(), 5, "nothing of a refused write is queued");
        transport.discard_output();
        assert_eq!(transport.queued(), 0);
        assert!(transport.queue(b"x").is_err(), "a discarded queue takes nothing more");
    }

    #[test]
    fn reads_say_would_block_then_bring_what_the_client_sent_then_the_end() {
        let (mut transport, mut client, _) = connected(64);
        let mut buf = [0u8; 64];
        let nothing = transport.read(&mut buf).map_err(|err| err.kind());
        assert_eq!(nothing, Err(io::ErrorKind::WouldBlock));
        client.write_all(b"hi\r\n").expect("write");
        assert_eq!(read_soon(&mut transport, &mut buf).expect("read"), 4);
        assert_eq!(&buf[..4], b"hi\r\n");
        drop(client);
        assert_eq!(read_soon(&mut transport, &mut buf).expect("read"), 0);
    }

    #[test]
    fn an_http_request_is_seen_without_being_read() {
        let (mut transport, mut client, _) = connected(64);
        assert_eq!(transport.sniff_http(), None, "a silent client is no browser");
        client.write_all(b"HEAD / HTTP/1.1\r\n").expect("write");
        assert_eq!(transport.sniff_http(), Some(SniffedHttp { head_only: true }));
        let mut buf = [0u8; 64];
        assert_eq!(read_soon(&mut transport, &mut buf).expect("read"), 17, "still there");
    }
}
