//! The PostgreSQL store against a real server of the test's own (`store::test_cluster`):
//! migrations, errors at connect, passwords, a lost connection, and what only PostgreSQL's
//! side does (the tsquery, the adjacency patterns, the location).

use super::*;
use crate::store::test_cluster::{self, Cluster};
use crate::store::{AccountChange, conformance};

fn line(room: &str, from: &str, seq: u64, text: &str) -> NewLine {
    NewLine {
        room: room.into(),
        at: 1_700_000_000 + seq,
        from: from.into(),
        from_key: from.to_lowercase(),
        sender: u64::MAX - 1,
        seq,
        action: false,
        text: text.into(),
    }
}

fn batch(lines: Vec<NewLine>) -> Batch {
    Batch { lines, topics: Vec::new(), accounts: Vec::new() }
}

fn texts(lines: &[StoredLine]) -> Vec<&str> {
    lines.iter().map(|line| line.text.as_str()).collect()
}

fn search(store: &mut PostgresStore, room: &str, words: &str) -> Vec<String> {
    let query = Query::parse(words).expect("a valid query");
    let found = store.search(room, &query, 20).expect("search");
    found.into_iter().map(|line| line.text).collect()
}

fn connect(cluster: &Cluster) -> PostgresStore {
    PostgresStore::connect(&cluster.url(), None).expect("connect to the test cluster")
}

#[test]
fn an_empty_database_gets_the_whole_schema_and_works() {
    let cluster = Cluster::start();
    let mut store = connect(&cluster);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), SCHEMA_VERSION.to_string());
    let dir = cluster.socket_dir().display().to_string();
    assert_eq!(store.location(), format!("chatd@{dir}:5432/chatd"));

    let mut first = batch(vec![
        line("lobby", "Ann", 1, "Café crème"),
        line("lobby", "Bob", 2, "你好世界"),
        line("other", "Ann", 3, "cafe elsewhere"),
    ]);
    first.topics.push(("lobby".into(), "old topic".into()));
    first.topics.push(("lobby".into(), "the topic".into()));
    store.write(&first).expect("write");
    // The same (sender, seq) again is skipped; new lines in the same batch are not.
    store
        .write(&batch(vec![line("lobby", "Ann", 1, "a repeat"), line("lobby", "Cy", 4, "don't")]))
        .expect("write");

    let room = store.load_room("lobby", 10, u64::MAX).expect("load_room");
    assert_eq!(room.topic.as_deref(), Some("the topic"));
    assert_eq!(texts(&room.lines), ["Café crème", "你好世界", "don't"]);
    assert_eq!(store.load_room("nowhere", 10, u64::MAX).expect("load_room"), RoomRecord::default());
    assert_eq!(search(&mut store, "lobby", "CAFE"), ["Café crème"]);
    assert_eq!(search(&mut store, "lobby", "世界"), ["你好世界"]);
    assert_eq!(search(&mut store, "lobby", "界世"), Vec::<String>::new(), "a phrase is in order");
    assert_eq!(search(&mut store, "lobby", "don't"), ["don't"]);
    assert!(store.size().expect("size") > 0);
    assert!(
        matches!(store.backup(&mut tempfile::tempfile().expect("file")), Err(StoreError::Unsupported(why)) if why.contains("pg_dump"))
    );

    // A second start finds the schema current and changes nothing.
    drop(store);
    let mut again = connect(&cluster);
    assert_eq!(texts(&again.page("lobby", None, 2).expect("page")), ["你好世界", "don't"]);
}

#[test]
fn a_fresh_database_does_what_every_store_does() {
    let cluster = Cluster::start();
    conformance::run_all(&mut connect(&cluster));
    // Each check alone too, each on a database of its own.
    for (at, (name, check)) in conformance::CHECKS.iter().enumerate() {
        cluster.psql(&format!("CREATE DATABASE alone_{at}"));
        let url = cluster.url().replace("/chatd?", &format!("/alone_{at}?"));
        let mut store = PostgresStore::connect(&url, None).expect("connect");
        println!("conformance check alone: {name}");
        check(&mut store);
    }
}

