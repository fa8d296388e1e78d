//! `history_days = 0`: nothing on disk (no `chatd.db` is ever created), `/history` shows the
//! lines in memory, `/search` says it needs `history_days`, `status` says there is no store.

use super::{Backend, Found, Page, arrive, history, say, search, start, stop, store_line};
use crate::util::Daemon;

fn database_files(daemon: &Daemon) -> Vec<String> {
    let state = daemon.runtime.path().join("state");
    let names = std::fs::read_dir(&state).into_iter().flatten();
    names
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("chatd.db"))
        .collect()
}

#[test]
fn with_history_days_0_nothing_is_stored_and_history_comes_from_memory() {
    let mut daemon = start(&Backend::Sqlite, "history_days = 0\n");
    let mut alice = daemon.login("alice");
    for text in ["one", "two", "/me three"] {
        say(&mut alice, "alice", text);
    }
    let in_memory = ["<alice> one", "<alice> two", "* alice three"].map(String::from).to_vec();
    assert_eq!(history(&mut alice, "lobby", "/history"), Page::Lines(in_memory.clone()));
    match search(&mut alice, "lobby", "one") {
        Found::Refused(line) => assert!(line.contains("history_days"), "{line}"),
        other => panic!("/search with history_days = 0 gave {other:?}"),
    }
    assert_eq!(arrive(&daemon, "bob").history, in_memory);
    let store = store_line(&daemon);
    assert!(store.starts_with("none (history_days = 0"), "store {store}");
    assert_eq!(database_files(&daemon), Vec::<String>::new());
    drop(alice);
    stop(&mut daemon);
    assert_eq!(database_files(&daemon), Vec::<String>::new());
}
