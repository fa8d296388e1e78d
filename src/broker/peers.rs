//! The fan-out engine: the table of connections on `broker.sock`, the rooms' rings, and the
//! mechanics of getting events to sessions.
//!
//! It owns each peer's channel ([`PeerChannel`]), the rooms' rings ([`Rings`]), the dirty list
//! (peers with bytes queued this turn), the doomed list (peers to remove once the current event
//! is handled) and the buffers events are encoded into. A room broadcast is encoded once and
//! appended once to its room's ring, whatever the room's size; an event for one session is
//! queued on its socket, preceded by a `RingMark` when that session's ring moved since the last
//! one, so that the session shows both in the broker's order. A member that enters a room is
//! handed the room's ring (`RingHandover`, with the ring's descriptors) before anything else
//! that room is told: just after the record of its own arrival, which it is sent on its socket
//! (so that its topic and history wait for no publishing of the ring). Sockets are written
//! once per peer per loop turn ([`Peers::flush`]); rings are published after that
//! ([`Peers::end_turn`]). A peer whose socket queue would overflow is
//! dropped as too slow, once; a session that a ring lapped says so itself
//! ([`Peers::fell_behind`]).
//!
//! It must not decide anything about what the events mean: which requests are allowed, who is
//! in which room ([`Rooms`] is passed in; only its change list is taken) or what a departure
//! tells the room is the broker's. It never blocks: every write is non-blocking and every queue
//! is bounded; a ring is memory, and no reader can hold it back.

use std::collections::HashMap;
use std::collections::hash_map;
use std::time::Instant;

use log::{debug, error, warn};
use mio::Registry;

use super::link::PeerChannel;
use super::remembered::Remembered;
use super::rings::{Pace, RingId, Rings};
use super::room::{Audience, Changes, Delivery, MemberId, Rooms};
use crate::channel::{Frames, SendError};
use crate::outbuf::Overflow;
use crate::proto::broadcast::Broadcast;
use crate::proto::codec;
use crate::proto::{Event, LeaveReason};
use crate::sys;

/// How many peers make a crowd worth trimming the heap after (see [`Peers::trim_after_crowd`]).
const CROWD: usize = 256;

/// One connection on `broker.sock`: a session child, or the master's link.
pub(super) struct Peer {
    pub(super) channel: PeerChannel,
    /// The caller's pid, from SO_PEERCRED, for logs and operators.
    pub(super) pid: i32,
    /// Who the kernel says the caller is ([`sys::process_identity`]): the session's sender id.
    pub(super) identity: u64,
    /// The client address for logs and operators: the one the master vouched for; without a
    /// master, the one the session reported; else `UNVOUCHED`.
    pub(super) client: String,
    /// The sender id, once `Hello` arrived (every other request must come after it); `None`
    /// before and for the master's link.
    pub(super) session: Option<u64>,
    /// The protocol the session is served in (from `Hello`): newer events go only to
    /// sessions that know them.
    pub(super) protocol: u32,
    /// The last line number accepted on this connection, and whether a refused one was logged.
    pub(super) last_seq: Option<u64>,
    pub(super) out_of_sequence_logged: bool,
    /// Dropped as too slow: nothing more is queued for it (nor logged) until it is removed.
    too_slow: bool,
    /// When the client connected (Unix seconds, from `Hello`).
    pub(super) connected_at: u64,
    /// When the user last said something, for `chatctl who`.
    pub(super) last_active: Instant,
    /// Removed by an operator: told so, out of its room, and ignored until it closes.
    pub(super) kicked: bool,
    /// The client's connection is TLS (as the session said at login).
    pub(super) tls: bool,
    /// It came back with `Resume` (its broker had died), not with a login: the last lines it
    /// sends may be ones that broker handled already.
    pub(super) resumed: bool,
    /// Already on the dirty list this turn.
    dirty: bool,
    /// The ring this session reads (the one of the room it last entered).
    ring: Option<HeldRing>,
}

/// A session's ring, as the broker knows it: which room's, which ring (a room made again has a
/// new one), and the position of the last `RingMark` queued for it.
#[derive(Debug)]
struct HeldRing {
    room: String,
    id: RingId,
    marked: u64,
    /// How far the session said it has read (`RingRead`).
    read: u64,
}

impl Peer {
    /// A connection that has said nothing yet.
    pub(super) fn new(
        channel: PeerChannel,
        pid: i32,
        identity: u64,
        connected_at: u64,
        now: Instant,
    ) -> Peer {
        Peer {
            channel,
            pid,
            identity,
            client: String::new(),
            session: None,
            protocol: crate::proto::OLDEST_SESSION_PROTOCOL,
            last_seq: None,
            out_of_sequence_logged: false,
            too_slow: false,
            connected_at,
            last_active: now,
            kicked: false,
            tls: false,
            resumed: false,
            dirty: false,
            ring: None,
        }
    }
}

