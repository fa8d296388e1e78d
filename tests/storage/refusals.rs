//! Unusable stores at start: a file that is not a database and a database of a newer schema
//! make the daemon refuse to start, naming the file (and leave the file as it was); an
//! unreachable PostgreSQL lets it start, chat from memory, and say so, naming the address
//! and never the password. Never a silent empty history.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::{Found, Page, give_to_nobody, history, say, search, sqlite3, store_line};
use crate::control::ok;
use crate::util::{Daemon, runtime_dir, spawn_chatd};

/// How a start on a planted database ended.
struct Ended {
    status: ExitStatus,
    log: String,
    db: PathBuf,
    /// Kept until the test ends, for the file's sake.
    _runtime: tempfile::TempDir,
}

/// Starts chatd on a state directory whose `chatd.db` `plant` made, and waits for it to exit.
fn start_on_planted(plant: impl FnOnce(&Path)) -> Ended {
    let runtime = runtime_dir();
    let state = runtime.path().join("state");
    std::fs::create_dir(&state).expect("create the state directory");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown the state dir");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o750))
        .expect("chmod the state dir");
    let db = state.join("chatd.db");
    plant(&db);
    give_to_nobody(&state);
    let mut chatd = spawn_chatd(runtime.path(), "", &[], &[]);
    let status = chatd.wait_exit();
    Ended { status, log: chatd.whole_log().join("\n"), db, _runtime: runtime }
}

#[test]
fn a_file_that_is_not_a_database_stops_the_start_and_is_left_alone() {
    let garbage: Vec<u8> =
        (0..4096u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let Ended { status, log, db, _runtime } =
        start_on_planted(|db| std::fs::write(db, &garbage).expect("write the garbage"));
    assert!(!status.success(), "the daemon started on garbage; log:\n{log}");
    assert!(log.contains(&db.display().to_string()), "the log names {}:\n{log}", db.display());
    assert_eq!(std::fs::read(&db).expect("the file is still there"), garbage, "left alone");
}

#[test]
fn a_database_of_a_newer_schema_stops_the_start() {
    let Ended { status, log, db, _runtime } = start_on_planted(|db| {
        sqlite3(db, &[], "CREATE TABLE lines (id INTEGER PRIMARY KEY); PRAGMA user_version = 99;");
    });
    assert!(!status.success(), "the daemon started on a newer schema; log:\n{log}");
    let named = log.lines().find(|line| line.contains(&db.display().to_string()));
    let named = named.unwrap_or_else(|| panic!("the log names {}:\n{log}", db.display()));
    assert!(named.contains("99") && named.contains("version"), "says which version: {named}");
    assert_eq!(sqlite3(&db, &["-readonly"], "PRAGMA user_version"), "99\n", "not migrated");
}

#[test]
fn an_unreachable_postgresql_at_start_is_logged_and_chat_goes_on_from_memory() {
    let password = "pw-never-in-logs";
    let config =
        format!("database = \"postgres://chatd:{password}@/chatd?host=/nonexistent-dir\"\n");
    let daemon = Daemon::start_with_config(&config);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    say(&mut alice, "alice", "chat goes on");
    bob.expect("<alice> chat goes on");
    let said = daemon.wait_for_log("history is kept in memory");
    assert!(said.contains("/nonexistent-dir"), "names the address: {said}");
    match search(&mut alice, "lobby", "chat") {
        Found::Refused(line) => assert!(line.contains("not available"), "{line}"),
        other => panic!("/search without a database gave {other:?}"),
    }
    match history(&mut alice, "lobby", "/history") {
        Page::Refused(line) => assert!(line.contains("not available"), "{line}"),
        other => panic!("/history without a database gave {other:?}"),
    }
    // Without the accounts, "no such nick" could be wrong: the line is refused as not sent.
    alice.send("/msg carol are you registered");
    alice.expect(
        "*** Not sent: carol is not connected, and whether they are registered cannot be told \
         yet (accounts are not loaded yet)",
    );
    alice.send("/msg bob you are here");
    bob.expect("*alice* you are here");
    let store = store_line(&daemon);
    assert!(store.starts_with("failing"), "store: {store}");
    let status = ok(daemon.chatctl(&["status"]));
    let everything = format!("{}\n{status}", daemon.log().join("\n"));
    assert!(!everything.contains(password), "the password was shown:\n{everything}");
}
