//! The writer thread: the loop's [`Outgoing`] jobs, done in order on one connection.
//!
//! Publish jobs waiting together go in one `MULTI` (one round trip, at most
//! [`PUBLISH_BATCH`]), each `XADD` with its roster change; claims, releases and heartbeats
//! are Lua scripts, atomic in Redis. A job the writer took but could not see done goes back
//! to the loop ([`Incoming::Unsent`], or a claim answered unreachable), and so does every
//! job that comes while it has no connection: the writer keeps nothing. A job whose reply
//! was lost with the connection may have been done anyway; sent again, it is in the stream
//! twice (the readers see both).

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use redis::{Client, Connection, RedisError, Script, Value};

use super::link::{self, Backoff, Health, Tell};
use super::values::{array, bytes, int, text};
use super::{
    Incoming, NICK_KEY_PREFIX, NICK_TTL, NODES_KEY, Outgoing, ROSTER_KEY_PREFIX, RosterChange,
    STREAM_KEY, STREAM_MAXLEN,
};
use crate::proto::cluster::{CLUSTER_VERSION, RemoteMember};
use crate::proto::codec;

/// Most publish jobs sent in one round trip.
pub const PUBLISH_BATCH: usize = 256;

/// `KEYS[1]` the nick's key, `ARGV[1]` this node, `ARGV[2]` the TTL (ms): 1 if the nick is
/// this node's now (taken, or kept and renewed), 0 if another node has it.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// `KEYS[1]` the nick's key, `ARGV[1]` this node: deleted only if it is this node's.
const RELEASE: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// `KEYS[1]` the nodes' hash, `KEYS[2..]` this node's nick keys; `ARGV[1]` this node,
/// `ARGV[2]` the TTL (ms), `ARGV[3..]` the nicks of `KEYS[2..]`. Sets this node's time to
/// Redis's clock, renews each nick (taking back one that lapsed) and returns
/// `{ms, HGETALL nodes, the nicks another node holds}`.
const HEARTBEAT: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ms)
local lost = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
  elseif redis.pcall('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return {ms, redis.call('HGETALL', KEYS[1]), lost}
";

// The scripts read a nick's key with `pcall`: a key of another type (not chatd's) is then
// someone else's nick, not an error that would cost the writer its connection each time.

/// The scripts, hashed once.
struct Scripts {
    claim: Script,
    release: Script,
    heartbeat: Script,
}

/// Why [`serve`] returned.
enum Ended {
    /// The loop dropped the bridge.
    Closed,
    /// The connection failed (its jobs went back to the loop).
    Failed(String),
}

/// The thread's body: until the bridge is dropped (the jobs' channel closes).
pub fn run(client: Client, node: String, jobs: Receiver<Outgoing>, mut tell: Tell) {
    let scripts = Scripts {
        claim: Script::new(CLAIM),
        release: Script::new(RELEASE),
        heartbeat: Script::new(HEARTBEAT),
    };
    let mut health = Health::new(false);
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        if !first && !refuse_for(backoff.failed(), &jobs, &mut tell) {
            return;
        }
        first = false;
        let mut connection = match link::connect(&client) {
            Ok(connection) => connection,
            Err(why) => {
                if !health.lost(why, &mut tell) {
                    return;
                }
                continue;
            }
        };
        health.up();
        log::debug!("cluster: the writer is connected to Redis");
        if !tell.tell(Incoming::WriterUp) {
            return;
        }
        let writer = Writer { client: &client, node: &node, scripts: &scripts };
        match writer.serve(&mut connection, &jobs, &mut tell, &mut backoff) {
            Ended::Closed => return,
            Ended::Failed(why) => {
                if !health.lost(why, &mut tell) {
                    return;
                }
            }
        }
    }
}

