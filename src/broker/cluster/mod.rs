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

use super::room::MemberId;

/// How often a node renews its heartbeat and its nicknames.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A node whose heartbeat is older than this is gone: its members leave everywhere.
pub const NODE_LAPSE: Duration = Duration::from_secs(15);
/// Entries waiting for Redis, at most; past it the oldest are dropped (and counted).
pub const WAITING_MAX: usize = 10_000;
/// Skipped stream entries are logged at most this often per writing node.
const SKIP_LOG_EVERY: Duration = Duration::from_secs(10);

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
    /// Publish jobs waiting for the writer (Redis away, or its queue full), oldest first.
    waiting: VecDeque<Outgoing>,
    /// How many jobs at the front of `waiting` the writer gave back.
    given_back: usize,
    /// Lines dropped from `waiting` since the members were last told.
    undelivered: u64,
    next_tag: u64,
    replica: Replica,
    /// Every node's last heartbeat (Redis's clock, ms), and Redis's clock at the last beat.
    nodes: BTreeMap<String, u64>,
    redis_ms: u64,
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
    /// When each of this node's entries in the writer's hands was handed over, oldest first:
    /// read back in that order, they give the stream's round trip.
    sent_at: VecDeque<Instant>,
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
            given_back: 0,
            undelivered: 0,
            next_tag: 0,
            replica: Replica::default(),
            nodes: BTreeMap::new(),
            redis_ms: 0,
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
            sent_at: VecDeque::new(),
            round_trip_ms_last: 0.0,
            round_trip_ms_max: 0.0,
            figures: ClusterFigures::default(),
        }
    }

    /// Both threads are in contact with Redis: broadcasts go through the stream.
    fn connected(&self) -> bool {
        self.reader_up && self.writer_up
    }

    /// When the loop must wake for the cluster: a heartbeat, the roster (both wait for
    /// Redis; its return wakes the loop anyway).
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let beat = self.writer_up.then_some(self.next_beat);
        let roster = self.roster_due.filter(|_| self.connected());
        beat.into_iter().chain(roster).min()
    }

    /// Publishes `body` with `roster`, or queues it while Redis is away or the writer is
    /// busy; queued jobs keep their order.
    fn publish(&mut self, body: &EntryBody, roster: RosterChange) {
        let mut bytes = Vec::new();
        if let Err(err) = codec::encode_payload(body, &mut bytes) {
            warn!("cluster: cannot encode an entry: {err}");
            return;
        }
        self.next_tag += 1;
        let job = Outgoing::Publish { tag: self.next_tag, body: bytes, roster };
        let refused = match self.connected() && self.waiting.is_empty() {
            true => self.bridge.send(job).err(),
            false => Some(job),
        };
        match refused {
            Some(job) => self.wait(job),
            None => self.sent_at.push_back(Instant::now()),
        }
    }

    /// Queues a job for later, dropping the oldest past [`WAITING_MAX`].
    fn wait(&mut self, job: Outgoing) {
        if self.waiting.len() >= WAITING_MAX && self.waiting.pop_front().is_some() {
            self.given_back = self.given_back.saturating_sub(1);
            if self.undelivered == 0 {
                warn!(
                    "cluster: {WAITING_MAX} entries wait for Redis; the oldest are dropped and never reach the other servers"
                );
            }
            self.undelivered += 1;
            self.figures.dropped += 1;
        }
        self.waiting.push_back(job);
    }

    /// Jobs the writer gives back (Redis went away under them), in the order they were
    /// sent: they go after those it gave back before and before everything queued here
    /// since, which came later (a job is queued here only once nothing goes to the writer).
    /// Sessions drop a line numbered below one they showed, so the order of a sender's
    /// lines must hold.
    fn unsent(&mut self, jobs: Vec<Outgoing>) {
        for job in jobs {
            if matches!(job, Outgoing::Publish { .. }) {
                self.waiting.insert(self.given_back.min(self.waiting.len()), job);
                self.given_back += 1;
            }
        }
    }

    /// Hands queued jobs to the writer while it takes them.
    fn pump(&mut self) {
        if !self.connected() {
            return;
        }
        while let Some(job) = self.waiting.pop_front() {
            if let Err(job) = self.bridge.send(job) {
                self.waiting.push_front(job);
                break;
            }
            self.given_back = self.given_back.saturating_sub(1);
            self.sent_at.push_back(Instant::now());
        }
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

    /// One of this node's entries came back from the stream.
    fn read_back(&mut self) {
        if let Some(sent) = self.sent_at.pop_front() {
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            self.round_trip_ms_last = ms;
            self.round_trip_ms_max = self.round_trip_ms_max.max(ms);
        }
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
                heartbeat_age_ms: self.redis_ms.saturating_sub(*beat),
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
