//! The SQLite store's tests: the shared conformance checks on a real file, and what only
//! SQLite has (migrations by `user_version`, a file that is not a database, WAL, `VACUUM
//! INTO`, two connections at once). Every test works in a temporary directory of its own.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::store::{NewLine, conformance};

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn line(room: &str, sender: u64, seq: u64, text: &str) -> NewLine {
    NewLine {
        room: room.into(),
        at: 1_790_000_000 + seq,
        from: "alice".into(),
        from_key: "alice".into(),
        sender,
        seq,
        action: false,
        text: text.into(),
    }
}

fn batch(lines: Vec<NewLine>) -> Batch {
    Batch { lines, topics: Vec::new(), accounts: Vec::new() }
}

fn user_version(store: &SqliteStore) -> i64 {
    store.conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
}

fn search_texts(store: &mut SqliteStore, room: &str, words: &str) -> Vec<String> {
    let found = store.search(room, &Query::parse(words).unwrap(), 20).unwrap();
    found.into_iter().map(|line| line.text).collect()
}

/// How many entries the search index has for a token, whether or not their line exists.
fn index_entries(store: &SqliteStore, token: &str) -> i64 {
    let sql = "SELECT count(*) FROM lines_search WHERE lines_search MATCH ?1";
    store.conn.query_row(sql, [fts_string(token)], |row| row.get(0)).unwrap()
}

#[test]
fn a_fresh_file_does_what_every_store_does() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    conformance::run_all(&mut store);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn each_check_passes_alone_on_a_fresh_file() {
    for (name, check) in conformance::CHECKS {
        let dir = temp_dir();
        let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
        println!("check: {name}");
        check(&mut store);
    }
}

#[test]
fn a_new_file_is_created_in_wal_mode_at_the_current_version() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    let store = SqliteStore::open(&path).unwrap();
    assert!(path.exists());
    assert_eq!(store.location(), path.display().to_string());
    assert_eq!(user_version(&store), SCHEMA_VERSION);
    let mode: String =
        store.conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let synchronous: i64 =
        store.conn.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap();
    assert_eq!(synchronous, 1, "NORMAL");
    let foreign_keys: i64 =
        store.conn.pragma_query_value(None, "foreign_keys", |row| row.get(0)).unwrap();
    assert_eq!(foreign_keys, 1);
}

#[test]
fn migrating_from_version_one_indexes_the_lines_already_there() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    {
        let old = SqliteStore::open_at_version(&path, 1).unwrap();
        assert_eq!(user_version(&old), 1);
        // What a chatd of schema version 1 wrote: lines and no index.
        let insert = "INSERT INTO lines (room, at, nick, nick_key, sender, seq, action, text)
                      VALUES ('lobby', ?1, 'Zoë', 'zoë', 1, ?1, 0, ?2)";
        for (seq, text) in [(1, "Crème brûlée"), (2, "東京駅で会おう"), (3, "nothing")] {
            old.conn.execute(insert, params![seq, text]).unwrap();
        }
    }
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&store), SCHEMA_VERSION);
    assert_eq!(search_texts(&mut store, "lobby", "creme"), ["Crème brûlée"]);
    assert_eq!(search_texts(&mut store, "lobby", "東京"), ["東京駅で会おう"]);
    // New lines go on after the old ones, and forgetting an old line drops its index entry.
    store.write(&batch(vec![line("lobby", 2, 1, "more crème")])).unwrap();
    assert_eq!(search_texts(&mut store, "lobby", "creme"), ["more crème", "Crème brûlée"]);
    assert_eq!(store.forget("zoë").unwrap(), 3);
    assert_eq!(index_entries(&store, "brulee"), 0);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn opening_again_migrates_nothing_and_keeps_everything() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    {
        let mut store = SqliteStore::open(&path).unwrap();
        let topics = vec![("lobby".to_string(), "kept".to_string())];
        store
            .write(&Batch {
                lines: vec![line("lobby", 1, 1, "said before")],
                topics,
                accounts: Vec::new(),
            })
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    let record = store.load_room("lobby", 10, u64::MAX).unwrap();
    assert_eq!(record.topic.as_deref(), Some("kept"));
    assert_eq!(record.lines.len(), 1);
    assert_eq!(record.lines[0].text, "said before");
    assert_eq!(search_texts(&mut store, "lobby", "before"), ["said before"]);
}

