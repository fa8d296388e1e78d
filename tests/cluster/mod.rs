//! Several hosts (`[cluster]`, issue #18): two chat nodes on one Redis (with a password) and
//! one PostgreSQL, all on loopback, each started by the test and gone when it ends. What the
//! delivery contract of docs/CLUSTER.md promises, seen by real clients on both nodes: lines
//! across nodes, `/who`, `/msg` and `/whois` across nodes, one nickname cluster-wide, the same
//! order everywhere; and the faults: Redis away and back, its connections cut, a node killed,
//! bad input in the stream and a wrong password.
//!
//! Each test has its own PostgreSQL and Redis (nextest runs tests in parallel), and waits for
//! lines and log lines, never for a fixed time.

mod accounts;
mod examples;
mod harness;
mod operations;
mod redis;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::util::{self, Client, processes_in_group, wait_until};
use harness::{Node, TwoNodes, expect_naming, numbered_lines};

#[test]
fn the_harness_redis_stops_starts_again_and_cuts_connections() {
    let mut redis = redis::Redis::start();
    assert_eq!(redis.command(&["PING"]).text(), "PONG");
    redis.command(&["SET", "k", "v"]);
    redis.stop();
    assert!(redis::Connection::open(redis.port).is_err(), "a stopped Redis answers");
    redis.start_again();
    // No persistence: a restart forgets everything, as the outage test expects.
    assert_eq!(redis.command(&["GET", "k"]), redis::Reply::Bulk(None));
    let mut other = redis::Connection::open(redis.port).expect("connect");
    assert_eq!(other.call(&["AUTH", &redis.password]).expect("AUTH").text(), "OK");
    assert_eq!(redis.kill_clients(), 1, "the other connection is cut, not the caller");
    assert!(other.call(&["PING"]).is_err(), "the cut connection still answers");
}

#[test]
fn two_nodes_start_with_a_cluster_table() {
    let nodes = TwoNodes::start_without_waiting("");
    // Each node serves its own clients, whatever it makes of [cluster].
    for (daemon, node) in [(&nodes.a, "a"), (&nodes.b, "b")] {
        let config = std::fs::read_to_string(daemon.runtime.path().join("chatd.toml"))
            .expect("the node's settings");
        assert!(config.contains(&format!("node = \"{node}\"")), "{config}");
        let mut client = daemon.connect();
        client.expect_prefix("*** Welcome to chatd");
    }
}

#[test]
fn lines_joins_and_changes_cross_nodes() {
    let nodes = TwoNodes::start();
    let mut bob = nodes.b.login("bob");
    // bob, a member on b, sees alice arrive on a as a member of one host would.
    let mut alice = util::login_seen_by(nodes.a.port, "alice", &mut [&mut bob]);
    alice.send("hello");
    alice.expect("<alice> hello");
    bob.expect("<alice> hello");
    bob.send("hi alice");
    bob.expect("<bob> hi alice");
    alice.expect("<bob> hi alice");
    alice.send("/me waves");
    bob.expect("* alice waves");
    bob.send("/topic across hosts");
    alice.expect("*** bob set the topic of lobby to: across hosts");
    alice.send("/nick alicia");
    bob.expect("*** alice is now known as alicia");
    alice.send("/join #rust");
    bob.expect("*** alicia has left lobby (joined rust)");
    let mut carol = util::login(nodes.b.port, "carol");
    carol.send("/join rust");
    alice.expect("*** carol has joined rust");
    carol.expect("*** carol has joined rust");
    alice.send("rust only");
    carol.expect("<alicia> rust only");
    bob.send("lobby only");
    let seen = bob.expect("<bob> lobby only");
    assert!(!seen.iter().any(|l| l.contains("rust only")), "a rust line reached lobby: {seen:?}");
    alice.send("/quit bye");
    carol.expect("*** alicia has left (bye)");
}

#[test]
fn who_and_rooms_list_the_members_of_both_nodes() {
    let nodes = TwoNodes::start();
    let mut alice = nodes.a.login("alice");
    let mut bob = util::login_seen_by(nodes.b.port, "bob", &mut [&mut alice]);
    bob.send("/who");
    let line = expect_naming(&mut bob, "alice", "a");
    assert!(line.starts_with("*** "), "{line}");
    alice.send("/who");
    expect_naming(&mut alice, "bob", "b");
    bob.send("/rooms");
    bob.expect("*** Rooms: lobby (2)");
}

