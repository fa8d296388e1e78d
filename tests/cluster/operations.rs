//! What runs a cluster from day to day, seen across its two nodes: a broker killed -9 on
//! one node (the one-host promise holds there, and the other node sees nobody leave),
//! history and `/search` from the shared PostgreSQL, the operators' chatctl on one node
//! acting on members of the other, and a stream entry of a newer version.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::harness::{Node, TwoNodes, expect_naming};
use crate::control::{json, ok};
use crate::storage::{Found, Page, history, search, shown_on_entry, wait_stored};
use crate::util::{Client, Daemon, wait_until};

/// How many lines `client` has seen that are exactly `line`.
fn times_seen(client: &Client, line: &str) -> usize {
    client.seen.iter().filter(|seen| *seen == line).count()
}

/// Waits until `daemon` (through `chatctl who`) has `nick` muted or not, as `muted` says: a
/// mute saved on one node reaches the others through the stream.
fn wait_muted(daemon: &Daemon, nick: &str, muted: bool) {
    wait_until(&format!("{nick} muted = {muted} on the node that has {nick}"), || {
        let who = json(daemon, &["who"]);
        who.as_array().is_some_and(|users| {
            users.iter().any(|user| user["nick"] == nick && user["muted"] == muted)
        })
    });
}

/// Moves `client` to `room`, where members of the other node are, and returns the history
/// it is shown there (as `storage::enter` does on one host). In a cluster its own join
/// notice goes through the stream while the topic notice and the history are replies of its
/// node: the join may come before, among or after them.
fn enter_across(client: &mut Client, nick: &str, room: &str) -> Vec<String> {
    client.send(&format!("/join {room}"));
    let (_topic, history) = shown_on_entry(client, room);
    // The `/who` that `shown_on_entry` sent goes on with the other node's members.
    client.expect_prefix("*** On other servers: ");
    let joined = format!("*** {nick} has joined {room}");
    if !client.seen.contains(&joined) {
        client.expect(&joined);
    }
    history
}

/// The broker of node a killed -9: alice, on a, stays connected, is told once, and talks
/// with bob on b again; the line she said just before the kill reaches bob and herself once
/// (re-sent to the new broker, the copy dropped by `(sender, seq)`); bob sees nobody leave.
#[test]
fn a_broker_killed_on_one_node_disconnects_nobody_and_the_other_node_sees_nobody_leave() {
    let nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    alice.send("right before the kill");
    kill(Pid::from_raw(nodes.a.broker_pid(1)), Signal::SIGKILL).expect("kill node a's broker");
    nodes.a.broker_pid(2);
    alice.expect("*** The chat service restarted; you are still in lobby.");
    // The new broker is in the cluster (what it publishes from now on, its roster first, is
    // in the stream before alice's next line).
    nodes.a.wait_for_log_count("cluster: connected to Redis as node a", 2);
    alice.send("after the restart");
    bob.expect("<alice> after the restart");
    alice.expect("<alice> after the restart");
    bob.send("welcome back");
    alice.expect("<bob> welcome back");
    bob.expect("<bob> welcome back");
    for (who, client) in [("bob", &bob), ("alice", &alice)] {
        assert_eq!(
            times_seen(client, "<alice> right before the kill"),
            1,
            "{who} did not see alice's last line before the kill exactly once:\n{}\nnode a's log:\n{}",
            client.seen.join("\n"),
            nodes.a.log().join("\n")
        );
    }
    let left: Vec<&String> = bob.seen.iter().filter(|line| line.contains("has left")).collect();
    assert!(left.is_empty(), "bob, on b, saw someone leave: {left:?}\n{}", bob.seen.join("\n"));
    bob.send("/who");
    expect_naming(&mut bob, "alice", "a");
    let notices: Vec<&String> =
        alice.seen.iter().filter(|line| line.contains("chat service restarted")).collect();
    assert_eq!(notices.len(), 1, "alice was told {notices:?}");
}

