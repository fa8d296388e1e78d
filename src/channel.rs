//! A framed, non-blocking channel over a Unix stream, typed by direction: the pipe between a
//! session and the broker, and between the master and the broker.
//!
//! It owns the buffers on both sides of one `mio::net::UnixStream` — bytes read but not yet a
//! whole frame, frames queued but not yet written — and nothing else. What the bytes look like
//! is `proto::codec`'s; what the frames mean is the caller's business. It must not decide
//! anything about a peer (that is the broker's, the session's or the master's).
//!
//! `Channel<Tx, Rx>` sends only `Tx` and receives only `Rx` (as sozu's `Channel<Tx, Rx>`): a
//! session's end is `Channel<Request, Event>`, so an `Event` sent towards the broker, or a
//! master's frame sent to a session, does not compile. One alias per end is below. A caller's
//! channel to the broker is made by [`Channel::open`], which queues the greeting that fits its
//! message set first (`proto::AfterGreeting`); the broker's end starts as
//! [`BrokerToUngreeted`] and turns into a session's or the master's end by the greeting it read.
//!
//! Reading is done a chunk at a time ([`Channel::read_some`]) so that the caller can decode and
//! handle frames between reads and a fast peer cannot make one read loop unbounded in memory.
//!
//! # Descriptors
//!
//! A frame may carry descriptors ([`Channel::send_with_fds`]: a room's ring and doorbell). The
//! order argument, end to end:
//!
//! - Sending: the channel duplicates the caller's descriptors and attaches the copies to the
//!   stream offset of the frame's first byte (`outbuf`). A flush writes plain bytes up to that
//!   offset, then one `sendmsg` from it that stops before the next attachment point, so each
//!   batch goes with its own frame's first byte, in stream order, however the writes split.
//! - In the kernel: descriptors sent with a `sendmsg` travel with that call's first byte, and
//!   a read that returns that byte returns them and ends at the end of that call's bytes.
//! - Receiving (only an end that called [`Channel::accept_fds`]: the session's): `recvmsg`
//!   keeps what arrives in a queue, in order. A frame's descriptors therefore are in the queue
//!   by the time the frame is decoded (they came with its first byte, read no later than its
//!   last), behind those of every earlier frame and ahead of every later one: a receiver that
//!   takes, for each frame that carries descriptors, that many from the front, takes its own.
//!   A read that brought descriptors may have stopped early (at the end of their `sendmsg`),
//!   so it never counts as having drained the socket.
//! - An end that did not call `accept_fds` reads with plain `read(2)`, and the kernel closes
//!   whatever a peer attached: a session cannot make the broker hold descriptors.
//!
//! Both sides are bounded: at most [`MAX_FDS_QUEUED`] descriptors wait in a send queue (a peer
//! that does not read cannot make the broker run out of descriptors) and at most
//! [`MAX_FDS_KEPT`] untaken ones on the receiving side (more is a protocol error).

use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use mio::net::UnixStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fd_passing::{self, FdReceiver, MAX_FDS_PER_MESSAGE};
use crate::outbuf::{OutBuf, Overflow, WriteFds};
use crate::proto::codec::{self, CodecError};
use crate::proto::master::{MasterEvent, MasterRequest};
use crate::proto::{AfterGreeting, Event, Greeting, Request};

/// A session's end of its connection to the broker.
///
/// Sending it an event does not compile:
///
/// ```compile_fail
/// # use chatd::channel::SessionToBroker;
/// # use chatd::proto::Event;
/// fn wrong_way(channel: &mut SessionToBroker) {
///     let _ = channel.send(&Event::Shutdown);
/// }
/// ```
///
/// Nor does sending a master's frame to a session:
///
/// ```compile_fail
/// # use chatd::channel::BrokerToSession;
/// # use chatd::proto::master::MasterEvent;
/// fn wrong_peer(channel: &mut BrokerToSession) {
///     let _ = channel.send(&MasterEvent::Stop);
/// }
/// ```
pub type SessionToBroker = Channel<Request, Event>;
/// The broker's end of a session's connection.
pub type BrokerToSession = Channel<Event, Request>;
/// The master's end of its link to the broker.
pub type MasterToBroker = Channel<MasterRequest, MasterEvent>;
/// The broker's end of the master's link.
pub type BrokerToMaster = Channel<MasterEvent, MasterRequest>;
/// The broker's end of a connection whose [`Greeting`] has not been read yet. It may already
/// answer with events: a session's refusal (another protocol version, dropped) comes before
/// the connection is anyone's.
pub type BrokerToUngreeted = Channel<Event, Greeting>;

