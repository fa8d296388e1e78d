//! A browser's WebSocket as the session's client connection: [`WebSocketTransport`], a
//! [`ClientTransport`] over the plain or TLS transport the HTTP request came on.
//!
//! It owns the WebSocket layer (tungstenite's [`WebSocketContext`], set to small buffers and
//! 4 KiB messages): each text message the browser sends is read as its bytes and a line end,
//! so one message is one typed line; each [`queue`](ClientTransport::queue) leaves as one text
//! message; pings go out every [`PING_EVERY`] (reverse proxies drop upgrades idle for 60 s);
//! binary messages, messages over 4 KiB and protocol errors end the connection with the
//! Close code that says why (1003, 1009, 1002, 1007), and the browser's Close ends it as a
//! client that left. It does not interpret the lines (the session does) and decides nothing
//! about disconnecting for slowness: it reports, the session decides.
//!
//! Output: whole messages are framed as they are queued (the header by tungstenite's
//! `FrameHeader`) and wait here, bounded by `send_queue_bytes` like a telnet client's queue;
//! they move to the inner transport's queue only as that one drains, so the inner queue holds
//! whole frames and dropping a fallen-behind client's backlog drops messages, never half a
//! frame. They do not go through `WebSocketContext::write`: its output buffer keeps the
//! capacity of the largest frame it ever wrote (a 500-member list, a page of missed lines)
//! for the rest of the session's life. What tungstenite writes by itself (pongs, the Close)
//! goes through it, and first: nothing of ours passes a frame it holds, nor follows a Close.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error, Message};

use crate::outbuf::Overflow;
use crate::session::transport::{ClientTransport, SniffedHttp};

/// How often the server pings an open socket.
pub const PING_EVERY: Duration = Duration::from_secs(30);

/// The largest message (and frame) a browser may send: a typed line is at most 512 bytes of
/// chat, so 4 KiB leaves room for any paste line without letting one message cost a
/// session's memory.
pub const MAX_MESSAGE: usize = 4096;

/// What tungstenite may hold of frames that the inner queue did not take (pongs, the Close):
/// small, since messages wait here, not there.
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// How long the last Close waits for the browser's answer before the connection is closed.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The WebSocket's settings: every buffer and size limit set (tungstenite's defaults are a
/// 128 KiB read buffer and 64 MiB messages). `write_buffer_size(0)`: each frame goes to the
/// inner queue at once. tungstenite panics unless `max_write_buffer_size` exceeds
/// `write_buffer_size`.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A browser's WebSocket connection.
pub struct WebSocketTransport {
    /// The connection the request came on (plain or TLS), its handshake done.
    inner: Box<dyn ClientTransport>,
    socket: WebSocketContext,
    tls: bool,
    /// Messages queued by the session, framed, and not yet in `inner`; their bytes.
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// `send_queue_bytes`: what may wait here and in `inner` together.
    limit: usize,
    /// The output was discarded: nothing more is taken.
    discarded: bool,
    /// A message read and not yet all handed to the session (with its line end).
    incoming: Vec<u8>,
    incoming_at: usize,
    /// Fires every [`PING_EVERY`]; registered with the connection, under its token, so that
    /// its expiry wakes the session's loop as a read would. `None` if the kernel refused one
    /// (then TCP keepalive alone keeps the connection).
    ping: Option<TimerFd>,
    /// The connection ended (a Close either way, or the end of the stream).
    ended: bool,
}

impl WebSocketTransport {
    /// Takes over `inner` after the `101` answer was queued on it; `leftover` is what the
    /// client sent after its request head (its first frames, if it did not wait).
    pub fn new(
        inner: Box<dyn ClientTransport>,
        leftover: Vec<u8>,
        send_queue_bytes: usize,
    ) -> WebSocketTransport {
        Self::pinging_every(inner, leftover, send_queue_bytes, PING_EVERY)
    }

    /// A trusted proxy terminated TLS for this client (`X-Forwarded-Proto: https`): the
    /// connection counts as encrypted, for passwords and `/admin`.
    pub fn encrypted_by_proxy(&mut self) {
        self.tls = true;
    }