#[test]
fn a_database_of_version_1_is_migrated_and_its_lines_are_found() {
    let cluster = Cluster::start();
    let mut client = postgres::Client::connect(&cluster.url(), NoTls).expect("connect");
    migrate(&mut client, "test", 1).expect("migrate to version 1");
    client
        .batch_execute(
            "INSERT INTO lines (room, at, nick, nick_key, sender, seq, action, text) VALUES
                 ('lobby', 100, 'Ann', 'ann', 1, 1, false, 'Grüße aus Köln'),
                 ('lobby', 101, 'Bob', 'bob', 1, 2, true, '東京駅で会いましょう'),
                 ('lobby', 102, 'Cy', 'cy', 1, 3, false, 'nothing to see');
             INSERT INTO topics (room, text, set_at) VALUES ('lobby', 'kept', 100);",
        )
        .expect("lines of version 1");
    drop(client);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), "1");

    let mut store = connect(&cluster);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), SCHEMA_VERSION.to_string());
    assert_eq!(search(&mut store, "lobby", "Köln"), ["Grüße aus Köln"]);
    assert_eq!(search(&mut store, "lobby", "東京"), ["東京駅で会いましょう"]);
    let room = store.load_room("lobby", 10, u64::MAX).expect("load_room");
    assert_eq!(room.topic.as_deref(), Some("kept"));
    assert_eq!(room.lines.len(), 3);
    assert!(room.lines[1].action);
    // New lines come after the old ones.
    store.write(&batch(vec![line("lobby", "Dee", 9, "köln again")])).expect("write");
    assert_eq!(search(&mut store, "lobby", "koln"), ["köln again", "Grüße aus Köln"]);
}

#[test]
fn two_brokers_starting_at_once_both_open_the_database() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::connect(&url, None).map(|_| ()))
        })
        .collect();
    for start in starts {
        start.join().expect("no panic").expect("connect");
    }
    assert_eq!(cluster.psql("SELECT count(*) || ' ' || max(version) FROM chatd_schema"), "1 4");
}

#[test]
fn a_newer_schema_is_refused_naming_the_database() {
    let cluster = Cluster::start();
    cluster.psql(
        "CREATE TABLE chatd_schema (version bigint NOT NULL); INSERT INTO chatd_schema VALUES (5)",
    );
    let err = PostgresStore::connect(&cluster.url(), None).err().expect("refused");
    assert!(matches!(err, StoreError::TooNew { found: 5, known: 4, .. }), "{err:?}");
    assert!(err.to_string().contains(&cluster.socket_dir().display().to_string()), "{err}");
}

#[test]
fn nothing_listening_is_an_open_error_naming_the_address_without_the_password() {
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().display();
    let err = PostgresStore::connect(&format!("postgresql://chatd:s3cret@/chatd?host={dir}"), None)
        .err()
        .expect("nothing listens");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(text.contains(&format!("chatd@{dir}:5432/chatd")), "{text}");
    assert!(!text.contains("s3cret"), "{text}");

    let err = PostgresStore::connect("postgres://chatd:s3cret@/chatd?port=notanumber", None)
        .err()
        .expect("bad URL");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let err = PostgresStore::connect("postgres://chatd@/chatd", None).err().expect("no host");
    assert!(err.to_string().contains("names no server"), "{err}");
}

#[test]
fn the_password_comes_from_the_first_line_of_the_password_file() {
    let cluster = Cluster::start_with_password("right-password");
    let files = tempfile::tempdir().expect("temp dir");
    let right = files.path().join("right");
    std::fs::write(&right, "  right-password  \nsecond line\n").expect("write");
    let mut store =
        PostgresStore::connect(&cluster.url(), Some(&right)).expect("connect with the file");
    store.write(&batch(vec![line("lobby", "Ann", 1, "in")])).expect("write");

    let wrong = files.path().join("wrong");
    std::fs::write(&wrong, "wrong-password\n").expect("write");
    for file in [None, Some(wrong.as_path())] {
        let err = PostgresStore::connect(&cluster.url(), file).err().expect("refused");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&cluster.socket_dir().display().to_string()), "{text}");
        assert!(!text.contains("wrong-password") && !text.contains("right-password"), "{text}");
    }

    let missing = files.path().join("missing");
    let err = PostgresStore::connect(&cluster.url(), Some(&missing)).err().expect("no file");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

