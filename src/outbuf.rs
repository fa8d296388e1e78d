//! A bounded queue of bytes waiting for a non-blocking writer.
//!
//! Used for every outgoing stream in chatd: broker → session, session → broker, session →
//! client. It owns the policy "never grow past the limit": [`OutBuf::push`] refuses bytes that
//! would exceed it and leaves the decision (drop the peer, stop reading) to the caller. It does
//! no I/O of its own beyond the one `write_to` call it is handed a writer for.
//!
//! Memory follows the limit, not the traffic: the sent prefix is dropped once it is more than
//! half the buffer (sozu's `Buffer::consume`), or sooner if keeping it would let the buffer grow
//! past `limit` + [`KEPT_CAPACITY`]. A queue that never quite drains therefore holds at most
//! that much, however long it lives.

use std::io::{self, Write};

/// The queue would grow past its limit; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output queue full: {queued} bytes queued, limit {limit}")]
pub struct Overflow {
    pub queued: usize,
    pub limit: usize,
}

/// Capacity an empty queue keeps for the next write; beyond it, a drained queue frees its
/// buffer. Ordinary traffic (a few lines per write) stays well below it and allocates nothing.
const KEPT_CAPACITY: usize = 16 * 1024;

/// Bytes queued for a writer, sent from the front.
#[derive(Debug)]
pub struct OutBuf {
    bytes: Vec<u8>,
    /// How much of `bytes` has already been written; compacted away when all is sent, when it
    /// is more than half the buffer, or when it would push the buffer past its bound.
    sent: usize,
    /// Most unsent bytes the queue may hold.
    limit: usize,
}