/// The peer table and the fan-out mechanics (see the module docs).
pub(super) struct Peers {
    table: HashMap<MemberId, Peer>,
    /// Peers with bytes queued this turn; emptied by [`Peers::flush`], keeping its capacity.
    dirty: Vec<MemberId>,
    /// Peers to remove after the current event, with what their room is told.
    doomed: Vec<(MemberId, LeaveReason)>,
    /// The one event being delivered, encoded once.
    frame: Frames<Event>,
    /// The rooms' rings.
    rings: Rings,
    /// The one room broadcast being appended, encoded once.
    record: Vec<u8>,
    /// The rooms' latest membership changes, kept for their capacity.
    changes: Changes,
    /// Rooms whose readers are due for a check, kept for its capacity.
    to_check: Vec<String>,
    /// Most peers connected since the heap was last trimmed.
    high_water: usize,
    /// Sessions dropped as too slow, and why, in case they come back.
    dropped: Remembered<LeaveReason>,
    /// Drops as too slow not yet counted in the broker's figures.
    too_slow_drops: u64,
}

impl Peers {
    /// An empty table that remembers up to `dropped_remembered` sessions dropped as too slow;
    /// rooms' rings get `ring_bytes` each.
    pub(super) fn new(dropped_remembered: usize, ring_bytes: usize) -> Peers {
        Peers {
            table: HashMap::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            frame: Frames::new(),
            rings: Rings::new(ring_bytes),
            record: Vec::new(),
            changes: Changes::default(),
            to_check: Vec::new(),
            high_water: 0,
            dropped: Remembered::new(dropped_remembered),
            too_slow_drops: 0,
        }
    }

    /// Rooms' rings made from now on get `ring_bytes` (a reload; existing rings keep theirs).
    pub(super) fn set_ring_bytes(&mut self, ring_bytes: usize) {
        self.rings.set_capacity(ring_bytes);
    }

    pub(super) fn insert(&mut self, id: MemberId, peer: Peer) {
        self.table.insert(id, peer);
        self.high_water = self.high_water.max(self.table.len());
    }

    /// Turns `id`'s channel into what its greeting made it (see [`PeerChannel`]). False if
    /// there is no such peer.
    pub(super) fn change_channel(
        &mut self,
        id: MemberId,
        change: impl FnOnce(PeerChannel) -> PeerChannel,
    ) -> bool {
        let Some(mut peer) = self.table.remove(&id) else {
            return false;
        };
        peer.channel = change(peer.channel);
        self.table.insert(id, peer);
        true
    }

    pub(super) fn get(&self, id: MemberId) -> Option<&Peer> {
        self.table.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: MemberId) -> Option<&mut Peer> {
        self.table.get_mut(&id)
    }

    pub(super) fn contains(&self, id: MemberId) -> bool {
        self.table.contains_key(&id)
    }