#[test]
fn a_nickname_taken_on_one_node_is_refused_on_the_other() {
    let nodes = TwoNodes::start();
    let _alice = nodes.a.login("alice");
    let mut other = nodes.b.connect();
    other.expect_prefix("*** Please choose a nickname");
    other.send("alice");
    other.expect("*** The nickname alice is already in use");
    other.expect_prefix("*** Please choose a nickname");
    other.send("ALICE");
    other.expect("*** The nickname ALICE is already in use");
    other.expect_prefix("*** Please choose a nickname");
    other.send("\u{430}lice");
    other.expect(
        "*** The nickname \u{430}lice looks too much like alice, who is here; please choose another",
    );
    other.expect_prefix("*** Please choose a nickname");
    other.send("alice2");
    other.expect("*** alice2 has joined lobby");
    other.send("/nick Alice");
    other.expect("*** The nickname Alice is already in use");
    // And the other way round: a nick of b's is b's.
    let mut third = nodes.a.connect();
    third.expect_prefix("*** Please choose a nickname");
    third.send("Alice2");
    third.expect("*** The nickname Alice2 is already in use");
}

#[test]
fn private_lines_and_whois_reach_the_other_node() {
    let nodes = TwoNodes::start();
    let mut alice = nodes.a.login("alice");
    let mut bob = util::login_seen_by(nodes.b.port, "bob", &mut [&mut alice]);
    alice.send("/msg bob hi");
    alice.expect("-> *bob* hi");
    bob.expect("*alice* hi");
    bob.send("/msg ALICE back at you");
    bob.expect("-> *alice* back at you");
    alice.expect("*bob* back at you");
    bob.send("/whois alice");
    let line = expect_naming(&mut bob, "alice", "a");
    assert!(line.starts_with("*** alice is in lobby"), "{line}");
    alice.send("/msg nobody hi");
    alice.expect("*** No such nick: nobody");
}

/// Two senders on two nodes, as fast as they can: two listeners, one on each node, see the
/// same sequence, every line once.
#[test]
fn every_member_sees_the_same_order_on_every_node() {
    const LINES: usize = 30;
    let nodes = TwoNodes::start_with(harness::FAST_SENDERS);
    let [carol, dave, alice, bob] =
        nodes.room([(Node::A, "carol"), (Node::B, "dave"), (Node::A, "alice"), (Node::B, "bob")]);
    let start = Arc::new(Barrier::new(2));
    let senders: Vec<_> = [(alice, "alice"), (bob, "bob")]
        .into_iter()
        .map(|(mut client, nick)| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let lines: String = (1..=LINES).map(|n| format!("{nick} {n}\r\n")).collect();
                start.wait();
                client.send_raw(lines.as_bytes());
                client
            })
        })
        .collect();
    let listeners: Vec<_> = [carol, dave]
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                let seen = numbered_lines(&mut client, &["alice", "bob"], 2 * LINES);
                (client, seen)
            })
        })
        .collect();
    let _senders: Vec<Client> = senders.into_iter().map(|s| s.join().expect("a sender")).collect();
    let seen: Vec<Vec<String>> =
        listeners.into_iter().map(|l| l.join().expect("a listener").1).collect();
    for (who, lines) in ["carol (on a)", "dave (on b)"].iter().zip(&seen) {
        for nick in ["alice", "bob"] {
            let own: Vec<String> =
                lines.iter().filter(|l| l.starts_with(&format!("<{nick}> "))).cloned().collect();
            let expected: Vec<String> =
                (1..=LINES).map(|n| format!("<{nick}> {nick} {n}")).collect();
            assert_eq!(own, expected, "{who}: {nick}'s lines, each once and in order");
        }
    }
    assert_eq!(seen[0], seen[1], "carol on a and dave on b saw different orders");
}