#[test]
fn a_database_of_a_newer_schema_is_refused_by_name() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    }
    let err = SqliteStore::open(&path).err().unwrap();
    let StoreError::TooNew { location, found, known } = &err else { panic!("{err:?}") };
    assert_eq!(
        (location.as_str(), *found, *known),
        (path.to_str().unwrap(), SCHEMA_VERSION + 1, SCHEMA_VERSION)
    );
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_by_name() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    let text: Vec<u8> = b"not a database, just text\n".iter().copied().cycle().take(4096).collect();
    let noise: Vec<u8> =
        (0..4096u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for garbage in [text, noise, b"short".to_vec()] {
        std::fs::write(&path, &garbage).unwrap();
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "left as it was");
    }
}

#[test]
fn damage_is_corrupt_and_anything_else_a_failure() {
    let sqlite_error = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    let damaged = failed("x.db", sqlite_error(rusqlite::ffi::SQLITE_CORRUPT));
    assert!(matches!(damaged, StoreError::Corrupt { .. }), "{damaged:?}");
    let not_a_database = opening("x.db", sqlite_error(rusqlite::ffi::SQLITE_NOTADB));
    assert!(matches!(not_a_database, StoreError::Corrupt { .. }), "{not_a_database:?}");
    for code in
        [rusqlite::ffi::SQLITE_FULL, rusqlite::ffi::SQLITE_IOERR, rusqlite::ffi::SQLITE_BUSY]
    {
        let err = failed("x.db", sqlite_error(code));
        assert!(matches!(err, StoreError::Failed { .. }), "{err:?}");
        let err = opening("x.db", sqlite_error(code));
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }
}

#[test]
fn a_full_database_fails_a_write_whole_and_works_again_with_room() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    store.write(&batch(vec![line("lobby", 1, 1, "before")])).unwrap();
    // As a full disk does: SQLite cannot grow the file.
    let pages: i64 = store.conn.pragma_query_value(None, "page_count", |row| row.get(0)).unwrap();
    store.conn.pragma_update(None, "max_page_count", pages).unwrap();
    let big = || (2..=300).map(|seq| line("lobby", 1, seq, &"full ".repeat(40))).collect();
    let err = store.write(&batch(big())).err().unwrap();
    assert!(matches!(err, StoreError::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(texts(&store.page("lobby", None, 1000).unwrap()), ["before"]);
    store.conn.pragma_update(None, "max_page_count", 1_000_000).unwrap();
    store.write(&batch(big())).unwrap();
    assert_eq!(store.page("lobby", None, 1000).unwrap().len(), 300);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn a_directory_that_cannot_be_created_in_is_an_open_error() {
    let dir = temp_dir();
    let path = dir.path().join("missing").join("chatd.db");
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn a_batch_of_500_lines_is_one_write() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    let lines = (1..=500).map(|seq| line("busy", 9, seq, &format!("word{seq} common"))).collect();
    store.write(&batch(lines)).unwrap();
    let stored = store.page("busy", None, 1000).unwrap();
    assert_eq!(stored.len(), 500);
    assert_eq!(stored[0].text, "word1 common");
    assert_eq!(stored[499].text, "word500 common");
    assert_eq!(index_entries(&store, "common"), 500);
    assert_eq!(search_texts(&mut store, "busy", "word250"), ["word250 common"]);
}

#[test]
fn a_failed_batch_writes_nothing() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    // A trigger makes the second line fail: the first must not stay.
    store
        .conn
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON lines WHEN new.text = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let lines = vec![line("lobby", 1, 1, "accepted"), line("lobby", 1, 2, "refused")];
    let err = store.write(&batch(lines)).err().unwrap();
    assert!(matches!(err, StoreError::Failed { .. }), "{err:?}");
    assert!(store.page("lobby", None, 10).unwrap().is_empty());
    assert_eq!(index_entries(&store, "accepted"), 0);
}

#[test]
fn expire_and_forget_remove_the_index_entries_too() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    let mut old = line("lobby", 1, 1, "stale words");
    old.at = 10;
    let mut mallory = line("lobby", 2, 1, "private words");
    mallory.from_key = "mallory".into();
    store.write(&batch(vec![old, mallory, line("lobby", 3, 1, "fresh words")])).unwrap();
    assert_eq!(index_entries(&store, "words"), 3);
    assert_eq!(store.expire(100).unwrap(), 1);
    assert_eq!(store.forget("mallory").unwrap(), 1);
    assert_eq!(index_entries(&store, "words"), 1);
    assert_eq!(index_entries(&store, "stale"), 0);
    assert_eq!(index_entries(&store, "private"), 0);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

/// Checks a backup made into `copy`: a database with the lines, sound, and nothing left
/// beside the database.
fn check_backup(store: &mut SqliteStore, copy: &Path) {
    let mut into = std::fs::File::options().write(true).open(copy).unwrap();
    let bytes = store.backup(&mut into).unwrap();
    assert_eq!(bytes, into.metadata().unwrap().len());
    let dir = copy.parent().unwrap();
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|name| name.to_string_lossy().contains("backup")), "{names:?}");
    let mut restored = SqliteStore::open(copy).unwrap();
    assert_eq!(restored.integrity_check().unwrap(), "ok");
    assert_eq!(texts(&restored.page("lobby", None, 10).unwrap()), ["one", "two"]);
    assert_eq!(search_texts(&mut restored, "lobby", "two"), ["two"]);
    assert_eq!(
        restored.load_room("lobby", 0, u64::MAX).unwrap().topic.as_deref(),
        Some("backed up")
    );
}

