//! The broker's Redis threads: the only code that talks to Redis.
//!
//! Two threads, each with its own connection (a `redis::Connection` has no descriptor mio
//! could watch, and a blocked `XREAD` would hold up anything sent on the same connection):
//!
//! - the **writer** takes [`Outgoing`] jobs from a bounded channel, in order, and does each
//!   with one round trip: an entry is `XADD` (with `MAXLEN ~`) together with the writer's
//!   roster change in one `MULTI`; a claim, a release and a heartbeat are Lua scripts, so that
//!   each is atomic in Redis;
//! - the **reader** loops on `XREAD BLOCK` from the last ID it read, and hands the entries on.
//!
//! Everything either thread learns goes to the loop as an [`Incoming`] over one channel,
//! followed by a wake of the broker's `mio::Waker`; the loop never waits for Redis. After any
//! error a thread drops its connection (one that timed out may be out of step: redis-rs#1252)
//! and connects again, backing off from [`RECONNECT_FIRST`] to [`RECONNECT_MAX`]; the reader
//! then reads on from its last ID, so nothing in the stream's window is missed. Each thread
//! reports losing Redis and getting it back, once per episode.
//!
//! It decides nothing about rooms or members: what an entry means, what to do while Redis is
//! away and what to queue is `broker::cluster`'s. The threads are started by the broker after
//! its signals are blocked, so they inherit that mask; they end when the loop drops the
//! [`Bridge`] (the writer when its channel closes, the reader within one `BLOCK`).

mod link;
mod reader;
mod values;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use crate::proto::cluster::RemoteMember;

/// The stream every node appends to and reads.
pub const STREAM_KEY: &str = "chatd:stream";
/// Entries the stream keeps (`XADD MAXLEN ~`): at 50 lines/s about three minutes of outage
/// that a node can catch up on.
pub const STREAM_MAXLEN: usize = 10_000;
/// `chatd:nick:<folded nick>` = the node that has it, for [`NICK_TTL`].
pub const NICK_KEY_PREFIX: &str = "chatd:nick:";
/// `chatd:roster:<node>`: a hash, folded nick → bincode [`RemoteMember`].
pub const ROSTER_KEY_PREFIX: &str = "chatd:roster:";
/// `chatd:nodes`: a hash, node → the Redis clock (ms) at its last heartbeat.
pub const NODES_KEY: &str = "chatd:nodes";
/// How long a nick stays a node's without a heartbeat renewing it.
pub const NICK_TTL: Duration = Duration::from_secs(30);
/// How long the reader's `XREAD` blocks; the connection's read timeout is
/// [`READ_TIMEOUT`], longer, so a reply never comes after the thread gave up on it.
pub const XREAD_BLOCK: Duration = Duration::from_secs(1);
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries one `XREAD` returns at most.
pub const XREAD_COUNT: usize = 256;
/// Back-off between connection attempts.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(100);
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Jobs waiting for the writer: past this, [`Bridge::send`] refuses (the loop queues).
pub const WRITER_QUEUE: usize = 4096;

/// Where Redis is and who this node is.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// `redis://` or `rediss://` URL, possibly with a password in it.
    pub url: String,
    /// The password from `redis_password_file`, when there is one (overrides the URL's).
    pub password: Option<String>,
    pub node: String,
}

/// A change to this node's roster hash (`chatd:roster:<node>`), made in the same `MULTI` as
/// the entry that tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterChange {
    None,
    /// `HSET` this member under its folded nick (and `HDEL` `previous`, a nick it had).
    Set {
        key: String,
        member: RemoteMember,
        previous: Option<String>,
    },
    /// `HDEL` one folded nick.
    Remove {
        key: String,
    },
    /// `DEL` the hash, then `HSET` all of these (folded nick, member).
    Replace(Vec<(String, RemoteMember)>),
}

/// What the loop asks the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// `XADD STREAM_KEY MAXLEN ~ STREAM_MAXLEN * v <CLUSTER_VERSION> n <node> e <body>`
    /// with the roster change, in one `MULTI`. `body` is an encoded `EntryBody`. `tag`
    /// comes back in [`Incoming::Published`] or [`Incoming::Unsent`].
    Publish { tag: u64, body: Vec<u8>, roster: RosterChange },
    /// Take `chatd:nick:<key>` for this node (`SET NX PX`), or keep it if it is this node's
    /// already; answered by [`Incoming::Claimed`].
    Claim { ticket: u64, key: String },
    /// Give up `chatd:nick:<key>` if it is this node's.
    Release { key: String },
    /// Every `HEARTBEAT_EVERY`: set this node's time in `NODES_KEY` to Redis's clock, renew
    /// each of these nick keys (taking a lapsed one back), and answer with
    /// [`Incoming::Beat`].
    Heartbeat { nicks: Vec<String> },
    /// `HDEL NODES_KEY node` and `DEL chatd:roster:<node>`: a node whose heartbeat lapsed.
    ForgetNode { node: String },
}

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// The stream ID, as Redis wrote it (`<ms>-<n>`).
    pub id: String,
    pub node: String,
    /// The entry's `v` field.
    pub version: u32,
    /// The entry's `e` field, still encoded. `None` when the entry lacks a field or a field
    /// is not what it should be (then `problem` says what).
    pub body: Option<Vec<u8>>,
    pub problem: Option<String>,
}

