//! `/admin`: chatctl's moderation and figures typed in the chat by a user logged in to an
//! account with the admin role, refused to guests and to accounts without the role, and
//! logged with who asked.

use super::{FAST, PASSWORD, register};
use crate::util::Daemon;

#[test]
fn an_admin_kicks_bans_and_reads_the_figures_and_others_are_refused() {
    let daemon = Daemon::start_with_config(FAST);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    register(&mut alice, "alice", PASSWORD);

    // Registered, but not yet an administrator.
    alice.send("/admin who");
    alice.expect("*** this account is not an administrator");
    bob.send("/admin status");
    bob.expect("*** /admin is for administrators: log in to an account with the admin role first");
    bob.send("/admin shutdown");
    bob.expect_prefix("*** Usage: /admin status | who");

    let output = daemon.chatctl(&["accounts", "grant", "alice", "admin"]);
    assert!(output.status.success(), "{output:?}");
    // The role counts from the next request, without logging in again.
    alice.send("/admin status");
    alice.expect_prefix("*** chatd ");
    alice.send("/admin kick bob stop spamming");
    bob.expect("*** You were removed by an operator (stop spamming).");
    alice.expect("*** kicked bob");
    daemon.wait_for_log("admin alice (from 127.0.0.1:");
    daemon.wait_for_log("asks: kick bob (stop spamming)");

    alice.send("/admin ban 127.0.0.9 10m flooding");
    alice.expect("*** banned 127.0.0.9 for 10m; 0 session(s) disconnected");
    let bans = daemon.chatctl(&["bans"]);
    assert!(String::from_utf8_lossy(&bans.stdout).contains("127.0.0.9"), "{bans:?}");
    alice.send("/admin unban 127.0.0.9");
    alice.expect("*** lifted the ban on 127.0.0.9");

    let output = daemon.chatctl(&["accounts", "revoke", "alice", "admin"]);
    assert!(output.status.success(), "{output:?}");
    alice.send("/admin bans");
    alice.expect("*** this account is not an administrator");
}