#[test]
fn a_lost_connection_is_made_again() {
    let mut cluster = Cluster::start();
    let mut store = connect(&cluster);
    store.write(&batch(vec![line("lobby", "Ann", 1, "before")])).expect("write");

    // A restart between two calls costs nothing.
    cluster.restart();
    store
        .write(&batch(vec![line("lobby", "Ann", 2, "after a restart")]))
        .expect("write after a restart");

    // While the server is down, calls fail; once it is back, they work again.
    cluster.stop();
    let err = store.page("lobby", None, 10).expect_err("the server is down");
    assert!(matches!(err, StoreError::Failed { .. }), "{err:?}");
    assert!(store.write(&batch(vec![line("lobby", "Ann", 3, "lost")])).is_err());
    cluster.start_again();
    store.write(&batch(vec![line("lobby", "Ann", 4, "back")])).expect("write once it is back");
    assert_eq!(
        texts(&store.page("lobby", None, 10).expect("page")),
        ["before", "after a restart", "back"]
    );
}

#[test]
fn the_cluster_leaves_nothing_running() {
    let cluster = Cluster::start();
    let _store = connect(&cluster);
    let processes = cluster.processes();
    assert!(!processes.is_empty());
    drop(cluster);
    let left: Vec<i32> =
        processes.into_iter().filter(|&pid| test_cluster::is_running(pid)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

#[test]
fn the_location_has_no_password() {
    let location = |url: &str| location_of(&Config::from_str(url).expect("a URL"));
    assert_eq!(
        location("postgres://chatd:pw@db.example:6000/rooms"),
        "chatd@db.example:6000/rooms"
    );
    assert_eq!(location("postgresql://chatd:pw@a,b:7/x"), "chatd@a:5432,b:7/x");
    assert_eq!(location("postgres://chatd@[::1]/chatd"), "chatd@[::1]:5432/chatd");
    assert_eq!(location("postgres://ann@/?host=/run/pg"), "ann@/run/pg:5432/ann");
    assert_eq!(without_password("postgres://ann:pw@host:x/db"), "postgres://ann@host:x/db");
    assert_eq!(
        without_password("postgres://h/db?password=pw&port=x"),
        "postgres://h/db?password=...&port=x"
    );
}

#[test]
fn tokens_are_quoted_for_tsquery_and_escaped_for_like() {
    assert_eq!(quoted_lexeme("it's"), "'it''s'");
    assert_eq!(phrase_pattern(&["a_b".into(), "100%".into()]), "% a\\_b 100\\% %");
    assert_eq!(clean("a\0b"), "a\u{FFFD}b");
    let long = "x".repeat(MAX_LEXEME_BYTES + 1);
    assert_eq!(indexed(&format!("keep {long} this")), "keep this");
}

#[test]
#[should_panic(expected = "this test needs PostgreSQL, and there is no")]
fn a_machine_without_postgresql_fails_the_test_saying_what_to_install() {
    let empty = tempfile::tempdir().expect("temp dir");
    test_cluster::postgres_bin_in(empty.path());
}

#[test]
fn the_test_cluster_takes_the_newest_postgresql() {
    let versions = tempfile::tempdir().expect("temp dir");
    for version in ["9", "15", "13"] {
        let bin = versions.path().join(version).join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("initdb"), "").expect("write");
    }
    assert_eq!(test_cluster::postgres_bin_in(versions.path()), versions.path().join("15/bin"));
}

#[test]
fn a_database_of_version_2_is_migrated_keeping_its_lines_and_gets_the_accounts() {
    let cluster = Cluster::start();
    let mut client = postgres::Client::connect(&cluster.url(), NoTls).expect("connect");
    migrate(&mut client, "test", 2).expect("migrate to version 2");
    // What the code of version 2 wrote: the line and its tokens.
    for (seq, (room, at, from, text)) in (1i64..).zip(conformance::VERSION_2_LINES) {
        client
            .execute(
                "INSERT INTO lines (room, at, nick, nick_key, sender, seq, action, text, search_text)
                 VALUES ($1, $2, $3, $4, 1, $5, false, $6, $7)",
                &[&room, &as_i64(at), &from, &crate::names::fold(from), &seq, &text, &indexed(text)],
            )
            .expect("a line of version 2");
    }
    drop(client);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), "2");
    assert_eq!(cluster.psql("SELECT to_regclass('accounts') IS NULL"), "t");

    let mut store = connect(&cluster);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), SCHEMA_VERSION.to_string());
    conformance::check_migrated_from_version_2(&mut store);
}

