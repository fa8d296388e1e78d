//! An upgrade: a database of the previous schema version (1: lines and topics, no search
//! index), made with the `sqlite3` CLI as that version laid it out, is brought up to date at
//! start; its lines and topic are shown, and the search index the upgrade made finds them.

use std::sync::Arc;

use super::{Backend, Found, arrive, give_to_nobody, search, sqlite3, stop};
use crate::util::{Daemon, runtime_dir};

/// Schema version 1 as the store lays it out, with two lines and a topic said an hour ago.
const VERSION_1: &str = "
    CREATE TABLE lines (
        id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, at INTEGER NOT NULL,
        nick TEXT NOT NULL, nick_key TEXT NOT NULL, sender INTEGER NOT NULL,
        seq INTEGER NOT NULL, action INTEGER NOT NULL, text TEXT NOT NULL,
        UNIQUE (sender, seq)
    );
    CREATE INDEX lines_by_room ON lines (room, id);
    CREATE INDEX lines_by_time ON lines (at);
    CREATE INDEX lines_by_nick ON lines (nick_key);
    CREATE TABLE topics (room TEXT PRIMARY KEY, text TEXT NOT NULL, set_at INTEGER NOT NULL);
    INSERT INTO lines (room, at, nick, nick_key, sender, seq, action, text) VALUES
        ('lobby', unixepoch() - 3600, 'Zoë', 'zoë', 7, 1, 0, 'Crème brûlée for 你们'),
        ('lobby', unixepoch() - 3599, 'Zoë', 'zoë', 7, 2, 1, 'bakes');
    INSERT INTO topics VALUES ('lobby', 'Desserts', unixepoch() - 3600);
    PRAGMA user_version = 1;
";

#[test]
fn a_database_of_the_previous_version_is_brought_up_to_date() {
    let runtime = Arc::new(runtime_dir());
    let state = runtime.path().join("state");
    std::fs::create_dir(&state).expect("create the state directory");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown the state dir");
    let db = state.join("chatd.db");
    sqlite3(&db, &[], VERSION_1);
    give_to_nobody(&state);
    let mut daemon = Daemon::start_on(Arc::clone(&runtime), &Backend::Sqlite.config());

    let mut carol = arrive(&daemon, "carol");
    assert_eq!(carol.topic, "*** Topic for lobby: Desserts");
    assert_eq!(carol.history, ["<Zoë> Crème brûlée for 你们", "* Zoë bakes"]);
    let found = search(&mut carol.client, "lobby", "creme 你们");
    assert_eq!(found, Found::Lines(1, vec!["<Zoë> Crème brûlée for 你们".into()]));
    drop(carol);
    stop(&mut daemon);
    let version = sqlite3(&db, &["-readonly"], "PRAGMA user_version");
    assert!(version.trim().parse::<u32>().is_ok_and(|version| version > 1), "{version}");
    assert_eq!(sqlite3(&db, &["-readonly"], "PRAGMA integrity_check"), "ok\n");
}
