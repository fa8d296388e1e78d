//! The reader thread: the stream, in its order, from where this node is.
//!
//! On each connection it first takes a snapshot in one Lua script (atomic, so nothing is
//! written between its parts): the stream's last generated ID, how many entries were ever
//! added to it, its length and first entry, and every other node's roster hash (found with
//! `SCAN chatd:roster:*`, so that a node whose first heartbeat has not come yet is not
//! missed). The first time it reads from that last ID; after a reconnect it reads on from
//! the last ID it read, and tells whether entries after that one were trimmed away. Then it
//! loops on `XREAD BLOCK`, handing every entry on, garbage included (marked with its
//! problem): what to skip is the loop's decision.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Client, Connection, Script, Value};

use super::link::{self, Backoff, Health, Tell};
use super::values::{array, bytes, int, text};
use super::{Incoming, ROSTER_KEY_PREFIX, STREAM_KEY, StreamEntry, XREAD_BLOCK, XREAD_COUNT};
use crate::proto::cluster::RemoteMember;
use crate::proto::codec;

/// `KEYS[1]` the stream; `ARGV[1]` the rosters' `SCAN` pattern, `ARGV[2]` this node's own
/// roster key. Returns `{type of the stream's key, last-generated-id, entries-added (-1 if
/// this Redis does not say), length, first entry's ID ("" if none), {key, HGETALL, ...}}`.
const SNAPSHOT: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
local generated, added, length, first = '0-0', -1, 0, ''
if kind == 'stream' then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info - 1, 2 do
    local name = info[i]
    if name == 'last-generated-id' then generated = info[i + 1]
    elseif name == 'entries-added' then added = info[i + 1]
    elseif name == 'length' then length = info[i + 1]
    end
  end
  local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #head > 0 then first = head[1][1] end
end
local rosters = {}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if key ~= ARGV[2] and redis.call('TYPE', key)['ok'] == 'hash' then
      rosters[#rosters + 1] = key
      rosters[#rosters + 1] = redis.call('HGETALL', key)
    end
  end
until cursor == '0'
return {kind, generated, added, length, first, rosters}
";

/// How often a reader waiting to reconnect looks whether the bridge is gone.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A stream entry's ID, ordered as Redis orders them (numerically, milliseconds first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// `<ms>-<seq>`, as Redis writes them.
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where the reader is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The last ID read (or the one reading started from).
    pub last: StreamId,
    /// How many entries the stream had had added up to `last` (`entries-added` then, plus
    /// the entries read since); `None` when this Redis does not say.
    pub added: Option<u64>,
}

/// What the snapshot script found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream's key holds a stream (`false`: there is no such key).
    pub exists: bool,
    pub generated: StreamId,
    pub added: Option<u64>,
    pub length: u64,
    pub first: Option<StreamId>,
}

/// Where to read from after connecting, and whether entries after `before` were lost: the
/// first time, from the stream's last generated ID; after that, on from `before`, unless the
/// stream is not the one `before` was in (deleted, or made again: its IDs went back, or
/// fewer entries were ever added to it), in which case the new stream is read whole.
pub fn resume(before: Option<Position>, now: &Snapshot) -> (Position, bool) {
    let Some(before) = before else {
        return (Position { last: now.generated, added: now.added }, false);
    };
    let anew = Position { last: StreamId::ZERO, added: Some(0) };
    if !now.exists {
        // The stream is gone (deleted, or a Redis that lost its data): what it had is lost.
        return (anew, before.last > StreamId::ZERO);
    }
    let fewer = matches!((before.added, now.added), (Some(then), Some(now)) if now < then);
    if now.generated < before.last || fewer {
        return (anew, true);
    }
    // Trimming takes the oldest entries: nothing after `before.last` went while the first
    // entry left is at or before it.
    let trimmed_past = match now.first {
        Some(first) if first <= before.last => false,
        // Every entry left is newer than ours: were all added after ours still there?
        _ => match (before.added, now.added) {
            (Some(then), Some(now_added)) => now_added.saturating_sub(then) > now.length,
            // An older Redis does not count: suppose the worst if ours was trimmed and
            // newer ones were written.
            _ => now.generated > before.last,
        },
    };
    (before, trimmed_past)
}