fn texts(lines: &[StoredLine]) -> Vec<&str> {
    lines.iter().map(|line| line.text.as_str()).collect()
}

fn store_to_back_up(dir: &Path) -> SqliteStore {
    let mut store = SqliteStore::open(&dir.join("chatd.db")).unwrap();
    let topics = vec![("lobby".to_string(), "backed up".to_string())];
    let lines = vec![line("lobby", 1, 1, "one"), line("lobby", 1, 2, "two")];
    store.write(&Batch { lines, topics, accounts: Vec::new() }).unwrap();
    store
}

#[test]
fn a_backup_goes_into_an_empty_file_it_may_not_open_by_name() {
    let dir = temp_dir();
    let mut store = store_to_back_up(dir.path());
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, b"").unwrap();
    check_backup(&mut store, &copy);
    // The copy is written through the descriptor only: the same whatever its name's mode.
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked.db");
    std::fs::write(&locked, b"").unwrap();
    let mut into = std::fs::File::options().write(true).open(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    assert!(store.backup(&mut into).unwrap() > 0);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut restored = SqliteStore::open(&locked).unwrap();
    assert_eq!(texts(&restored.page("lobby", None, 10).unwrap()), ["one", "two"]);
}

#[test]
fn the_size_counts_the_pages_and_the_wal() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    let before = store.size().unwrap();
    let lines = (1..=200).map(|seq| line("lobby", 1, seq, &"x".repeat(200))).collect();
    store.write(&batch(lines)).unwrap();
    assert!(store.size().unwrap() > before + 200 * 200, "{before}");
}

#[test]
fn two_stores_on_one_file_both_write() {
    // Two brokers overlapping during a restart: each waits for the other's transaction.
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    // Both open a new file at once: one creates the schema, the other waits and finds it.
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || SqliteStore::open(&path).unwrap())
        })
        .collect();
    let mut opened: Vec<SqliteStore> = openers.into_iter().map(|o| o.join().unwrap()).collect();
    let (mut first, mut second) = (opened.remove(0), opened.remove(0));
    let writers: Vec<_> = [(1u64, first), (2u64, second)]
        .into_iter()
        .map(|(sender, mut store)| {
            std::thread::spawn(move || {
                for seq in 1..=100 {
                    let lines = vec![
                        line("lobby", sender, seq, "busy"),
                        line("lobby", sender + 10, seq, "busy"),
                    ];
                    store.write(&batch(lines)).unwrap();
                }
                store
            })
        })
        .collect();
    let mut stores: Vec<SqliteStore> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for store in &mut stores {
        assert_eq!(store.page("lobby", None, 1000).unwrap().len(), 400);
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }
    first = stores.remove(0);
    second = stores.remove(0);
    // One holding a write transaction for a while: the other waits and then writes.
    first.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let waiting = std::thread::spawn(move || {
        second.write(&batch(vec![line("lobby", 3, 1, "after the wait")])).unwrap();
        second
    });
    std::thread::sleep(Duration::from_millis(200));
    first.conn.execute_batch("COMMIT").unwrap();
    let mut second = waiting.join().unwrap();
    assert_eq!(search_texts(&mut second, "lobby", "wait"), ["after the wait"]);
    assert_eq!(search_texts(&mut first, "lobby", "wait"), ["after the wait"]);
}

#[test]
fn a_match_expression_quotes_every_term() {
    let query = Query::parse("Café 世界 x\"y").unwrap();
    assert_eq!(match_expression(&query).unwrap(), "\"cafe\" AND \"世 界\" AND \"x y\"");
}

