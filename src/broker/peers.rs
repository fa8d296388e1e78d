//! The fan-out engine: the table of connections on `broker.sock` and the mechanics of getting
//! events to them.
//!
//! It owns each peer's channel ([`PeerChannel`]), the dirty list (peers with bytes queued this turn), the
//! doomed list (peers to remove once the current event is handled) and the one buffer every
//! event is encoded into. An event is encoded once; the same bytes are queued for each
//! recipient ([`Peers::deliver`]) and written once per recipient per loop turn
//! ([`Peers::flush`]). A peer whose queue would overflow is dropped as too slow, once.
//!
//! It must not decide anything about what the events mean: which requests are allowed, who is
//! in which room ([`Rooms`] is passed in, read-only) or what a departure tells the room is the
//! broker's. It never blocks: every write is non-blocking and every queue is bounded.

use std::collections::HashMap;
use std::collections::hash_map;
use std::time::Instant;

use log::{debug, error, warn};
use mio::Registry;

use super::link::PeerChannel;
use super::remembered::Remembered;
use super::room::{Audience, Delivery, MemberId, Rooms};
use crate::channel::Frames;
use crate::outbuf::Overflow;
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
    /// Already on the dirty list this turn.
    dirty: bool,
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
            last_seq: None,
            out_of_sequence_logged: false,
            too_slow: false,
            connected_at,
            last_active: now,
            kicked: false,
            dirty: false,
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
    /// Most peers connected since the heap was last trimmed.
    high_water: usize,
    /// Sessions dropped as too slow, and why, in case they come back.
    dropped: Remembered<LeaveReason>,
    /// Drops as too slow not yet counted in the broker's figures.
    too_slow_drops: u64,
}

impl Peers {
    /// An empty table that remembers up to `dropped_remembered` sessions dropped as too slow.
    pub(super) fn new(dropped_remembered: usize) -> Peers {
        Peers {
            table: HashMap::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            frame: Frames::new(),
            high_water: 0,
            dropped: Remembered::new(dropped_remembered),
            too_slow_drops: 0,
        }
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

    pub(super) fn iter_mut(&mut self) -> hash_map::IterMut<'_, MemberId, Peer> {
        self.table.iter_mut()
    }

