//! The operators' side of the store: `chatctl backup`, `history` (text and JSON), `forget`,
//! the `store:` line of `status` and the `chatd_store_*` metrics. `forget` is a scenario for
//! both stores; the rest is SQLite's (PostgreSQL's backup refusal is in `postgres.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    Backend, Found, arrive, chatctl_json, db_path, restart, say, search, sqlite3, start,
    store_line, store_status, stored, wait_stored,
};
use crate::control::{fails, ok};
use crate::reliability::NO_FLOOD_CONTROL;
use crate::util::wait_until;

/// `chatctl forget NICK` deletes that person's stored lines, whatever the case of the name,
/// from the store, the search index and the memory history; nobody else's.
pub fn forget_deletes_a_persons_lines(backend: &Backend) {
    let daemon = start(backend, "");
    let [mut alice, mut bob] = daemon.room(["alice", "Bob"]);
    say(&mut alice, "alice", "hello Bob");
    say(&mut bob, "Bob", "my secret plan");
    say(&mut bob, "Bob", "/me hides the plan");
    say(&mut alice, "alice", "bye");
    wait_stored(&daemon, "lobby", "bye");
    drop(bob);

    let said = ok(daemon.chatctl(&["forget", "BOB"]));
    assert!(said.starts_with("forgot ") && said.ends_with(": 2 stored lines deleted\n"), "{said}");
    assert_eq!(stored(&daemon, "lobby"), ["hello Bob", "bye"]);
    let mut carol = arrive(&daemon, "carol");
    assert_eq!(carol.history, ["<alice> hello Bob", "<alice> bye"]);
    assert_eq!(search(&mut carol.client, "lobby", "plan"), Found::Nothing);
    assert!(matches!(search(&mut carol.client, "lobby", "bye"), Found::Lines(..)));
    drop((alice, carol));
    // Gone from the store itself, not only from what this broker remembers.
    let daemon = restart(daemon);
    assert_eq!(arrive(&daemon, "dave").history, ["<alice> hello Bob", "<alice> bye"]);
}