/// How much one [`Channel::read_some`] call reads at most.
const READ_CHUNK: usize = 4 * 1024;

/// Most received descriptors a receiving end keeps untaken; one more is a protocol error.
pub const MAX_FDS_KEPT: usize = 16;
/// Most descriptors waiting in one channel's send queue: eight ring handovers (a pasted burst
/// of `/join`s in one loop turn), and a bound on what a member that stops reading makes the
/// broker hold for it.
pub const MAX_FDS_QUEUED: usize = 16;

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Some bytes arrived; decode them. `drained`: the read returned less than it asked for,
    /// so the socket had nothing more at that moment and (with edge-triggered polling) new
    /// bytes will be reported again: reading on until `WouldBlock` would only cost a system
    /// call per wake-up.
    Data { drained: bool },
    /// Nothing more to read until the poller says so.
    WouldBlock,
    /// The peer closed its end. `mid_frame` is true when it left part of a frame behind.
    Closed { mid_frame: bool },
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot encode a {message}: {source}")]
    Codec { message: &'static str, source: CodecError },
    #[error("no room for a {message}: {source}")]
    Overflow { message: &'static str, source: Overflow },
    #[error("cannot attach {adding} descriptors to a {message}: {queued} queued, limit {limit}")]
    TooManyDescriptors { message: &'static str, adding: usize, queued: usize, limit: usize },
    #[error("cannot duplicate a descriptor for a {message}: {source}")]
    Descriptor { message: &'static str, source: io::Error },
}

/// Frames of `T` encoded once, to be queued on every channel that sends `T` (a broadcast goes
/// to many sessions as the same bytes). The type remembers what the bytes are, so that they
/// can only be queued where a `T` could be sent.
pub struct Frames<T> {
    bytes: Vec<u8>,
    message: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for Frames<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames").field("bytes", &self.bytes.len()).finish()
    }
}

impl<T> Default for Frames<T> {
    fn default() -> Self {
        Frames { bytes: Vec::new(), message: PhantomData }
    }
}

impl<T> Frames<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the frames, keeping the buffer for the next ones.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The frames' bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T: Serialize> Frames<T> {
    /// Appends one frame; on error nothing is appended.
    pub fn push(&mut self, message: &T) -> Result<(), CodecError> {
        codec::encode_frame(message, &mut self.bytes)
    }
}

/// One end of a connection: sends `Tx`, receives `Rx`.
pub struct Channel<Tx, Rx> {
    stream: UnixStream,
    /// Bytes read from the peer: `inbuf[consumed..filled]` is not yet decoded. The rest is
    /// room for the next read, zeroed once when it was first allocated and reused after that.
    inbuf: Vec<u8>,
    consumed: usize,
    filled: usize,
    out: OutBuf,
    /// Descriptors received and not yet taken, on an end that accepts them (else `None`:
    /// plain reads, and the kernel closes what a peer attaches).
    fds: Option<FdReceiver>,
    direction: PhantomData<fn(Tx) -> Rx>,
}

impl<Tx, Rx> std::fmt::Debug for Channel<Tx, Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(&format!("Channel<{}, {}>", short_name::<Tx>(), short_name::<Rx>()))
            .field("stream", &self.stream)
            .field("undecoded", &(self.filled - self.consumed))
            .field("queued", &self.out.len())
            .field("fds_untaken", &self.fds.as_ref().map(FdReceiver::kept))
            .finish()
    }
}

/// A message type's name without its path, for errors.
fn short_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

impl<Tx, Rx> Channel<Tx, Rx> {
    /// Wraps a non-blocking stream; at most `max_queued` unsent bytes may wait in it.
    pub fn new(stream: UnixStream, max_queued: usize) -> Self {
        Channel {
            stream,
            inbuf: Vec::new(),
            consumed: 0,
            filled: 0,
            out: OutBuf::new(max_queued),
            fds: None,
            direction: PhantomData,
        }
    }