    pub(super) fn values(&self) -> hash_map::Values<'_, MemberId, Peer> {
        self.table.values()
    }

    /// Encodes each event once and queues the same bytes for every recipient, resolving a
    /// room to whoever is in it now. Returns how many copies were queued.
    pub(super) fn deliver(&mut self, rooms: &Rooms, deliveries: Vec<Delivery>) -> u64 {
        let mut copies = 0;
        for delivery in deliveries {
            if !self.encode(&delivery.event) {
                continue;
            }
            match &delivery.to {
                Audience::One(id) => {
                    self.queue_frame(*id);
                    copies += 1;
                }
                Audience::Room(key) => copies += self.fan_out_to_members(rooms, key),
            }
        }
        copies
    }

    /// The per-member path of a room broadcast: one copy of the encoded frame in each
    /// member's queue. (The shared broadcast ring of issue #15 replaces this method.)
    fn fan_out_to_members(&mut self, rooms: &Rooms, key: &str) -> u64 {
        let mut copies = 0;
        for id in rooms.members_of(key) {
            self.queue_frame(id);
            copies += 1;
        }
        copies
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

    /// Queues what `send` puts in `id`'s channel (the one way anything is queued for a peer).
    /// A peer whose queue is full is dropped as too slow, once: what comes for it before it
    /// is removed is neither queued nor logged again.
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
        match send(&mut peer.channel) {
            Ok(()) => {
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(id);
                }
            }
            Err(overflow) => {
                warn!("dropping session pid {} ({}): too slow, {overflow}", peer.pid, peer.client);
                peer.too_slow = true;
                if peer.session.is_some() {
                    // If it takes the closed connection for a broker restart, it is told.
                    self.dropped.insert(peer.identity, LeaveReason::TooSlow);
                }
                self.too_slow_drops += 1;
                self.doom(id, LeaveReason::TooSlow);
            }
        }
    }

    /// The session said its room's ring lapped it: it leaves as too slow, counted and
    /// remembered like a session whose queue overflowed.
    pub(super) fn fell_behind(&mut self, id: MemberId) {
        let Some(peer) = self.table.get_mut(&id) else {
            return;
        };
        if !peer.too_slow {
            warn!(
                "dropping session pid {} ({}): too slow, its room's ring lapped it",
                peer.pid, peer.client
            );
            peer.too_slow = true;
            self.dropped.insert(peer.identity, LeaveReason::TooSlow);
            self.too_slow_drops += 1;
        }
        self.doom(id, LeaveReason::TooSlow);
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream as StdUnixStream;

    use mio::net::UnixStream;

    use super::*;

    /// A peer with sender id `identity` whose queue holds `queue_bytes`, and the session's
    /// end of its socket.
    fn peer(identity: u64, queue_bytes: usize) -> (Peer, StdUnixStream) {
        let (ours, theirs) = StdUnixStream::pair().expect("socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        theirs.set_nonblocking(true).expect("non-blocking");
        let channel = PeerChannel::new(UnixStream::from_std(ours), queue_bytes);
        (Peer::new(channel, 1, identity, 0, Instant::now()), theirs)
    }

    /// Peers 1 and 2 (sender ids 1001 and 1002), with their sessions' ends.
    fn two_peers(queue_bytes: usize) -> (Peers, StdUnixStream, StdUnixStream) {
        let mut peers = Peers::new(16);
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

    /// Every event the session's end has received so far.
    fn received(end: &mut StdUnixStream) -> Vec<Event> {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = end.read(&mut chunk) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        let mut events = Vec::new();
        let mut at = 0;
        while let Some((event, used)) =
            crate::proto::codec::decode_frame::<Event>(&bytes[at..]).expect("an event")
        {
            events.push(event);
            at += used;
        }
        events
    }

    #[test]
    fn a_room_delivery_reaches_every_member_once() {
        let (mut peers, mut one_end, mut two_end) = two_peers(1 << 16);
        let copies = peers.deliver(&lobby(), vec![to_room("hello")]);
        assert_eq!(copies, 2);
        peers.flush();
        let hello = Event::Announcement { text: "hello".into() };
        assert_eq!(received(&mut one_end), vec![hello.clone()]);
        assert_eq!(received(&mut two_end), vec![hello]);
    }

    #[test]
    fn a_peer_is_on_the_dirty_list_once_per_turn() {
        let (mut peers, _one_end, _two_end) = two_peers(1 << 16);
        let rooms = lobby();
        peers.deliver(&rooms, vec![to_room("a"), to_room("b")]);
        peers.mark_dirty(1);
        assert_eq!(peers.dirty, vec![1, 2]);
    }

    #[test]
    fn flushing_empties_the_dirty_list_and_keeps_its_capacity() {
        let (mut peers, mut one_end, _two_end) = two_peers(1 << 16);
        peers.deliver(&lobby(), vec![to_room("a")]);
        let capacity = peers.dirty.capacity();
        peers.flush();
        assert!(peers.dirty.is_empty());
        assert_eq!(peers.dirty.capacity(), capacity);
        // Flushed peers can be marked again next turn.
        peers.mark_dirty(1);
        assert_eq!(peers.dirty, vec![1]);
        assert_eq!(received(&mut one_end).len(), 1);
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
        let rooms = lobby();
        let long = "x".repeat(100);
        let copies = peers.deliver(&rooms, vec![to_room(&long), to_room(&long)]);
        assert_eq!(copies, 4, "copies count the recipients, queued or not");
        assert_eq!(peers.take_too_slow_drops(), 2);
        assert_eq!(peers.take_too_slow_drops(), 0);
        assert_eq!(peers.doomed.len(), 2);
        assert!(peers.doomed.iter().all(|(_, reason)| *reason == LeaveReason::TooSlow));
        // Only a session that said Hello is remembered for when it comes back.
        assert_eq!(peers.take_dropped(1001), Some(LeaveReason::TooSlow));
        assert_eq!(peers.take_dropped(1002), None);
        peers.flush();
        assert!(received(&mut two_end).is_empty());
    }

    #[test]
    fn a_delivery_to_one_is_queued_for_that_peer_only() {
        let (mut peers, mut one_end, mut two_end) = two_peers(1 << 16);
        let only = Delivery { to: Audience::One(2), event: Event::Shutdown };
        assert_eq!(peers.deliver(&lobby(), vec![only]), 1);
        peers.flush();
        assert!(received(&mut one_end).is_empty());
        assert_eq!(received(&mut two_end), vec![Event::Shutdown]);
    }
}