/// Redis stopped and started again: every user is told twice, chat on each node goes on
/// meanwhile, and what was said on each side reaches the other once contact is back (the
/// queue is sent; the test Redis has no persistence, so its stream starts empty). Nobody is
/// disconnected.
#[test]
fn redis_away_and_back_local_chat_goes_on_and_queued_lines_cross() {
    let mut nodes = TwoNodes::start();
    let [mut alice, mut carol, mut bob, mut dave] =
        nodes.room([(Node::A, "alice"), (Node::A, "carol"), (Node::B, "bob"), (Node::B, "dave")]);
    nodes.redis.stop();
    let stopped = std::time::Instant::now();
    let lost = "*** Lost contact with the other servers; local chat goes on";
    for client in [&mut alice, &mut carol, &mut bob, &mut dave] {
        client.expect(lost);
    }
    nodes.a.wait_for_log("cluster: lost Redis");
    nodes.b.wait_for_log("cluster: lost Redis");
    // Redis stays away for 10 s (the outage: longer than the connections' 5 s read
    // timeout, shorter than the 15 s lapse), while both nodes' users talk among themselves.
    let mut said = 0;
    while stopped.elapsed() < Duration::from_secs(10) {
        said += 1;
        alice.send(&format!("said on a meanwhile {said}"));
        for client in [&mut alice, &mut carol] {
            client.expect(&format!("<alice> said on a meanwhile {said}"));
        }
        bob.send(&format!("said on b meanwhile {said}"));
        for client in [&mut bob, &mut dave] {
            client.expect(&format!("<bob> said on b meanwhile {said}"));
        }
        std::thread::sleep(Duration::from_millis(500)); // the pace of the talk, not a wait
    }

    nodes.redis.start_again();
    let back = "*** Contact with the other servers is back";
    // Each side gets the other's lines of the outage, in the order they were said.
    for (client, other) in
        [(&mut alice, "bob"), (&mut carol, "bob"), (&mut bob, "alice"), (&mut dave, "alice")]
    {
        let mut before = client.expect(back);
        for n in 1..=said {
            let node = if other == "bob" { "b" } else { "a" };
            let line = format!("<{other}> said on {node} meanwhile {n}");
            if !before.contains(&line) {
                before.extend(client.expect(&line));
            }
        }
        assert_no_departure(&before);
        let prefix = format!("<{other}> said on");
        let got: Vec<&String> = client.seen.iter().filter(|l| l.starts_with(&prefix)).collect();
        let node = if other == "bob" { "b" } else { "a" };
        let expected: Vec<String> =
            (1..=said).map(|n| format!("<{other}> said on {node} meanwhile {n}")).collect();
        assert_eq!(got, expected.iter().collect::<Vec<_>>(), "once each, in order");
    }
    nodes.a.wait_for_log_count("cluster: connected to Redis as node a", 2);
    nodes.b.wait_for_log_count("cluster: connected to Redis as node b", 2);
    // Everyone is still there, across nodes, each line once.
    alice.send("after");
    for client in [&mut bob, &mut dave, &mut carol] {
        let seen = client.expect("<alice> after");
        assert!(
            !seen.iter().any(|l| l.contains("meanwhile")),
            "a line said during the outage came twice: {seen:?}"
        );
    }
    dave.send("me too");
    alice.expect("<dave> me too");
}

/// The words of a login or `/nick` refused because no nickname can be claimed now.
const NO_CLAIM_NOW: &str = "*** New nicknames cannot be checked with the other servers right now; \
                            try again in a moment";

/// While Redis is away a node gives out no new nickname (two nodes must never both admit
/// `erin`): a newcomer is told to try again and asked again, a member's `/nick` is refused,
/// and both work once contact is back. Members keep their nicks and their chat throughout.
#[test]
fn no_new_nickname_is_given_out_while_redis_is_away() {
    let mut nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::A, "bob")]);
    nodes.redis.stop();
    alice.expect("*** Lost contact with the other servers; local chat goes on");
    bob.expect("*** Lost contact with the other servers; local chat goes on");
    let mut erin = nodes.a.connect();
    erin.expect_prefix("*** Please choose a nickname");
    erin.send("erin");
    erin.expect(NO_CLAIM_NOW);
    erin.expect_prefix("*** Please choose a nickname");
    alice.send("/nick alicia");
    alice.expect(NO_CLAIM_NOW);
    alice.send("still alice");
    bob.expect("<alice> still alice");
    nodes.redis.start_again();
    alice.expect("*** Contact with the other servers is back");
    erin.send("erin");
    erin.expect("*** You are now known as erin. Type /help for commands.");
    alice.expect("*** erin has joined lobby");
    alice.send("/nick alicia");
    bob.expect("*** alice is now known as alicia");
    assert!(!alice.seen.iter().any(|l| l.contains("has left")), "{:?}", alice.seen);
}

