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
    /// Bytes read from the peer: `inbuf[consumed..filled]` is not yet decoded. The rest is
    /// room for the next read, zeroed once when it was first allocated and reused after that.
    inbuf: Vec<u8>,
    consumed: usize,
    filled: usize,
    out: OutBuf,
}

impl Channel {
    /// Wraps a non-blocking stream; at most `max_queued` unsent bytes may wait in it.
    pub fn new(stream: UnixStream, max_queued: usize) -> Self {
        Channel { stream, inbuf: Vec::new(), consumed: 0, filled: 0, out: OutBuf::new(max_queued) }
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
            match self.stream.read(&mut self.inbuf[start..start + READ_CHUNK]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => Ok(ReadOutcome::Closed { mid_frame: start > self.consumed }),
            Ok(n) => {
                self.filled += n;
                Ok(ReadOutcome::Data { drained: n < READ_CHUNK })
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
            Err(err) => Err(err),
        }
    }

    /// The next whole message among the bytes read so far, if there is one.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match codec::decode_frame(&self.inbuf[self.consumed..self.filled])? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Reads until `WouldBlock`, decoding as it goes, and returns the messages seen.
    fn read_all(channel: &mut Channel) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match channel.read_some().expect("read") {
                ReadOutcome::Data { .. } => {
                    while let Some(message) = channel.next_message::<String>().expect("decode") {
                        seen.push(message);
                    }
                }
                ReadOutcome::WouldBlock => return seen,
                ReadOutcome::Closed { .. } => panic!("closed"),
            }
        }
    }

    #[test]
    fn frames_split_anywhere_and_longer_than_a_read_come_out_whole() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let mut channel = Channel::new(UnixStream::from_std(ours), 1 << 20);
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
        let mut channel = Channel::new(UnixStream::from_std(ours), 1 << 20);
        let frame = codec::frame(&"hello".to_string()).expect("encode");
        theirs.write_all(&frame[..frame.len() - 2]).expect("write");
        assert!(read_all(&mut channel).is_empty());
        drop(theirs);
        assert_eq!(channel.read_some().expect("read"), ReadOutcome::Closed { mid_frame: true });
    }
}