    /// The same connection, read and written as another pair of message types. Private: only
    /// the greeting below changes what a connection carries.
    fn retyped<Tx2, Rx2>(self) -> Channel<Tx2, Rx2> {
        let Channel { stream, inbuf, consumed, filled, out, fds, direction: _ } = self;
        Channel { stream, inbuf, consumed, filled, out, fds, direction: PhantomData }
    }

    /// The stream, for registering with a poller.
    pub fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Reads one chunk from the peer.
    ///
    /// The chunk is small and read into the buffer's own spare room: a session child must not
    /// dirty (and so own, after `fork`) tens of KiB of stack or heap for a connection that
    /// carries a few hundred bytes a second. Callers read again until `WouldBlock`.
    pub fn read_some(&mut self) -> io::Result<ReadOutcome> {
        // Undecoded bytes (a partial frame) move to the front; the buffer grows, once, only
        // for a frame longer than the room left. Nothing is zeroed again on later reads: a
        // session reads once per wake-up, and touching 4 KiB each time showed in the profile.
        if self.consumed == self.filled {
            self.consumed = 0;
            self.filled = 0;
        } else if self.consumed > 0 && self.inbuf.len() - self.filled < READ_CHUNK {
            self.inbuf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        let start = self.filled;
        if self.inbuf.len() < start + READ_CHUNK {
            self.inbuf.resize(start + READ_CHUNK, 0);
        }
        let result = loop {
            let room = &mut self.inbuf[start..start + READ_CHUNK];
            let read = match &mut self.fds {
                Some(receiver) => receiver
                    .receive(self.stream.as_fd(), room)
                    .map(|received| (received.bytes, received.fds)),
                None => self.stream.read(room).map(|bytes| (bytes, 0)),
            };
            match read {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok((0, _)) => Ok(ReadOutcome::Closed { mid_frame: start > self.consumed }),
            Ok((n, fds)) => {
                self.filled += n;
                // A read that brought descriptors ends with their sendmsg's bytes, short of a
                // chunk though more may wait: not drained (module docs).
                Ok(ReadOutcome::Data { drained: n < READ_CHUNK && fds == 0 })
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
            Err(err) => Err(err),
        }
    }

    /// Writes queued frames until done or the socket would block. `Ok(true)` means all sent.
    pub fn flush(&mut self) -> io::Result<bool> {
        self.out.write_to_passing_fds(&mut self.stream)
    }

    /// Lets this end receive descriptors (the session's end): from now on reads use `recvmsg`
    /// and keep what arrives, in order, until [`Channel::take_fd`]. More than
    /// [`MAX_FDS_KEPT`] untaken, or a message with more than a few, is an error from
    /// [`Channel::read_some`] (`InvalidData`: the peer broke the protocol).
    pub fn accept_fds(&mut self) {
        self.fds.get_or_insert_with(|| FdReceiver::new(MAX_FDS_KEPT));
    }

    /// The oldest received descriptor not yet taken.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.as_mut()?.take()
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Queues frames that were encoded elsewhere (a broadcast encoded once for many channels).
    pub fn send_encoded(&mut self, frames: &Frames<Tx>) -> Result<(), Overflow> {
        self.out.push(frames.as_bytes())
    }

    /// Decodes the next whole frame among the bytes read so far as a `T`, and consumes it
    /// only if that worked.
    fn decode_next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match codec::decode_frame(&self.inbuf[self.consumed..self.filled])? {
            Some((message, used)) => {
                self.consumed += used;
                Ok(Some(message))
            }
            None => Ok(None),
        }
    }

    /// Encodes and queues one frame of any type (the typed door is [`Channel::send`]).
    fn queue_frame<T: Serialize>(&mut self, message: &T) -> Result<(), SendError> {
        let mark = self.out.tail().len();
        let name = short_name::<T>();
        codec::encode_frame(message, self.out.tail())
            .map_err(|source| SendError::Codec { message: name, source })?;
        self.out.check_limit(mark).map_err(|source| SendError::Overflow { message: name, source })
    }
}

impl<Tx: Serialize, Rx> Channel<Tx, Rx> {
    /// Queues `message` with copies of `fds` attached: they reach the peer with the frame's
    /// first byte. The caller keeps its own descriptors. On error nothing is queued and no
    /// copy is kept.
    pub fn send_with_fds(&mut self, message: &Tx, fds: &[BorrowedFd<'_>]) -> Result<(), SendError> {
        let name = short_name::<Tx>();
        let queued = self.out.attached_fds();
        if fds.len() > MAX_FDS_PER_MESSAGE || queued + fds.len() > MAX_FDS_QUEUED {
            let limit = MAX_FDS_QUEUED.min(queued + MAX_FDS_PER_MESSAGE);
            return Err(SendError::TooManyDescriptors {
                message: name,
                adding: fds.len(),
                queued,
                limit,
            });
        }
        let copies = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<io::Result<Vec<OwnedFd>>>()
            .map_err(|source| SendError::Descriptor { message: name, source })?;
        let first_byte = self.out.end_offset();
        self.queue_frame(message)?;
        self.out.attach(first_byte, copies);
        Ok(())
    }
}

/// How a channel's stream passes descriptors: one `sendmsg` with `SCM_RIGHTS`.
impl WriteFds for UnixStream {
    fn write_with_fds(&mut self, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
        fd_passing::send_with_fds(self.as_fd(), bytes, fds)
    }
}

impl<Tx: Serialize, Rx: DeserializeOwned> Channel<Tx, Rx> {
    /// The next whole message among the bytes read so far, if there is one.
    pub fn next_message(&mut self) -> Result<Option<Rx>, CodecError> {
        self.decode_next()
    }

    /// Encodes and queues one message.
    pub fn send(&mut self, message: &Tx) -> Result<(), SendError> {
        self.queue_frame(message)
    }
}

impl<Tx: AfterGreeting, Rx> Channel<Tx, Rx> {
    /// Wraps a non-blocking stream to the broker and queues the greeting that opens a
    /// connection carrying `Tx` (a session's hello for requests, the master's for its link).
    pub fn open(
        stream: UnixStream,
        max_queued: usize,
        hello: &Tx::Hello,
    ) -> Result<Self, SendError> {
        let mut channel = Channel::new(stream, max_queued);
        channel.queue_frame(&Tx::greeting(hello))?;
        Ok(channel)
    }
}

/// The broker's side of the greeting.
impl BrokerToUngreeted {
    /// Whether the next whole frame, which did not decode as a [`Greeting`], is a session's
    /// request: a session that skipped its hello, as opposed to a peer speaking garbage (the
    /// broker logs the two differently).
    pub fn next_is_request(&self) -> bool {
        matches!(
            codec::decode_frame::<Request>(&self.inbuf[self.consumed..self.filled]),
            Ok(Some(_))
        )
    }

    /// The peer greeted as a session: from now on it sends requests.
    pub fn into_session(self) -> BrokerToSession {
        self.retyped()
    }

    /// The peer greeted as the master: from now on this is the master's link.
    pub fn into_master(self) -> BrokerToMaster {
        self.retyped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Reads until `WouldBlock`, decoding as it goes, and returns the messages seen.
    fn read_all(channel: &mut Channel<String, String>) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match channel.read_some().expect("read") {
                ReadOutcome::Data { .. } => {
                    while let Some(message) = channel.next_message().expect("decode") {
                        seen.push(message);
                    }
                }
                ReadOutcome::WouldBlock => return seen,
                ReadOutcome::Closed { .. } => panic!("closed"),
            }
        }
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        theirs.set_nonblocking(true).expect("nonblocking");
        (UnixStream::from_std(ours), UnixStream::from_std(theirs))
    }

    /// Reads what the peer sent into `channel`'s buffer.
    fn receive<Tx, Rx>(channel: &mut Channel<Tx, Rx>) {
        while let ReadOutcome::Data { .. } = channel.read_some().expect("read") {}
    }

    #[test]
    fn a_session_channel_opens_with_its_greeting_and_the_broker_reads_requests_after_it() {
        use crate::proto::{PROTOCOL_VERSION, SessionHello};
        let (session_end, broker_end) = pair();
        let hello = SessionHello { version: PROTOCOL_VERSION, peer: "p".into(), connected_at: 1 };
        let mut session = SessionToBroker::open(session_end, 1 << 20, &hello).expect("open");
        session.send(&Request::Who).expect("queued");
        assert!(session.flush().expect("flush"));
        let mut broker = BrokerToUngreeted::new(broker_end, 1 << 20);
        receive(&mut broker);
        assert_eq!(broker.next_message().expect("decodes"), Some(Greeting::Session(hello)));
        let mut broker = broker.into_session();
        assert_eq!(broker.next_message().expect("decodes"), Some(Request::Who));
        assert_eq!(broker.next_message().expect("decodes"), None);
    }

    #[test]
    fn a_request_before_the_greeting_is_told_apart_from_garbage() {
        let (mut peer, broker_end) = pair();
        let mut broker = BrokerToUngreeted::new(broker_end, 1 << 20);
        peer.write_all(&codec::frame(&Request::Rooms).expect("encode")).expect("write");
        receive(&mut broker);
        assert!(broker.next_message().is_err(), "a request is no greeting");
        assert!(broker.next_is_request());

        let (mut peer, broker_end) = pair();
        let mut broker = BrokerToUngreeted::new(broker_end, 1 << 20);
        peer.write_all(&[0, 0, 0, 3, 200, 200, 200]).expect("write");
        receive(&mut broker);
        assert!(broker.next_message().is_err());
        assert!(!broker.next_is_request());
    }

    #[test]
    fn frames_encoded_once_are_queued_as_they_are() {
        let (ours, mut theirs) = pair();
        let mut channel: Channel<String, String> = Channel::new(ours, 1 << 20);
        let mut frames = Frames::new();
        frames.push(&"one".to_string()).expect("encode");
        frames.push(&"two".to_string()).expect("encode");
        channel.send_encoded(&frames).expect("room");
        channel.send_encoded(&frames).expect("room");
        assert_eq!(channel.queued(), 2 * frames.as_bytes().len());
        assert!(channel.flush().expect("flush"));
        let mut bytes = vec![0; 256];
        let n = theirs.read(&mut bytes).expect("read");
        assert_eq!(&bytes[..n], [frames.as_bytes(), frames.as_bytes()].concat());
    }

    #[test]
    fn a_send_that_overflows_names_the_message_and_queues_nothing() {
        let (ours, _theirs) = pair();
        let mut channel: Channel<String, String> = Channel::new(ours, 8);
        let err = channel.send(&"far too long for eight bytes".to_string()).expect_err("full");
        assert!(matches!(err, SendError::Overflow { message: "String", .. }), "{err:?}");
        assert_eq!(channel.queued(), 0);
    }

    #[test]
    fn frames_split_anywhere_and_longer_than_a_read_come_out_whole() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let mut channel: Channel<String, String> =
            Channel::new(UnixStream::from_std(ours), 1 << 20);
        let mut writer = theirs;
        // Small frames, then one three read chunks long, then small ones again, written in
        // pieces that cut frames and headers at odd places.
        let messages: Vec<String> = (0..50)
            .map(|i| format!("line {i}"))
            .chain(std::iter::once("x".repeat(3 * READ_CHUNK)))
            .chain((50..100).map(|i| format!("line {i}")))
            .collect();
        let mut bytes = Vec::new();
        for message in &messages {
            codec::encode_frame(message, &mut bytes).expect("encode");
        }
        let mut seen = Vec::new();
        for piece in bytes.chunks(777) {
            writer.write_all(piece).expect("write");
            seen.extend(read_all(&mut channel));
        }
        assert_eq!(seen, messages);
        // Everything was consumed: the buffer did not keep growing past one long frame.
        assert!(channel.inbuf.len() <= 4 * READ_CHUNK + 777, "buffer {}", channel.inbuf.len());
        drop(writer);
        assert_eq!(channel.read_some().expect("read"), ReadOutcome::Closed { mid_frame: false });
    }

    #[test]
    fn a_peer_that_vanishes_mid_frame_is_reported() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let mut channel: Channel<String, String> =
            Channel::new(UnixStream::from_std(ours), 1 << 20);
        let frame = codec::frame(&"hello".to_string()).expect("encode");
        theirs.write_all(&frame[..frame.len() - 2]).expect("write");
        assert!(read_all(&mut channel).is_empty());
        drop(theirs);
        assert_eq!(channel.read_some().expect("read"), ReadOutcome::Closed { mid_frame: true });
    }