#[test]
fn sqlite_forget_deletes_a_persons_lines() {
    forget_deletes_a_persons_lines(&Backend::Sqlite);
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

#[test]
fn backup_makes_a_sound_copy_of_the_live_database_and_never_overwrites() {
    let daemon = start(&Backend::Sqlite, "");
    let mut alice = daemon.login("alice");
    say(&mut alice, "alice", "kept in the copy");
    say(&mut alice, "alice", "/me is archived");
    wait_stored(&daemon, "lobby", "is archived");
    // Anywhere the operator may write, even where the daemon's user may not.
    let elsewhere = tempfile::tempdir().expect("a private directory");
    let copy = elsewhere.path().join("copy.db");
    let said = ok(daemon.chatctl(&["backup", copy.to_str().expect("a UTF-8 path")]));
    let bytes = std::fs::metadata(&copy).expect("the copy exists").len();
    assert_eq!(said, format!("backed up to {} ({bytes} bytes)\n", copy.display()));
    assert_eq!(sqlite3(&copy, &["-readonly"], "PRAGMA integrity_check"), "ok\n");
    let rows =
        sqlite3(&copy, &["-readonly"], "SELECT room, nick, action, text FROM lines ORDER BY id");
    assert_eq!(rows, "lobby|alice|0|kept in the copy\nlobby|alice|1|is archived\n");
    let beside: Vec<String> = std::fs::read_dir(elsewhere.path())
        .expect("list")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(beside, ["copy.db"], "nothing left beside the copy (-journal, -wal)");

    let refused = fails(daemon.chatctl(&["backup", copy.to_str().expect("a UTF-8 path")]), 1);
    assert!(refused.contains(&copy.display().to_string()), "{refused}");
    assert_eq!(std::fs::metadata(&copy).expect("still there").len(), bytes, "left alone");
    let state = db_path(&daemon).parent().map(std::fs::read_dir).expect("the state dir");
    let leftovers: Vec<String> = state
        .expect("list the state directory")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left in the state directory: {leftovers:?}");
}

#[test]
fn history_status_and_metrics_show_the_store() {
    let started = now();
    let daemon = start(&Backend::Sqlite, "");
    let mut alice = daemon.login("alice");
    say(&mut alice, "alice", "a plain line");
    say(&mut alice, "alice", "/me acts");
    wait_stored(&daemon, "lobby", "acts");

    let lines = chatctl_json(&daemon, &["history", "lobby"]);
    let lines = lines.as_array().expect("an array");
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, (text, action)) in lines.iter().zip([("a plain line", false), ("acts", true)]) {
        assert_eq!((line["from"].as_str(), line["text"].as_str()), (Some("alice"), Some(text)));
        assert_eq!(line["action"], action, "{line}");
        let at = line["at"].as_u64().expect("at: Unix seconds");
        assert!((started..=now()).contains(&at), "{line}");
        let time = line["time"].as_str().expect("time");
        let parsed = humantime::parse_rfc3339(time).expect("an RFC 3339 time");
        assert_eq!(parsed.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(), Some(at), "{line}");
        assert!(time.ends_with('Z') && line["id"].is_i64(), "{line}");
    }
    assert!(lines[0]["id"].as_i64() < lines[1]["id"].as_i64());
    let text = ok(daemon.chatctl(&["history", "lobby"]));
    let shown: Vec<(&str, &str)> = text.lines().filter_map(|line| line.split_once(' ')).collect();
    assert_eq!(
        shown.iter().map(|(_, rest)| *rest).collect::<Vec<_>>(),
        ["<alice> a plain line", "* alice acts"]
    );
    for (time, _) in &shown {
        assert!(time.len() == 20 && humantime::parse_rfc3339(time).is_ok(), "{text}");
    }

    let db = db_path(&daemon);
    wait_until("no line waits", || store_status(&daemon)["waiting_lines"] == 0);
    let store = store_status(&daemon);
    assert_eq!(store["kind"], "sqlite", "{store}");
    assert_eq!(store["location"], db.display().to_string(), "{store}");
    assert!(store["bytes"].as_u64() > Some(0), "{store}");
    assert_eq!((&store["dropped_lines"], &store["failing"]), (&0.into(), &serde_json::Value::Null));
    assert!(store["write_ms_last"].as_f64() <= store["write_ms_max"].as_f64(), "{store}");
    assert!(store["write_ms_max"].is_number(), "{store}");
    let line = store_line(&daemon);
    assert!(line.starts_with(&format!("sqlite {},", db.display())), "store: {line}");
    assert!(line.contains("0 lines waiting") && line.contains("last write"), "{line}");

    let metrics = ok(daemon.chatctl(&["status", "--prometheus"]));
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?;
                let labelled = rest.starts_with(' ') || rest.starts_with('{');
                labelled.then(|| rest.rsplit(' ').next()?.parse::<f64>().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("chatd_store_bytes") > 0.0);
    assert_eq!(value("chatd_store_waiting_lines"), 0.0);
    assert!(value("chatd_store_written_lines_total") >= 2.0);
    assert_eq!(value("chatd_store_dropped_lines_total"), 0.0);
    assert!(value("chatd_store_write_seconds_count") >= 1.0);
    assert!(value("chatd_store_write_seconds_sum") >= 0.0);
    assert_eq!(value("chatd_store_up"), 1.0);
}

#[test]
fn chatctl_history_gives_at_most_10000_lines() {
    let daemon = start(&Backend::Sqlite, NO_FLOOD_CONTROL);
    let mut alice = daemon.login("alice");
    let said: String = (1..=10_001).map(|n| format!("n {n}\r\n")).collect();
    alice.send_raw(said.as_bytes());
    alice.expect("<alice> n 10001");
    wait_until("the store has written every line", || {
        let metrics = ok(daemon.chatctl(&["status", "--prometheus"]));
        metrics.lines().any(|line| line == "chatd_store_written_lines_total 10001")
    });
    let lines = chatctl_json(&daemon, &["history", "lobby"]);
    assert_eq!(lines.as_array().map(Vec::len), Some(10_000));
}