#[test]
fn a_database_of_version_3_is_migrated_keeping_its_kept_messages() {
    let cluster = Cluster::start();
    let mut client = postgres::Client::connect(&cluster.url(), NoTls).expect("connect");
    migrate(&mut client, "test", 3).expect("migrate to version 3");
    let (dan, text) = conformance::VERSION_3_KEPT;
    // What the code of version 3 wrote.
    client
        .execute(
            "INSERT INTO accounts VALUES ($1, 'Dan', '\\x00', 64, 1, 1, '\\x00', false, false,
             '{}', 1, 1, 'lobby')",
            &[&dan],
        )
        .expect("an account of version 3");
    client
        .execute(
            "INSERT INTO kept_messages (to_key, at, from_nick, text) VALUES ($1, 5, 'eve', $2)",
            &[&dan, &text],
        )
        .expect("a kept message of version 3");
    drop(client);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), "3");

    let mut store = connect(&cluster);
    assert_eq!(cluster.psql("SELECT version FROM chatd_schema"), "4");
    conformance::check_migrated_from_version_3(&mut store);
}

#[test]
fn the_token_key_survives_connecting_again_and_two_brokers_agree_on_it() {
    let cluster = Cluster::start();
    let url = cluster.url();
    // Two brokers loading a new database at once: one key, which both get.
    let loads: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut store = PostgresStore::connect(&url, None).expect("connect");
                store.load_accounts().expect("load").token_key
            })
        })
        .collect();
    let keys: Vec<Vec<u8>> = loads.into_iter().map(|load| load.join().expect("no panic")).collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(cluster.psql("SELECT count(*) FROM secrets"), "1");
    conformance::check_token_key_survives_reopen(&mut || {
        Box::new(connect(&cluster)) as Box<dyn Store>
    });
    assert_eq!(connect(&cluster).load_accounts().expect("load").token_key, keys[0]);
}

#[test]
fn an_account_whose_settings_do_not_parse_loads_with_the_defaults() {
    let cluster = Cluster::start();
    let mut store = connect(&cluster);
    let account = |key: &str| {
        let mut account = conformance::account(key, key);
        account.last_room = "lobby\0with a NUL".into();
        account
    };
    let accounts = ["broken", "fine"].map(|key| AccountChange::Put(account(key))).to_vec();
    store.write(&Batch { lines: Vec::new(), topics: Vec::new(), accounts }).expect("write");
    cluster.psql("UPDATE accounts SET settings = '[1, 2' WHERE key = 'broken'");
    let loaded = store.load_accounts().expect("the load does not fail");
    let find = |key: &str| loaded.accounts.iter().find(|a| a.key == key).expect("loaded");
    assert_eq!(find("broken").settings, Default::default());
    assert_eq!(find("fine").settings, conformance::account("fine", "fine").settings);
    assert_eq!(find("fine").last_room, "lobby\u{FFFD}with a NUL", "a NUL cannot be kept");
}
