//! The same behaviour on PostgreSQL: each test starts a throwaway cluster of its own
//! (`util::postgres`) and runs a scenario of the other files against it; what only
//! PostgreSQL has (its backup refusal, the password file, a server that goes away and comes
//! back) is here too.

use super::crash::{Kill, committed_lines_survive_a_kill, held_once_in_order};
use super::full_text::search_finds_words_in_any_script;
use super::operators::forget_deletes_a_persons_lines;
use super::survival::{
    every_echoed_line_survives_a_stop, history_pages_back_through_the_room,
    lines_and_topic_survive_restarts, lines_sent_again_after_a_broker_restart_are_kept_once,
    talking_while_a_room_loads,
};
use super::{
    Backend, Found, Page, history, say, search, start, store_line, store_status, wait_stored,
    wait_until_it_works_again,
};
use crate::control::{fails, ok};
use crate::util::postgres::Cluster;

/// Runs `scenario` against a cluster of its own, and hands the cluster back for a look inside.
fn on_a_cluster(scenario: impl FnOnce(&Backend)) -> Cluster {
    let cluster = Cluster::start();
    scenario(&Backend::Postgres(cluster.url()));
    cluster
}

#[test]
fn postgres_lines_and_topic_survive_restarts() {
    on_a_cluster(lines_and_topic_survive_restarts);
}

#[test]
fn postgres_lines_sent_again_after_a_broker_restart_are_kept_once() {
    on_a_cluster(lines_sent_again_after_a_broker_restart_are_kept_once);
}

#[test]
fn postgres_every_echoed_line_survives_a_stop() {
    on_a_cluster(every_echoed_line_survives_a_stop);
}

#[test]
fn postgres_talking_while_a_room_loads() {
    on_a_cluster(talking_while_a_room_loads);
}

#[test]
fn postgres_history_pages_back_through_the_room() {
    on_a_cluster(history_pages_back_through_the_room);
}

#[test]
fn postgres_search_finds_words_in_any_script() {
    on_a_cluster(search_finds_words_in_any_script);
}

#[test]
fn postgres_forget_deletes_a_persons_lines() {
    on_a_cluster(forget_deletes_a_persons_lines);
}

#[test]
fn postgres_committed_lines_survive_a_kill_of_the_broker() {
    let cluster =
        on_a_cluster(|backend| drop(committed_lines_survive_a_kill(backend, Kill::Broker)));
    held_once_in_order(&cluster.psql("SELECT text FROM lines ORDER BY id"));
}

#[test]
fn postgres_committed_lines_survive_a_kill_of_everything() {
    let cluster =
        on_a_cluster(|backend| drop(committed_lines_survive_a_kill(backend, Kill::Everything)));
    held_once_in_order(&cluster.psql("SELECT text FROM lines ORDER BY id"));
}

/// The password comes from `database_password_file`, never shows in the log or the status;
/// backup is PostgreSQL's own business; when the server goes away chat goes on, and the lines
/// said meanwhile are written once it is back.
#[test]
fn postgres_password_file_backup_refusal_and_a_server_that_comes_back() {
    let password = "a3f1c2d4e5b60718293a4b5c6d7e8f90";
    let mut cluster = Cluster::start_with_password(password);
    let secret = tempfile::NamedTempFile::new().expect("a password file");
    std::fs::write(secret.path(), format!("{password}\n")).expect("write the password file");
    // Readable by the daemon's user only, as the docs say to make it.
    std::os::unix::fs::chown(secret.path(), Some(65534), Some(65534)).expect("chown it");
    let config = format!("database_password_file = \"{}\"\n", secret.path().display());
    let daemon = start(&Backend::Postgres(cluster.url()), &config);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    say(&mut alice, "alice", "stored in postgres");
    wait_stored(&daemon, "lobby", "stored in postgres");

    let store = store_status(&daemon);
    assert_eq!(store["kind"], "postgres", "{store}");
    let line = store_line(&daemon);
    assert!(line.starts_with("postgres"), "store: {line}");
    let status = ok(daemon.chatctl(&["status"]));
    let elsewhere = tempfile::tempdir().expect("a directory");
    let copy = elsewhere.path().join("copy.db");
    let refused = fails(daemon.chatctl(&["backup", copy.to_str().expect("a UTF-8 path")]), 1);
    assert!(refused.contains("pg_dump"), "{refused}");

    cluster.stop();
    say(&mut alice, "alice", "while the server is away");
    bob.expect("<alice> while the server is away");
    let failed = daemon.wait_for_log("history is kept in memory");
    assert!(failed.contains(&cluster.socket_dir().display().to_string()), "names it: {failed}");
    match search(&mut bob, "lobby", "away") {
        Found::Refused(line) => assert!(line.contains("not available"), "{line}"),
        other => panic!("/search while the server is away gave {other:?}"),
    }
    cluster.start_again();
    wait_until_it_works_again(&daemon);
    let held = wait_stored(&daemon, "lobby", "while the server is away");
    assert_eq!(held, ["stored in postgres", "while the server is away"]);
    assert!(matches!(history(&mut bob, "lobby", "/history"), Page::Lines(..)));
    let everything = format!("{}\n{status}", daemon.log().join("\n"));
    assert!(!everything.contains(password), "the password was shown:\n{everything}");
}

/// A password in the URL itself (the settings file is the operator's) is used, and shown
/// nowhere: not in the log, not in the status's location.
#[test]
fn postgres_a_password_in_the_url_is_used_and_never_shown() {
    let password = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let cluster = Cluster::start_with_password(password);
    let url =
        cluster.url().replacen("postgres://chatd@", &format!("postgres://chatd:{password}@"), 1);
    assert!(url.contains(password), "{url}");
    let daemon = start(&Backend::Postgres(url), "");
    let mut alice = daemon.login("alice");
    say(&mut alice, "alice", "through a password in the URL");
    wait_stored(&daemon, "lobby", "through a password in the URL");
    let shown =
        format!("{}\n{}\n{}", daemon.log().join("\n"), store_line(&daemon), store_status(&daemon));
    assert!(!shown.contains(password), "the password was shown:\n{shown}");
}
