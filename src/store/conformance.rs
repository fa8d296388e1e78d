//! What every [`Store`] must do, as checks that run against any of them: the SQLite store's
//! tests run them on a fresh file, the PostgreSQL store's on a fresh database, so that both
//! answer the same way.
//!
//! Each check takes `&mut dyn Store` and assumes only that the store has none of the lines the
//! checks write: every check uses rooms, senders and nicks of its own, and times far from the
//! others', so [`run_all`] can run them one after the other on one store (the account checks
//! use account keys of their own, and look only at those in what `load_accounts` returns).
//! Two checks need what only a store's own tests can do, and take it as an argument: opening
//! the same database again ([`check_token_key_survives_reopen`]), and a database of schema
//! version 2 with [`VERSION_2_LINES`] in it ([`check_migrated_from_version_2`]). Tests only: it
//! panics on a failure.

#![allow(clippy::unwrap_used)]

use super::{
    AccountChange, AccountRecord, AccountsRecord, Batch, KeptMessage, NewLine, Query, Store,
    StoredLine,
};
use crate::accounts::{AccountSettings, Kdf, TOKEN_KEY_BYTES};
use crate::names;

/// A time in the recent past; every check but `check_expire` says its lines after it.
const RECENT: u64 = 1_790_000_000;

/// A check of one behaviour; it panics if the store behaves otherwise.
pub(crate) type Check = fn(&mut dyn Store);

/// Every check, by name. Each passes on an empty store, alone or after the others.
pub(crate) const CHECKS: [(&str, Check); 16] = [
    ("write and load_room", check_write_and_load_room),
    ("last line numbers", check_last_seqs),
    ("duplicates are skipped", check_duplicates_are_skipped),
    ("paging to the end", check_paging_to_the_end),
    ("lines after a line", check_lines_after_a_line),
    ("search", check_search),
    ("since", check_since),
    ("expire", check_expire),
    ("forget", check_forget),
    ("size", check_size),
    ("accounts round trip", check_accounts_round_trip),
    ("delete cascades", check_delete_cascades),
    ("keep and delivered", check_keep_and_delivered),
    ("a kept line is kept once", check_a_kept_line_is_kept_once),
    ("token key", check_token_key),
    ("lookalike keys are keys", check_lookalike_keys_are_keys),
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
    assert_eq!(store.load_room(room, 10, u64::MAX).unwrap(), Default::default(), "an unknown room");

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

    let record = store.load_room(room, 10, u64::MAX).unwrap();
    assert_eq!(record.topic.as_deref(), Some("set"));
    assert_eq!(texts(&record.lines), ["first", "waves", "third ünïcödé 世界"]);
    let [first, waves, third] = &record.lines[..] else { panic!("three lines") };
    assert!(first.id < waves.id && waves.id < third.id, "ids grow: {:?}", record.lines);
    assert_eq!((first.at, first.from.as_str(), first.action), (RECENT + 1, "Alice", false));
    assert_eq!((waves.at, waves.action), (RECENT + 2, true));

    let last_two = store.load_room(room, 2, u64::MAX).unwrap();
    assert_eq!(texts(&last_two.lines), ["waves", "third ünïcödé 世界"]);

    // A topic alone, later: it replaces the room's.
    let topics = vec![(room.to_string(), "new topic".to_string())];
    store.write(&Batch { lines: Vec::new(), topics, accounts: Vec::new() }).unwrap();
    let record = store.load_room(room, 10, u64::MAX).unwrap();
    assert_eq!(record.topic.as_deref(), Some("new topic"));
    assert_eq!(record.lines.len(), 3);
    assert_eq!(store.load_room("conf-load-other", 10, u64::MAX).unwrap().topic, None);
}