/// The thread's body: until the bridge is dropped (`stop`) or the loop is gone.
pub fn run(client: Client, node: String, mut tell: Tell, stop: Arc<AtomicBool>) {
    let snapshot = Script::new(SNAPSHOT);
    let own_roster = format!("{ROSTER_KEY_PREFIX}{node}");
    let mut health = Health::new(true);
    let mut backoff = Backoff::new();
    let mut position: Option<Position> = None;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first && !pause(backoff.failed(), &stop) {
            return;
        }
        first = false;
        let connected = link::connect(&client).and_then(|mut connection| {
            let taken = snapshot
                .key(STREAM_KEY)
                .arg(format!("{ROSTER_KEY_PREFIX}*"))
                .arg(&own_roster)
                .invoke::<Value>(&mut connection)
                .map_err(|err| link::describe(&err, &client))?;
            let (now, rosters) = read_snapshot(&taken)?;
            Ok((connection, now, rosters))
        });
        let (mut connection, now, rosters) = match connected {
            Ok(connected) => connected,
            Err(why) => {
                if !health.lost(why, &mut tell) {
                    return;
                }
                continue;
            }
        };
        health.up();
        backoff.served();
        let (from, missed) = resume(position, &now);
        position = Some(from);
        log::info!(
            "cluster: connected to Redis as node {node} (reading the stream from {}{})",
            from.last,
            if missed { "; entries were trimmed away meanwhile" } else { "" }
        );
        let up = Incoming::ReaderUp { from_id: from.last.to_string(), rosters, missed };
        if !tell.tell(up) {
            return;
        }
        let mut at = from;
        let why = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match read(&mut connection, at.last) {
                Ok(entries) if entries.is_empty() => {}
                Ok(entries) => {
                    for entry in &entries {
                        if let Some(id) = StreamId::parse(&entry.id) {
                            at.last = at.last.max(id);
                        }
                    }
                    at.added = at.added.map(|added| added + entries.len() as u64);
                    position = Some(at);
                    if !tell.tell(Incoming::Entries(entries)) {
                        return;
                    }
                }
                Err(err) => break err.describe(&client),
            }
        };
        if !health.lost(why, &mut tell) {
            return;
        }
    }
}

/// Sleeps `wait`, looking at `stop`; `false` if the bridge is gone.
fn pause(wait: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + wait;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(STOP_CHECK));
    }
}

/// A failed read: Redis's error, or a reply that is not what `XREAD` answers.
enum ReadError {
    Redis(redis::RedisError),
    Shape(String),
}

impl ReadError {
    fn describe(&self, client: &Client) -> String {
        match self {
            ReadError::Redis(err) => link::describe(err, client),
            ReadError::Shape(what) => format!("Redis at {}: {what}", link::address(client)),
        }
    }
}

/// One `XREAD` after `last`: up to [`XREAD_COUNT`] entries, none if [`XREAD_BLOCK`] passed.
fn read(connection: &mut Connection, last: StreamId) -> Result<Vec<StreamEntry>, ReadError> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(XREAD_COUNT)
        .arg("BLOCK")
        .arg(XREAD_BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(STREAM_KEY)
        .arg(last.to_string())
        .query(connection)
        .map_err(ReadError::Redis)?;
    entries(&reply).ok_or_else(|| ReadError::Shape("XREAD answered something else".into()))
}

