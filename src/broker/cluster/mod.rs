//! Rooms that span hosts (`[cluster]`): this node's side of the shared Redis stream.
//!
//! Nodes meet only in Redis (`bridge` owns the threads that talk to it). A room broadcast
//! said here is not shown at once: it is published, and every node, this one included,
//! shows the room's broadcasts in the order the stream has them, so every member everywhere
//! sees the same order. Replies to one session stay local and immediate. Each node keeps a
//! replica of the other nodes' members (`replica`) from the roster hashes and the stream,
//! for `/who`, `/whois`, `/msg` and the nickname checks, and holds its own members' nicks in
//! Redis (`SET NX`, renewed by a heartbeat), so two nodes cannot both admit one nick while
//! they are in contact.
//!
//! While Redis is out of reach the node's own rooms go on: broadcasts are shown here at
//! once and queued (at most [`WAITING_MAX`]; past that the oldest are dropped and counted,
//! and the members are told how many when contact is back), logins are admitted on what the
//! replica knows and claimed at the next heartbeat (a member that then finds its nick
//! taken elsewhere is renamed). When both threads are back the queue goes out (marked as
//! shown here already) and the reader reads on from its last ID, or tells the rooms that
//! lines were missed when the stream was trimmed past it. A node whose heartbeat is older
//! than [`NODE_LAPSE`] is gone: its members leave, announced by each node to its own
//! members.
//!
//! This module owns the cluster's state and decisions; the broker's glue (where requests
//! and deliveries pass through it) is `serve`. It never talks to Redis itself and never
//! waits.

pub mod bridge;
mod replica;
pub(super) mod serve;
#[cfg(test)]
pub mod test_redis;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::warn;

use crate::proto::cluster::{EntryBody, RemoteMember};
use crate::proto::codec;
use bridge::{Bridge, Outgoing, RosterChange};
use replica::Replica;

use super::room::{Audience, Delivery, MemberId};
use crate::proto::Event;

/// How often a node renews its heartbeat and its nicknames.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A node whose heartbeat is older than this is gone: its members leave everywhere.
pub const NODE_LAPSE: Duration = Duration::from_secs(15);
/// Entries waiting for Redis, at most; past it the oldest are dropped (and counted).
pub const WAITING_MAX: usize = 10_000;
/// Skipped stream entries are logged at most this often per writing node.
const SKIP_LOG_EVERY: Duration = Duration::from_secs(10);

/// A publish job not yet handed to the writer: its number (rising, in the order things
/// were said), and the room broadcast it carries while that is not shown here yet.
struct Pending {
    tag: u64,
    job: Outgoing,
    unshown: Option<Delivery>,
}

/// A publish job in the writer's hands.
struct InFlight {
    tag: u64,
    sent: Instant,
    unshown: Option<Delivery>,
}

/// A request waiting for its nickname's claim.
struct Parked {
    id: MemberId,
    key: String,
    request: crate::proto::Request,
}

/// The figures `chatctl status` and the metrics show.
#[derive(Debug, Default, Clone)]
pub struct ClusterFigures {
    pub published: u64,
    pub read: u64,
    pub skipped: u64,
    /// Entries dropped from the queue while Redis was away.
    pub dropped: u64,
    pub lost_episodes: u64,
}

/// This node's side of the cluster.
pub(super) struct Cluster {
    node: String,
    bridge: Bridge,
    reader_up: bool,
    writer_up: bool,
    /// The members were told contact is lost, and not yet that it is back.
    told_lost: bool,
    /// Publish jobs waiting for the writer (Redis away, or its queue full), by number.
    waiting: VecDeque<Pending>,
    /// Jobs handed to the writer and not yet in the stream, or (room broadcasts) not yet
    /// read back, by number.
    in_flight: VecDeque<InFlight>,
    /// This node's room broadcasts numbered up to this are shown here already.
    shown_through: u64,
    /// The writer answered since contact was last lost (a writer can hang on a cut network
    /// without knowing it).
    writer_answers: bool,
    /// Lines dropped from `waiting` since the members were last told.
    undelivered: u64,
    next_tag: u64,
    replica: Replica,
    /// Every node's last heartbeat (Redis's clock, ms), and Redis's clock at the last beat.
    nodes: BTreeMap<String, u64>,
    redis_ms: u64,
    /// When that beat was answered: the ages shown are as of now, not of the beat.
    beat_at: Instant,
    /// Nodes with members here and no heartbeat in Redis: since when (Redis's clock).
    unbeaten_since: HashMap<String, u64>,
    next_beat: Instant,
    /// This node's full roster is to be published then (after a broker restart, once the
    /// sessions have had time to resume).
    roster_due: Option<Instant>,
    next_ticket: u64,
    claims: HashMap<u64, Parked>,
    /// Claims granted, waiting for their request to be applied: (member, folded nick).
    granted: Vec<(MemberId, String)>,
    skip_logged: HashMap<String, (Instant, u64)>,
    /// The last account change this node knows is in the database.
    accounts_settled: u64,
    /// The last stream ID read, for status.
    last_id: String,
    /// Why Redis is out of reach, while it is.
    lost_why: Option<String>,
    round_trip_ms_last: f64,
    round_trip_ms_max: f64,
    figures: ClusterFigures,
}

