//! The bridge against a real `redis-server` (`test_redis`): two nodes on one Redis, claims
//! and heartbeats, connections killed under load, a wrong password and a Redis that comes
//! late, garbage from a foreign writer, and a stream trimmed while a reader was away. Every
//! wait is for what the threads say (through the waker), bounded, and a failure shows what
//! was said.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::reader::{Position, Snapshot, StreamId, resume};
use super::*;
use crate::broker::cluster::test_redis::{TestRedis, free_port};
use crate::proto::cluster::EntryBody;
use crate::proto::codec;

/// The longest any wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// One node's bridge, and everything its threads said.
struct Node {
    bridge: Bridge,
    poll: mio::Poll,
    heard: Vec<Incoming>,
    /// Publish jobs that came back unsent: sent again at the next `WriterUp`, as the loop does.
    unsent: Vec<Outgoing>,
}

impl Node {
    fn start(url: &str, password: Option<&str>, node: &str) -> Node {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let settings = BridgeSettings {
            url: url.to_string(),
            password: password.map(str::to_string),
            node: node.to_string(),
        };
        let bridge = Bridge::start(settings, waker).unwrap();
        Node { bridge, poll, heard: Vec::new(), unsent: Vec::new() }
    }

    /// Started, and both threads connected.
    fn up(url: &str, node: &str) -> Node {
        let mut started = Node::start(url, None, node);
        started.wait("both threads up", |heard| {
            heard.iter().any(|said| matches!(said, Incoming::WriterUp))
                && heard.iter().any(|said| matches!(said, Incoming::ReaderUp { .. }))
        });
        started
    }

    fn send(&self, job: Outgoing) {
        self.bridge.send(job).unwrap();
    }

    /// Takes what the threads said; unsent jobs are sent again once the writer is back.
    fn pump(&mut self) {
        let said: Vec<Incoming> = self.bridge.take().collect();
        for incoming in said {
            match &incoming {
                Incoming::Unsent(jobs) => self.unsent.extend(jobs.iter().cloned()),
                Incoming::WriterUp => {
                    for job in std::mem::take(&mut self.unsent) {
                        self.send(job);
                    }
                }
                _ => {}
            }
            self.heard.push(incoming);
        }
    }

    /// Waits (on the waker) until `done` holds for everything heard; fails showing it.
    fn wait(&mut self, what: &str, mut done: impl FnMut(&[Incoming]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut events = mio::Events::with_capacity(8);
        loop {
            self.pump();
            if done(&self.heard) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("waited {PATIENCE:?} for {what}; heard:\n{}", self.shown());
            }
            let _ = self.poll.poll(&mut events, Some(left));
        }
    }

    /// The first thing heard that `pick` takes, waiting for it.
    fn first<T>(&mut self, what: &str, mut pick: impl FnMut(&Incoming) -> Option<T>) -> T {
        self.wait(what, |heard| heard.iter().any(|said| pick(said).is_some()));
        self.heard.iter().find_map(pick).unwrap()
    }

    fn entries(&self) -> Vec<StreamEntry> {
        entries_in(&self.heard)
    }

