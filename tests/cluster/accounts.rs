//! Accounts in a cluster: one set, in the shared PostgreSQL. An account registered on one
//! node is the other's at once (the registering node tells the stream, the others read the
//! accounts again).

use super::harness::{Node, TwoNodes};
use crate::accounts::{FAST, PASSWORD, log_in, register};

#[test]
fn an_account_registered_on_one_node_is_known_on_the_other() {
    let nodes = TwoNodes::start_with(FAST);
    let [mut bob] = nodes.room([(Node::B, "bob")]);
    let mut alice = nodes.a.login_seen_by("alice", &mut [&mut bob]);
    register(&mut alice, "alice", PASSWORD);
    // Node b read the accounts again (readiness: its log says so).
    nodes.b.wait_for_log("1 registered accounts");
    alice.send("/quit");
    alice.expect_closed();
    bob.expect("*** alice has left (quit)");
    // On node b the nick is alice's now: a guest is asked for her password...
    let mut guest = nodes.b.connect();
    guest.expect_prefix("*** Please choose a nickname");
    guest.send("alice");
    guest.expect("*** Password for alice:");
    drop(guest);
    // ...and the password logs her in there.
    let mut again = log_in(&nodes.b, "alice", PASSWORD);
    again.send("back on b");
    bob.expect("<alice> back on b");
}