impl Cluster {
    pub(super) fn new(node: String, bridge: Bridge, roster_due: Instant) -> Cluster {
        Cluster {
            node,
            bridge,
            reader_up: false,
            writer_up: false,
            told_lost: false,
            waiting: VecDeque::new(),
            in_flight: VecDeque::new(),
            shown_through: 0,
            writer_answers: false,
            undelivered: 0,
            next_tag: 0,
            replica: Replica::default(),
            nodes: BTreeMap::new(),
            redis_ms: 0,
            beat_at: Instant::now(),
            unbeaten_since: HashMap::new(),
            next_beat: Instant::now(),
            roster_due: Some(roster_due),
            next_ticket: 0,
            claims: HashMap::new(),
            granted: Vec::new(),
            skip_logged: HashMap::new(),
            accounts_settled: 0,
            last_id: String::new(),
            lost_why: None,
            round_trip_ms_last: 0.0,
            round_trip_ms_max: 0.0,
            figures: ClusterFigures::default(),
        }
    }

    /// Both threads are in contact with Redis, and the writer has answered since contact
    /// was last lost: broadcasts go through the stream.
    fn connected(&self) -> bool {
        self.reader_up && self.writer_up && self.writer_answers
    }

    /// When the loop must wake for the cluster: a heartbeat, the roster (both wait for
    /// Redis; its return wakes the loop anyway).
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let beat = self.writer_up.then_some(self.next_beat);
        let roster = self.roster_due.filter(|_| self.connected());
        beat.into_iter().chain(roster).min()
    }

    /// Publishes a room broadcast: through the stream while in contact (then it is shown
    /// here when read back), else queued and to be shown here at once (returned).
    fn publish_room(&mut self, room: String, event: Event) -> Option<Delivery> {
        let number = self.next_tag + 1;
        let connected = self.connected();
        let body = EntryBody::Room { room: room.clone(), event: event.clone(), number };
        let delivery = Delivery { to: Audience::Room(room), event };
        match connected {
            true => {
                self.publish_with(&body, RosterChange::None, Some(delivery));
                None
            }
            false => {
                self.publish_with(&body, RosterChange::None, None);
                self.shown_through = number;
                Some(delivery)
            }
        }
    }

    /// Publishes `body` with `roster`, or queues it while Redis is away or the writer is
    /// busy; queued jobs keep their order.
    fn publish(&mut self, body: &EntryBody, roster: RosterChange) {
        self.publish_with(body, roster, None);
    }

    /// [`publish`](Self::publish), with the room broadcast it carries when it is not shown
    /// here yet.
    fn publish_with(&mut self, body: &EntryBody, roster: RosterChange, unshown: Option<Delivery>) {
        let mut bytes = Vec::new();
        if let Err(err) = codec::encode_payload(body, &mut bytes) {
            warn!("cluster: cannot encode an entry: {err}");
            return;
        }
        self.next_tag += 1;
        let tag = self.next_tag;
        let pending = Pending { tag, job: Outgoing::Publish { tag, body: bytes, roster }, unshown };
        if self.connected() && self.waiting.is_empty() {
            self.hand_over(pending);
        } else {
            self.wait(pending);
        }
    }

    /// Hands a job to the writer, or puts it back first in the queue when the writer's
    /// queue is full (false).
    fn hand_over(&mut self, pending: Pending) -> bool {
        let Pending { tag, job, unshown } = pending;
        match self.bridge.send(job) {
            Ok(()) => {
                self.in_flight.push_back(InFlight { tag, sent: Instant::now(), unshown });
                true
            }
            Err(job) => {
                self.waiting.push_front(Pending { tag, job, unshown });
                false
            }
        }
    }

    /// Queues a job for later, dropping the oldest past [`WAITING_MAX`].
    fn wait(&mut self, pending: Pending) {
        if self.waiting.len() >= WAITING_MAX && self.waiting.pop_front().is_some() {
            if self.undelivered == 0 {
                warn!(
                    "cluster: {WAITING_MAX} entries wait for Redis; the oldest are dropped and never reach the other servers"
                );
            }
            self.undelivered += 1;
            self.figures.dropped += 1;
        }
        self.waiting.push_back(pending);
    }

    /// Jobs the writer gives back (Redis went away under them): back in the queue in the
    /// order of their numbers, which is the order they were said in. (Sessions drop a line
    /// numbered below one they showed, so a sender's lines must keep their order.)
    fn unsent(&mut self, jobs: Vec<Outgoing>) {
        for job in jobs {
            let Outgoing::Publish { tag, .. } = job else { continue };
            let unshown = match self.in_flight.iter().position(|sent| sent.tag == tag) {
                Some(at) => self.in_flight.remove(at).and_then(|sent| sent.unshown),
                None => None,
            };
            let at = self.waiting.partition_point(|waiting| waiting.tag < tag);
            self.waiting.insert(at, Pending { tag, job, unshown });
        }
    }

    /// The writer has these in the stream: what needs no reading back is done.
    fn published(&mut self, tags: &[u64]) {
        self.figures.published += tags.len() as u64;
        self.in_flight.retain(|sent| sent.unshown.is_some() || !tags.contains(&sent.tag));
    }

    /// Contact was lost with room broadcasts not shown here yet (in the writer's hands, or
    /// queued): they are shown now, in the order they were said, and numbered as shown, so
    /// that reading them back later shows them no second time.
    fn take_unshown(&mut self) -> Vec<Delivery> {
        let mut unshown: Vec<(u64, Delivery)> = Vec::new();
        for sent in self.in_flight.iter_mut() {
            unshown.extend(sent.unshown.take().map(|delivery| (sent.tag, delivery)));
        }
        for waiting in self.waiting.iter_mut() {
            unshown.extend(waiting.unshown.take().map(|delivery| (waiting.tag, delivery)));
        }
        unshown.sort_by_key(|(tag, _)| *tag);
        self.shown_through = self.next_tag;
        unshown.into_iter().map(|(_, delivery)| delivery).collect()
    }

    /// Hands queued jobs to the writer while it takes them.
    fn pump(&mut self) {
        if !self.connected() {
            return;
        }
        while let Some(pending) = self.waiting.pop_front() {
            if !self.hand_over(pending) {
                break;
            }
        }
    }

    /// This node's room broadcast number `number` came back from the stream: whether to
    /// show it now (not if it was shown when contact was lost).
    fn read_back(&mut self, number: u64) -> bool {
        while self.in_flight.front().is_some_and(|sent| sent.tag <= number) {
            if let Some(sent) = self.in_flight.pop_front()
                && sent.tag == number
            {
                let ms = sent.sent.elapsed().as_secs_f64() * 1000.0;
                self.round_trip_ms_last = ms;
                self.round_trip_ms_max = self.round_trip_ms_max.max(ms);
            }
        }
        number > self.shown_through
    }

    /// A stream entry from `node` could not be used: logged at most once per
    /// [`SKIP_LOG_EVERY`] per node, with how many were skipped meanwhile.
    fn skipped(&mut self, id: &str, node: &str, why: &str) {
        self.figures.skipped += 1;
        let now = Instant::now();
        let entry = self.skip_logged.entry(node.to_string()).or_insert((now - SKIP_LOG_EVERY, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= SKIP_LOG_EVERY {
            let node = crate::text::sanitize(node);
            let why = crate::text::sanitize(why);
            warn!("cluster: skipped stream entry {id} from {node}: {why} ({} skipped)", entry.1);
            *entry = (now, 0);
        }
    }

    /// This node's roster: every local member, as `rows` gives them.
    fn roster_job(rows: Vec<RemoteMember>) -> (EntryBody, RosterChange) {
        let keyed =
            rows.iter().map(|member| (crate::names::fold(&member.nick), member.clone())).collect();
        (EntryBody::Roster { members: rows }, RosterChange::Replace(keyed))
    }

    /// The figures `chatctl status` shows.
    fn status(&self) -> crate::proto::control::ClusterStatus {
        use crate::proto::control::{ClusterStatus, NodeRow};
        let per_node = self.replica.per_node();
        let nodes = self
            .nodes
            .iter()
            .map(|(name, beat)| NodeRow {
                name: name.clone(),
                heartbeat_age_ms: (self.redis_ms + self.beat_at.elapsed().as_millis() as u64)
                    .saturating_sub(*beat),
                members: per_node.get(name.as_str()).copied().unwrap_or_default() as u64,
            })
            .collect();
        ClusterStatus {
            node: self.node.clone(),
            connected: self.connected(),
            lost: self.lost_why.clone(),
            nodes,
            last_id: self.last_id.clone(),
            round_trip_ms_last: self.round_trip_ms_last,
            round_trip_ms_max: self.round_trip_ms_max,
            queued: self.waiting.len() as u64,
            dropped: self.figures.dropped,
            published: self.figures.published,
            read: self.figures.read,
            skipped: self.figures.skipped,
            lost_episodes: self.figures.lost_episodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::bridge::BridgeSettings;
    use super::*;

    /// A cluster whose Redis is nowhere (a port nothing listens on): its threads try and
    /// fail, and the loop's side is all there is to look at.
    fn out_of_contact() -> (Cluster, mio::Poll) {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let settings = BridgeSettings {
            url: "redis://127.0.0.1:1/0".into(),
            password: None,
            node: "a".into(),
        };
        let bridge = Bridge::start(settings, waker).expect("bridge");
        (Cluster::new("a".into(), bridge, Instant::now()), poll)
    }

    fn line(n: u64) -> Event {
        Event::Chat { from: "alice".into(), sender: 1, seq: n, text: format!("line {n}") }
    }

    #[test]
    fn out_of_contact_a_line_is_shown_at_once_and_queued() {
        let (mut cluster, _poll) = out_of_contact();
        let shown = cluster.publish_room("lobby".into(), line(1));
        assert_eq!(shown.map(|d| d.event), Some(line(1)));
        assert_eq!(cluster.waiting.len(), 1);
        // Shown here: read back later, it is not shown again.
        assert!(!cluster.read_back(1));
    }

    #[test]
    fn the_queue_keeps_the_newest_and_counts_what_it_dropped() {
        let (mut cluster, _poll) = out_of_contact();
        for n in 1..=(WAITING_MAX as u64 + 3) {
            cluster.publish_room("lobby".into(), line(n));
        }
        assert_eq!(cluster.waiting.len(), WAITING_MAX);
        assert_eq!(cluster.undelivered, 3);
        assert_eq!(cluster.figures.dropped, 3);
        assert_eq!(cluster.waiting.front().map(|p| p.tag), Some(4), "the oldest went");
    }

    #[test]
    fn lines_given_back_go_before_what_was_queued_since_and_are_shown_once_in_order() {
        let (mut cluster, _poll) = out_of_contact();
        // Two lines in the writer's hands, not shown yet (as while in contact).
        for n in 1..=2 {
            cluster.next_tag += 1;
            let tag = cluster.next_tag;
            let delivery = Delivery { to: Audience::Room("lobby".into()), event: line(n) };
            cluster.in_flight.push_back(InFlight {
                tag,
                sent: Instant::now(),
                unshown: Some(delivery),
            });
        }
        // Contact lost: a third is said (shown at once, queued).
        let shown_at_loss = cluster.take_unshown();
        assert_eq!(
            shown_at_loss.iter().map(|d| d.event.clone()).collect::<Vec<_>>(),
            [line(1), line(2)]
        );
        assert!(cluster.publish_room("lobby".into(), line(3)).is_some());
        // The writer gives the two back: they go first, and nothing is left to show.
        let given_back = (1..=2)
            .map(|tag| Outgoing::Publish { tag, body: Vec::new(), roster: RosterChange::None })
            .collect();
        cluster.unsent(given_back);
        assert_eq!(cluster.waiting.iter().map(|p| p.tag).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(cluster.take_unshown().is_empty());
        // Read back once contact is back: none of the three is shown a second time.
        assert!((1..=3).all(|number| !cluster.read_back(number)));
        assert!(cluster.read_back(4), "a line said after that is shown when read back");
    }
}