/// Lines said on node a are in the shared PostgreSQL: a newcomer to the room on node b gets
/// them in the history shown on joining, and `/search` and `/history` on b find them; what
/// bob says on b is found from a; each line is stored once, by the node it was said on.
#[test]
fn history_and_search_cover_lines_said_on_the_other_node() {
    let nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    alice.send("/join rust");
    alice.expect("*** alice has joined rust");
    let said = ["ferris says hello", "borrow checker ahead", "ferris again"];
    for text in said {
        alice.send(text);
        alice.expect(&format!("<alice> {text}"));
    }
    // Written in batches: node b, reading the shared database, holds them once they commit.
    wait_stored(&nodes.b, "rust", "ferris again");

    let shown = enter_across(&mut bob, "bob", "rust");
    let expected: Vec<String> = said.iter().map(|text| format!("<alice> {text}")).collect();
    assert_eq!(shown, expected, "the history bob, on b, was shown on joining rust");
    alice.expect("*** bob has joined rust");
    assert_eq!(
        search(&mut bob, "rust", "ferris"),
        Found::Lines(2, vec!["<alice> ferris again".into(), "<alice> ferris says hello".into()]),
        "/search on b"
    );
    assert_eq!(history(&mut bob, "rust", "/history"), Page::Lines(expected.clone()));

    bob.send("crabs on b");
    alice.expect("<bob> crabs on b");
    wait_stored(&nodes.a, "rust", "crabs on b");
    assert_eq!(
        search(&mut alice, "rust", "crabs"),
        Found::Lines(1, vec!["<bob> crabs on b".into()]),
        "/search on a"
    );
    let mut all = expected;
    all.push("<bob> crabs on b".into());
    // Both nodes had the room: neither stored the other's lines a second time.
    assert_eq!(history(&mut alice, "rust", "/history"), Page::Lines(all));
}

/// chatctl on one node acts on the whole cluster: a mute and an unmute on a hold bob on b,
/// an announcement on b reaches a, a kick on a removes bob from b, and a's status and
/// metrics show the cluster.
#[test]
fn chatctl_on_one_node_mutes_announces_and_kicks_across_the_cluster() {
    let nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);

    ok(nodes.a.chatctl(&["mute", "bob", "--for", "60s"]));
    wait_muted(&nodes.b, "bob", true);
    bob.send("hidden");
    bob.expect("<bob> hidden");
    ok(nodes.a.chatctl(&["unmute", "bob"]));
    wait_muted(&nodes.b, "bob", false);
    bob.send("visible");
    let before = alice.expect("<bob> visible");
    assert!(
        !before.iter().any(|line| line.contains("hidden")),
        "alice, on a, saw bob's muted line: {before:?}"
    );

    ok(nodes.b.chatctl(&["announce", "maintenance", "at", "noon"]));
    alice.expect("*** Announcement: maintenance at noon");
    bob.expect("*** Announcement: maintenance at noon");

    // Both nodes' heartbeats are in a's view of the cluster (the first within 5 s).
    let mut status = String::new();
    wait_until("node a's status names nodes a and b", || {
        status = ok(nodes.a.chatctl(&["status"]));
        status.lines().any(|line| {
            line.starts_with("cluster ")
                && line.contains("node a, in contact")
                && line.contains("a (this one")
                && line.contains("b (1 member(s)")
        })
    });
    let metrics = ok(nodes.a.chatctl(&["status", "--prometheus"]));
    assert!(metrics.lines().any(|line| line == "chatd_cluster_up{node=\"a\"} 1"), "{metrics}");

    let said = ok(nodes.a.chatctl(&["kick", "bob", "stop", "spamming"]));
    assert_eq!(said, "asked node b to kick bob\n");
    bob.expect("*** You were removed by an operator (stop spamming).");
    assert!(bob.expect_closed().is_empty(), "{:?}", bob.seen);
    alice.expect("*** bob was removed by an operator (stop spamming)");
    // Gone from the cluster: a's /who no longer has him.
    alice.send("/who");
    let who = alice.expect_prefix("*** In lobby");
    assert!(!who.split([' ', ',']).any(|word| word == "bob"), "{who}");
}

/// An entry written by a newer chatd (version 999) is skipped by both nodes, each saying
/// which version it was; chat across the nodes goes on.
#[test]
fn a_stream_entry_of_a_newer_version_is_skipped_and_logged_with_its_version() {
    let nodes = TwoNodes::start();
    let [mut alice, mut bob] = nodes.room([(Node::A, "alice"), (Node::B, "bob")]);
    let reply = nodes.redis.command(&[
        "XADD",
        "chatd:stream",
        "*",
        "v",
        "999",
        "n",
        "b",
        "e",
        "\u{7}not bincode at all",
    ]);
    assert!(!reply.is_error(), "XADD: {reply:?}");
    let id = reply.text();
    for daemon in [&nodes.a, &nodes.b] {
        let line = daemon.wait_for_log("cluster: skipped stream entry");
        assert!(
            line.contains(&format!("skipped stream entry {id} from b: version 999, newer than")),
            "{line}"
        );
    }
    alice.send("still talking");
    bob.expect("<alice> still talking");
    bob.send("so am I");
    alice.expect("<bob> so am I");
}
