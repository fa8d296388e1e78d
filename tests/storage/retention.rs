//! Retention: lines older than `history_days` are deleted by the daemon itself at start
//! (from the store and its search index), recent ones stay; `chatctl history --since` picks
//! by age or by time. The database is aged with the `sqlite3` CLI while the daemon is stopped.

use std::time::{Duration, SystemTime};

use super::{
    Backend, Found, arrive, db_path, give_to_nobody, say, search, sqlite3, start, stop, stored,
    wait_stored,
};
use crate::control::ok;

#[test]
fn lines_older_than_history_days_are_deleted_at_start() {
    let mut daemon = start(&Backend::Sqlite, "history_days = 30\n");
    let mut alice = daemon.login("alice");
    for text in ["ancient one", "ancient two", "earlier today", "fresh line"] {
        say(&mut alice, "alice", text);
    }
    wait_stored(&daemon, "lobby", "fresh line");
    drop(alice);
    stop(&mut daemon);
    let db = db_path(&daemon);
    sqlite3(
        &db,
        &[],
        "UPDATE lines SET at = at - 40*86400 WHERE text LIKE 'ancient%';
         UPDATE lines SET at = at - 3*3600 WHERE text = 'earlier today';",
    );
    give_to_nobody(db.parent().expect("the state directory"));

    let mut daemon = daemon.start_sharing();
    let kept = ["earlier today", "fresh line"];
    assert_eq!(stored(&daemon, "lobby"), kept, "log:\n{}", daemon.log().join("\n"));
    // What the newcomer was shown is checked last, so that a wrong history does not hide how
    // the rest goes.
    let mut carol = arrive(&daemon, "carol");
    assert_eq!(search(&mut carol.client, "lobby", "ancient"), Found::Nothing);

    // --since: an age, or a time.
    let since = |arg: &str| {
        let text = ok(daemon.chatctl(&["history", "lobby", "--since", arg]));
        text.lines()
            .map(|line| line.split_once(' ').map_or("", |(_, rest)| rest).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(since("2h"), ["<alice> fresh line"]);
    let four_hours_ago = SystemTime::now() - Duration::from_secs(4 * 3600);
    let time = humantime::format_rfc3339_seconds(four_hours_ago).to_string();
    assert_eq!(since(&time), ["<alice> earlier today", "<alice> fresh line"]);
    let later = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(since(&later.to_string()), Vec::<String>::new());
    drop(carol.client);
    stop(&mut daemon);
    let left =
        sqlite3(&db, &["-readonly"], "SELECT count(*) FROM lines WHERE text LIKE 'ancient%'");
    assert_eq!(left, "0\n");
    assert_eq!(carol.history, kept.map(|text| format!("<alice> {text}")), "shown to a newcomer");
}