/// A claim another node holds (as after an outage longer than a claim's life, 30 s, when
/// another node gave the nick out): the heartbeat finds it, and this node's user is renamed
/// within a beat (5 s), which the room sees.
#[test]
fn a_nickname_another_node_claimed_meanwhile_is_renamed_at_the_next_heartbeat() {
    let nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    let reply = nodes.redis.command(&["SET", "chatd:nick:alice", "b"]);
    assert!(!reply.is_error(), "SET: {reply:?}");
    alice.expect("*** alice is now known as alice_2");
    bob.expect("*** alice is now known as alice_2");
    nodes.a.wait_for_log("cluster: alice is held by another node");
    alice.send("/who");
    let who = alice.expect_prefix("*** In lobby");
    assert!(who.split([' ', ',']).any(|word| word == "alice_2"), "{who}");
}

fn assert_no_departure(lines: &[String]) {
    assert!(!lines.iter().any(|l| l.contains("has left")), "someone left: {lines:?}");
}

/// Every connection to Redis cut twice while alice says 40 lines: bob, on the other node,
/// sees each exactly once, in order.
#[test]
fn cut_redis_connections_lose_and_double_nothing() {
    let nodes = TwoNodes::start_with(harness::FAST_SENDERS);
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    let burst = |from: usize, to: usize| -> String {
        (from..=to).map(|n| format!("line {n}\r\n")).collect()
    };
    alice.send_raw(burst(1, 20).as_bytes());
    bob.expect("<alice> line 10");
    assert!(nodes.redis.kill_clients() >= 2, "the nodes had no connections to cut");
    alice.send_raw(burst(21, 40).as_bytes());
    bob.expect("<alice> line 25");
    nodes.redis.kill_clients();
    alice.send("the end");
    bob.expect("<alice> the end");
    let lines: Vec<String> =
        bob.seen.iter().filter(|l| l.starts_with("<alice> line ")).cloned().collect();
    let expected: Vec<String> = (1..=40).map(|n| format!("<alice> line {n}")).collect();
    let cluster_log = |daemon: &util::Daemon| -> Vec<String> {
        daemon.log().into_iter().filter(|l| l.contains("cluster:")).collect()
    };
    assert_eq!(
        lines,
        expected,
        "bob's view of alice's lines; node a logged {:#?}, node b {:#?}",
        cluster_log(&nodes.a),
        cluster_log(&nodes.b)
    );
}

/// A node killed -9, master, broker, sessions and all: its users leave every room on the
/// other node once its heartbeat lapses (15 s).
#[test]
fn a_killed_nodes_users_leave_everywhere_after_the_heartbeat_lapses() {
    let nodes = TwoNodes::start();
    let [mut bob, _alice, mut carol] =
        nodes.room([(Node::B, "bob"), (Node::A, "alice"), (Node::B, "carol")]);
    carol.send("/join rust");
    bob.expect("*** carol has left lobby (joined rust)");
    let _dan = util::login_seen_by(nodes.a.port, "dan", &mut [&mut bob]);
    // Node a's heartbeat is in Redis (the first comes within 5 s of its start): what lapses.
    wait_until("node a's first heartbeat", || {
        matches!(nodes.redis.command(&["HGET", "chatd:nodes", "a"]), redis::Reply::Bulk(Some(_)))
    });
    let group = nodes.a.pid();
    killpg(Pid::from_raw(group), Signal::SIGKILL).expect("kill node a's process group");
    let killed = std::time::Instant::now();
    // Gone, but for the master's zombie, which only its parent (this test) reaps, at the drop.
    wait_until("node a's processes are gone", || {
        processes_in_group(group).into_iter().all(|pid| util::process_state(pid) == Some('Z'))
    });
    // 15 s without heartbeat, plus up to one heartbeat's worth and slack.
    let patience = Duration::from_secs(30);
    bob.stream.set_read_timeout(Some(patience)).expect("a longer read timeout");
    bob.expect_all(&["*** alice has left (server a lost)", "*** dan has left (server a lost)"]);
    // Its last heartbeat was at most 5 s before the kill: 15 s of silence is at least 10 s.
    let after = killed.elapsed();
    assert!(after >= Duration::from_secs(10), "node a declared gone {after:?} after the kill");
    let gone = nodes.b.wait_for_log("cluster: node a is gone (no heartbeat for ");
    let age: u64 = gone
        .split("no heartbeat for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no age in {gone:?}"));
    assert!(age >= 15, "node a was declared gone before its heartbeat lapsed: {gone}");
    bob.send("/who");
    let who = bob.expect_prefix("*** In lobby");
    assert!(!who.contains("alice") && !who.contains("dan"), "{who}");
}