    /// A pipe, whose read end is what gets passed: its inode says which pipe a received
    /// descriptor is, and its writer sees EPIPE once every copy of the read end is closed.
    struct Pipe {
        read_end: OwnedFd,
        write_end: OwnedFd,
    }

    fn pipe() -> Pipe {
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        Pipe { read_end, write_end }
    }

    fn inode(fd: &impl AsFd) -> u64 {
        nix::sys::stat::fstat(fd).expect("fstat").st_ino
    }

    /// Whether some copy of the pipe's read end is still open anywhere in this process (or in
    /// flight in a socket).
    fn read_end_open(write_end: &OwnedFd) -> bool {
        match nix::unistd::write(write_end, b"?") {
            Ok(_) => true,
            Err(nix::errno::Errno::EPIPE) => false,
            Err(errno) => panic!("write to the pipe: {errno}"),
        }
    }

    /// Two ends of a connection; the second accepts descriptors if `accepting` (a session's).
    fn connected(accepting: bool) -> (Channel<String, String>, Channel<String, String>) {
        let (ours, theirs) = pair();
        let mut receiver = Channel::new(theirs, 1 << 20);
        if accepting {
            receiver.accept_fds();
        }
        (Channel::new(ours, 1 << 20), receiver)
    }

    /// A message received, with the descriptor taken for it (messages saying "fd" carry one).
    type WithFd = (String, Option<OwnedFd>);