/// A room's record says each sender's last stored line number among the room's lines said
/// since the time asked for (other rooms' lines and older ones do not count).
pub(crate) fn check_last_seqs(store: &mut dyn Store) {
    let room = "conf-seqs";
    let mut erin = Speaker::new(7_010);
    let mut frank = Speaker::new(u64::MAX - 7);
    let mut gina = Speaker::new(7_012);
    let mut lines = vec![gina.say(room, RECENT, "gina", "long ago")];
    lines.extend(erin.says("erin", &[(room, RECENT + 10, "one"), (room, RECENT + 11, "two")]));
    lines.push(frank.say(room, RECENT + 12, "frank", "hi"));
    lines.push(erin.say("conf-seqs-other", RECENT + 13, "erin", "elsewhere"));
    write_lines(store, lines);

    let mut last = store.load_room(room, 1, RECENT + 5).unwrap().last_seqs;
    last.sort();
    assert_eq!(last, [(7_010, 2), (u64::MAX - 7, 1)], "the top bit survives, gina is too old");
    let all = store.load_room(room, 0, RECENT).unwrap().last_seqs;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(store.load_room(room, 10, RECENT + 20).unwrap().last_seqs.is_empty());
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

    let lines = store.load_room(room, 10, u64::MAX).unwrap().lines;
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

/// The lines after a line named by (sender, seq) come in pages forward, in the room's order
/// (other senders' and other rooms' lines in between counted right); a line the room does not
/// have is `None`, while the newest line has nothing after it.
pub(crate) fn check_lines_after_a_line(store: &mut dyn Store) {
    let room = "conf-after";
    let mut hana = Speaker::new(u64::MAX - 9);
    let mut ivan = Speaker::new(7_013);
    let mut lines = Vec::new();
    for n in 0..12 {
        let speaker = if n % 3 == 0 { &mut ivan } else { &mut hana };
        lines.push(speaker.say(room, RECENT + n, "x", &format!("line {n}")));
        lines.push(hana.say("conf-after-other", RECENT + n, "hana", "other room"));
    }
    write_lines(store, lines);
    let first = &store.page(room, None, 100).unwrap()[0];
    assert_eq!((first.sender, first.seq, first.text.as_str()), (7_013, 1, "line 0"));

    let page = store.after(room, 7_013, 1, 5).unwrap().expect("ivan's first line is stored");
    assert_eq!(texts(&page), ["line 1", "line 2", "line 3", "line 4", "line 5"]);
    let last = page.last().unwrap();
    assert_eq!((last.sender, last.seq), (u64::MAX - 9, 9), "the top bit survives");
    let rest = store.after(room, last.sender, last.seq, 100).unwrap().unwrap();
    assert_eq!(texts(&rest), ["line 6", "line 7", "line 8", "line 9", "line 10", "line 11"]);
    let newest = rest.last().unwrap();
    assert_eq!(store.after(room, newest.sender, newest.seq, 10).unwrap(), Some(Vec::new()));
    // hana's first line was said in the other room; ivan never said a fifth line.
    assert_eq!(store.after(room, u64::MAX - 9, 1, 10).unwrap(), None);
    assert_eq!(store.after(room, 7_013, 5, 10).unwrap(), None);
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

/// What a schema version 2 database holds for [`check_migrated_from_version_2`]: (room, at,
/// nick, text), each line with sender 1 and its place in this list (from 1) as its seq.
pub(crate) const VERSION_2_LINES: [(&str, u64, &str, &str); 3] = [
    ("conf-v2", RECENT, "Zoë", "Crème brûlée before accounts"),
    ("conf-v2", RECENT + 1, "Ann", "東京駅で会おう"),
    ("conf-v2", RECENT + 2, "Zoë", "nothing special"),
];

/// A database of version 2 with [`VERSION_2_LINES`], opened by this code: the lines are
/// there, searched and paged as before, new lines go after them, and accounts work.
pub(crate) fn check_migrated_from_version_2(store: &mut dyn Store) {
    let room = "conf-v2";
    let before = store.page(room, None, 10).unwrap();
    assert_eq!(texts(&before), VERSION_2_LINES.map(|(_, _, _, text)| text));
    assert_eq!(search_texts(store, room, "creme", 10), ["Crème brûlée before accounts"]);
    assert_eq!(search_texts(store, room, "東京", 10), ["東京駅で会おう"]);
    let mut after = Speaker::new(7_100);
    let account = account("conf-v2-zoe", "Zoë");
    store
        .write(&Batch {
            lines: vec![after.say(room, RECENT + 3, "Zoë", "crème again")],
            topics: Vec::new(),
            accounts: vec![AccountChange::Put(account.clone())],
        })
        .unwrap();
    assert_eq!(
        search_texts(store, room, "creme", 10),
        ["crème again", "Crème brûlée before accounts"]
    );
    let loaded = store.load_accounts().unwrap();
    assert_eq!(own(&loaded, "conf-v2-"), [account]);
    assert_eq!(loaded.token_key.len(), TOKEN_KEY_BYTES);
}

/// What a schema version 3 database holds for [`check_migrated_from_version_3`]: the account
/// `conf-v3-dan` and one message kept for it, without a name.
pub(crate) const VERSION_3_KEPT: (&str, &str) = ("conf-v3-dan", "kept before names");

/// After the migration to version 4 the message kept before is there, without a name, and
/// new ones are kept under theirs.
pub(crate) fn check_migrated_from_version_3(store: &mut dyn Store) {
    let (dan, text) = VERSION_3_KEPT;
    let loaded = store.load_accounts().unwrap();
    let before: Vec<_> = loaded.kept.iter().filter(|k| k.to == dan).collect();
    assert_eq!(before.len(), 1, "{:?}", loaded.kept);
    assert_eq!((before[0].text.as_str(), before[0].sender, before[0].seq), (text, 0, 0));
    let named = kept(dan, RECENT, "kept with a name");
    let changes = vec![AccountChange::Keep(named.clone()), AccountChange::Keep(named)];
    write_changes(store, changes);
    let pair = |text: &str| (dan.to_string(), text.to_string());
    let loaded = store.load_accounts().unwrap();
    assert_eq!(own_kept(&loaded, "conf-v3-"), [pair(text), pair("kept with a name")]);
}

/// The token key is the same after the database is opened again; `open` opens it.
pub(crate) fn check_token_key_survives_reopen(open: &mut dyn FnMut() -> Box<dyn Store>) {
    let first = open().load_accounts().unwrap().token_key;
    assert_eq!(first.len(), TOKEN_KEY_BYTES);
    let mut again = open();
    assert_eq!(again.load_accounts().unwrap().token_key, first);
    assert_eq!(again.load_accounts().unwrap().token_key, first);
}

/// An account of `key` with every field other than its default.
pub(crate) fn account(key: &str, nick: &str) -> AccountRecord {
    AccountRecord {
        key: key.into(),
        nick: nick.into(),
        kdf: Kdf { salt: vec![0, 1, 2, 255, 128, 7], memory_kib: 19 * 1024, passes: 2, lanes: 1 },
        verifier: (0..32).map(|n| n * 7).collect(),
        admin: false,
        must_change: true,
        settings: AccountSettings {
            charset: Some("gbk".into()),
            colour: Some(false),
            timestamps: Some(true),
            bell: None,
            ignored: vec!["bob".into(), "Ζωή \"quoted\"".into()],
        },
        created_at: RECENT,
        last_seen: RECENT + 60,
        last_room: "#lobby".into(),
    }
}

/// A kept message named by what it is (the same arguments, the same name; others, another).
fn kept(to: &str, at: u64, text: &str) -> KeptMessage {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (to, at, text).hash(&mut hasher);
    let (sender, seq) = (7_200, hasher.finish() >> 1);
    KeptMessage { to: to.into(), at, from: "Sender".into(), text: text.into(), sender, seq }
}

/// A private line kept again under its name (sent again after a broker restart) is kept once,
/// in the same batch or a later one; messages without a name (kept before schema version 4)
/// are all kept.
pub(crate) fn check_a_kept_line_is_kept_once(store: &mut dyn Store) {
    let cleo = "conf-once-cleo";
    let named = kept(cleo, RECENT, "said once");
    let unnamed = |text: &str| KeptMessage { sender: 0, seq: 0, ..kept(cleo, RECENT + 1, text) };
    write_changes(
        store,
        vec![
            AccountChange::Put(account(cleo, "Cleo")),
            AccountChange::Keep(named.clone()),
            AccountChange::Keep(named.clone()),
            AccountChange::Keep(unnamed("old one")),
            AccountChange::Keep(unnamed("old two")),
        ],
    );
    write_changes(store, vec![AccountChange::Keep(named.clone())]);
    let loaded = store.load_accounts().unwrap();
    let pair = |text: &str| (cleo.to_string(), text.to_string());
    assert_eq!(
        own_kept(&loaded, "conf-once-"),
        [pair("said once"), pair("old one"), pair("old two")]
    );
    let first = loaded.kept.iter().find(|k| k.to == cleo).unwrap();
    assert_eq!((first.sender, first.seq), (named.sender, named.seq), "the name is kept");
}

fn write_changes(store: &mut dyn Store, accounts: Vec<AccountChange>) {
    store.write(&Batch { lines: Vec::new(), topics: Vec::new(), accounts }).unwrap();
}

/// The accounts a check wrote: those whose key starts with `prefix`, by key.
fn own(record: &AccountsRecord, prefix: &str) -> Vec<AccountRecord> {
    let mut mine: Vec<AccountRecord> =
        record.accounts.iter().filter(|a| a.key.starts_with(prefix)).cloned().collect();
    mine.sort_by(|a, b| a.key.cmp(&b.key));
    mine
}

/// The kept messages of the accounts a check wrote, in the order loaded.
fn own_kept(record: &AccountsRecord, prefix: &str) -> Vec<(String, String)> {
    let mine = record.kept.iter().filter(|k| k.to.starts_with(prefix));
    mine.map(|k| (k.to.clone(), k.text.clone())).collect()
}

/// Every field comes back as put (the settings through their JSON); a second `Put` replaces
/// the account and keeps its kept messages.
pub(crate) fn check_accounts_round_trip(store: &mut dyn Store) {
    let alice = account("conf-trip-alice", "Alice");
    let mut zoe = account("conf-trip-zoë", "Zoë");
    zoe.kdf = Kdf { salt: vec![9; 16], memory_kib: u32::MAX, passes: 16, lanes: 4 };
    zoe.admin = true;
    zoe.must_change = false;
    zoe.settings = AccountSettings::default();
    zoe.created_at = u64::from(u32::MAX) + 5;
    zoe.last_seen = 0;
    zoe.last_room = String::new();
    write_changes(store, vec![AccountChange::Put(alice.clone()), AccountChange::Put(zoe.clone())]);
    let loaded = store.load_accounts().unwrap();
    assert_eq!(own(&loaded, "conf-trip-"), [alice.clone(), zoe.clone()]);

    let mut changed = alice.clone();
    changed.nick = "ALICE".into();
    changed.verifier = vec![1; 32];
    changed.kdf.salt = vec![3; 16];
    changed.admin = true;
    changed.settings.ignored.push("carol".into());
    changed.settings.charset = None;
    changed.last_seen = RECENT + 3600;
    changed.last_room = "#elsewhere".into();
    write_changes(
        store,
        vec![
            AccountChange::Keep(kept(&alice.key, RECENT, "kept before the change")),
            AccountChange::Put(changed.clone()),
        ],
    );
    let loaded = store.load_accounts().unwrap();
    assert_eq!(own(&loaded, "conf-trip-"), [changed, zoe]);
    let kept_texts = [(alice.key.clone(), "kept before the change".to_string())];
    assert_eq!(own_kept(&loaded, "conf-trip-"), kept_texts, "a Put keeps the kept messages");
}

/// Deleting an account deletes the messages kept for it, and nobody else's.
pub(crate) fn check_delete_cascades(store: &mut dyn Store) {
    let (gone, stays) = ("conf-del-gone", "conf-del-stays");
    write_changes(
        store,
        vec![
            AccountChange::Put(account(gone, "Gone")),
            AccountChange::Put(account(stays, "Stays")),
            AccountChange::Keep(kept(gone, RECENT, "for gone")),
            AccountChange::Keep(kept(stays, RECENT + 1, "for stays")),
            AccountChange::Keep(kept(gone, RECENT + 2, "for gone again")),
        ],
    );
    assert_eq!(own_kept(&store.load_accounts().unwrap(), "conf-del-").len(), 3);
    write_changes(store, vec![AccountChange::Delete { key: gone.into() }]);
    let loaded = store.load_accounts().unwrap();
    assert_eq!(own(&loaded, "conf-del-"), [account(stays, "Stays")]);
    assert_eq!(own_kept(&loaded, "conf-del-"), [(stays.to_string(), "for stays".to_string())]);
    // Deleting it again, or a key that never was, is nothing.
    write_changes(store, vec![AccountChange::Delete { key: gone.into() }]);
    write_changes(store, vec![AccountChange::Delete { key: "conf-del-never".into() }]);
    assert_eq!(own(&store.load_accounts().unwrap(), "conf-del-").len(), 1);
}

/// Kept messages load oldest first with every field; `Delivered` deletes one account's; a
/// `Keep` for a key without an account is skipped and the rest of its batch is written; the
/// changes of a batch apply in order.
pub(crate) fn check_keep_and_delivered(store: &mut dyn Store) {
    let (ann, bob) = ("conf-keep-ann", "conf-keep-bob");
    let mut speaker = Speaker::new(7_101);
    store
        .write(&Batch {
            lines: vec![speaker.say("conf-keep", RECENT, "Sender", "a line in the same batch")],
            topics: Vec::new(),
            accounts: vec![
                AccountChange::Put(account(ann, "Ann")),
                AccountChange::Keep(kept(ann, RECENT + 10, "first ünï")),
                AccountChange::Keep(kept("conf-keep-nobody", RECENT + 11, "to nobody")),
                AccountChange::Put(account(bob, "Bob")),
                AccountChange::Keep(kept(bob, RECENT + 12, "for bob")),
                // Older by the clock, later in the batch: the order kept is the order made.
                AccountChange::Keep(kept(ann, RECENT + 5, "second")),
            ],
        })
        .unwrap();
    assert_eq!(texts(&store.page("conf-keep", None, 10).unwrap()), ["a line in the same batch"]);
    let loaded = store.load_accounts().unwrap();
    let pair = |to: &str, text: &str| (to.to_string(), text.to_string());
    assert_eq!(
        own_kept(&loaded, "conf-keep-"),
        [pair(ann, "first ünï"), pair(bob, "for bob"), pair(ann, "second")]
    );
    let first = loaded.kept.iter().find(|k| k.to == ann).unwrap();
    assert_eq!(first, &kept(ann, RECENT + 10, "first ünï"));

    write_changes(store, vec![AccountChange::Delivered { to: ann.into() }]);
    assert_eq!(own_kept(&store.load_accounts().unwrap(), "conf-keep-"), [pair(bob, "for bob")]);
    // In one batch: delivered, then a new one kept.
    write_changes(
        store,
        vec![
            AccountChange::Delivered { to: bob.into() },
            AccountChange::Keep(kept(bob, RECENT + 20, "after delivery")),
        ],
    );
    assert_eq!(
        own_kept(&store.load_accounts().unwrap(), "conf-keep-"),
        [pair(bob, "after delivery")]
    );
    // An account deleted and made again in one batch starts with nothing kept.
    write_changes(
        store,
        vec![AccountChange::Delete { key: bob.into() }, AccountChange::Put(account(bob, "Bob"))],
    );
    let loaded = store.load_accounts().unwrap();
    assert!(own_kept(&loaded, "conf-keep-").is_empty());
    assert_eq!(own(&loaded, "conf-keep-").len(), 2);
}

/// The token key is made once, of the right length, and then always the same.
pub(crate) fn check_token_key(store: &mut dyn Store) {
    let first = store.load_accounts().unwrap().token_key;
    assert_eq!(first.len(), TOKEN_KEY_BYTES);
    assert!(first.iter().any(|&byte| byte != 0), "random, not zeros");
    write_changes(store, vec![AccountChange::Put(account("conf-token", "Token"))]);
    assert_eq!(store.load_accounts().unwrap().token_key, first);
}

/// The store keeps a key as the bytes it is given: keys that only look alike (another
/// script's letter, another case) are other accounts; folding them is the broker's work.
pub(crate) fn check_lookalike_keys_are_keys(store: &mut dyn Store) {
    let keys = ["conf-look-alice", "conf-look-\u{430}lice", "conf-look-ALICE", "conf-look-alice "];
    let accounts: Vec<AccountRecord> = keys.iter().map(|key| account(key, "Alice")).collect();
    write_changes(store, accounts.iter().cloned().map(AccountChange::Put).collect());
    write_changes(store, vec![AccountChange::Keep(kept(keys[1], RECENT, "for the Cyrillic one"))]);
    let loaded = store.load_accounts().unwrap();
    let mut expected = accounts.clone();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(own(&loaded, "conf-look-"), expected);
    assert_eq!(
        own_kept(&loaded, "conf-look-"),
        [(keys[1].to_string(), "for the Cyrillic one".into())]
    );
    write_changes(store, vec![AccountChange::Delete { key: keys[0].into() }]);
    let loaded = store.load_accounts().unwrap();
    assert_eq!(own(&loaded, "conf-look-").len(), 3);
    assert_eq!(own_kept(&loaded, "conf-look-").len(), 1);
}