/// A wrong Redis password: the node starts, says why it cannot reach Redis, and keeps
/// serving: a newcomer is not disconnected but told to try again, since no nickname can be
/// checked with the other servers.
#[test]
fn a_wrong_redis_password_is_logged_and_the_node_keeps_serving() {
    let nodes = TwoNodes::start_with_redis_url(
        |redis| format!("redis://:wrong{}@127.0.0.1:{}/0", redis.password, redis.port),
        "",
    );
    let lost = nodes.a.wait_for_log("cluster: lost Redis");
    let lower = lost.to_lowercase();
    assert!(
        lower.contains("password") || lower.contains("wrongpass") || lower.contains("auth"),
        "the reason does not say it is the password: {lost}"
    );
    assert!(!lost.contains(&nodes.redis.password), "the password was logged: {lost}");
    // Node b, with the right one, is not troubled.
    nodes.b.wait_for_log("cluster: connected to Redis as node b");
    let mut carol = nodes.a.connect();
    for _ in 0..2 {
        carol.expect_prefix("*** Please choose a nickname");
        carol.send("carol");
        carol.expect(NO_CLAIM_NOW);
    }
    carol.expect_prefix("*** Please choose a nickname");
    // Said once per outage by each thread, not once per refused login.
    let lost_lines = nodes.a.log().into_iter().filter(|l| l.contains("cluster: lost Redis"));
    assert!(lost_lines.count() <= 2, "{:#?}", nodes.a.log());
    assert!(nodes.a.log().iter().all(|l| !l.contains("panicked")), "{:?}", nodes.a.log());
}

/// Redis unreachable when the node starts: it serves (a newcomer is asked to try again),
/// logs why, and connects once Redis is there; then the newcomer gets their nickname.
#[test]
fn a_node_started_before_redis_connects_when_it_comes() {
    let mut nodes = TwoNodes::start_before_redis();
    nodes.a.wait_for_log("cluster: lost Redis");
    let mut early = nodes.a.connect();
    early.expect_prefix("*** Please choose a nickname");
    early.send("early");
    early.expect(NO_CLAIM_NOW);
    early.expect_prefix("*** Please choose a nickname");
    nodes.redis.start_again();
    nodes.a.wait_for_log("cluster: connected to Redis as node a");
    nodes.b.wait_for_log("cluster: connected to Redis as node b");
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    alice.send("finally");
    bob.expect("<alice> finally");
    early.send("early");
    early.expect("*** You are now known as early. Type /help for commands.");
    bob.expect("*** early has joined lobby");
}

/// Entries a foreign writer put in the stream (fields chatd does not know, a newer version,
/// bytes that are no entry): each node skips them, says so, and chat across nodes goes on.
#[test]
fn foreign_entries_in_the_stream_are_skipped_and_chat_goes_on() {
    let nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    for entry in [
        &["foo", "bar"][..],
        &["v", "999", "n", "x", "e", "from the future"][..],
        &["v", "1", "n", "mallory", "e", "\u{1}not bincode\u{ff}"][..],
    ] {
        let mut args = vec!["XADD", "chatd:stream", "*"];
        args.extend_from_slice(entry);
        let reply = nodes.redis.command(&args);
        assert!(!reply.is_error(), "XADD {entry:?}: {reply:?}");
    }
    nodes.a.wait_for_log("cluster: skipped stream entry");
    nodes.b.wait_for_log("cluster: skipped stream entry");
    alice.send("still here");
    bob.expect("<alice> still here");
    bob.send("me too");
    alice.expect("<bob> me too");
    for daemon in [&nodes.a, &nodes.b] {
        assert!(daemon.log().iter().all(|l| !l.contains("panicked")), "{:?}", daemon.log());
    }
}