/// The entries of an `XREAD` reply (`None`: not such a reply).
pub fn entries(reply: &Value) -> Option<Vec<StreamEntry>> {
    if matches!(reply, Value::Nil) {
        return Some(Vec::new());
    }
    let mut found = Vec::new();
    for stream in array(reply)? {
        let [_key, items] = array(stream)? else { return None };
        for item in array(items)? {
            let [id, fields] = array(item)? else { return None };
            let id = text(id)?;
            StreamId::parse(&id)?;
            found.push(entry(id, array(fields).unwrap_or_default()));
        }
    }
    Some(found)
}

/// One entry, its fields checked (`v` a number, `n` and `e` there, `n` UTF-8).
pub fn entry(id: String, fields: &[Value]) -> StreamEntry {
    let (mut node, mut version, mut body) = (None, None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else { continue };
        match bytes(name) {
            Some(b"n") => node = bytes(value),
            Some(b"v") => version = bytes(value),
            Some(b"e") => body = bytes(value),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let node = match node {
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(node) => node.to_string(),
            Err(_) => {
                problems.push("field n is not UTF-8");
                String::from_utf8_lossy(raw).into_owned()
            }
        },
        None => {
            problems.push("no field n");
            String::new()
        }
    };
    let version = match version.map(|raw| std::str::from_utf8(raw).ok()?.parse::<u32>().ok()) {
        Some(Some(version)) => version,
        Some(None) => {
            problems.push("field v is not a version number");
            0
        }
        None => {
            problems.push("no field v");
            0
        }
    };
    if body.is_none() {
        problems.push("no field e");
    }
    let problem = (!problems.is_empty()).then(|| problems.join(", "));
    let body = if problem.is_none() { body.map(<[u8]>::to_vec) } else { None };
    StreamEntry { id, node, version, body, problem }
}

/// Every other node's roster: (node, its members).
type Rosters = Vec<(String, Vec<RemoteMember>)>;

/// The snapshot script's reply: what it says of the stream, and the other nodes' rosters
/// (sorted by node; a row that does not decode is left out, with a warning).
fn read_snapshot(reply: &Value) -> Result<(Snapshot, Rosters), String> {
    let odd = |what: &str| format!("the stream's snapshot is odd ({what})");
    let parts = array(reply).ok_or_else(|| odd("not an array"))?;
    let [kind, generated, added, length, first, rosters] = parts else {
        return Err(odd("not six parts"));
    };
    let kind = text(kind).ok_or_else(|| odd("no type"))?;
    let exists = match kind.as_str() {
        "stream" => true,
        "none" => false,
        other => return Err(format!("the key {STREAM_KEY} in Redis is a {other}, not a stream")),
    };
    let generated =
        text(generated).and_then(|id| StreamId::parse(&id)).ok_or_else(|| odd("last ID"))?;
    let added = int(added).and_then(|added| u64::try_from(added).ok());
    let length = int(length).and_then(|length| u64::try_from(length).ok()).unwrap_or(0);
    let first = text(first).and_then(|id| StreamId::parse(&id));
    let snapshot = Snapshot { exists, generated, added, length, first };

    let mut found: Rosters = Vec::new();
    let flat = array(rosters).unwrap_or_default();
    for pair in flat.chunks(2) {
        let [key, rows] = pair else { continue };
        let Some(node) =
            text(key).and_then(|key| key.strip_prefix(ROSTER_KEY_PREFIX).map(str::to_string))
        else {
            continue;
        };
        if found.iter().any(|(seen, _)| *seen == node) {
            continue; // SCAN may name a key twice.
        }
        let mut members = Vec::new();
        for row in array(rows).unwrap_or_default().chunks(2) {
            let [nick, member] = row else { continue };
            let decoded = bytes(member).map(codec::decode_payload::<RemoteMember>);
            match decoded {
                Some(Ok(member)) => members.push(member),
                Some(Err(err)) => log::warn!(
                    "cluster: skipped roster row {} of node {node}: {err}",
                    text(nick).unwrap_or_default()
                ),
                None => log::warn!("cluster: skipped a roster row of node {node}: not a string"),
            }
        }
        found.push((node, members));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((snapshot, found))
}