/// What the threads tell the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The reader is connected (first time, or again) and reads from `from_id`. `rosters`:
    /// every other node's roster hash as of that ID (read with it in one `MULTI`), for the
    /// loop to replace its replica; `missed`: after a reconnect, the stream was trimmed past
    /// the last ID read (entries were lost).
    ReaderUp {
        from_id: String,
        rosters: Vec<(String, Vec<RemoteMember>)>,
        missed: bool,
    },
    /// The writer is connected (first time, or again): whatever was unsent can be sent.
    WriterUp,
    /// A thread lost Redis (`reader` says which one); `why` in plain words.
    Lost {
        reader: bool,
        why: String,
    },
    /// Entries in the stream's order, every node's (this one's too).
    Entries(Vec<StreamEntry>),
    /// These publish jobs are in the stream.
    Published(Vec<u64>),
    /// These jobs could not be done (Redis went away meanwhile); the loop decides what now.
    /// Claims come back as `Claimed { granted: false, unreachable: true }`, not here.
    Unsent(Vec<Outgoing>),
    Claimed {
        ticket: u64,
        granted: bool,
        unreachable: bool,
    },
    /// A heartbeat's answer: Redis's clock, every node's last heartbeat by that clock, and
    /// the nicks of this node that another node holds now (this node lost them).
    Beat {
        redis_ms: u64,
        nodes: Vec<(String, u64)>,
        lost: Vec<String>,
    },
}

/// The loop's handle on the two threads.
pub struct Bridge {
    to_writer: SyncSender<Outgoing>,
    from_threads: Receiver<Incoming>,
    /// Set when the bridge is dropped: the reader, mostly blocked in `XREAD`, looks at it
    /// between reads (the writer sees its channel close).
    stop: Arc<AtomicBool>,
}

/// Why the threads cannot be started at all (not a Redis that is down: that is retried).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("the [cluster] redis URL cannot be used: {0}")]
    Url(String),
    #[error("cannot start the cluster's threads: {0}")]
    Thread(std::io::Error),
}

impl Bridge {
    /// Starts the writer and the reader; they connect on their own and report
    /// [`Incoming::WriterUp`] and [`Incoming::ReaderUp`] (or [`Incoming::Lost`]). The reader
    /// first reads from the stream's last ID at that moment (not `$`, so nothing published
    /// between that and the first `XREAD` is lost).
    pub fn start(settings: BridgeSettings, waker: Arc<mio::Waker>) -> Result<Bridge, BridgeError> {
        let client = link::client(&settings)?;
        let (to_writer, jobs) = std::sync::mpsc::sync_channel(WRITER_QUEUE);
        let (to_loop, from_threads) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (client, node) = (client.clone(), settings.node.clone());
            let tell = link::Tell::new(to_loop.clone(), Arc::clone(&waker));
            move || writer::run(client, node, jobs, tell)
        };
        std::thread::Builder::new()
            .name("chatd-redis-w".into())
            .spawn(writer)
            .map_err(BridgeError::Thread)?;
        let reader = {
            let tell = link::Tell::new(to_loop, waker);
            let stop = Arc::clone(&stop);
            move || reader::run(client, settings.node, tell, stop)
        };
        // Failing here drops `to_writer`, which ends the writer.
        std::thread::Builder::new()
            .name("chatd-redis-r".into())
            .spawn(reader)
            .map_err(BridgeError::Thread)?;
        Ok(Bridge { to_writer, from_threads, stop })
    }

    /// Hands a job to the writer without waiting; `Err` gives it back when the writer's queue
    /// is full or the thread is gone.
    #[allow(
        clippy::result_large_err,
        reason = "the job itself comes back, to be queued: boxing it would cost every send"
    )]
    pub fn send(&self, job: Outgoing) -> Result<(), Outgoing> {
        self.to_writer.try_send(job).map_err(|err| match err {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// What the threads said since the last call, oldest first.
    pub fn take(&self) -> impl Iterator<Item = Incoming> + '_ {
        self.from_threads.try_iter()
    }
}

impl Drop for Bridge {
    /// Tells the reader to end (the writer ends as its channel closes).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
