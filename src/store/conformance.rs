//! What every [`Store`] must do, as checks that run against any of them: the SQLite store's
//! tests run them on a fresh file, the PostgreSQL store's on a fresh database, so that both
//! answer the same way.
//!
//! Each check takes `&mut dyn Store` and assumes only that the store has none of the lines the
//! checks write: every check uses rooms, senders and nicks of its own, and times far from the
//! others', so [`run_all`] can run them one after the other on one store. Tests only: it
//! panics on a failure.

#![allow(clippy::unwrap_used)]

use super::{Batch, NewLine, Query, Store, StoredLine};
use crate::names;

/// A time in the recent past; every check but `check_expire` says its lines after it.
const RECENT: u64 = 1_790_000_000;

/// A check of one behaviour; it panics if the store behaves otherwise.
pub(crate) type Check = fn(&mut dyn Store);

/// Every check, by name. Each passes on an empty store, alone or after the others.
pub(crate) const CHECKS: [(&str, Check); 8] = [
    ("write and load_room", check_write_and_load_room),
    ("duplicates are skipped", check_duplicates_are_skipped),
    ("paging to the end", check_paging_to_the_end),
    ("search", check_search),
    ("since", check_since),
    ("expire", check_expire),
    ("forget", check_forget),
    ("size", check_size),
];

/// Every check, one after the other on one store.
pub(crate) fn run_all(store: &mut dyn Store) {
    for (_, check) in CHECKS {
        check(store);
    }
}

/// Writes the lines of one check: a sender id of its own and line numbers counting up, so
/// that no two checks write the same (sender, seq).
struct Speaker {
    sender: u64,
    seq: u64,
}

impl Speaker {
    fn new(sender: u64) -> Speaker {
        Speaker { sender, seq: 0 }
    }

    fn say(&mut self, room: &str, at: u64, from: &str, text: &str) -> NewLine {
        self.seq += 1;
        NewLine {
            room: room.into(),
            at,
            from: from.into(),
            from_key: names::fold(from),
            sender: self.sender,
            seq: self.seq,
            action: false,
            text: text.into(),
        }
    }

    /// One line for each (room, at, text), all from `from`.
    fn says(&mut self, from: &str, said: &[(&str, u64, &str)]) -> Vec<NewLine> {
        said.iter().map(|(room, at, text)| self.say(room, *at, from, text)).collect()
    }
}

fn write_lines(store: &mut dyn Store, lines: Vec<NewLine>) {
    store.write(&Batch { lines, topics: Vec::new(), accounts: Vec::new() }).unwrap();
}

fn texts(lines: &[StoredLine]) -> Vec<&str> {
    lines.iter().map(|line| line.text.as_str()).collect()
}

fn search_texts(store: &mut dyn Store, room: &str, words: &str, limit: usize) -> Vec<String> {
    let query = Query::parse(words).unwrap();
    let found = store.search(room, &query, limit).unwrap();
    found.into_iter().map(|line| line.text).collect()
}

/// Lines come back as written, in order, with their topic; the last topic written wins.
pub(crate) fn check_write_and_load_room(store: &mut dyn Store) {
    let room = "conf-load";
    assert_eq!(store.load_room(room, 10).unwrap(), Default::default(), "an unknown room");

    // A sender id with the top bit set: stored as the same 64 bits.
    let mut alice = Speaker::new(u64::MAX - 1);
    let mut waving = alice.say(room, RECENT + 2, "Alice", "waves");
    waving.action = true;
    let lines = vec![
        alice.say(room, RECENT + 1, "Alice", "first"),
        waving,
        alice.say("conf-load-other", RECENT + 2, "Alice", "elsewhere"),
        alice.say(room, RECENT + 3, "Alice", "third ünïcödé 世界"),
    ];
    let topics = vec![(room.to_string(), "an old topic".to_string()), (room.into(), "set".into())];
    store.write(&Batch { lines, topics, accounts: Vec::new() }).unwrap();

    let record = store.load_room(room, 10).unwrap();
    assert_eq!(record.topic.as_deref(), Some("set"));
    assert_eq!(texts(&record.lines), ["first", "waves", "third ünïcödé 世界"]);
    let [first, waves, third] = &record.lines[..] else { panic!("three lines") };
    assert!(first.id < waves.id && waves.id < third.id, "ids grow: {:?}", record.lines);
    assert_eq!((first.at, first.from.as_str(), first.action), (RECENT + 1, "Alice", false));
    assert_eq!((waves.at, waves.action), (RECENT + 2, true));

    let last_two = store.load_room(room, 2).unwrap();
    assert_eq!(texts(&last_two.lines), ["waves", "third ünïcödé 世界"]);

    // A topic alone, later: it replaces the room's.
    let topics = vec![(room.to_string(), "new topic".to_string())];
    store.write(&Batch { lines: Vec::new(), topics, accounts: Vec::new() }).unwrap();
    let record = store.load_room(room, 10).unwrap();
    assert_eq!(record.topic.as_deref(), Some("new topic"));
    assert_eq!(record.lines.len(), 3);
    assert_eq!(store.load_room("conf-load-other", 10).unwrap().topic, None);
}

