//! The rooms' rings: one [`RingWriter`] per room that has members, and the end of each turn.
//!
//! It owns creating a room's ring when someone first needs it, appending each room broadcast to
//! it once, and — at the end of a loop turn, after the sessions' sockets were flushed —
//! publishing every ring that got records and ringing each one's doorbell once. Publishing after
//! the flush is what keeps the broker's order for every member: a reply queued for a session
//! before a room line reached that session's socket before the line became visible (see
//! `session::feed`). A ring whose room is gone is dropped after its last records were
//! published; sessions that still map it read them, then close it.
//!
//! It knows nothing of who is in a room (that is `Rooms`') or of sockets (that is `Peers`').

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{error, warn};

use crate::ring::{RingError, RingWriter};

/// Identifies one ring for the life of the broker: a room that vanishes and is made again gets
/// a new ring, and a session still holding the old one must not be given the new one's marks.
pub(super) type RingId = u64;

/// One room's ring.
pub(super) struct RoomRing {
    pub(super) id: RingId,
    pub(super) writer: RingWriter,
    /// Got records this turn: published and rung at the end of it.
    dirty: bool,
    /// What its unpublished records may wait for (see [`Pace`]).
    pace: Pace,
    /// The head when its members' reading was last checked (every quarter of the ring).
    checked_at: u64,
    /// When its doorbell last rang.
    rung_at: Option<Instant>,
}

/// How long a ring's doorbell stays quiet after it rang, by what its unpublished records are
/// ([`Pace::interval`]). Each ring wakes every member that sleeps, and a woken member writes
/// to its client: a room flooded with lines would otherwise wake each member once per line. A
/// record that comes after a quiet spell is published at once (at 50 lines/s, a room of 1,000
/// waits for nothing); those that follow it within the interval are published together when
/// it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Pace {
    /// Arrivals and departures only: 100 µs per member, at most 250 ms. Every member is told
    /// every arrival, so a crowd of N logging in is N²/2 lines to show; woken at most 10,000
    /// times a second in all (rather than the 100,000 of the prompt pace), members show them
    /// in batches (measured in docs/PERFORMANCE.md). Nobody waits on an arrival, and a line
    /// said meanwhile brings the room's waiting news with it at its own pace.
    Presence,
    /// A line, any other room news, or a member's socket frame waiting behind a mark (see
    /// `Rings::hurry`): 10 µs per member, at most 50 ms.
    Prompt,
}

impl Pace {
    /// How long a ring of a room of `members` stays quiet after its doorbell rang.
    fn interval(self, members: usize) -> Duration {
        let (per_member, longest) = match self {
            Pace::Presence => (Duration::from_micros(100), Duration::from_millis(250)),
            Pace::Prompt => (Duration::from_micros(10), Duration::from_millis(50)),
        };
        per_member.saturating_mul(u32::try_from(members).unwrap_or(u32::MAX)).min(longest)
    }
}

/// Every room's ring, by room key.
pub(super) struct Rings {
    by_room: HashMap<String, RoomRing>,
    /// Bytes of each new ring's data region (`ring_bytes`).
    capacity: usize,
    next_id: RingId,
    /// Keys of rings with records this turn.
    dirty: Vec<String>,
    /// Keys of rooms that vanished, and of rings made this turn: each goes at the end of the
    /// turn, once published, if its room does not exist then.
    vanished: Vec<String>,
    /// Keys of rings that moved a quarter of their size since their members were checked.
    due_for_check: Vec<String>,
}

impl Rings {
    pub(super) fn new(capacity: usize) -> Rings {
        Rings {
            by_room: HashMap::new(),
            capacity,
            next_id: 1,
            dirty: Vec::new(),
            vanished: Vec::new(),
            due_for_check: Vec::new(),
        }
    }

    /// Rings made from now on have `capacity` bytes (a reload; existing rings keep theirs).
    pub(super) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Makes a ring for the room with key `key` if it has none. One made for a room that is
    /// not made after all (a refused `/join`) goes at the end of the turn.
    pub(super) fn make_ring(&mut self, key: &str) -> Result<(), RingError> {
        if !self.by_room.contains_key(key) {
            let writer = RingWriter::create(&format!("chatd room {key}"), self.capacity)?;
            let id = self.next_id;
            self.next_id += 1;
            let ring = RoomRing {
                id,
                writer,
                dirty: false,
                pace: Pace::Presence,
                checked_at: 0,
                rung_at: None,
            };
            self.by_room.insert(key.to_string(), ring);
            self.vanished.push(key.to_string());
        }
        Ok(())
    }