    /// One flush of `sender`, then every read `receiver` can make, decoding into `seen`.
    /// True if the flush sent everything.
    fn pump(
        sender: &mut Channel<String, String>,
        receiver: &mut Channel<String, String>,
        seen: &mut Vec<WithFd>,
    ) -> bool {
        let sent_all = sender.flush().expect("flush");
        loop {
            match receiver.read_some().expect("read") {
                ReadOutcome::Data { .. } => {}
                ReadOutcome::WouldBlock => return sent_all,
                ReadOutcome::Closed { .. } => panic!("closed"),
            }
            while let Some(message) = receiver.next_message().expect("decode") {
                let fd = message.starts_with("fd").then(|| receiver.take_fd().expect("its fd"));
                seen.push((message, fd));
            }
        }
    }

    /// Pumps until `expected` messages were received.
    fn deliver_with_fds(
        sender: &mut Channel<String, String>,
        receiver: &mut Channel<String, String>,
        expected: usize,
    ) -> Vec<WithFd> {
        let mut seen = Vec::new();
        while seen.len() < expected {
            let _sent_all = pump(sender, receiver, &mut seen);
        }
        seen
    }

    #[test]
    fn descriptors_arrive_with_their_frame_across_partial_writes() {
        use nix::sys::socket::{setsockopt, sockopt::SndBuf};
        let (ours, theirs) = pair();
        // A small send buffer: long frames go out in many pieces.
        setsockopt(&ours, SndBuf, &4096).expect("SO_SNDBUF");
        let mut sender: Channel<String, String> = Channel::new(ours, 1 << 22);
        let mut receiver: Channel<String, String> = Channel::new(theirs, 1 << 20);
        receiver.accept_fds();
        let pipes: Vec<Pipe> = (0..20).map(|_| pipe()).collect();
        let mut sent = Vec::new();
        let mut received = Vec::new();
        let mut partial_flushes = 0;
        for round in 0..200 {
            // Long plain frames between frames with descriptors, two of those in a row now
            // and then.
            let plain = format!("plain {round} {}", "x".repeat(round * 97 % 9000));
            sender.send(&plain).expect("queued");
            sent.push((plain, None));
            for k in 0..(1 + round % 2) {
                let which = (round + k) % pipes.len();
                let message = format!("fd {which} {}", "y".repeat(round * 31 % 3000));
                sender.send_with_fds(&message, &[pipes[which].read_end.as_fd()]).expect("queued");
                sent.push((message, Some(which)));
            }
            // The sender stays ahead by a few frames: writes stop anywhere in them.
            while sender.queued() > 16 * 1024 || sender.out.attached_fds() + 2 > MAX_FDS_QUEUED {
                partial_flushes += usize::from(!pump(&mut sender, &mut receiver, &mut received));
            }
        }
        while received.len() < sent.len() {
            partial_flushes += usize::from(!pump(&mut sender, &mut receiver, &mut received));
        }
        assert!(partial_flushes > 100, "only {partial_flushes} flushes were partial");
        assert_eq!(received.len(), sent.len());
        for ((message, which), (got, fd)) in sent.iter().zip(&received) {
            assert_eq!(got, message);
            match (which, fd) {
                (Some(which), Some(fd)) => assert_eq!(inode(fd), inode(&pipes[*which].read_end)),
                (None, None) => {}
                other => panic!("{message:.20}: {other:?}"),
            }
        }
        assert!(receiver.take_fd().is_none(), "no descriptor left over");
    }