    fn pinging_every(
        inner: Box<dyn ClientTransport>,
        leftover: Vec<u8>,
        send_queue_bytes: usize,
        every: Duration,
    ) -> WebSocketTransport {
        let tls = inner.is_tls();
        let socket = WebSocketContext::from_partially_read(leftover, Role::Server, Some(config()));
        let ping = ping_timer(every)
            .map_err(|err| log::debug!("no ping timer for a web socket: {err}"))
            .ok();
        WebSocketTransport {
            inner,
            socket,
            tls,
            pending: VecDeque::new(),
            pending_bytes: 0,
            limit: send_queue_bytes,
            discarded: false,
            incoming: Vec::new(),
            incoming_at: 0,
            ping,
            ended: false,
        }
    }

    /// Sends a ping if the timer fired since the last look.
    fn ping_if_due(&mut self) {
        // A non-blocking read of the timer: it succeeds once per expiry.
        if self.ping.as_ref().is_some_and(|timer| timer.wait().is_ok()) && !self.ended {
            let mut wire = Wire { inner: &mut *self.inner };
            let _ = self.socket.write(&mut wire, Message::Ping(tungstenite::Bytes::new()));
        }
    }

    /// Ends the connection with a Close saying `why`: sent, flushed as far as the socket
    /// takes it, then the connection closed once the browser answered (or [`CLOSE_WAIT`]).
    fn fail(&mut self, code: CloseCode, why: &'static str) {
        log::info!("web socket closed ({}): {why}", u16::from(code));
        self.pending.clear();
        self.pending_bytes = 0;
        let frame = CloseFrame { code, reason: why.into() };
        let mut wire = Wire { inner: &mut *self.inner };
        let _ = self.socket.close(&mut wire, Some(frame));
        self.finish();
    }

    /// Flushes what tungstenite and the inner queue hold, then closes the connection after the
    /// browser's own close (or [`CLOSE_WAIT`]): closing with its Close unread would reset the
    /// connection under ours.
    fn finish(&mut self) {
        self.ended = true;
        let mut wire = Wire { inner: &mut *self.inner };
        let _ = self.socket.flush(&mut wire);
        let _ = self.inner.flush();
        self.inner.close(Some(Instant::now() + CLOSE_WAIT));
    }

    /// Moves waiting frames into the inner queue while it has room for them, after whatever
    /// tungstenite holds; none once a Close was sent or received.
    fn frame_pending(&mut self) -> io::Result<bool> {
        let mut wire = Wire { inner: &mut *self.inner };
        match self.socket.flush(&mut wire) {
            Ok(()) => {}
            Err(Error::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return Ok(false),
            Err(Error::Io(err)) => return Err(err),
            Err(err) => return Err(io::Error::other(err)),
        }
        if !self.socket.can_write() {
            return Ok(false);
        }
        let mut moved = false;
        while let Some(frame) = self.pending.front() {
            if self.inner.queued() + frame.len() > self.limit || self.inner.queue(frame).is_err() {
                break;
            }
            self.pending_bytes = self.pending_bytes.saturating_sub(frame.len());
            self.pending.pop_front();
            moved = true;
        }
        Ok(moved)
    }
}

/// `payload` as one text frame (a server's: unmasked, final).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    // The session writes UTF-8 (JSON, or text lines before it speaks JSON): borrowed as is.
    let text = String::from_utf8_lossy(payload);
    let header = FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() };
    let mut frame = Vec::with_capacity(framed_len(text.len()));
    // Formatting into a Vec cannot fail.
    let _ = header.format(text.len() as u64, &mut frame);
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// A server frame's size for a payload of `len` bytes: the header (2, 4 or 10 bytes, no mask)
/// and the payload.
fn framed_len(len: usize) -> usize {
    let header = match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    header + len
}

fn ping_timer(every: Duration) -> nix::Result<TimerFd> {
    let timer =
        TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
    let every = TimeSpec::from_duration(every);
    timer.set(Expiration::Interval(every), TimerSetTimeFlags::empty())?;
    Ok(timer)
}

/// The inner transport as the byte stream tungstenite reads and writes: reads are the inner
/// transport's; a write is queued whole or not at all (`WouldBlock`), so frames stay whole in
/// the inner queue.
struct Wire<'a> {
    inner: &'a mut dyn ClientTransport,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.inner.queue(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The poller registers the connection and the ping timer under one token: the timer's