impl OutBuf {
    pub fn new(limit: usize) -> Self {
        OutBuf { bytes: Vec::new(), sent: 0, limit }
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `data` whole, or nothing if that would exceed the limit.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Overflow> {
        if self.len() + data.len() > self.limit {
            return Err(Overflow { queued: self.len(), limit: self.limit });
        }
        self.make_room(data.len());
        let needed = self.bytes.len() + data.len();
        if needed > self.bytes.capacity() {
            // Grow as Vec would (doubling), but never past the bound: a queue near its limit
            // must not hold twice the limit because of one reallocation.
            let bound = (self.limit + KEPT_CAPACITY).max(needed);
            let target = (self.bytes.capacity() * 2).clamp(needed, bound);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// Lets an encoder append directly; the caller checks the limit afterwards with
    /// [`OutBuf::check_limit`], which rolls the append back.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        self.make_room(0);
        &mut self.bytes
    }

    /// Drops the sent prefix when more than half the buffer is sent (the copy of the unsent
    /// rest is then smaller than what was written since the last one, so it costs O(1) per
    /// byte), or when keeping it would let the buffer pass `limit` + [`KEPT_CAPACITY`].
    fn make_room(&mut self, incoming: usize) {
        if self.sent == 0 {
            return;
        }
        let more_than_half_sent = self.sent * 2 > self.bytes.len();
        let past_bound = self.bytes.len() + incoming > self.limit + KEPT_CAPACITY;
        if more_than_half_sent || past_bound {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Undoes whatever was appended past `mark` (a length of [`OutBuf::tail`]) if the queue is
    /// now over its limit.
    pub fn check_limit(&mut self, mark: usize) -> Result<(), Overflow> {
        if self.len() > self.limit {
            self.bytes.truncate(mark);
            return Err(Overflow { queued: self.len(), limit: self.limit });
        }
        Ok(())
    }

    /// Writes as much as the writer takes without blocking. Returns `Ok(true)` when the queue
    /// is empty afterwards, `Ok(false)` when the writer would block.
    pub fn write_to(&mut self, writer: &mut impl Write) -> io::Result<bool> {
        while self.sent < self.bytes.len() {
            match writer.write(&self.bytes[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if self.bytes.capacity() > KEPT_CAPACITY {
            // A burst (a login storm, a long /who) is over: give its memory back rather than
            // hold the high-water mark of every queue for the life of the connection.
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
        self.sent = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_burst_gives_its_memory_back_and_small_queues_keep_theirs() {
        let mut queue = OutBuf::new(1 << 20);
        queue.push(&[b'x'; 100]).expect("room");
        assert!(queue.write_to(&mut Vec::new()).expect("written"));
        assert!(queue.bytes.capacity() >= 100, "a small queue keeps its buffer");
        queue.push(&vec![b'x'; 4 * KEPT_CAPACITY]).expect("room");
        let mut sink = Vec::new();
        assert!(queue.write_to(&mut sink).expect("written"));
        assert_eq!(sink.len(), 4 * KEPT_CAPACITY);
        assert_eq!(queue.bytes.capacity(), 0, "a burst's buffer is freed once drained");
        assert!(queue.is_empty());
    }

    /// A writer that takes at most `room` bytes, then would block.
    struct Trickle {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room).min(3);
            self.taken.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn refuses_bytes_past_the_limit_and_keeps_what_it_had() {
        let mut out = OutBuf::new(8);
        out.push(b"12345").expect("fits");
        assert_eq!(out.push(b"6789"), Err(Overflow { queued: 5, limit: 8 }));
        assert_eq!(out.len(), 5);
        out.push(b"678").expect("fits exactly");
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut out = OutBuf::new(64);
        out.push(b"hello world").expect("fits");
        let mut writer = Trickle { taken: Vec::new(), room: 4 };
        assert!(!out.write_to(&mut writer).expect("no error"));
        assert_eq!(out.len(), 7);
        writer.room = 100;
        assert!(out.write_to(&mut writer).expect("no error"));
        assert_eq!(writer.taken, b"hello world");
        assert!(out.is_empty());
    }

    /// Review F1: a queue whose writer always leaves a little behind used to keep every byte
    /// it had ever sent (20 MB for 20 KB unsent). Here the writer takes a little less than it
    /// is given and every 1,000 turns catches up to all but one byte: the queue is never empty.
    #[test]
    fn a_queue_that_never_drains_holds_at_most_its_limit_and_the_kept_capacity() {
        let limit = 64 * 1024;
        let mut out = OutBuf::new(limit);
        let line = [b'x'; 100];
        let mut writer = Trickle { taken: Vec::new(), room: 0 };
        let mut peak = 0;
        for turn in 0..200_000 {
            out.push(&line).expect("the writer keeps up on average");
            writer.room = if turn % 1000 == 999 { out.len() - 1 } else { 99 };
            assert!(!out.write_to(&mut writer).expect("no error"), "never drained");
            writer.taken.clear();
            peak = peak.max(out.bytes.capacity());
        }
        assert!(
            peak <= limit + KEPT_CAPACITY,
            "buffer capacity peaked at {peak} bytes, bound {}",
            limit + KEPT_CAPACITY
        );
    }

    #[test]
    fn a_queue_near_its_limit_compacts_before_it_grows_past_the_bound() {
        let limit = 1000;
        let mut out = OutBuf::new(limit);
        out.push(&[b'a'; 1000]).expect("fits");
        let mut writer = Trickle { taken: Vec::new(), room: 999 };
        // Trickle writes 3 bytes at a time; 999 of 1000 leave one byte unsent.
        assert!(!out.write_to(&mut writer).expect("no error"));
        for _ in 0..100 {
            out.push(&[b'b'; 999]).expect("fits: one byte was unsent");
            writer.room = 999;
            let _drained = out.write_to(&mut writer).expect("no error");
            assert!(out.bytes.len() <= limit + KEPT_CAPACITY);
        }
        writer.taken.clear();
        writer.room = usize::MAX;
        assert!(out.write_to(&mut writer).expect("no error"));
        assert_eq!(writer.taken.len(), 1);
    }

    #[test]
    fn check_limit_rolls_back_an_oversized_append() {
        let mut out = OutBuf::new(4);
        out.push(b"ab").expect("fits");
        let mark = out.tail().len();
        out.tail().extend_from_slice(b"cdef");
        assert!(out.check_limit(mark).is_err());
        assert_eq!(out.len(), 2);
    }
}