/// A line whose (sender, seq) is stored already is left out, in a later batch or the same.
pub(crate) fn check_duplicates_are_skipped(store: &mut dyn Store) {
    let room = "conf-dup";
    let mut bob = Speaker::new(7_001);
    let original = bob.say(room, RECENT, "bob", "original");
    write_lines(store, vec![original.clone()]);

    let mut repeated = original.clone();
    repeated.text = "repeated".into();
    let next = bob.say(room, RECENT + 1, "bob", "next");
    write_lines(store, vec![repeated.clone(), next.clone(), next, repeated]);

    let lines = store.load_room(room, 10).unwrap().lines;
    assert_eq!(texts(&lines), ["original", "next"]);
    assert!(search_texts(store, room, "repeated", 10).is_empty(), "no index entry either");
}

/// Pages go back from the newest line to the first, oldest first within a page, and then
/// there is nothing.
pub(crate) fn check_paging_to_the_end(store: &mut dyn Store) {
    let room = "conf-page";
    let mut carol = Speaker::new(7_002);
    let mut lines = Vec::new();
    for n in 0..25 {
        lines.push(carol.say(room, RECENT + n, "carol", &format!("line {n}")));
        lines.push(carol.say("conf-page-other", RECENT + n, "carol", "other room"));
    }
    write_lines(store, lines);
    let expect =
        |from: u64, to: u64| -> Vec<String> { (from..to).map(|n| format!("line {n}")).collect() };

    let newest = store.page(room, None, 10).unwrap();
    assert_eq!(texts(&newest), expect(15, 25));
    let before = store.page(room, Some(newest[0].id), 10).unwrap();
    assert_eq!(texts(&before), expect(5, 15));
    let oldest = store.page(room, Some(before[0].id), 10).unwrap();
    assert_eq!(texts(&oldest), expect(0, 5));
    assert!(store.page(room, Some(oldest[0].id), 10).unwrap().is_empty());
    assert_eq!(store.page(room, None, 100).unwrap().len(), 25);
    assert!(store.page("conf-page-nowhere", None, 10).unwrap().is_empty());
}

/// Search: accents and case ignored, CJK inside a longer run but in order, every word
/// needed, one room, newest first, at most `limit`.
pub(crate) fn check_search(store: &mut dyn Store) {
    let room = "conf-search";
    let mut dave = Speaker::new(7_003);
    write_lines(
        store,
        dave.says(
            "dave",
            &[
                (room, RECENT, "Café au lait"),
                (room, RECENT + 1, "你好世界"),
                (room, RECENT + 2, "a red car"),
                (room, RECENT + 3, "a green apple"),
                (room, RECENT + 4, "the CAFE is closed"),
                (room, RECENT + 5, "red apple pie"),
                ("conf-search-other", RECENT + 6, "cafe elsewhere"),
                (room, RECENT + 7, "Привет, мир: straße"),
            ],
        ),
    );

    let both_cafes = ["the CAFE is closed", "Café au lait"];
    assert_eq!(search_texts(store, room, "cafe", 20), both_cafes, "newest first");
    assert_eq!(search_texts(store, room, "CAFÉ", 20), both_cafes);
    assert_eq!(search_texts(store, room, "cafe", 1), ["the CAFE is closed"], "limit");
    assert_eq!(search_texts(store, room, "世界", 20), ["你好世界"]);
    assert_eq!(search_texts(store, room, "好", 20), ["你好世界"]);
    assert!(search_texts(store, room, "界世", 20).is_empty(), "CJK in order");
    assert_eq!(search_texts(store, room, "red apple", 20), ["red apple pie"]);
    assert_eq!(search_texts(store, room, "apple red", 20), ["red apple pie"]);
    assert_eq!(search_texts(store, room, "Apple", 20), ["red apple pie", "a green apple"]);
    assert!(search_texts(store, room, "appl", 20).is_empty(), "whole words");
    assert!(search_texts(store, room, "elsewhere", 20).is_empty(), "another room's line");
    assert!(search_texts(store, room, "cafe missing", 20).is_empty());
    assert_eq!(search_texts(store, "conf-search-other", "cafe", 20), ["cafe elsewhere"]);
    assert_eq!(search_texts(store, room, "ПРИВЕТ Straße", 20), ["Привет, мир: straße"]);
    assert!(search_texts(store, room, "прив", 20).is_empty());
    // Words that look like search syntax are only words.
    write_lines(store, vec![dave.say(room, RECENT + 8, "dave", "NOT and OR near")]);
    assert_eq!(search_texts(store, room, "not OR \"near\"", 20), ["NOT and OR near"]);
}