/// expiry reads as the connection being readable, and [`ClientTransport::read`] sends the
/// ping.
impl mio::event::Source for WebSocketTransport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.inner.source().register(registry, token, interests)?;
        if let Some(timer) = &self.ping {
            SourceFd(&timer.as_fd().as_raw_fd()).register(registry, token, Interest::READABLE)?;
        }
        Ok(())
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.inner.source().reregister(registry, token, interests)?;
        if let Some(timer) = &self.ping {
            SourceFd(&timer.as_fd().as_raw_fd()).reregister(registry, token, Interest::READABLE)?;
        }
        Ok(())
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        if let Some(timer) = &self.ping {
            SourceFd(&timer.as_fd().as_raw_fd()).deregister(registry)?;
        }
        self.inner.source().deregister(registry)
    }
}

impl ClientTransport for WebSocketTransport {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        self
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ping_if_due();
        loop {
            if self.incoming_at < self.incoming.len() {
                let n = buf.len().min(self.incoming.len() - self.incoming_at);
                buf[..n].copy_from_slice(&self.incoming[self.incoming_at..self.incoming_at + n]);
                self.incoming_at += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            let mut wire = Wire { inner: &mut *self.inner };
            match self.socket.read(&mut wire) {
                Ok(Message::Text(text)) => {
                    self.incoming.clear();
                    self.incoming.extend_from_slice(text.as_bytes());
                    self.incoming.push(b'\n');
                    self.incoming_at = 0;
                }
                Ok(Message::Binary(_)) => {
                    self.fail(CloseCode::Unsupported, "binary messages are not read");
                    return Ok(0);
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queued the answering Close.
                    self.finish();
                    return Ok(0);
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(Error::Io(err)) => return Err(err),
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    self.ended = true;
                    return Ok(0);
                }
                Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    // The tab was closed or the network went: an ordinary end.
                    self.ended = true;
                    return Ok(0);
                }
                Err(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
                    self.fail(CloseCode::Size, "message too big");
                    return Ok(0);
                }
                Err(Error::Capacity(_)) => {
                    self.fail(CloseCode::Size, "message too big");
                    return Ok(0);
                }
                Err(Error::Utf8(_)) => {
                    self.fail(CloseCode::Invalid, "a text message that is not UTF-8");
                    return Ok(0);
                }
                Err(_) => {
                    self.fail(CloseCode::Protocol, "a WebSocket protocol error");
                    return Ok(0);
                }
            }
        }
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        let framed = framed_len(bytes.len());
        let queued = self.queued();
        if self.discarded || self.ended || queued + framed > self.limit {
            return Err(Overflow { queued, limit: self.limit });
        }
        let frame = text_frame(bytes);
        self.pending_bytes += frame.len();
        self.pending.push_back(frame);
        Ok(())
    }

    fn queued(&self) -> usize {
        self.pending_bytes + self.inner.queued()
    }

    fn flush(&mut self) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            taken += self.inner.flush()?;
            if !self.frame_pending()? {
                break;
            }
        }
        // Pongs and a Close tungstenite could not queue before.
        let mut wire = Wire { inner: &mut *self.inner };
        match self.socket.flush(&mut wire) {
            Ok(()) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => {}
            Err(Error::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(Error::Io(err)) => return Err(err),
            Err(err) => return Err(io::Error::other(err)),
        }
        taken += self.inner.flush()?;
        Ok(taken)
    }

    fn discard_output(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.discarded = true;
        self.inner.discard_output();
    }

    fn drop_backlog(&mut self) {
        // Whole messages only: the inner queue's frames are on their way already.
        self.pending.clear();
        self.pending_bytes = 0;
    }

    fn close(&mut self, drain_until: Option<Instant>) {
        if self.ended {
            return;
        }
        let _ = self.flush();
        self.ended = true;
        let mut wire = Wire { inner: &mut *self.inner };
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = self.socket.close(&mut wire, Some(frame));
        let _ = self.inner.flush();
        let deadline = drain_until.unwrap_or_else(|| Instant::now() + CLOSE_WAIT);
        self.inner.close(Some(deadline));
    }

    fn is_telnet(&self) -> bool {
        false
    }

    fn sniff_http(&self) -> Option<SniffedHttp> {
        None
    }

    fn local_port(&self) -> u16 {
        self.inner.local_port()
    }

    fn is_tls(&self) -> bool {
        self.tls
    }

    fn is_web(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream as StdTcpStream};

    use tungstenite::protocol::WebSocket;

    use super::*;
    use crate::session::transport::PlainTransport;

    /// A WebSocket transport on one end of a loopback connection (over a plain transport),
    /// tungstenite's client side on the other.
    fn connected(limit: usize, ping: Duration) -> (WebSocketTransport, WebSocket<StdTcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let client = StdTcpStream::connect(("127.0.0.1", port)).expect("connect");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let stream = mio::net::TcpStream::from_std(server);
        let plain = PlainTransport::new(stream, limit, Duration::from_secs(60), false);
        let transport = WebSocketTransport::pinging_every(Box::new(plain), Vec::new(), limit, ping);
        (transport, WebSocket::from_raw_socket(client, Role::Client, None))
    }

    /// Reads what the transport has, waiting on its readiness (5 s at most) while it would
    /// block.
    fn read_soon(transport: &mut WebSocketTransport, buf: &mut [u8]) -> io::Result<usize> {
        let mut poll = mio::Poll::new()?;
        poll.registry().register(transport, Token(0), Interest::READABLE)?;
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        let read = loop {
            match transport.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Err(err);
                    }
                    poll.poll(&mut events, Some(left))?;
                }
                other => break other,
            }
        };
        let _ = poll.registry().deregister(transport);
        read
    }

    fn text(client: &mut WebSocket<StdTcpStream>) -> String {
        loop {
            match client.read().expect("a message") {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("not text: {other:?}"),
            }
        }
    }

    #[test]
    fn the_configuration_is_valid_and_small() {
        let config = config();
        assert_eq!(config.read_buffer_size, 4096);
        assert_eq!(config.write_buffer_size, 0);
        assert_eq!(config.max_message_size, Some(MAX_MESSAGE));
        assert_eq!(config.max_frame_size, Some(MAX_MESSAGE));
        assert!(config.max_write_buffer_size > config.write_buffer_size, "else tungstenite panics");
        // And tungstenite takes it.
        let _ = WebSocketContext::new(Role::Server, Some(config));
    }

    #[test]
    fn a_frame_is_its_header_and_payload() {
        assert_eq!(framed_len(0), 2);
        assert_eq!(framed_len(125), 127);
        assert_eq!(framed_len(126), 130);
        assert_eq!(framed_len(65535), 65539);
        assert_eq!(framed_len(65536), 65546);
    }

    #[test]
    fn each_queue_is_one_message_and_each_message_one_line() {
        let (mut transport, mut client) = connected(4096, PING_EVERY);
        assert!(transport.is_web() && !transport.is_telnet() && !transport.is_tls());
        assert_eq!(transport.sniff_http(), None);
        transport.queue(b"{\"t\":\"line\"}").expect("room");
        transport.queue("héllo".as_bytes()).expect("room");
        assert_eq!(transport.queued(), 14 + 8);
        assert!(transport.flush().expect("flush") > 0);
        assert_eq!(transport.queued(), 0);
        assert_eq!(text(&mut client), "{\"t\":\"line\"}");
        assert_eq!(text(&mut client), "héllo");
        client.send(Message::Text("hi there".into())).expect("send");
        client.send(Message::Text("two\nlines".into())).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        while got.len() < "hi there\ntwo\nlines\n".len() {
            let n = read_soon(&mut transport, &mut buf).expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hi there\ntwo\nlines\n", "small reads take a message in parts");
        client.close(None).expect("close");
        assert_eq!(read_soon(&mut transport, &mut buf).expect("read"), 0, "the browser left");
    }

    #[test]
    fn messages_of_every_header_length_arrive_whole_and_in_order() {
        let lengths = [0, 1, 125, 126, 4096, 65535, 65536, 100_000];
        let (mut transport, mut client) = connected(400_000, PING_EVERY);
        let reader = std::thread::spawn(move || {
            lengths.map(|_| text(&mut client)).into_iter().collect::<Vec<_>>()
        });
        for (index, &length) in lengths.iter().enumerate() {
            let letter = b'a' + index as u8;
            transport.queue(&vec![letter; length]).expect("room");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while transport.queued() > 0 {
            assert!(Instant::now() < deadline, "still {} bytes queued", transport.queued());
            transport.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = reader.join().expect("reader");
        for (index, (message, &length)) in got.iter().zip(&lengths).enumerate() {
            let letter = char::from(b'a' + index as u8);
            assert_eq!(message.len(), length, "message {index}");
            assert!(message.chars().all(|c| c == letter), "message {index}");
        }
    }

    #[test]
    fn the_queue_is_bounded_and_its_backlog_drops_whole_messages() {
        let (mut transport, mut client) = connected(64, PING_EVERY);
        transport.queue(&[b'a'; 40]).expect("room");
        assert!(transport.queue(&[b'b'; 30]).is_err(), "42 + 32 > 64");
        transport.queue(&[b'c'; 20]).expect("room");
        transport.drop_backlog();
        assert_eq!(transport.queued(), 0);
        transport.queue(b"after").expect("room");
        transport.flush().expect("flush");
        assert_eq!(text(&mut client), "after", "nothing of the dropped backlog");
        transport.discard_output();
        assert!(transport.queue(b"x").is_err(), "a discarded queue takes nothing more");
    }

    #[test]
    fn a_binary_message_is_refused_with_1003_and_a_big_one_with_1009() {
        for (message, code) in [
            (Message::Binary(vec![1, 2, 3].into()), CloseCode::Unsupported),
            (Message::Text("x".repeat(MAX_MESSAGE + 1).into()), CloseCode::Size),
        ] {
            let (mut transport, mut client) = connected(4096, PING_EVERY);
            client.send(message).expect("send");
            let mut buf = [0u8; 64];
            assert_eq!(read_soon(&mut transport, &mut buf).expect("read"), 0);
            match client.read() {
                Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, code),
                other => panic!("no Close {code:?}: {other:?}"),
            }
            assert!(transport.queue(b"late").is_err(), "nothing after the Close");
        }
    }

    #[test]
    fn an_open_socket_is_pinged() {
        let (mut transport, mut client) = connected(4096, Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut peek = [0u8; 1];
        client.get_mut().set_nonblocking(true).expect("nonblocking");
        while !matches!(client.get_ref().peek(&mut peek), Ok(1)) {
            assert!(Instant::now() < deadline, "no ping within 5 s");
            let _ = transport.read(&mut [0u8; 16]);
            transport.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(5));
        }
        client.get_mut().set_nonblocking(false).expect("blocking");
        assert!(matches!(client.read(), Ok(Message::Ping(_))));
    }

    #[test]
    fn the_server_closes_with_a_normal_close() {
        let (mut transport, mut client) = connected(4096, PING_EVERY);
        transport.queue(b"bye").expect("room");
        transport.flush().expect("flush");
        assert_eq!(text(&mut client), "bye");
        // The client answers the Close (tungstenite does) while the transport drains.
        let answer = std::thread::spawn(move || client.read());
        transport.close(None);
        match answer.join().expect("thread") {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("no Close: {other:?}"),
        }
    }

    #[test]
    fn messages_go_both_ways_over_tls() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("temporary directory");
        let identity = crate::master::tls::self_signed(dir.path(), None).expect("certificate");
        let cert_path = dir.path().join(crate::config::SELF_SIGNED_CERT);
        let cert: rustls::pki_types::CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_file(&cert_path).expect("cert");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        // The browser: a rustls client and tungstenite's client side, blocking, in a thread.
        let browser = std::thread::spawn(move || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).expect("trust anchor");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
            let socket = StdTcpStream::connect(address).expect("connect");
            socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let stream = rustls::StreamOwned::new(tls, socket);
            let mut client = WebSocket::from_raw_socket(stream, Role::Client, None);
            client.send(Message::Text("over tls".into())).expect("send");
            let answer = loop {
                match client.read().expect("a message") {
                    Message::Text(text) => break text.to_string(),
                    _ => continue,
                }
            };
            let _ = client.close(None);
            answer
        });
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let stream = mio::net::TcpStream::from_std(accepted);
        let keepalive = Duration::from_secs(60);
        let mut tls = crate::session::tls::TlsTransport::new(
            stream,
            identity.settings,
            4096,
            keepalive,
            false,
        )
        .expect("server connection");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tls.handshake().expect("handshake") {
            assert!(Instant::now() < deadline, "no handshake within 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut transport =
            WebSocketTransport::pinging_every(Box::new(tls), Vec::new(), 4096, PING_EVERY);
        assert!(transport.is_tls() && transport.is_web());
        let mut got = [0u8; 64];
        let n = read_soon(&mut transport, &mut got).expect("read");
        assert_eq!(&got[..n], b"over tls\n");
        transport.queue(b"back over tls").expect("room");
        transport.flush().expect("flush");
        assert_eq!(browser.join().expect("browser"), "back over tls");
    }
}
