//! A framed, non-blocking channel over a Unix stream: the pipe between a session and the broker.
//!
//! It owns the buffers on both sides of one `mio::net::UnixStream` — bytes read but not yet a
//! whole frame, frames queued but not yet written — and nothing else. What the frames mean is
//! the caller's business; what the bytes look like is `proto::codec`'s.
//!
//! Reading is done a chunk at a time ([`Channel::read_some`]) so that the caller can decode and
//! handle frames between reads and a fast peer cannot make one read loop unbounded in memory.

use std::io::{self, Read};

use mio::net::UnixStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::outbuf::{OutBuf, Overflow};
use crate::proto::codec::{self, CodecError};

/// How much one [`Channel::read_some`] call reads at most.
const READ_CHUNK: usize = 4 * 1024;

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
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

/// One end of a session ⇄ broker connection.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    /// Bytes read from the peer; `inbuf[consumed..]` is not yet decoded.
    inbuf: Vec<u8>,
    consumed: usize,
    out: OutBuf,
}

impl Channel {
    /// Wraps a non-blocking stream; at most `max_queued` unsent bytes may wait in it.
    pub fn new(stream: UnixStream, max_queued: usize) -> Self {
        Channel { stream, inbuf: Vec::new(), consumed: 0, out: OutBuf::new(max_queued) }
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
        if self.consumed > 0 {
            self.inbuf.drain(..self.consumed);
            self.consumed = 0;
        }
        let start = self.inbuf.len();
        self.inbuf.resize(start + READ_CHUNK, 0);
        let result = loop {
            match self.stream.read(&mut self.inbuf[start..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.inbuf.truncate(start + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => Ok(ReadOutcome::Closed { mid_frame: start > 0 }),
            Ok(n) => Ok(ReadOutcome::Data { drained: n < READ_CHUNK }),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
            Err(err) => Err(err),
        }
    }

    /// The next whole message among the bytes read so far, if there is one.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match codec::decode_frame(&self.inbuf[self.consumed..])? {
            Some((message, used)) => {
                self.consumed += used;
                Ok(Some(message))
            }
            None => Ok(None),
        }
    }

    /// Encodes and queues one message.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), SendError> {
        let mark = self.out.tail().len();
        codec::encode_frame(message, self.out.tail())?;
        self.out.check_limit(mark)?;
        Ok(())
    }

    /// Queues frames that were encoded elsewhere (a broadcast encoded once for many channels).
    pub fn send_encoded(&mut self, frames: &[u8]) -> Result<(), Overflow> {
        self.out.push(frames)
    }

    /// Writes queued frames until done or the socket would block. `Ok(true)` means all sent.
    pub fn flush(&mut self) -> io::Result<bool> {
        self.out.write_to(&mut self.stream)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }
}