/// A database of schema version 2 as that code left it: what it wrote through the same
/// batches, with its search index.
fn version_2_database(path: &Path) {
    let mut old = SqliteStore::open_at_version(path, 2).unwrap();
    assert_eq!(user_version(&old), 2);
    let lines = (1..)
        .zip(conformance::VERSION_2_LINES)
        .map(|(seq, (room, at, from, text))| NewLine {
            room: room.into(),
            at,
            from: from.into(),
            from_key: crate::names::fold(from),
            sender: 1,
            seq,
            action: false,
            text: text.into(),
        })
        .collect();
    old.write(&batch(lines)).unwrap();
    let tables: i64 = old
        .conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'accounts'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(tables, 0, "version 2 has no accounts");
}

#[test]
fn migrating_from_version_two_keeps_the_lines_and_adds_the_accounts() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    version_2_database(&path);
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&store), SCHEMA_VERSION);
    conformance::check_migrated_from_version_2(&mut store);
    // The accounts' foreign key is on: a kept message without its account cannot stay.
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let violations: i64 = store
        .conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(violations, 0);
}

#[test]
fn migrating_from_version_three_keeps_the_kept_messages_and_names_new_ones() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    {
        let old = SqliteStore::open_at_version(&path, 3).unwrap();
        let (dan, text) = conformance::VERSION_3_KEPT;
        // What a chatd of schema version 3 wrote.
        old.conn
            .execute(
                "INSERT INTO accounts VALUES (?1, 'Dan', X'00', 64, 1, 1, X'00', 0, 0, '{}', 1, 1,
                 'lobby')",
                [dan],
            )
            .unwrap();
        old.conn
            .execute(
                "INSERT INTO kept_messages (to_key, at, from_nick, text) VALUES (?1, 5, 'eve', ?2)",
                [dan, text],
            )
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&store), 4);
    conformance::check_migrated_from_version_3(&mut store);
}

#[test]
fn the_token_key_survives_opening_the_file_again() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    conformance::check_token_key_survives_reopen(&mut || {
        Box::new(SqliteStore::open(&path).unwrap()) as Box<dyn Store>
    });
}

#[test]
fn an_account_whose_settings_do_not_parse_loads_with_the_defaults() {
    let dir = temp_dir();
    let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
    let put = |key: &str| crate::store::AccountChange::Put(conformance::account(key, key));
    let changes = ["broken", "fine"].map(put).to_vec();
    store.write(&Batch { lines: Vec::new(), topics: Vec::new(), accounts: changes }).unwrap();
    store
        .conn
        .execute("UPDATE accounts SET settings = '{not json' WHERE key = 'broken'", [])
        .unwrap();
    let loaded = store.load_accounts().unwrap();
    let settings = |key: &str| {
        loaded.accounts.iter().find(|account| account.key == key).unwrap().settings.clone()
    };
    assert_eq!(settings("broken"), Default::default());
    assert_eq!(settings("fine"), conformance::account("fine", "fine").settings);
    assert_eq!(loaded.accounts.len(), 2, "the load did not fail");
}

#[test]
fn a_backup_keeps_the_accounts_and_the_token_key() {
    let dir = temp_dir();
    let mut store = store_to_back_up(dir.path());
    let account = conformance::account("alice", "Alice");
    let kept = crate::store::KeptMessage {
        to: "alice".into(),
        at: 5,
        from: "bob".into(),
        text: "while you were away".into(),
        sender: 9,
        seq: 1,
    };
    let accounts = vec![
        crate::store::AccountChange::Put(account.clone()),
        crate::store::AccountChange::Keep(kept.clone()),
    ];
    store.write(&Batch { lines: Vec::new(), topics: Vec::new(), accounts }).unwrap();
    let before = store.load_accounts().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, b"").unwrap();
    let mut into = std::fs::File::options().write(true).open(&copy).unwrap();
    store.backup(&mut into).unwrap();
    let restored = SqliteStore::open(&copy).unwrap().load_accounts().unwrap();
    assert_eq!(restored, before);
    assert_eq!((restored.accounts, restored.kept), (vec![account], vec![kept]));
}

#[test]
fn two_stores_loading_a_new_file_at_once_agree_on_the_token_key() {
    let dir = temp_dir();
    let path = dir.path().join("chatd.db");
    let loads: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                SqliteStore::open(&path).unwrap().load_accounts().unwrap().token_key
            })
        })
        .collect();
    let keys: Vec<Vec<u8>> = loads.into_iter().map(|load| load.join().unwrap()).collect();
    assert_eq!(keys[0], keys[1]);
    let store = SqliteStore::open(&path).unwrap();
    let rows: i64 =
        store.conn.query_row("SELECT count(*) FROM secrets", [], |row| row.get(0)).unwrap();
    assert_eq!(rows, 1);
}