/// While there is no connection, for `wait`: answers every job at once. `false` when the
/// bridge is gone.
fn refuse_for(wait: std::time::Duration, jobs: &Receiver<Outgoing>, tell: &mut Tell) -> bool {
    let until = Instant::now() + wait;
    loop {
        match jobs.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(job) => {
                let mut taken = vec![job];
                taken.extend(jobs.try_iter());
                if !give_back(taken, tell) {
                    return false;
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Jobs not done, back to the loop in their order: claims answered unreachable, the rest in
/// one [`Incoming::Unsent`]. `false` when the loop is gone.
fn give_back(jobs: Vec<Outgoing>, tell: &mut Tell) -> bool {
    let mut unsent = Vec::with_capacity(jobs.len());
    let mut claims = Vec::new();
    for job in jobs {
        match job {
            Outgoing::Claim { ticket, .. } => {
                claims.push(Incoming::Claimed { ticket, granted: false, unreachable: true });
            }
            other => unsent.push(other),
        }
    }
    if !unsent.is_empty() && !tell.tell(Incoming::Unsent(unsent)) {
        return false;
    }
    claims.into_iter().all(|claimed| tell.tell(claimed))
}

/// One connection's work.
struct Writer<'a> {
    client: &'a Client,
    node: &'a str,
    scripts: &'a Scripts,
}

impl Writer<'_> {
    /// Does jobs until the channel closes or the connection fails.
    fn serve(
        &self,
        connection: &mut Connection,
        jobs: &Receiver<Outgoing>,
        tell: &mut Tell,
        backoff: &mut Backoff,
    ) -> Ended {
        // A job taken while gathering a batch, done next.
        let mut held: Option<Outgoing> = None;
        loop {
            let job = match held.take() {
                Some(job) => job,
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return Ended::Closed,
                },
            };
            let (done, taken) = if matches!(job, Outgoing::Publish { .. }) {
                let mut batch = vec![job];
                while batch.len() < PUBLISH_BATCH {
                    match jobs.try_recv() {
                        Ok(next @ Outgoing::Publish { .. }) => batch.push(next),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                let done = self.publish(connection, &batch).map(|()| {
                    let tags = batch.iter().filter_map(|job| match job {
                        Outgoing::Publish { tag, .. } => Some(*tag),
                        _ => None,
                    });
                    Some(Incoming::Published(tags.collect()))
                });
                (done, batch)
            } else {
                (self.one(connection, &job), vec![job])
            };
            match done {
                Ok(answer) => {
                    backoff.served();
                    if let Some(answer) = answer
                        && !tell.tell(answer)
                    {
                        return Ended::Closed;
                    }
                }
                Err(err) => {
                    let why = link::describe(&err, self.client);
                    let mut taken = taken;
                    taken.extend(held);
                    if !give_back(taken, tell) {
                        return Ended::Closed;
                    }
                    return Ended::Failed(why);
                }
            }
        }
    }

    /// The batch's entries and roster changes, in one `MULTI`.
    fn publish(&self, connection: &mut Connection, batch: &[Outgoing]) -> Result<(), RedisError> {
        let roster_key = format!("{ROSTER_KEY_PREFIX}{}", self.node);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for job in batch {
            let Outgoing::Publish { body, roster, .. } = job else { continue };
            pipe.cmd("XADD")
                .arg(STREAM_KEY)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_MAXLEN)
                .arg("*")
                .arg("v")
                .arg(CLUSTER_VERSION)
                .arg("n")
                .arg(self.node)
                .arg("e")
                .arg(body.as_slice())
                .ignore();
            add_roster_change(&mut pipe, &roster_key, roster);
        }
        // Not `pipe.exec`: after a first error it still waits for every other reply, each up
        // to the read timeout (a batch of 256 on a cut network would take 21 minutes). Here
        // the first error ends the batch, and the connection with it.
        connection.send_packed_command(&pipe.get_packed_pipeline())?;
        // MULTI's OK, one QUEUED per command, then EXEC's array.
        for _ in 0..pipe.len() + 1 {
            if let Value::ServerError(err) = connection.recv_response()? {
                return Err(err.into());
            }
        }
        match connection.recv_response()? {
            Value::Array(replies) => match replies.into_iter().find_map(|reply| match reply {
                Value::ServerError(err) => Some(err),
                _ => None,
            }) {
                Some(err) => Err(err.into()),
                None => Ok(()),
            },
            Value::ServerError(err) => Err(err.into()),
            other => Err(RedisError::from((
                redis::ErrorKind::Client,
                "EXEC did not answer with the replies",
                format!("{other:?}"),
            ))),
        }
    }

    /// A job other than a publish; the answer for the loop, if it wants one.
    fn one(
        &self,
        connection: &mut Connection,
        job: &Outgoing,
    ) -> Result<Option<Incoming>, RedisError> {
        let ttl = NICK_TTL.as_millis() as u64;
        match job {
            Outgoing::Publish { .. } => {
                self.publish(connection, std::slice::from_ref(job)).map(|()| None)
            }
            Outgoing::Claim { ticket, key } => {
                let granted: i64 = self
                    .scripts
                    .claim
                    .key(format!("{NICK_KEY_PREFIX}{key}"))
                    .arg(self.node)
                    .arg(ttl)
                    .invoke(connection)?;
                Ok(Some(Incoming::Claimed {
                    ticket: *ticket,
                    granted: granted == 1,
                    unreachable: false,
                }))
            }
            Outgoing::Release { key } => {
                let _: i64 = self
                    .scripts
                    .release
                    .key(format!("{NICK_KEY_PREFIX}{key}"))
                    .arg(self.node)
                    .invoke(connection)?;
                Ok(None)
            }
            Outgoing::Heartbeat { nicks } => {
                let mut invocation = self.scripts.heartbeat.prepare_invoke();
                invocation.key(NODES_KEY).arg(self.node).arg(ttl);
                for nick in nicks {
                    invocation.key(format!("{NICK_KEY_PREFIX}{nick}")).arg(nick);
                }
                let reply: Value = invocation.invoke(connection)?;
                Ok(Some(beat(&reply)))
            }
            Outgoing::ForgetNode { node } => {
                redis::pipe()
                    .atomic()
                    .hdel(NODES_KEY, node)
                    .ignore()
                    .del(format!("{ROSTER_KEY_PREFIX}{node}"))
                    .ignore()
                    .exec(connection)?;
                Ok(None)
            }
        }
    }
}

/// The commands of one roster change, added to a `MULTI`.
fn add_roster_change(pipe: &mut redis::Pipeline, roster_key: &str, change: &RosterChange) {
    match change {
        RosterChange::None => {}
        RosterChange::Set { key, member, previous } => {
            if let Some(previous) = previous.as_ref().filter(|previous| *previous != key) {
                pipe.hdel(roster_key, previous).ignore();
            }
            if let Some(encoded) = encode(key, member) {
                pipe.hset(roster_key, key, encoded).ignore();
            }
        }
        RosterChange::Remove { key } => {
            pipe.hdel(roster_key, key).ignore();
        }
        RosterChange::Replace(members) => {
            pipe.del(roster_key).ignore();
            let rows: Vec<(&str, Vec<u8>)> = members
                .iter()
                .filter_map(|(key, member)| Some((key.as_str(), encode(key, member)?)))
                .collect();
            if !rows.is_empty() {
                pipe.hset_multiple(roster_key, &rows).ignore();
            }
        }
    }
}

/// A member's bincode; `None` (logged) if it cannot be encoded, which a member made of
/// strings and numbers never is.
fn encode(key: &str, member: &RemoteMember) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match codec::encode_payload(member, &mut bytes) {
        Ok(()) => Some(bytes),
        Err(err) => {
            log::warn!("cluster: roster row {key} not written: {err}");
            None
        }
    }
}

/// The heartbeat script's reply as [`Incoming::Beat`]; a node whose time is not a number
/// (not written by chatd) is left out.
fn beat(reply: &Value) -> Incoming {
    let parts = array(reply).unwrap_or_default();
    let redis_ms = parts.first().and_then(int).map_or(0, |ms| ms.max(0) as u64);
    let mut nodes = Vec::new();
    if let Some(flat) = parts.get(1).and_then(array) {
        for pair in flat.chunks(2) {
            let [node, ms] = pair else { continue };
            let (Some(node), Some(ms)) = (text(node), bytes(ms)) else { continue };
            match std::str::from_utf8(ms).ok().and_then(|ms| ms.parse::<u64>().ok()) {
                Some(ms) => nodes.push((node, ms)),
                None => log::debug!("cluster: node {node}'s heartbeat is not a time"),
            }
        }
    }
    let lost = parts.get(2).and_then(array).unwrap_or_default().iter().filter_map(text).collect();
    Incoming::Beat { redis_ms, nodes, lost }
}