    #[test]
    fn a_received_descriptor_works_and_the_senders_copy_is_its_own() {
        let (mut sender, mut receiver) = connected(true);
        let first = pipe();
        let second = pipe();
        sender.send_with_fds(&"fd one".into(), &[first.read_end.as_fd()]).expect("queued");
        sender.send_with_fds(&"fd two".into(), &[second.read_end.as_fd()]).expect("queued");
        let received = deliver_with_fds(&mut sender, &mut receiver, 2);
        let Pipe { read_end, write_end } = first;
        drop(read_end);
        assert!(read_end_open(&write_end), "the receiver holds a copy");
        let [(_, Some(one)), (_, Some(two))] = &received[..] else { panic!("{received:?}") };
        assert_eq!(inode(two), inode(&second.read_end));
        let mut reader = std::fs::File::from(one.try_clone().expect("dup"));
        let mut got = [0u8; 1];
        reader.read_exact(&mut got).expect("read the pipe");
        assert_eq!(&got, b"?");
        drop((reader, received));
        assert!(!read_end_open(&write_end), "every copy closed");
    }

    #[test]
    fn an_end_that_does_not_accept_descriptors_closes_them() {
        let (mut sender, mut broker) = connected(false);
        let Pipe { read_end, write_end } = pipe();
        sender
            .send_with_fds(&"fd forged".into(), &[read_end.as_fd(), read_end.as_fd()])
            .expect("queued");
        drop(read_end);
        assert!(sender.flush().expect("flush"));
        assert_eq!(read_all(&mut broker), vec!["fd forged".to_string()]);
        assert!(broker.take_fd().is_none());
        assert!(!read_end_open(&write_end), "the kernel closed what the peer attached");
    }