    pub(super) fn iter(&self) -> hash_map::Iter<'_, MemberId, Peer> {
        self.table.iter()
    }

    pub(super) fn values(&self) -> hash_map::Values<'_, MemberId, Peer> {
        self.table.values()
    }

    /// Delivers what a change of the rooms produced: first every member who entered a room is
    /// handed its ring, then each event goes to its audience — a room's once to its ring, one
    /// session's to its socket. A member whose own arrival the room is told is handed the ring
    /// just after that record, and told it on its socket: nothing it is sent next waits behind
    /// a mark for the room to publish its arrival (which may take a while, see `Pace`).
    /// Returns how many members each event reached (a room's members count one each).
    pub(super) fn deliver(&mut self, rooms: &mut Rooms, deliveries: Vec<Delivery>) -> u64 {
        let arrivals = self.apply_changes(rooms, &deliveries);
        let mut copies = 0;
        for (index, delivery) in deliveries.into_iter().enumerate() {
            match &delivery.to {
                Audience::One(id) => {
                    if self.encode(&delivery.event) {
                        self.queue_frame(*id);
                        copies += 1;
                    }
                }
                Audience::Room(key) => {
                    if self.broadcast(key, &delivery.event) {
                        copies += rooms.members_in(key) as u64;
                    }
                    if let Some(&(_, id)) = arrivals.iter().find(|&&(at, _)| at == index) {
                        self.hand_over(id, key);
                        if self.encode(&delivery.event) {
                            self.queue_frame(id);
                        }
                    }
                }
            }
        }
        self.check_readers(rooms);
        copies
    }

    /// A session said it has read its ring up to `position`. A position it cannot have
    /// reached (beyond the head, or back from its last one) is not believed.
    pub(super) fn ring_read(&mut self, id: MemberId, position: u64) {
        let Some(peer) = self.table.get_mut(&id) else { return };
        let Some(held) = &mut peer.ring else { return };
        let head = self.rings.head_of(&held.room, held.id);
        if head.is_some_and(|head| position <= head) && position >= held.read {
            held.read = position;
        }
    }

    /// Every quarter of a ring, its members are checked: one that stayed more than the ring
    /// (and the quarter it reports by) behind has lost lines it can never read — a session
    /// that stopped, or one that does not read its ring — and is dropped as too slow. A live
    /// session that fell behind says so itself, sooner.
    fn check_readers(&mut self, rooms: &Rooms) {
        let mut due = std::mem::take(&mut self.to_check);
        self.rings.take_due_for_check(&mut due);
        let mut late = Vec::new();
        for key in &due {
            let Some(ring) = self.rings.get(key) else { continue };
            let (ring_id, head) = (ring.id, ring.writer.head());
            let capacity = ring.writer.capacity() as u64;
            let limit = capacity + capacity / 4;
            for id in rooms.members_of(key) {
                let Some(peer) = self.table.get_mut(&id) else { continue };
                let behind = match &peer.ring {
                    Some(held) if held.id == ring_id => head - held.read.min(head),
                    _ => continue,
                };
                if behind > limit && !peer.too_slow {
                    late.push((id, behind));
                }
            }
        }
        for (id, behind) in late {
            self.drop_too_slow(id, format_args!("{behind} bytes behind in its room's ring"));
        }
        self.to_check = due;
    }

    /// Hands every member who entered a room since the last call that room's ring — except
    /// those whose arrival `deliveries` tell the room: they leave their old ring now, to be
    /// handed the new one after that record, and are returned with the index of the delivery
    /// that tells it — and lets vanished rooms' rings go at the end of the turn.
    fn apply_changes(
        &mut self,
        rooms: &mut Rooms,
        deliveries: &[Delivery],
    ) -> Vec<(usize, MemberId)> {
        let mut changes = std::mem::take(&mut self.changes);
        rooms.take_changes(&mut changes);
        let mut arrivals: Vec<(usize, MemberId)> = Vec::new();
        for (index, delivery) in deliveries.iter().enumerate() {
            let Audience::Room(key) = &delivery.to else { continue };
            if let Some(id) = arrival_of(rooms, key, &delivery.event)
                && changes.entered.contains(&id)
                && !arrivals.iter().any(|&(_, arriving)| arriving == id)
            {
                arrivals.push((index, id));
            }
        }
        for &id in &changes.entered {
            if arrivals.iter().any(|&(_, arriving)| arriving == id) {
                self.leave_ring(id);
            } else if let Some(room) = rooms.room_of(id) {
                self.hand_over(id, room);
            }
        }
        for key in &changes.vanished {
            self.rings.room_vanished(key);
        }
        self.changes = changes;
        arrivals
    }

    /// `id` is leaving the room whose ring it reads: what that ring said before now still
    /// comes first (a mark), and nothing after is for it. A peer whose queue is full is
    /// dropped as too slow.
    fn leave_ring(&mut self, id: MemberId) {
        let Some(peer) = self.table.get_mut(&id).filter(|peer| !peer.too_slow) else { return };
        let marked = mark_ring_position(&mut self.rings, peer);
        peer.ring = None;
        if marked.is_err() {
            self.after_queueing(id, marked);
        }
    }

    /// Gives `id` the ring of the room with key `room` (made if it has none), from its head:
    /// what the room is told from now on. Whatever its old ring said before now still comes
    /// first (the handover is queued after it left that ring: [`Peers::leave_ring`]).
    fn hand_over(&mut self, id: MemberId, room: &str) {
        if self.table.get(&id).is_none_or(|peer| peer.too_slow) {
            return;
        }
        if let Err(err) = self.rings.make_ring(room) {
            if let Some(peer) = self.table.get(&id) {
                error!(
                    "dropping session pid {} ({}): no ring for room {room}: {err}",
                    peer.pid, peer.client
                );
            }
            self.doom(id, LeaveReason::ConnectionLost);
            return;
        }
        self.leave_ring(id);
        let (Some(peer), Some(ring)) = (self.table.get_mut(&id), self.rings.get(room)) else {
            return;
        };
        if peer.too_slow {
            return;
        }
        let start = ring.writer.head();
        let held = HeldRing { room: room.to_string(), id: ring.id, marked: start, read: start };
        let (memfd, doorbell) = ring.writer.descriptors();
        let handover = Event::RingHandover { start };
        let mut sent = peer.channel.send_event(&handover, &[memfd, doorbell]);
        if matches!(sent, Err(SendError::TooManyDescriptors { .. })) {
            // Earlier handovers' descriptors still wait (a paste of /joins): they go now, as
            // far as the socket takes them, rather than the member as too slow.
            let _ = peer.channel.flush();
            sent = peer.channel.send_event(&handover, &[memfd, doorbell]);
        }
        peer.ring = Some(held);
        if let Err(SendError::Descriptor { source, .. }) = &sent {
            // Without its ring the member would wait for its room for ever: it goes.
            error!(
                "dropping session pid {} ({}): cannot hand over the ring of room {room}: {source}",
                peer.pid, peer.client
            );
            self.doom(id, LeaveReason::ConnectionLost);
            return;
        }
        self.after_queueing(id, queued(sent));
    }

    /// Makes sure room `name` has a ring before anyone is let in: a ring the system cannot
    /// give (out of descriptors or memory) refuses the room, with why, rather than drop the
    /// member after it entered. Logged once per episode by the caller's failure reply.
    pub(super) fn prepare_ring(&mut self, name: &str) -> Result<(), String> {
        if crate::names::check_room(name).is_err() {
            // No such room can be made; the rooms say why.
            return Ok(());
        }
        let key = crate::names::fold(name);
        let refused = |err: String| {
            warn!("cannot make a ring for room {key}: {err}");
            "the server cannot open another room now".to_string()
        };
        self.rings.make_ring(&key).map_err(|err| refused(err.to_string()))?;
        // Handing it over takes a copy of both descriptors: that there is room for them is
        // known now, before anyone enters (a ring made for nothing goes at the end of the turn).
        let ring = self.rings.get(&key).ok_or_else(|| refused("gone".into()))?;
        let (memfd, doorbell) = ring.writer.descriptors();
        let copies = (memfd.try_clone_to_owned(), doorbell.try_clone_to_owned());
        match copies {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(err), _) | (_, Err(err)) => Err(refused(format!("no descriptor to spare: {err}"))),
        }
    }

    /// Appends `event` once to the ring of room `key`; false if it is no room broadcast or
    /// could not be appended (logged).
    fn broadcast(&mut self, key: &str, event: &Event) -> bool {
        let Some(broadcast) = Broadcast::of(event) else {
            error!("not a room broadcast, not sent to room {key}: {event:?}");
            return false;
        };
        self.record.clear();
        if let Err(err) = codec::encode_payload(&broadcast, &mut self.record) {
            error!("cannot encode a broadcast: {err}");
            return false;
        }
        let pace = match broadcast {
            Broadcast::Joined { .. } | Broadcast::Left { .. } => Pace::Presence,
            _ => Pace::Prompt,
        };
        self.rings.append(key, &self.record, pace)
    }

    /// Encodes `event` once and queues it for each of `ids` (every session, for an
    /// operator's announcement). The master's link takes no events: its frames are
    /// [`crate::proto::master::MasterEvent`]s, queued by `Broker::tell_master`.
    pub(super) fn send_to(&mut self, ids: impl IntoIterator<Item = MemberId>, event: &Event) {
        if !self.encode(event) {
            return;
        }
        for id in ids {
            self.queue_frame(id);
        }
    }

    /// Encodes `event` into the frame buffer; false (logged) if it cannot be.
    fn encode(&mut self, event: &Event) -> bool {
        self.frame.clear();
        if let Err(err) = self.frame.push(event) {
            error!("cannot encode an event: {err}");
            return false;
        }
        true
    }

    /// Queues the encoded frame for one peer.
    fn queue_frame(&mut self, id: MemberId) {
        let frame = std::mem::take(&mut self.frame);
        self.queue_with(id, |channel| channel.send_encoded(&frame));
        self.frame = frame;
    }

    /// Queues what `send` puts in `id`'s channel (the one way anything is queued for a peer),
    /// after a mark of its ring's position if that moved since the last one. A peer whose
    /// queue is full is dropped as too slow, once: what comes for it before it is removed is
    /// neither queued nor logged again.
    pub(super) fn queue_with(
        &mut self,
        id: MemberId,
        send: impl FnOnce(&mut PeerChannel) -> Result<(), Overflow>,
    ) {
        let Some(peer) = self.table.get_mut(&id) else {
            return;
        };
        if peer.too_slow {
            return;
        }
        let sent = mark_ring_position(&mut self.rings, peer).and_then(|()| send(&mut peer.channel));
        self.after_queueing(id, sent);
    }

    /// Puts `id` on the dirty list once something was queued for it, or drops it as too slow
    /// if its queue was full.
    fn after_queueing(&mut self, id: MemberId, sent: Result<(), Overflow>) {
        let Some(peer) = self.table.get_mut(&id) else {
            return;
        };
        match sent {
            Ok(()) => {
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(id);
                }
            }
            Err(overflow) => self.drop_too_slow(id, overflow),
        }
    }

    /// Drops `id` as too slow (`why` says how), once: logged, counted, remembered in case it
    /// comes back, and doomed. What comes for it before it is removed is neither queued nor
    /// logged again.
    fn drop_too_slow(&mut self, id: MemberId, why: impl std::fmt::Display) {
        if let Some(peer) = self.table.get_mut(&id)
            && !peer.too_slow
        {
            warn!("dropping session pid {} ({}): too slow, {why}", peer.pid, peer.client);
            peer.too_slow = true;
            if peer.session.is_some() {
                // If it takes the closed connection for a broker restart, it is told.
                self.dropped.insert(peer.identity, LeaveReason::TooSlow);
            }
            self.too_slow_drops += 1;
        }
        self.doom(id, LeaveReason::TooSlow);
    }

    /// The session said its room's ring lapped it: it leaves as too slow, counted and
    /// remembered like a session whose queue overflowed.
    pub(super) fn fell_behind(&mut self, id: MemberId) {
        if self.contains(id) {
            self.drop_too_slow(id, "its room's ring lapped it");
        }
    }

    /// Puts `id` on the dirty list (once per turn): its queue is written at the next flush.
    pub(super) fn mark_dirty(&mut self, id: MemberId) {
        if let Some(peer) = self.table.get_mut(&id)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(id);
        }
    }

    /// One write per peer with queued bytes. A peer that would block keeps its bytes; its next
    /// writable event brings it back here.
    pub(super) fn flush(&mut self) {
        for id in self.dirty.drain(..) {
            let Some(peer) = self.table.get_mut(&id) else {
                continue;
            };
            peer.dirty = false;
            if let Err(err) = peer.channel.flush() {
                debug!("session pid {} ({}) write error: {err}", peer.pid, peer.client);
                if !self.doomed.iter().any(|(doomed, _)| *doomed == id) {
                    self.doomed.push((id, LeaveReason::ConnectionLost));
                }
            }
        }
    }

    /// The end of a loop turn, after the last flush: every ring that got records is published
    /// and its doorbell rung once, and the rings of rooms that are gone are dropped.
    /// Returns when a ring that waits out its quiet interval is due (the loop wakes then).
    pub(super) fn end_turn(&mut self, rooms: &Rooms, now: Instant) -> Option<Instant> {
        self.rings.end_turn(now, |key| rooms.members_in(key), |key| rooms.exists(key))
    }

    /// Publishes every ring now, quiet interval or not (the broker is stopping).
    pub(super) fn publish_all_rings(&mut self) {
        self.rings.publish_all();
    }

    /// Marks `id` for removal after the current event; the first reason given stands.
    pub(super) fn doom(&mut self, id: MemberId, reason: LeaveReason) {
        if !self.is_doomed(id) {
            self.doomed.push((id, reason));
        }
    }

    pub(super) fn is_doomed(&self, id: MemberId) -> bool {
        self.doomed.iter().any(|(doomed, _)| *doomed == id)
    }

    /// Forgets every pending removal (the broker is stopping: nobody is told of anyone).
    pub(super) fn forget_doomed(&mut self) {
        self.doomed.clear();
    }

    /// Takes the next doomed peer out of the table (the latest doomed first): its queue is
    /// flushed as far as it goes without blocking (a quitting session waits for what it was
    /// owed) and it is no longer watched. The caller tells its room.
    pub(super) fn remove_next_doomed(
        &mut self,
        registry: &Registry,
    ) -> Option<(MemberId, Peer, LeaveReason)> {
        while let Some((id, reason)) = self.doomed.pop() {
            let Some(mut peer) = self.table.remove(&id) else {
                continue;
            };
            let _ = peer.channel.flush();
            let _ = registry.deregister(peer.channel.stream_mut());
            return Some((id, peer, reason));
        }
        None
    }

    /// The session with sender id `identity` was dropped as too slow before: why, once.
    pub(super) fn take_dropped(&mut self, identity: u64) -> Option<LeaveReason> {
        self.dropped.take(identity)
    }

    /// Drops as too slow since the last call, for the broker's figures.
    pub(super) fn take_too_slow_drops(&mut self) -> u64 {
        std::mem::take(&mut self.too_slow_drops)
    }

    /// Once at least half of a crowd of sessions has left, hands the memory their queues and
    /// tables used back to the kernel: otherwise the broker keeps the high-water mark of its
    /// busiest moment (measured: 33 MiB after 5,000 sessions had come and gone, against 9 MiB
    /// for the 1,000 that followed). Trimming walks the heap, so it is done once per halving,
    /// never per departure.
    pub(super) fn trim_after_crowd(&mut self) {
        if self.high_water >= CROWD && self.table.len() <= self.high_water / 2 {
            sys::release_free_memory();
            debug!("{} sessions left of {}: heap trimmed", self.table.len(), self.high_water);
            self.high_water = self.table.len();
        }
    }
}

