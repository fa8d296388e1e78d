//! One operator's connection on `control.sock`: its request read a bounded piece at a time,
//! its one reply, and its deadlines ([`REQUEST_TIMEOUT`] for the whole request after accept,
//! then [`CONTROL_TIMEOUT`] for the answer).
//!
//! It must not decide who may connect (that is [`super::access`]) nor what a request means
//! (that is [`super::commands`]). It never blocks: the stream is non-blocking, and the
//! request buffer never holds more than one header and [`MAX_REQUEST_LEN`] bytes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::UnixStream;

use crate::fd_passing::FdReceiver;
use crate::outbuf::OutBuf;
use crate::proto::codec;
use crate::proto::control::{ControlFrame, ControlReply, MAX_REQUEST_LEN};

/// How long an operator's connection may take to send its whole request: chatctl sends it as
/// soon as it is connected.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the answer to a request may take to be written (a reload waits for the master).
pub(super) const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes queued for one operator: one reply frame (a `who` of 10,000 users is below).
const CONTROL_QUEUE_BYTES: usize = codec::MAX_FRAME_LEN + codec::HEADER_LEN;

/// How much one read of a request takes at most.
const READ_CHUNK: usize = 4096;

/// One operator's connection.
pub struct ControlClient {
    stream: UnixStream,
    /// The request read so far: at most one header and [`MAX_REQUEST_LEN`] bytes.
    request: Vec<u8>,
    /// The one descriptor a request may come with (`Backup`'s file); a second is an error.
    attached: FdReceiver,
    reply: OutBuf,
    pub(super) pid: i32,
    pub(super) uid: u32,
    /// When the connection is closed if it is still open: [`REQUEST_TIMEOUT`] after accept,
    /// then [`CONTROL_TIMEOUT`] after its request arrived.
    pub(super) deadline: Instant,
    /// The request was read; no more bytes are taken from this connection.
    pub(super) asked: bool,
    /// The reply is queued; close once it is written.
    pub(super) answered: bool,
}

/// Why a connection's request could not be read.
pub(super) enum Unreadable {
    /// It closed or failed before a whole request (not worth a warning).
    Closed,
    /// It sent something that is not a request.
    Garbage(String),
}

impl ControlClient {
    /// A connection accepted at `now`, from `pid` running as `uid`.
    pub(super) fn new(stream: UnixStream, pid: i32, uid: u32, now: Instant) -> ControlClient {
        ControlClient {
            stream,
            request: Vec::new(),
            attached: FdReceiver::new(1),
            reply: OutBuf::new(CONTROL_QUEUE_BYTES),
            pid,
            uid,
            deadline: now + REQUEST_TIMEOUT,
            asked: false,
            answered: false,
        }
    }

