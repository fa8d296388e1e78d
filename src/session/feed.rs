//! The session's room feed: the ring of the room it is in, read in the broker's order.
//!
//! Owns the [`RingReader`] of the session's current room (handed over by the broker with
//! `RingHandover`, its doorbell registered with the session's poller, edge-triggered and never
//! read), the mark the socket is waiting for, and the buffer each record is copied into (reused:
//! a record costs no allocation). It decides nothing about what a record says (that is the
//! state machine's and the renderer's) and does not read the socket (that is `events`').
//!
//! # Order
//! The broker writes a session's socket frames and appends room records in one order; the
//! session must show them in that order. Two rules make it so:
//! - A socket frame that follows records is preceded by `RingMark { position }`: the session
//!   reads the ring up to `position` before it handles the next socket frame. The broker
//!   publishes records only at the end of its turn, so a mark may be ahead of what is
//!   published for a moment: socket frames then wait for the next doorbell.
//! - The broker publishes a turn's records after writing that turn's socket frames, so a
//!   session that loads the commit position *before* reading its socket, and then reads the
//!   ring only up to that position, has every socket frame that came before those records.
//!
//! The one case that escapes the second rule is a session whose socket queue at the broker is
//! backed up (its own client stopped reading): it may see a room line before a reply queued
//! before it. Such a session is on its way to being dropped as too slow.

use std::io;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::ring::{RingError, RingReader};

/// The poller's token for the ring's doorbell.
pub(super) const RING: Token = Token(3);

/// The ring of the session's room and where reading it stands.
#[derive(Default)]
pub(super) struct Feed {
    reader: Option<RingReader>,
    /// A `RingMark` the ring has not been read up to yet: socket frames wait behind it.
    pub(super) pending_mark: Option<u64>,
    /// The last record copied out of the ring; it keeps its capacity.
    record: Vec<u8>,
    /// The position last reported to the broker (`RingRead`).
    reported: u64,
}

impl Feed {
    /// How far the ring may be read now; `None` before the first handover.
    pub(super) fn committed(&self) -> Option<u64> {
        self.reader.as_ref().map(RingReader::committed)
    }

    /// Whether the ring has lapped this reader: records it has not read were written over.
    /// Known without reading a record, so that a session whose client stopped reading learns
    /// it on the doorbell that tells of the lap.
    pub(super) fn lapped(&self) -> bool {
        self.reader.as_ref().is_some_and(|reader| {
            reader.committed().saturating_sub(reader.position()) > reader.capacity() as u64
        })
    }

    /// Whether the ring has been read up to `position` (or there is no ring to read).
    pub(super) fn reached(&self, position: u64) -> bool {
        self.reader.as_ref().is_none_or(|reader| reader.position() >= position)
    }

    /// Reads from `reader` from now on; the old ring's doorbell is no longer watched and the
    /// old ring is unmapped.
    pub(super) fn install(&mut self, reader: RingReader, registry: &Registry) -> io::Result<()> {
        self.forget(registry);
        registry.register(&mut SourceFd(&reader.doorbell_fd()), RING, Interest::READABLE)?;
        self.reported = reader.position();
        self.reader = Some(reader);
        self.pending_mark = None;
        Ok(())
    }

    /// Stops reading the ring (the session ends, or a new one replaces it).
    pub(super) fn forget(&mut self, registry: &Registry) {
        if let Some(old) = self.reader.take() {
            // A descriptor that is closed right after leaves the poller anyway.
            let _ = registry.deregister(&mut SourceFd(&old.doorbell_fd()));
        }
    }

    /// Copies the next record before `upto` (and before what is published) out of the ring.
    /// The record is taken with [`Feed::take_record`] and given back with
    /// [`Feed::give_back`], so that handling it can borrow the session freely.
    pub(super) fn next(&mut self, upto: u64) -> Result<bool, RingError> {
        // The reader stops at what is published itself.
        let Some(reader) = self.reader.as_mut() else { return Ok(false) };
        reader.next(upto, &mut self.record)
    }

    /// The position to tell the broker, once a quarter of the ring was read since the last
    /// report: the broker drops a member that stays a ring behind.
    pub(super) fn progress_to_report(&mut self) -> Option<u64> {
        let reader = self.reader.as_ref()?;
        let position = reader.position();
        if position.saturating_sub(self.reported) < reader.capacity() as u64 / 4 {
            return None;
        }
        self.reported = position;
        Some(position)
    }

    pub(super) fn take_record(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.record)
    }

    pub(super) fn give_back(&mut self, record: Vec<u8>) {
        self.record = record;
    }
}