    fn shown(&self) -> String {
        let mut text = String::new();
        for said in &self.heard {
            let line = match said {
                Incoming::Entries(entries) => format!("Entries({} entries)", entries.len()),
                other => format!("{other:?}"),
            };
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

fn entries_in(heard: &[Incoming]) -> Vec<StreamEntry> {
    heard
        .iter()
        .filter_map(|said| match said {
            Incoming::Entries(entries) => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn published(heard: &[Incoming]) -> usize {
    heard
        .iter()
        .map(|said| match said {
            Incoming::Published(tags) => tags.len(),
            _ => 0,
        })
        .sum()
}

fn member(nick: &str) -> RemoteMember {
    RemoteMember {
        nick: nick.into(),
        room: "lobby".into(),
        account: None,
        tls: false,
        away: None,
        connected_at: 1,
        last_spoke: 2,
    }
}

fn publish(tag: u64) -> Outgoing {
    Outgoing::Publish { tag, body: format!("entry {tag}").into_bytes(), roster: RosterChange::None }
}

fn body_text(entry: &StreamEntry) -> String {
    String::from_utf8_lossy(entry.body.as_deref().unwrap_or_default()).into_owned()
}

/// Fails unless the IDs only grow.
fn assert_ids_increase(entries: &[StreamEntry]) {
    let ids: Vec<StreamId> =
        entries.iter().map(|entry| StreamId::parse(&entry.id).unwrap()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "IDs out of order: {} then {}", pair[0], pair[1]);
    }
}

#[test]
fn two_nodes_read_the_same_entries_in_the_same_order_and_see_each_others_rosters() {
    let redis = TestRedis::start();
    let mut a = Node::up(&redis.url(), "a");
    let mut b = Node::up(&redis.url(), "b");
    for tag in 0..50 {
        let roster = if tag == 0 {
            RosterChange::Set { key: "alice".into(), member: member("Alice"), previous: None }
        } else {
            RosterChange::None
        };
        a.send(Outgoing::Publish { tag, body: format!("entry {tag}").into_bytes(), roster });
    }
    a.wait("50 published", |heard| published(heard) == 50);
    let expected: Vec<String> = (0..50).map(|tag| format!("entry {tag}")).collect();
    for node in [&mut a, &mut b] {
        node.wait("50 entries read", |heard| entries_in(heard).len() >= 50);
        let entries = node.entries();
        assert_eq!(entries.iter().map(body_text).collect::<Vec<_>>(), expected);
        assert!(entries.iter().all(|entry| entry.node == "a" && entry.version == 1));
        assert!(entries.iter().all(|entry| entry.problem.is_none()));
        assert_ids_increase(&entries);
    }
    assert_eq!(a.entries(), b.entries());
    let last_id = a.entries().last().unwrap().id.clone();

    // A node that connects now gets a's roster, and reads from the last entry.
    drop(b);
    let mut b = Node::start(&redis.url(), None, "b");
    let (from_id, rosters, missed) = b.first("b's ReaderUp", |said| match said {
        Incoming::ReaderUp { from_id, rosters, missed } => {
            Some((from_id.clone(), rosters.clone(), *missed))
        }
        _ => None,
    });
    assert_eq!(from_id, last_id);
    assert_eq!(rosters, vec![("a".to_string(), vec![member("Alice")])]);
    assert!(!missed);
    // And a does not get its own.
    let mut a_again = Node::start(&redis.url(), None, "a");
    let rosters = a_again.first("a's ReaderUp", |said| match said {
        Incoming::ReaderUp { rosters, .. } => Some(rosters.clone()),
        _ => None,
    });
    assert_eq!(rosters, vec![]);
}

#[test]
fn roster_changes_go_with_their_entries() {
    let redis = TestRedis::start();
    let mut a = Node::up(&redis.url(), "a");
    let set = |key: &str, previous: Option<&str>| RosterChange::Set {
        key: key.into(),
        member: member(key),
        previous: previous.map(str::to_string),
    };
    let changes = [
        RosterChange::Replace(vec![("x".into(), member("x")), ("y".into(), member("y"))]),
        set("z", None),
        set("zz", Some("z")),
        RosterChange::Remove { key: "x".into() },
    ];
    for (tag, roster) in (0..).zip(changes) {
        a.send(Outgoing::Publish { tag, body: vec![1], roster });
    }
    a.wait("4 published", |heard| published(heard) == 4);
    let mut keys: Vec<String> =
        redis::cmd("HKEYS").arg("chatd:roster:a").query(&mut redis.connection()).unwrap();
    keys.sort();
    assert_eq!(keys, ["y", "zz"]);
    a.send(Outgoing::ForgetNode { node: "a".into() });
    a.send(Outgoing::Heartbeat { nicks: vec![] });
    let nodes = a.first("a beat", |said| match said {
        Incoming::Beat { nodes, .. } => Some(nodes.clone()),
        _ => None,
    });
    assert_eq!(nodes.iter().map(|(node, _)| node.as_str()).collect::<Vec<_>>(), ["a"]);
    let exists: bool =
        redis::cmd("EXISTS").arg("chatd:roster:a").query(&mut redis.connection()).unwrap();
    assert!(!exists, "ForgetNode deleted the roster");
}

#[test]
fn a_nick_is_one_nodes_until_released_and_heartbeats_keep_them() {
    let redis = TestRedis::start();
    let mut a = Node::up(&redis.url(), "a");
    let mut b = Node::up(&redis.url(), "b");
    let claimed = |node: &mut Node, ticket: u64, key: &str| {
        node.send(Outgoing::Claim { ticket, key: key.into() });
        node.first("a claim's answer", |said| match said {
            Incoming::Claimed { ticket: answered, granted, unreachable } if *answered == ticket => {
                Some((*granted, *unreachable))
            }
            _ => None,
        })
    };
    assert_eq!(claimed(&mut a, 1, "alice"), (true, false));
    assert_eq!(claimed(&mut a, 2, "alice"), (true, false), "a node keeps its own nick");
    assert_eq!(claimed(&mut b, 3, "alice"), (false, false));
    a.send(Outgoing::Release { key: "alice".into() });
    // The writer works in order: this answer comes after the release is done.
    assert_eq!(claimed(&mut a, 4, "other"), (true, false));
    assert_eq!(claimed(&mut b, 5, "alice"), (true, false));

    a.send(Outgoing::Heartbeat { nicks: vec!["alice2".into(), "alice".into()] });
    let (redis_ms, nodes, lost) = a.first("a's beat", |said| match said {
        Incoming::Beat { redis_ms, nodes, lost } => Some((*redis_ms, nodes.clone(), lost.clone())),
        _ => None,
    });
    assert_eq!(lost, ["alice"], "b holds alice");
    assert_eq!(nodes, vec![("a".to_string(), redis_ms)]);
    let mut connection = redis.connection();
    let holder: String = redis::cmd("GET").arg("chatd:nick:alice2").query(&mut connection).unwrap();
    assert_eq!(holder, "a", "a heartbeat takes a nick nobody has");
    let ttl: i64 = redis::cmd("PTTL").arg("chatd:nick:alice2").query(&mut connection).unwrap();
    assert!(ttl > 20_000 && ttl <= 30_000, "{ttl}");
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    assert!(redis_ms.abs_diff(now_ms) < 60_000, "Redis's clock in ms: {redis_ms} vs {now_ms}");

    // A nick key that is not chatd's (another type) is someone else's, and no error.
    let _: i64 =
        redis::cmd("HSET").arg(&["chatd:nick:odd", "x", "y"]).query(&mut connection).unwrap();
    assert_eq!(claimed(&mut b, 6, "odd"), (false, false));
    b.send(Outgoing::Heartbeat { nicks: vec!["alice".into(), "odd".into()] });
    let (nodes, lost) = b.first("b's beat", |said| match said {
        Incoming::Beat { nodes, lost, .. } => Some((nodes.clone(), lost.clone())),
        _ => None,
    });
    assert_eq!(lost, ["odd"]);
    let mut names: Vec<&str> = nodes.iter().map(|(node, _)| node.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn connections_killed_under_load_lose_nothing() {
    let redis = TestRedis::start();
    let mut a = Node::up(&redis.url(), "a");
    let mut b = Node::up(&redis.url(), "b");
    let mut killer = redis.connection();
    for tag in 0..100 {
        if tag == 50 {
            let killed: i64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
                .query(&mut killer)
                .unwrap();
            assert!(killed >= 4, "killed {killed} connections");
        }
        a.send(publish(tag));
        a.pump();
        std::thread::sleep(Duration::from_millis(2)); // A steady stream, not one batch.
    }
    a.wait("100 published", |heard| published(heard) == 100);
    b.wait("100 entries read", |heard| entries_in(heard).len() >= 100);
    let entries = b.entries();
    assert_ids_increase(&entries);
    // At least once, not exactly once: a batch whose EXEC reply the cut swallowed may be in
    // the stream already when it is sent again (the sessions' (sender, seq) filter shows a
    // line once). And this test's stand-in for the loop sends what came back unsent when
    // it can, not in its place: the order is the loop's to keep (broker::cluster::tests).
    let mut bodies: Vec<String> = entries.iter().map(body_text).collect();
    bodies.sort();
    bodies.dedup();
    let mut expected: Vec<String> = (0..100).map(|tag| format!("entry {tag}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "every entry, at least once");
    let lost = b.heard.iter().position(|said| matches!(said, Incoming::Lost { reader: true, .. }));
    let lost =
        lost.unwrap_or_else(|| panic!("b's reader did not say it lost Redis:\n{}", b.shown()));
    let back = b.heard[lost..].iter().position(|said| matches!(said, Incoming::ReaderUp { .. }));
    assert!(back.is_some(), "b's reader is back:\n{}", b.shown());
    let ups =
        b.heard.iter().filter(|said| matches!(said, Incoming::ReaderUp { missed: false, .. }));
    assert_eq!(ups.count(), 2);
}

#[test]
fn a_wrong_password_is_told_in_plain_words_and_tried_again() {
    let redis = TestRedis::start();
    // The password setting overrides the URL's (here the right one).
    let mut wrong = Node::start(&redis.url(), Some("not-the-password"), "a");
    wrong.wait("both threads lost", |heard| {
        let lost = |reader| {
            heard
                .iter()
                .any(|said| matches!(said, Incoming::Lost { reader: r, .. } if *r == reader))
        };
        lost(true) && lost(false)
    });
    for said in &wrong.heard {
        if let Incoming::Lost { why, .. } = said {
            assert!(why.contains("refused the password"), "{why}");
            assert!(!why.contains(redis.password()), "{why}");
        }
    }
    // Jobs while Redis is away come straight back.
    wrong.send(publish(7));
    wrong.send(Outgoing::Claim { ticket: 8, key: "bob".into() });
    wrong.wait("the jobs back", |heard| {
        heard.iter().any(|said| matches!(said, Incoming::Unsent(jobs) if jobs.len() == 1))
            && heard.contains(&Incoming::Claimed { ticket: 8, granted: false, unreachable: true })
    });
    // Retried (Redis counts the refusals), but Lost is said once per episode.
    redis.wait_until("three refusals per thread", |connection| {
        let info: String = redis::cmd("INFO").arg("errorstats").query(connection).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("errorstat_WRONGPASS:count="))
            .and_then(|count| count.trim().parse::<u32>().ok())
            .is_some_and(|count| count >= 6)
    });
    wrong.pump();
    let losses = wrong.heard.iter().filter(|said| matches!(said, Incoming::Lost { .. })).count();
    assert_eq!(losses, 2, "{}", wrong.shown());

    let mut none = Node::start(&redis.url_without_password(), None, "b");
    let why = none.first("b lost", |said| match said {
        Incoming::Lost { why, .. } => Some(why.clone()),
        _ => None,
    });
    assert!(why.contains("wants a password"), "{why}");

    let mut right = Node::start(&redis.url_without_password(), Some(redis.password()), "c");
    right.wait("c up", |heard| heard.contains(&Incoming::WriterUp));
}

#[test]
fn a_redis_that_comes_late_is_found() {
    let port = free_port();
    let mut a = Node::start(&format!("redis://:pw@127.0.0.1:{port}/0"), None, "a");
    a.wait("both threads lost", |heard| {
        heard.iter().filter(|said| matches!(said, Incoming::Lost { .. })).count() == 2
    });
    let _redis = TestRedis::start_on(port, "pw");
    a.wait("both threads up", |heard| {
        heard.contains(&Incoming::WriterUp)
            && heard.iter().any(|said| matches!(said, Incoming::ReaderUp { missed: false, .. }))
    });
    a.send(publish(1));
    a.wait("the entry read", |heard| entries_in(heard).len() == 1);
}

#[test]
fn garbage_in_the_stream_is_marked_and_reading_goes_on() {
    let redis = TestRedis::start();
    let mut b = Node::up(&redis.url(), "b");
    let mut foreign = redis.connection();
    let random: Vec<u8> = (0..64).map(|_| fastrand::u8(..)).collect();
    let mut add = |fields: &[(&str, &[u8])]| {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(STREAM_KEY).arg("*");
        for (name, value) in fields {
            xadd.arg(*name).arg(*value);
        }
        let _: String = xadd.query(&mut foreign).unwrap();
    };
    add(&[("x", b"1")]);
    add(&[("v", b"x"), ("n", b"f"), ("e", &random)]);
    add(&[("v", b"1"), ("n", b"f")]);
    add(&[("v", b"1"), ("n", b"\xff\xfe"), ("e", b"e")]);
    add(&[("v", b"1"), ("n", b"f"), ("e", &random)]);
    let mut good = Vec::new();
    codec::encode_payload(&EntryBody::AccountsChanged, &mut good).unwrap();
    add(&[("v", b"1"), ("n", b"f"), ("e", &good)]);
    b.wait("6 entries", |heard| entries_in(heard).len() == 6);
    let entries = b.entries();
    let problems: Vec<Option<&str>> =
        entries.iter().map(|entry| entry.problem.as_deref()).collect();
    assert_eq!(
        problems,
        [
            Some("no field n, no field v, no field e"),
            Some("field v is not a version number"),
            Some("no field e"),
            Some("field n is not UTF-8"),
            None,
            None,
        ]
    );
    assert!(entries[..4].iter().all(|entry| entry.body.is_none()));
    let undecodable = entries[4].body.as_deref().unwrap();
    assert!(codec::decode_payload::<EntryBody>(undecodable).is_err());
    let decoded: EntryBody = codec::decode_payload(entries[5].body.as_deref().unwrap()).unwrap();
    assert_eq!(decoded, EntryBody::AccountsChanged);
    assert_eq!((entries[5].node.as_str(), entries[5].version), ("f", 1));
}

#[test]
fn a_stream_trimmed_while_the_reader_was_away_says_so() {
    let redis = TestRedis::start();
    let mut b = Node::up(&redis.url(), "b");
    let mut a = Node::up(&redis.url(), "a");
    for tag in 0..5 {
        a.send(publish(tag));
    }
    b.wait("5 entries", |heard| entries_in(heard).len() == 5);
    // In one transaction, so that b cannot reconnect in between: b's connections go, two
    // entries are added after b's last and trimmed away.
    let (_, _, _, _): (i64, String, String, i64) = redis::pipe()
        .atomic()
        .cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .cmd("XADD")
        .arg(&[STREAM_KEY, "*", "v", "1", "n", "x", "e", "lost"])
        .cmd("XADD")
        .arg(&[STREAM_KEY, "*", "v", "1", "n", "x", "e", "lost too"])
        .cmd("XTRIM")
        .arg(&[STREAM_KEY, "MAXLEN", "0"])
        .query(&mut redis.connection())
        .unwrap();
    b.wait("b back", |heard| {
        heard.iter().filter(|said| matches!(said, Incoming::ReaderUp { .. })).count() == 2
    });
    let last_read = b.entries().last().unwrap().id.clone();
    let again = b.heard.iter().filter(|said| matches!(said, Incoming::ReaderUp { .. })).nth(1);
    let Some(Incoming::ReaderUp { from_id, missed, .. }) = again else { unreachable!() };
    assert!(*missed, "{}", b.shown());
    assert_eq!(*from_id, last_read);
    assert_eq!(b.entries().len(), 5, "the trimmed ones were never read");
    // And it reads on.
    a.send(publish(9));
    a.wait("it published (again, its connection was killed too)", |heard| published(heard) == 6);
    b.wait("the next entry", |heard| entries_in(heard).len() == 6);
}

#[test]
fn the_reader_resumes_where_it_was_unless_entries_after_it_went() {
    let id = |text: &str| StreamId::parse(text).unwrap();
    let at = |last: &str, added: u64| Position { last: id(last), added: Some(added) };
    let snapshot = |generated: &str, added: u64, length: u64, first: Option<&str>| Snapshot {
        exists: true,
        generated: id(generated),
        added: Some(added),
        length,
        first: first.map(id),
    };
    // First connection: from the last generated ID.
    let (from, missed) = resume(None, &snapshot("9-3", 40, 10, Some("5-0")));
    assert_eq!((from, missed), (at("9-3", 40), false));
    // Our entry still there.
    assert_eq!(
        resume(Some(at("7-0", 30)), &snapshot("9-3", 40, 10, Some("5-0"))),
        (at("7-0", 30), false)
    );
    // Ours trimmed, but every newer one kept (10 added since, 10 there).
    assert_eq!(
        resume(Some(at("7-0", 30)), &snapshot("9-3", 40, 10, Some("8-0"))),
        (at("7-0", 30), false)
    );
    // Ours and some newer trimmed.
    assert_eq!(
        resume(Some(at("7-0", 30)), &snapshot("9-3", 40, 8, Some("8-5"))),
        (at("7-0", 30), true)
    );
    // Emptied by a trim after more were added.
    assert_eq!(resume(Some(at("7-0", 30)), &snapshot("9-3", 32, 0, None)), (at("7-0", 30), true));
    // Emptied, nothing newer ever added.
    assert_eq!(resume(Some(at("7-0", 30)), &snapshot("7-0", 30, 0, None)), (at("7-0", 30), false));
    // Started on a stream that did not exist yet: everything is new, nothing lost.
    assert_eq!(
        resume(Some(at("0-0", 0)), &snapshot("9-3", 3, 3, Some("9-1"))),
        (at("0-0", 0), false)
    );
    // IDs compare as numbers, not text.
    assert_eq!(
        resume(Some(at("9-0", 30)), &snapshot("10-0", 31, 30, Some("2-0"))),
        (at("9-0", 30), false)
    );
    // Made again: IDs went back, or fewer were ever added.
    assert_eq!(
        resume(Some(at("9-0", 30)), &snapshot("8-0", 31, 31, Some("1-0"))),
        (at("0-0", 0), true)
    );
    assert_eq!(
        resume(Some(at("9-0", 30)), &snapshot("12-0", 2, 2, Some("11-0"))),
        (at("0-0", 0), true)
    );
    // Gone.
    let gone =
        Snapshot { exists: false, generated: StreamId::ZERO, added: None, length: 0, first: None };
    assert_eq!(resume(Some(at("9-0", 30)), &gone), (at("0-0", 0), true));
    assert_eq!(resume(Some(at("0-0", 0)), &gone), (at("0-0", 0), false));
}

#[test]
fn stream_ids_order_as_numbers() {
    let id = |text: &str| StreamId::parse(text).unwrap();
    assert!(id("10-0") > id("9-99"));
    assert!(id("5-10") > id("5-9"));
    assert_eq!(id("1796188478228-3").to_string(), "1796188478228-3");
    for bad in ["", "5", "5-", "-5", "a-1", "1-b", "1-2-3"] {
        assert_eq!(StreamId::parse(bad), None, "{bad}");
    }
}

#[test]
fn a_url_that_is_no_redis_url_is_refused_at_start() {
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let settings = BridgeSettings { url: "http://x".into(), password: None, node: "a".into() };
    let Err(err) = Bridge::start(settings, waker) else { panic!("started") };
    assert!(matches!(err, BridgeError::Url(_)), "{err}");
}

#[test]
fn both_threads_end_when_the_bridge_is_dropped() {
    let redis = TestRedis::start();
    let a = Node::up(&redis.url(), "a");
    let clients = |connection: &mut redis::Connection| {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(connection).unwrap();
        list.lines().count()
    };
    redis.wait_until("a's two connections and this one", |connection| clients(connection) == 3);
    drop(a);
    // The reader ends within one XREAD BLOCK; the writer at once.
    let dropped = Instant::now();
    redis.wait_until("only this connection", |connection| clients(connection) == 1);
    assert!(
        dropped.elapsed() < XREAD_BLOCK + Duration::from_millis(500),
        "{:?}",
        dropped.elapsed()
    );
}

/// A certificate for `localhost`, self-signed, in `dir`: (cert.pem, key.pem).
fn localhost_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

#[test]
fn rediss_to_a_certificate_nobody_trusts_is_lost_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = localhost_certificate(dir.path());
    let redis = TestRedis::start_with_tls(&cert, &key);
    let mut a = Node::start(&redis.tls_url(), None, "a");
    let why = a.first("a lost", |said| match said {
        Incoming::Lost { why, .. } => Some(why.clone()),
        _ => None,
    });
    assert!(why.contains("certificate") || why.contains("Certificate"), "{why}");
}

/// Where [`rediss_works_with_a_trusted_certificate`] tells its child process the server is.
const REDISS_URL_VARIABLE: &str = "CHATD_TEST_REDISS_URL";

/// The trusted roots are read from `SSL_CERT_FILE` (rustls-native-certs), which a test
/// cannot set in its own process (other tests' threads read the environment): this one runs
/// [`rediss_child`] in a process of its own, with the test's certificate as the only root.
#[test]
fn rediss_works_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = localhost_certificate(dir.path());
    let redis = TestRedis::start_with_tls(&cert, &key);
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "broker::cluster::bridge::tests::rediss_child", "--ignored"])
        .args(["--nocapture", "--test-threads", "1"])
        .env("SSL_CERT_FILE", &cert)
        .env_remove("SSL_CERT_DIR")
        .env(REDISS_URL_VARIABLE, redis.tls_url())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.contains("1 passed"), "{said}");
}

#[test]
#[ignore = "run by rediss_works_with_a_trusted_certificate, in a process of its own"]
fn rediss_child() {
    let Ok(url) = std::env::var(REDISS_URL_VARIABLE) else { return };
    let mut a = Node::up(&url, "a");
    a.send(publish(1));
    a.wait("the entry read back", |heard| entries_in(heard).len() == 1);
    assert_eq!(body_text(&a.entries()[0]), "entry 1");
}