/// `since`: the lines said at or after a time, oldest first, at most `limit`.
pub(crate) fn check_since(store: &mut dyn Store) {
    let room = "conf-since";
    let mut erin = Speaker::new(7_004);
    write_lines(
        store,
        erin.says(
            "erin",
            &[
                (room, RECENT + 100, "at 100"),
                (room, RECENT + 200, "at 200"),
                ("conf-since-other", RECENT + 250, "other room"),
                (room, RECENT + 300, "at 300"),
            ],
        ),
    );
    assert_eq!(texts(&store.since(room, RECENT + 200, 10).unwrap()), ["at 200", "at 300"]);
    assert_eq!(texts(&store.since(room, RECENT + 150, 1).unwrap()), ["at 200"]);
    assert_eq!(store.since(room, 0, 10).unwrap().len(), 3);
    assert!(store.since(room, RECENT + 301, 10).unwrap().is_empty());
}

/// `expire` deletes the lines said before the cutoff, and they are not found any more.
pub(crate) fn check_expire(store: &mut dyn Store) {
    // Long before RECENT: the other checks' lines stay.
    let room = "conf-expire";
    let mut frank = Speaker::new(7_005);
    write_lines(
        store,
        frank.says(
            "frank",
            &[
                (room, 1_000, "ancient history"),
                ("conf-expire-other", 2_000, "ancient elsewhere"),
                (room, 3_000, "recent enough"),
                (room, RECENT, "today"),
            ],
        ),
    );
    assert_eq!(store.expire(2_500).unwrap(), 2);
    assert_eq!(texts(&store.page(room, None, 10).unwrap()), ["recent enough", "today"]);
    assert!(search_texts(store, room, "ancient", 10).is_empty());
    assert!(store.page("conf-expire-other", None, 10).unwrap().is_empty());
    assert_eq!(store.expire(2_500).unwrap(), 0);
    assert_eq!(store.expire(3_001).unwrap(), 1);
    assert_eq!(texts(&store.page(room, None, 10).unwrap()), ["today"]);
}

/// `forget` deletes a nick's lines under every spelling of it (the nick key), in every
/// room, and nobody else's.
pub(crate) fn check_forget(store: &mut dyn Store) {
    let room = "conf-forget";
    let mut grace = Speaker::new(7_006);
    let mut heidi = Speaker::new(7_007);
    write_lines(
        store,
        vec![
            grace.say(room, RECENT, "Grace", "my secret"),
            heidi.say(room, RECENT + 1, "heidi", "keep this"),
            grace.say("conf-forget-other", RECENT + 2, "GRACE", "my other secret"),
        ],
    );
    assert_eq!(store.forget(&names::fold("gRaCe")).unwrap(), 2);
    assert_eq!(texts(&store.page(room, None, 10).unwrap()), ["keep this"]);
    assert!(store.page("conf-forget-other", None, 10).unwrap().is_empty());
    assert!(search_texts(store, room, "secret", 10).is_empty());
    assert_eq!(store.forget("grace").unwrap(), 0);
}

/// A store with lines in it takes some bytes.
pub(crate) fn check_size(store: &mut dyn Store) {
    let mut ivan = Speaker::new(7_008);
    write_lines(store, vec![ivan.say("conf-size", RECENT, "ivan", "something")]);
    assert!(store.size().unwrap() > 0);
}