    /// The stream, for the poller.
    pub(super) fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Reads what has arrived; `Ok(Some(frame))` once the whole request is here.
    pub(super) fn read_request(&mut self) -> Result<Option<ControlFrame>, Unreadable> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match codec::declared_len(&self.request) {
                Ok(Some(len)) if len > MAX_REQUEST_LEN => {
                    return Err(Unreadable::Garbage(format!(
                        "frame declares {len} bytes, more than the {MAX_REQUEST_LEN} a request may have"
                    )));
                }
                Ok(_) => {}
                Err(err) => return Err(Unreadable::Garbage(err.to_string())),
            }
            match codec::decode_frame::<ControlFrame>(&self.request) {
                Ok(Some((frame, _))) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(err) => return Err(Unreadable::Garbage(err.to_string())),
            }
            // Never more than the frame can still need: the buffer stays within the limit.
            let wanted = match codec::declared_len(&self.request) {
                Ok(Some(len)) => codec::HEADER_LEN + len - self.request.len(),
                _ => codec::HEADER_LEN - self.request.len(),
            };
            let take = wanted.min(READ_CHUNK);
            match self.attached.receive(self.stream.as_fd(), &mut chunk[..take]) {
                Ok(received) if received.bytes == 0 => return Err(Unreadable::Closed),
                Ok(received) => self.request.extend_from_slice(&chunk[..received.bytes]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                    return Err(Unreadable::Garbage(err.to_string()));
                }
                Err(_) => return Err(Unreadable::Closed),
            }
        }
    }

    /// The whole request arrived at `now`: nothing more is read, its buffer goes, and the
    /// answer has [`CONTROL_TIMEOUT`] from here.
    pub(super) fn took_request(&mut self, now: Instant) {
        self.asked = true;
        self.request = Vec::new();
        self.deadline = now + CONTROL_TIMEOUT;
    }

    /// The descriptor that came with the request, if one did.
    pub(super) fn take_attached(&mut self) -> Option<OwnedFd> {
        self.attached.take()
    }

    /// Gives the answer until `deadline` (a backup takes as long as the database needs).
    pub(super) fn wait_until(&mut self, deadline: Instant) {
        self.deadline = self.deadline.max(deadline);
    }

    /// Whether the connection is past its deadline at `now`.
    pub(super) fn is_overdue(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// What an overdue connection failed to do in time, for the log.
    pub(super) fn overdue_because(&self) -> String {
        if self.asked {
            format!("its answer was not written within {} s", CONTROL_TIMEOUT.as_secs())
        } else {
            format!("no whole request within {} s", REQUEST_TIMEOUT.as_secs())
        }
    }

    /// Queues the connection's one reply; it closes once the reply is written.
    pub(super) fn queue_reply(&mut self, reply: &ControlReply) -> Result<(), String> {
        self.answered = true;
        codec::frame(reply)
            .map_err(|err| err.to_string())
            .and_then(|frame| self.reply.push(&frame).map_err(|err| err.to_string()))
    }

    /// Writes what is queued as far as the socket takes it; `Ok(true)` once all is written.
    pub(super) fn write_reply(&mut self) -> io::Result<bool> {
        self.reply.write_to(&mut self.stream)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream as StdUnixStream;

    use super::*;
    use crate::proto::control::{CONTROL_VERSION, ControlRequest};

    /// A client accepted at `now`, and the operator's end of its connection.
    fn client(now: Instant) -> (ControlClient, StdUnixStream) {
        let (ours, theirs) = StdUnixStream::pair().expect("socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        (ControlClient::new(UnixStream::from_std(ours), 1, 1000, now), theirs)
    }

    fn request_frame() -> Vec<u8> {
        let frame = ControlFrame { version: CONTROL_VERSION, request: ControlRequest::Status };
        codec::frame(&frame).expect("encoded")
    }

    #[test]
    fn the_request_has_its_time_and_then_the_answer_has_its_own() {
        let accepted = Instant::now();
        let (mut client, _operator) = client(accepted);
        assert!(!client.is_overdue(accepted + REQUEST_TIMEOUT - Duration::from_millis(1)));
        assert!(client.is_overdue(accepted + REQUEST_TIMEOUT));
        assert_eq!(client.overdue_because(), "no whole request within 3 s");
        let asked = accepted + Duration::from_secs(1);
        client.took_request(asked);
        assert!(!client.is_overdue(accepted + REQUEST_TIMEOUT));
        assert!(client.is_overdue(asked + CONTROL_TIMEOUT));
        assert_eq!(client.overdue_because(), "its answer was not written within 10 s");
    }

    #[test]
    fn a_request_is_read_once_it_is_whole() {
        let (mut client, mut operator) = client(Instant::now());
        let frame = request_frame();
        let (head, rest) = frame.split_at(frame.len() / 2);
        operator.write_all(head).expect("written");
        assert!(matches!(client.read_request(), Ok(None)));
        operator.write_all(rest).expect("written");
        let read = client.read_request().ok().flatten().map(|frame| frame.request);
        assert_eq!(read, Some(ControlRequest::Status));
    }

    #[test]
    fn a_request_declaring_more_than_the_limit_is_garbage_before_it_is_read() {
        let (mut client, mut operator) = client(Instant::now());
        let header = u32::try_from(MAX_REQUEST_LEN + 1).expect("small").to_be_bytes();
        assert_eq!(header.len(), codec::HEADER_LEN);
        operator.write_all(&header).expect("written");
        match client.read_request() {
            Err(Unreadable::Garbage(why)) => assert!(why.contains("more than"), "{why}"),
            _ => panic!("an oversize request must be refused"),
        }
    }

    #[test]
    fn a_connection_closed_before_its_request_is_closed_not_garbage() {
        let (mut client, operator) = client(Instant::now());
        drop(operator);
        assert!(matches!(client.read_request(), Err(Unreadable::Closed)));
    }
}