    #[test]
    fn too_many_untaken_descriptors_are_a_read_error() {
        let (mut sender, mut receiver) = connected(true);
        let Pipe { read_end, write_end } = pipe();
        for frame in 0..=MAX_FDS_KEPT / 2 {
            let fds = [read_end.as_fd(), read_end.as_fd()];
            sender.send_with_fds(&format!("fd {frame}"), &fds).expect("queued");
            assert!(sender.flush().expect("flush"));
        }
        drop(read_end);
        let err = loop {
            match receiver.read_some() {
                Ok(ReadOutcome::Data { .. }) => {}
                Ok(other) => panic!("{other:?} before the error"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        drop(receiver);
        assert!(!read_end_open(&write_end), "nothing kept after the channel is gone");
    }

    #[test]
    fn a_send_with_descriptors_that_fails_queues_nothing_and_keeps_no_copy() {
        let (ours, _theirs) = pair();
        let mut small: Channel<String, String> = Channel::new(ours, 8);
        let Pipe { read_end, write_end } = pipe();
        let err = small.send_with_fds(&"longer than eight".into(), &[read_end.as_fd()]);
        assert!(matches!(err, Err(SendError::Overflow { .. })), "{err:?}");
        assert_eq!((small.queued(), small.out.attached_fds()), (0, 0));
        let (ours, _theirs) = pair();
        let mut stuck: Channel<String, String> = Channel::new(ours, 1 << 20);
        let fds = [read_end.as_fd(); MAX_FDS_PER_MESSAGE];
        for _ in 0..MAX_FDS_QUEUED / MAX_FDS_PER_MESSAGE {
            stuck.send_with_fds(&"fd".into(), &fds).expect("queued");
        }
        let queued = stuck.queued();
        let err = stuck.send_with_fds(&"fd".into(), &fds[..1]);
        assert!(matches!(err, Err(SendError::TooManyDescriptors { .. })), "{err:?}");
        assert_eq!(stuck.queued(), queued);
        drop(read_end);
        assert!(read_end_open(&write_end), "the stuck channel's queue holds copies");
        drop(stuck);
        assert!(!read_end_open(&write_end), "a dropped queue closes them");
    }
}