/// Queues a `RingMark` for `peer` if its ring's head moved since the last one: what follows on
/// its socket comes after every record before that position. The ring is hurried: that frame
/// waits until the records before the mark are published.
fn mark_ring_position(rings: &mut Rings, peer: &mut Peer) -> Result<(), Overflow> {
    let Some(held) = &mut peer.ring else { return Ok(()) };
    let Some(head) = rings.head_of(&held.room, held.id) else { return Ok(()) };
    if head == held.marked {
        return Ok(());
    }
    queued(peer.channel.send_event(&Event::RingMark { position: head }, &[]))?;
    held.marked = head;
    rings.hurry(&held.room);
    Ok(())
}

/// The member whose arrival in room `key` `event` tells, if it does.
fn arrival_of(rooms: &Rooms, key: &str, event: &Event) -> Option<MemberId> {
    let Event::Joined { nick, .. } = event else { return None };
    rooms.find(nick).filter(|&id| rooms.room_of(id).is_some_and(|room| room == key))
}

/// What a send means for the peer: queued, or its queue is full. An event that cannot be
/// encoded is a bug here, logged; the peer is not blamed.
fn queued(sent: Result<(), SendError>) -> Result<(), Overflow> {
    match sent {
        Ok(()) => Ok(()),
        Err(SendError::Overflow { source, .. }) => Err(source),
        // Descriptors it has not taken pile up: it is not reading either.
        Err(SendError::TooManyDescriptors { queued, limit, .. }) => Err(Overflow { queued, limit }),
        Err(err @ (SendError::Codec { .. } | SendError::Descriptor { .. })) => {
            error!("{err}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::time::Duration;

    use mio::net::UnixStream;

    use super::*;
    use crate::channel::{Channel, ReadOutcome};
    use crate::proto::Request;
    use crate::ring::RingReader;

    /// A session's end of its socket, as a session reads it (descriptors accepted).
    type SessionEnd = Channel<Request, Event>;

    /// A peer with sender id `identity` whose queue holds `queue_bytes`, greeted as a session,
    /// and the session's end of its socket.
    fn peer(identity: u64, queue_bytes: usize) -> (Peer, SessionEnd) {
        let (ours, theirs) = StdUnixStream::pair().expect("socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        theirs.set_nonblocking(true).expect("non-blocking");
        let channel = PeerChannel::new(UnixStream::from_std(ours), queue_bytes).into_session();
        let peer = Peer::new(channel, 1, identity, 0, Instant::now());
        let mut end = Channel::new(UnixStream::from_std(theirs), 1 << 20);
        end.accept_fds();
        (peer, end)
    }

    /// Peers 1 and 2 (sender ids 1001 and 1002), with their sessions' ends.
    fn two_peers(queue_bytes: usize) -> (Peers, SessionEnd, SessionEnd) {
        let mut peers = Peers::new(16, 1 << 16);
        let (one, one_end) = peer(1001, queue_bytes);
        let (two, two_end) = peer(1002, queue_bytes);
        peers.insert(1, one);
        peers.insert(2, two);
        (peers, one_end, two_end)
    }

    /// Rooms where members 1 and 2 are logged in (both in the lobby).
    fn lobby() -> Rooms {
        let mut rooms = Rooms::new(Instant::now());
        rooms.login(1, 1001, "alice");
        rooms.login(2, 1002, "bob");
        rooms
    }

    fn to_room(text: &str) -> Delivery {
        Delivery {
            to: Audience::Room("lobby".into()),
            event: Event::Announcement { text: text.into() },
        }
    }

    fn to_one(id: MemberId, text: &str) -> Delivery {
        Delivery { to: Audience::One(id), event: Event::Announcement { text: text.into() } }
    }

    /// Every event the session's end has received so far.
    fn received(end: &mut SessionEnd) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            while let Some(event) = end.next_message().expect("an event") {
                events.push(event);
            }
            match end.read_some().expect("read") {
                ReadOutcome::Data { .. } => {}
                ReadOutcome::WouldBlock | ReadOutcome::Closed { .. } => return events,
            }
        }
    }

    /// The ring a handover gave `end` (the descriptors it carried), read from `start`.
    fn handed_ring(end: &mut SessionEnd, start: u64) -> RingReader {
        let memfd = end.take_fd().expect("the ring's memfd");
        let doorbell = end.take_fd().expect("the ring's doorbell");
        RingReader::open(memfd, doorbell, start).expect("a ring")
    }

    /// Every published record of `ring` from where it stands, decoded as events.
    fn records(ring: &mut RingReader) -> Vec<Event> {
        let mut record = Vec::new();
        let mut events = Vec::new();
        while ring.next(ring.committed(), &mut record).expect("a record") {
            let broadcast: Broadcast<'_> = codec::decode_payload(&record).expect("decodes");
            events.push(broadcast.to_event());
        }
        events
    }

    #[test]
    fn members_get_their_room_ring_and_a_room_delivery_is_appended_once() {
        let (mut peers, mut one_end, mut two_end) = two_peers(1 << 16);
        let mut rooms = lobby();
        let copies = peers.deliver(&mut rooms, vec![to_room("hello")]);
        assert_eq!(copies, 2, "a broadcast counts every member it reaches");
        peers.flush();
        let mut rings = Vec::new();
        for end in [&mut one_end, &mut two_end] {
            assert_eq!(received(end), vec![Event::RingHandover { start: 0 }]);
            rings.push(handed_ring(end, 0));
        }
        assert!(records(&mut rings[0]).is_empty(), "nothing is visible before the turn ends");
        peers.end_turn(&rooms, Instant::now());
        for ring in &mut rings {
            assert_eq!(records(ring), vec![Event::Announcement { text: "hello".into() }]);
        }
        // The ring holds the record once, whatever the room's size.
        assert!(rings[0].position() < 64, "one record: {}", rings[0].position());
    }

    #[test]
    fn a_socket_frame_after_room_records_is_marked_with_the_ring_position() {
        let (mut peers, mut one_end, _two_end) = two_peers(1 << 16);
        let mut rooms = lobby();
        peers.deliver(&mut rooms, vec![to_room("a"), to_one(1, "only you"), to_one(1, "again")]);
        peers.flush();
        let events = received(&mut one_end);
        let [Event::RingHandover { start: 0 }, Event::RingMark { position }, one, again] =
            &events[..]
        else {
            panic!("{events:?}");
        };
        assert!(*position > 0);
        assert_eq!(one, &Event::Announcement { text: "only you".into() });
        assert_eq!(again, &Event::Announcement { text: "again".into() }, "no mark: no new record");
        peers.end_turn(&rooms, Instant::now());
        let mut ring = handed_ring(&mut one_end, 0);
        assert_eq!(records(&mut ring).len(), 1);
        assert_eq!(ring.position(), *position, "the mark is where the record ends");
    }

    #[test]
    fn entering_another_room_marks_the_old_ring_then_hands_over_the_new() {
        let (mut peers, mut one_end, mut two_end) = two_peers(1 << 16);
        let mut rooms = lobby();
        peers.deliver(&mut rooms, vec![to_room("before")]);
        // As the broker does before a `/join`.
        peers.prepare_ring("rust").expect("a ring");
        let moved = rooms.join(2, "rust");
        peers.deliver(&mut rooms, moved);
        let moved = rooms.join(1, "rust");
        peers.deliver(&mut rooms, moved);
        peers.flush();
        peers.end_turn(&rooms, Instant::now());
        let events = received(&mut one_end);
        // Her own arrival comes on her socket, and the new ring starts after it: the topic
        // waits behind no mark.
        let [
            Event::RingHandover { start: 0 },
            Event::RingMark { position },
            Event::RingHandover { start },
            Event::Joined { nick, .. },
            Event::Topic { .. },
        ] = &events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(nick, "alice");
        let mut lobby_ring = handed_ring(&mut one_end, 0);
        let mut rust_ring = handed_ring(&mut one_end, *start);
        let lobby_records = records(&mut lobby_ring);
        assert_eq!(lobby_records[0], Event::Announcement { text: "before".into() });
        assert!(
            matches!(lobby_records.last(), Some(Event::Left { nick, .. }) if nick == "alice"),
            "her departure went to the lobby after her mark: {lobby_records:?}"
        );
        assert!(0 < *position && *position < lobby_ring.position());
        assert_eq!(records(&mut rust_ring), vec![], "nothing after her own arrival yet");
        // Bob, in the room already, reads her arrival in its ring.
        let bob_events = received(&mut two_end);
        let Some(Event::RingHandover { start: bob_start }) = bob_events.get(2) else {
            panic!("{bob_events:?}");
        };
        let _lobby = handed_ring(&mut two_end, 0);
        let mut bob_ring = handed_ring(&mut two_end, *bob_start);
        assert_eq!(
            records(&mut bob_ring),
            vec![Event::Joined { nick: "alice".into(), room: "rust".into() }]
        );
    }

    #[test]
    fn arrivals_and_departures_wait_longer_than_lines_and_a_mark_hurries_them() {
        let (mut peers, mut one_end, _two_end) = two_peers(1 << 16);
        let mut rooms = lobby();
        let start = Instant::now();
        peers.deliver(&mut rooms, vec![to_room("first")]);
        assert_eq!(peers.end_turn(&rooms, start), None, "after a quiet spell: at once");
        rooms.login(3, 1003, "carol");
        let arrival = || Delivery {
            to: Audience::Room("lobby".into()),
            event: Event::Joined { nick: "carol".into(), room: "lobby".into() },
        };
        peers.deliver(&mut rooms, vec![arrival()]);
        let due = peers.end_turn(&rooms, start).expect("the arrival waits");
        assert_eq!(due - start, Duration::from_micros(300), "100 µs per member");
        // A line said meanwhile is published at its own pace, the arrival with it.
        peers.deliver(&mut rooms, vec![to_room("a line")]);
        let due = peers.end_turn(&rooms, start).expect("the line waits");
        assert_eq!(due - start, Duration::from_micros(30), "10 µs per member");
        assert_eq!(peers.end_turn(&rooms, due), None);
        peers.flush();
        let _ = received(&mut one_end);
        let mut ring = handed_ring(&mut one_end, 0);
        assert_eq!(records(&mut ring).len(), 3, "the first line, the arrival, the line");
        // A frame behind a mark does not wait for an arrival's pace.
        peers.deliver(&mut rooms, vec![arrival(), to_one(1, "a reply")]);
        let due = peers.end_turn(&rooms, due).expect("waits");
        assert_eq!(due - start, Duration::from_micros(60), "hurried by the mark");
    }

    #[test]
    fn a_ring_that_just_rang_waits_out_its_quiet_interval() {
        let (mut peers, mut one_end, _two_end) = two_peers(1 << 16);
        let mut rooms = lobby();
        let start = Instant::now();
        peers.deliver(&mut rooms, vec![to_room("first")]);
        assert_eq!(peers.end_turn(&rooms, start), None, "after a quiet spell: at once");
        peers.deliver(&mut rooms, vec![to_room("second"), to_room("third")]);
        let due = peers.end_turn(&rooms, start).expect("the next waits");
        assert_eq!(due - start, Duration::from_micros(20), "10 µs per member");
        peers.flush();
        let _ = received(&mut one_end);
        let mut ring = handed_ring(&mut one_end, 0);
        assert_eq!(records(&mut ring).len(), 1, "the second and third wait");
        assert_eq!(peers.end_turn(&rooms, due), None);
        assert_eq!(records(&mut ring).len(), 2, "published together when it is due");
    }

    #[test]
    fn the_ring_of_a_room_that_vanished_goes_at_the_end_of_the_turn() {
        let (mut peers, _one_end, _two_end) = two_peers(1 << 16);
        let mut rooms = lobby();
        let moved = rooms.join(1, "rust");
        peers.deliver(&mut rooms, moved);
        assert!(peers.rings.get("rust").is_some());
        let back = rooms.join(1, "lobby");
        peers.deliver(&mut rooms, back);
        assert!(peers.rings.get("rust").is_some(), "kept until its last records are published");
        peers.end_turn(&rooms, Instant::now());
        assert!(peers.rings.get("rust").is_none());
        assert!(peers.rings.get("lobby").is_some(), "the lobby stays");
    }

    #[test]
    fn flushing_empties_the_dirty_list_and_keeps_its_capacity() {
        let (mut peers, mut one_end, _two_end) = two_peers(1 << 16);
        peers.deliver(&mut lobby(), vec![to_one(1, "a")]);
        let capacity = peers.dirty.capacity();
        peers.flush();
        assert!(peers.dirty.is_empty());
        assert_eq!(peers.dirty.capacity(), capacity);
        // Flushed peers can be marked again next turn.
        peers.mark_dirty(1);
        assert_eq!(peers.dirty, vec![1]);
        assert_eq!(received(&mut one_end).len(), 2, "the handover and the event");
    }

    #[test]
    fn a_peer_is_doomed_once_with_its_first_reason() {
        let (mut peers, _one_end, _two_end) = two_peers(1 << 16);
        let poll = mio::Poll::new().expect("poller");
        peers.doom(1, LeaveReason::Quit(None));
        peers.doom(2, LeaveReason::TooSlow);
        peers.doom(1, LeaveReason::ConnectionLost);
        assert!(peers.is_doomed(1) && peers.is_doomed(2));
        let removed: Vec<(MemberId, LeaveReason)> =
            std::iter::from_fn(|| peers.remove_next_doomed(poll.registry()))
                .map(|(id, _, reason)| (id, reason))
                .collect();
        // The latest doomed goes first.
        assert_eq!(removed, vec![(2, LeaveReason::TooSlow), (1, LeaveReason::Quit(None))]);
        assert!(!peers.contains(1) && !peers.contains(2));
    }

    #[test]
    fn a_doomed_peer_already_gone_is_skipped() {
        let (mut peers, _one_end, _two_end) = two_peers(1 << 16);
        let poll = mio::Poll::new().expect("poller");
        peers.doom(7, LeaveReason::ConnectionLost);
        peers.doom(1, LeaveReason::ConnectionLost);
        peers.doom(9, LeaveReason::ConnectionLost);
        let next = peers.remove_next_doomed(poll.registry()).map(|(id, _, _)| id);
        assert_eq!(next, Some(1));
        assert!(peers.remove_next_doomed(poll.registry()).is_none());
        assert!(peers.contains(2));
    }

    #[test]
    fn a_removed_peer_gets_what_was_queued_for_it() {
        let (mut peers, mut one_end, _two_end) = two_peers(1 << 16);
        let poll = mio::Poll::new().expect("poller");
        peers.send_to([1], &Event::Shutdown);
        peers.doom(1, LeaveReason::ConnectionLost);
        assert!(peers.remove_next_doomed(poll.registry()).is_some());
        assert_eq!(received(&mut one_end), vec![Event::Shutdown]);
    }

    #[test]
    fn a_full_queue_drops_the_peer_as_too_slow_once() {
        let (mut peers, _one_end, mut two_end) = two_peers(64);
        peers.get_mut(1).expect("peer 1").session = Some(1001);
        let long = "x".repeat(100);
        let copies =
            peers.deliver(&mut lobby(), vec![to_one(1, &long), to_one(2, &long), to_one(1, &long)]);
        assert_eq!(copies, 3, "copies count the recipients, queued or not");
        assert_eq!(peers.take_too_slow_drops(), 2);
        assert_eq!(peers.take_too_slow_drops(), 0);
        assert_eq!(peers.doomed.len(), 2);
        assert!(peers.doomed.iter().all(|(_, reason)| *reason == LeaveReason::TooSlow));
        // Only a session that said Hello is remembered for when it comes back.
        assert_eq!(peers.take_dropped(1001), Some(LeaveReason::TooSlow));
        assert_eq!(peers.take_dropped(1002), None);
        peers.flush();
        let got = received(&mut two_end);
        assert!(!got.iter().any(|event| matches!(event, Event::Announcement { .. })), "{got:?}");
    }

    #[test]
    fn a_session_that_fell_behind_leaves_as_too_slow_and_is_remembered() {
        let (mut peers, _one_end, _two_end) = two_peers(1 << 16);
        peers.get_mut(1).expect("peer 1").session = Some(1001);
        peers.fell_behind(1);
        peers.fell_behind(1);
        assert_eq!(peers.take_too_slow_drops(), 1, "counted once");
        assert_eq!(peers.doomed, vec![(1, LeaveReason::TooSlow)]);
        assert_eq!(peers.take_dropped(1001), Some(LeaveReason::TooSlow));
    }

    #[test]
    fn a_delivery_to_one_is_queued_for_that_peer_only() {
        let (mut peers, mut one_end, mut two_end) = two_peers(1 << 16);
        let only = Delivery { to: Audience::One(2), event: Event::Shutdown };
        assert_eq!(peers.deliver(&mut lobby(), vec![only]), 1);
        peers.flush();
        assert_eq!(received(&mut one_end), vec![Event::RingHandover { start: 0 }]);
        assert_eq!(received(&mut two_end), vec![Event::RingHandover { start: 0 }, Event::Shutdown]);
    }
}