    /// The ring of the room with key `key`.
    pub(super) fn get(&self, key: &str) -> Option<&RoomRing> {
        self.by_room.get(key)
    }

    /// The ring of room `key` if it is ring `id`: its head (where its next record starts).
    pub(super) fn head_of(&self, key: &str, id: RingId) -> Option<u64> {
        self.by_room.get(key).filter(|ring| ring.id == id).map(|ring| ring.writer.head())
    }

    /// Appends one record to room `key`'s ring, to be published at `pace` (or sooner). A room
    /// without a ring has no member who could read it: nothing is appended. False if the
    /// record could not be (logged).
    pub(super) fn append(&mut self, key: &str, record: &[u8], pace: Pace) -> bool {
        let Some(ring) = self.by_room.get_mut(key) else {
            return true;
        };
        match ring.writer.append(record) {
            Ok(_) => {
                ring.pace = ring.pace.max(pace);
                if !ring.dirty {
                    ring.dirty = true;
                    self.dirty.push(key.to_string());
                }
                let head = ring.writer.head();
                if head - ring.checked_at >= ring.writer.capacity() as u64 / 4 {
                    ring.checked_at = head;
                    self.due_for_check.push(key.to_string());
                }
                true
            }
            Err(err) => {
                error!("room {key}: cannot append to its ring: {err}");
                false
            }
        }
    }

    /// A member of room `key` was sent a mark ahead of what its ring has published: the
    /// frame behind it waits for the ring, which is published at the prompt pace.
    pub(super) fn hurry(&mut self, key: &str) {
        if let Some(ring) = self.by_room.get_mut(key)
            && ring.writer.has_unpublished()
        {
            ring.pace = Pace::Prompt;
        }
    }

    /// Takes the keys of rings whose members' reading is due for a check (see
    /// `Peers::check_readers`); `into` is cleared first.
    pub(super) fn take_due_for_check(&mut self, into: &mut Vec<String>) {
        into.clear();
        std::mem::swap(&mut self.due_for_check, into);
    }

    /// The room with key `key` is gone: its ring goes at the end of the turn (unless the room
    /// is made again before then; `exists` says).
    pub(super) fn room_vanished(&mut self, key: &str) {
        self.vanished.push(key.to_string());
    }

    /// The end of a turn: every ring with new records is published and its doorbell rung
    /// once, unless it rang less than its interval ago (see [`Pace`]; a ring whose room is
    /// gone is published at once, for the members reading up to a mark in it);
    /// then rings of vanished rooms are dropped. `members_in` and `exists` say how many a
    /// room has and whether it is (again). Returns when the next waiting ring is due.
    pub(super) fn end_turn(
        &mut self,
        now: Instant,
        members_in: impl Fn(&str) -> usize,
        exists: impl Fn(&str) -> bool,
    ) -> Option<Instant> {
        let mut next_due: Option<Instant> = None;
        let mut waiting = std::mem::take(&mut self.dirty);
        waiting.retain(|key| {
            let Some(ring) = self.by_room.get_mut(key) else { return false };
            let due = ring.rung_at.map(|at| at + ring.pace.interval(members_in(key)));
            if let Some(due) = due.filter(|&due| now < due && exists(key)) {
                next_due = Some(next_due.map_or(due, |next| next.min(due)));
                return true;
            }
            ring.dirty = false;
            ring.pace = Pace::Presence;
            ring.rung_at = Some(now);
            if ring.writer.publish()
                && let Err(err) = ring.writer.ring_doorbell()
            {
                warn!("room {key}: cannot ring its doorbell: {err}");
            }
            false
        });
        self.dirty = waiting;
        for key in self.vanished.drain(..) {
            if !exists(&key) {
                self.by_room.remove(&key);
            }
        }
        next_due
    }

    /// Publishes and rings every ring with new records now (the broker is stopping: what it
    /// appended is shown before its goodbye).
    pub(super) fn publish_all(&mut self) {
        for key in self.dirty.drain(..) {
            if let Some(ring) = self.by_room.get_mut(&key) {
                ring.dirty = false;
                ring.pace = Pace::Presence;
                if ring.writer.publish() {
                    let _ = ring.writer.ring_doorbell();
                }
            }
        }
    }
}
