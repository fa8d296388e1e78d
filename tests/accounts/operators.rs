//! What operators choose and do about accounts, against the real binary: `accounts =
//! "required"` and `"off"`, and `chatctl accounts` (list, show, grant and revoke admin, reset a
//! password, which the user must then change at login, and delete).

use std::sync::Arc;

use serde_json::Value;

use super::{
    FAST, OTHER_PASSWORD, PASSWORD, log_in, register, register_and_leave, wait_until_gone,
};
use crate::control::ok;
use crate::util::Daemon;

#[test]
fn required_accounts_refuse_every_line_of_a_guest_until_it_registers() {
    let daemon = Daemon::start_with_config(&format!("{FAST}accounts = \"required\"\n"));
    let mut alice = daemon.login("alice");
    register(&mut alice, "alice", PASSWORD);
    let mut carol = daemon.login_seen_by("carol", &mut [&mut alice]);
    let required = "*** This server requires an account: /register to create one, or /login";
    for line in ["hello?", "/me waves", "/msg alice psst", "/join tea"] {
        carol.send(line);
        carol.expect(required);
    }
    register(&mut carol, "carol", OTHER_PASSWORD);
    carol.send("hello now");
    let before = alice.expect("<carol> hello now");
    let leaked: Vec<&String> = before.iter().filter(|line| line.contains("carol")).collect();
    assert!(leaked.is_empty(), "alice saw what carol was refused: {leaked:?}");
}

#[test]
fn with_accounts_off_the_commands_say_so_and_no_nick_is_reserved() {
    // alice registers while accounts are on; the same state with accounts off reserves nothing.
    let first = Daemon::start_with_config(FAST);
    let mut bob = first.login("bob");
    register_and_leave(&first, "alice", PASSWORD, &mut bob);
    let runtime = Arc::clone(&first.runtime);
    drop(bob);
    drop(first);
    let daemon = Daemon::start_on(runtime, &format!("{FAST}accounts = \"off\"\n"));
    let mut alice = daemon.login("alice");
    for command in ["/register", "/login", "/login alice", "/password", "/logout", "/unregister"] {
        alice.send(command);
        alice.expect("*** accounts are off on this server");
    }
}

/// `chatctl --json ARGS`, parsed.
fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(daemon.chatctl(&all));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}):\n{text}"))
}

/// What chatctl said, on either stream.
fn said(output: std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The row of `nick` in `chatctl accounts`'s table, split into its columns.
fn table_row(daemon: &Daemon, nick: &str) -> Vec<String> {
    let table = ok(daemon.chatctl(&["accounts"]));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NICK", "CREATED", "LAST-SEEN", "ONLINE", "ADMIN"], "{table}");
    lines
        .map(|line| line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|row| row.first().map(String::as_str) == Some(nick))
        .unwrap_or_else(|| panic!("no row for {nick}:\n{table}"))
}

#[test]
fn chatctl_lists_shows_grants_revokes_resets_and_deletes_accounts() {
    let daemon = Daemon::start_with_config(FAST);
    let mut bob = daemon.login("bob");
    register_and_leave(&daemon, "alice", PASSWORD, &mut bob);
    register(&mut bob, "bob", OTHER_PASSWORD);

    // The table's last two columns: online, admin.
    let row = table_row(&daemon, "bob");
    assert_eq!(row[row.len() - 2..], ["yes", "no"], "{row:?}");
    let row = table_row(&daemon, "alice");
    assert_eq!(row[row.len() - 2..], ["no", "no"], "{row:?}");
    assert_eq!(ok(daemon.chatctl(&["accounts", "list"])), ok(daemon.chatctl(&["accounts"])));
    let rows = json(&daemon, &["accounts", "list"]);
    let nicks: Vec<&str> = rows
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row["nick"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(nicks.len(), 2, "{rows}");
    assert!(nicks.contains(&"alice") && nicks.contains(&"bob"), "{rows}");

    let shown = ok(daemon.chatctl(&["accounts", "show", "alice"]));
    assert!(shown.lines().all(|line| line.contains(": ")), "not key: value lines:\n{shown}");
    assert!(shown.lines().any(|line| line.ends_with(": alice")), "{shown}");
    assert!(
        said(daemon.chatctl(&["accounts", "show", "nobody"])).contains("no such account: nobody")
    );

    let granted = ok(daemon.chatctl(&["accounts", "grant", "alice", "admin"]));
    assert_eq!(granted.trim(), "alice is an admin now");
    let row = table_row(&daemon, "alice");
    assert_eq!(row[row.len() - 1], "yes", "{row:?}");
    let revoked = ok(daemon.chatctl(&["accounts", "revoke", "alice", "admin"]));
    assert_eq!(revoked.trim(), "alice is no admin now");
    let row = table_row(&daemon, "alice");
    assert_eq!(row[row.len() - 1], "no", "{row:?}");

    // A reset password works once, and its user must choose a new one at once.
    let reset = ok(daemon.chatctl(&["accounts", "reset-password", "alice"]));
    let one_time = reset
        .trim()
        .strip_prefix("one-time password for alice: ")
        .and_then(|rest| rest.strip_suffix(" (it must be changed at the next login)"))
        .unwrap_or_else(|| panic!("{reset:?}"))
        .to_string();
    let mut alice = daemon.connect();
    alice.expect_prefix("*** Please choose a nickname");
    alice.send("alice");
    alice.expect("*** Password for alice:");
    alice.send(&one_time);
    alice.expect("*** Welcome back, alice.");
    alice.expect("*** An operator reset your password; choose a new one now.");
    alice.expect("*** New password:");
    alice.send("a new password of mine");
    alice.expect("*** Type it again:");
    alice.send("a new password of mine");
    alice.expect("*** Your password is changed");
    alice.send("/quit");
    alice.expect_closed();
    wait_until_gone(&daemon, "alice");
    let mut alice = log_in(&daemon, "alice", "a new password of mine");
    alice.send("/quit");
    alice.expect_closed();
    wait_until_gone(&daemon, "alice");

    let deleted = ok(daemon.chatctl(&["accounts", "delete", "alice"]));
    assert_eq!(deleted.trim(), "alice is no longer registered");
    assert!(
        said(daemon.chatctl(&["accounts", "show", "alice"])).contains("no such account: alice")
    );
    // The nick is anyone's again.
    daemon.login("alice");
}

/// A nick an operator banned cannot be had through `/login` either, registered or not.
#[test]
fn login_to_a_banned_nick_is_refused_like_a_nick_change() {
    let daemon = Daemon::start_with_config(FAST);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    register(&mut alice, "alice", PASSWORD);
    alice.send("/quit");
    bob.expect("*** alice has left (quit)");
    ok(daemon.chatctl(&["ban", "alice"]));
    bob.send("/login alice");
    bob.expect("*** The nickname alice is banned here");
    bob.send("/ignore carol");
    bob.expect(
        "*** You will not see lines or messages from carol in this session. /unignore carol to undo.",
    );
}
