//! The broker's account state machine, with an injected clock: challenges and proofs,
//! throttles, registration, reservation by lookalike key, rehashing, kept messages, tokens and
//! the operators' commands.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::store::AccountsRecord;

const ALICE: MemberId = 1;
const BOB: MemberId = 2;
const HOME: &str = "192.0.2.7:40000";
const ELSEWHERE: &str = "198.51.100.9:40000";
const COST: KdfCost = KdfCost::DEFAULT;

/// A stand-in for an Argon2 output: the broker only hashes and compares tags.
fn tag(n: u8) -> Vec<u8> {
    vec![n; TAG_BYTES]
}

fn weak_kdf() -> Kdf {
    Kdf { salt: b"old salt".to_vec(), memory_kib: 4096, passes: 1, lanes: 1 }
}

fn account(nick: &str, kdf: Kdf, password: u8) -> AccountRecord {
    AccountRecord {
        key: names::lookalike_key(nick),
        nick: nick.to_string(),
        kdf,
        verifier: accounts::verifier_of(&tag(password)),
        admin: false,
        must_change: false,
        settings: AccountSettings::default(),
        created_at: 1_000,
        last_seen: 0,
        last_room: String::new(),
    }
}

/// Loaded accounts with `alice` (password 1, the configured cost) and `bob` (password 2).
fn loaded() -> (Accounts, Instant) {
    let mut accounts = Accounts::seeded(COST, AccountsMode::Optional, 3, 17);
    accounts.load(AccountsRecord {
        accounts: vec![
            account("alice", COST.with_salt(vec![5; SALT_BYTES]), 1),
            account("bob", COST.with_salt(vec![6; SALT_BYTES]), 2),
        ],
        kept: Vec::new(),
        token_key: vec![9; accounts::TOKEN_KEY_BYTES],
    });
    (accounts, Instant::now())
}

/// A login from `source` with the password `password`.
fn log_in(
    accounts: &mut Accounts,
    nick: &str,
    password: u8,
    source: &str,
    now: Instant,
) -> Result<Proved, Denied> {
    let challenge = accounts
        .challenge(ALICE, source, nick, Purpose::Login, None, now)
        .map_err(Denied::Failure)?;
    accounts.prove(ALICE, source, challenge.nonce, Some(&tag(password)), None, now, 2_000)
}

fn wrong(nick: &str) -> Result<Proved, Denied> {
    Err(Denied::WrongPassword { nick: nick.to_string() })
}

fn throttled(seconds: u64) -> Result<Proved, Denied> {
    Err(Denied::Failure(Failure::Throttled { seconds }))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_right_password_logs_in_and_the_wrong_one_does_not() {
    let (mut accounts, now) = loaded();
    let challenge = accounts.challenge(ALICE, HOME, "Alice", Purpose::Login, None, now).unwrap();
    assert_eq!(challenge.nick, "alice");
    assert_eq!(challenge.current, Some(COST.with_salt(vec![5; SALT_BYTES])));
    assert_eq!(challenge.fresh, None, "the account has the configured cost");
    let proved =
        accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), None, now, 2_000).unwrap();
    assert_eq!((proved.key.as_str(), proved.nick.as_str()), ("alice", "alice"));
    assert_eq!((proved.purpose, proved.must_change, proved.admin), (Purpose::Login, false, false));
    assert!(proved.changes.is_empty());
    assert_eq!(log_in(&mut accounts, "alice", 2, HOME, now), wrong("alice"));
}

#[test]
fn three_failures_in_a_minute_throttle_the_account_for_30_seconds() {
    let (mut accounts, now) = loaded();
    for second in 0..3 {
        assert_eq!(log_in(&mut accounts, "alice", 0, HOME, now + secs(second)), wrong("alice"));
    }
    // From anywhere, also with the right password: no challenge is handed out.
    let at = now + secs(2);
    assert_eq!(log_in(&mut accounts, "alice", 1, ELSEWHERE, at), throttled(30));
    assert_eq!(log_in(&mut accounts, "alice", 1, ELSEWHERE, at + secs(29)), throttled(1));
    assert_eq!(
        log_in(&mut accounts, "alice", 1, ELSEWHERE, at + Duration::from_millis(29_500)),
        throttled(1)
    );
    // Other accounts are not held up.
    assert!(log_in(&mut accounts, "bob", 2, ELSEWHERE, at).is_ok());
    assert!(log_in(&mut accounts, "alice", 1, ELSEWHERE, at + secs(30)).is_ok());
}

#[test]
fn each_further_failure_doubles_the_backoff_up_to_an_hour() {
    let (mut accounts, start) = loaded();
    for second in 0..3 {
        let _ = log_in(&mut accounts, "alice", 0, HOME, start + secs(second));
    }
    let mut now = start + secs(2);
    let mut expected = 30;
    for _ in 0..10 {
        now += secs(expected);
        assert_eq!(log_in(&mut accounts, "alice", 0, HOME, now), wrong("alice"));
        expected = (expected * 2).min(3600);
        assert_eq!(log_in(&mut accounts, "alice", 1, HOME, now), throttled(expected));
    }
    assert_eq!(expected, 3600, "capped");
    // A success ends it: the next failure starts from nothing.
    now += secs(3600);
    assert!(log_in(&mut accounts, "alice", 1, HOME, now).is_ok());
    assert_eq!(log_in(&mut accounts, "alice", 0, HOME, now), wrong("alice"));
    assert!(log_in(&mut accounts, "alice", 1, HOME, now).is_ok());
}

#[test]
fn success_resets_the_account_s_count() {
    let (mut accounts, now) = loaded();
    for _ in 0..2 {
        assert_eq!(log_in(&mut accounts, "alice", 0, HOME, now), wrong("alice"));
    }
    assert!(log_in(&mut accounts, "alice", 1, HOME, now).is_ok());
    for _ in 0..2 {
        assert_eq!(log_in(&mut accounts, "alice", 0, HOME, now), wrong("alice"));
    }
    assert!(log_in(&mut accounts, "alice", 1, HOME, now).is_ok(), "2 + 2 failures are not 3");
}

#[test]
fn ten_failures_from_one_source_in_a_minute_stop_it_for_every_account() {
    let (mut accounts, now) = loaded();
    let nicks: Vec<String> = (0..10).map(|n| format!("user{n}")).collect();
    let mut record = AccountsRecord { token_key: vec![9; 32], ..AccountsRecord::default() };
    record.accounts =
        nicks.iter().map(|nick| account(nick, COST.with_salt(vec![1; 16]), 1)).collect();
    record.accounts.push(account("alice", COST.with_salt(vec![1; 16]), 1));
    accounts.load(record);
    for (n, nick) in nicks.iter().enumerate() {
        let at = now + secs(n as u64);
        assert_eq!(log_in(&mut accounts, nick, 0, "[2001:db8::1]:5000", at), wrong(nick));
    }
    // Another address of the same /64 is the same source; the first failure leaves the
    // minute 51 s later.
    let at = now + secs(9);
    assert_eq!(log_in(&mut accounts, "alice", 1, "[2001:db8::2]:6000", at), throttled(51));
    // Another network is not.
    assert!(log_in(&mut accounts, "alice", 1, "[2001:db8:0:1::2]:6000", at).is_ok());
    assert!(log_in(&mut accounts, "alice", 1, "[2001:db8::2]:6000", now + secs(60)).is_ok());
}

/// Registers `nick` as `member` with the password `password`.
fn register(
    accounts: &mut Accounts,
    member: MemberId,
    nick: &str,
    password: u8,
    now: Instant,
) -> Result<Proved, Denied> {
    let challenge = accounts
        .challenge(member, HOME, nick, Purpose::Register, None, now)
        .map_err(Denied::Failure)?;
    assert_eq!(challenge.current, None);
    assert_eq!(challenge.fresh.as_ref().map(|kdf| (kdf.memory_kib, kdf.passes)), Some((19456, 2)));
    accounts.prove(member, HOME, challenge.nonce, None, Some(&tag(password)), now, 3_000)
}

#[test]
fn a_registration_makes_an_account_that_logs_in() {
    let (mut accounts, now) = loaded();
    let proved = register(&mut accounts, BOB, "Carol", 3, now).unwrap();
    assert_eq!(
        (proved.purpose, proved.key.as_str(), proved.nick.as_str()),
        (Purpose::Register, "carol", "Carol")
    );
    let [AccountChange::Put(record)] = proved.changes.as_slice() else { panic!("{proved:?}") };
    assert_eq!(record.verifier, accounts::verifier_of(&tag(3)));
    assert_eq!((record.created_at, record.last_seen, record.admin), (3_000, 0, false));
    assert_eq!(record.kdf.salt.len(), SALT_BYTES);
    assert_eq!(accounts.count(), 3);
    assert_eq!(accounts.find("carol").map(|account| account.nick.as_str()), Some("Carol"));
    assert!(log_in(&mut accounts, "carol", 3, HOME, now).is_ok());
}

#[test]
fn a_lookalike_of_a_registered_nick_cannot_be_registered() {
    let (mut accounts, now) = loaded();
    let cyrillic = "\u{430}lice";
    let refusal = Err(Failure::AccountRefused("alice is registered already".into()));
    assert_eq!(
        accounts.challenge(BOB, HOME, cyrillic, Purpose::Register, None, now).map(|_| ()),
        refusal
    );
    assert_eq!(
        accounts.challenge(BOB, HOME, "Alice", Purpose::Register, None, now).map(|_| ()),
        refusal
    );
    // Capitals too, although the key of `ALICE` as written is `allce`.
    assert_ne!(names::lookalike_key("ALICE"), names::lookalike_key("alice"));
    assert_eq!(
        accounts.challenge(BOB, HOME, "ALICE", Purpose::Register, None, now).map(|_| ()),
        refusal
    );
    assert_eq!(accounts.find("ALICE").map(|account| account.nick.as_str()), Some("alice"));
    assert_eq!(accounts.row("ALICE", false).map(|row| row.nick), Ok("alice".to_string()));
    // And the lookalike's owner is alice's.
    assert_eq!(accounts.find(cyrillic).map(|account| account.nick.as_str()), Some("alice"));
    // Two registering the same new nick at once: the second proof finds it taken.
    let first = accounts.challenge(ALICE, HOME, "dave", Purpose::Register, None, now).unwrap();
    let second = accounts.challenge(BOB, HOME, "Dave", Purpose::Register, None, now).unwrap();
    assert!(accounts.prove(ALICE, HOME, first.nonce, None, Some(&tag(4)), now, 1).is_ok());
    assert_eq!(
        accounts.prove(BOB, HOME, second.nonce, None, Some(&tag(4)), now, 1),
        Err(Denied::Failure(Failure::AccountRefused("dave is registered already".into())))
    );
}

#[test]
fn thirty_registrations_in_ten_minutes_are_the_most() {
    let (mut accounts, now) = loaded();
    for n in 0..30 {
        assert!(register(&mut accounts, BOB, &format!("new{n}"), 3, now + secs(n)).is_ok(), "{n}");
    }
    let refusal =
        Err(Failure::AccountRefused("too many registrations just now; try again later".into()));
    let at = now + secs(30);
    assert_eq!(
        accounts.challenge(BOB, HOME, "one-more", Purpose::Register, None, at).map(|_| ()),
        refusal
    );
    // Logins go on, and a taken nick is still told so.
    assert!(log_in(&mut accounts, "alice", 1, HOME, at).is_ok());
    assert_eq!(
        accounts.challenge(BOB, HOME, "alice", Purpose::Register, None, at).map(|_| ()),
        Err(Failure::AccountRefused("alice is registered already".into()))
    );
    assert!(register(&mut accounts, BOB, "one-more", 3, now + secs(600)).is_ok());
    assert_eq!(
        accounts
            .challenge(BOB, HOME, "two-more", Purpose::Register, None, now + secs(600))
            .map(|_| ()),
        refusal
    );
    assert!(register(&mut accounts, BOB, "two-more", 3, now + secs(601)).is_ok());
}

#[test]
fn a_nonce_is_good_once_for_its_member_for_two_minutes() {
    let (mut accounts, now) = loaded();
    let expired = Err(Denied::Failure(Failure::AccountRefused(
        "the password prompt has expired; try again".into(),
    )));
    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    let nonce = challenge.nonce;
    assert!(accounts.prove(ALICE, HOME, nonce, Some(&tag(1)), None, now, 1).is_ok());
    assert_eq!(accounts.prove(ALICE, HOME, nonce, Some(&tag(1)), None, now, 1), expired, "reused");

    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    assert_ne!(challenge.nonce, nonce);
    assert_eq!(
        accounts.prove(BOB, HOME, challenge.nonce, Some(&tag(1)), None, now, 1),
        expired,
        "another member's"
    );
    assert!(accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), None, now, 1).is_ok());

    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    assert_eq!(
        accounts.prove(ALICE, HOME, challenge.nonce ^ 1, Some(&tag(1)), None, now, 1),
        expired
    );
    assert_eq!(
        accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), None, now, 1),
        expired,
        "consumed by the wrong one"
    );

    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    let late = now + CHALLENGE_LIFETIME;
    assert_eq!(accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), None, late, 1), expired);

    // A new challenge replaces the old; a member that left takes its challenge with it.
    let old = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    let new = accounts.challenge(ALICE, HOME, "bob", Purpose::Login, None, now).unwrap();
    assert_eq!(accounts.prove(ALICE, HOME, old.nonce, Some(&tag(1)), None, now, 1), expired);
    let _ = new;
    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    accounts.forget_member(ALICE);
    assert_eq!(accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), None, now, 1), expired);
}

#[test]
fn a_login_to_a_weaker_kdf_rehashes_at_the_configured_cost() {
    let (mut accounts, now) = loaded();
    accounts.load(AccountsRecord {
        accounts: vec![account("alice", weak_kdf(), 1)],
        kept: Vec::new(),
        token_key: vec![9; 32],
    });
    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    assert_eq!(challenge.current, Some(weak_kdf()));
    let fresh = challenge.fresh.clone().unwrap();
    assert_eq!((fresh.memory_kib, fresh.passes, fresh.lanes), (19456, 2, 1));
    assert_ne!(fresh.salt, weak_kdf().salt);
    let proved =
        accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), Some(&tag(7)), now, 1).unwrap();
    let [AccountChange::Put(record)] = proved.changes.as_slice() else { panic!("{proved:?}") };
    assert_eq!((&record.kdf, &record.verifier), (&fresh, &accounts::verifier_of(&tag(7))));
    // The next login has the new parameters and nothing to rehash.
    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    assert_eq!((challenge.current, challenge.fresh), (Some(fresh), None));
    assert!(accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(7)), None, now, 1).is_ok());
}

#[test]
fn a_login_without_the_fresh_tag_keeps_the_old_kdf() {
    let (mut accounts, now) = loaded();
    accounts.load(AccountsRecord {
        accounts: vec![account("alice", weak_kdf(), 1)],
        ..AccountsRecord::default()
    });
    let proved = log_in(&mut accounts, "alice", 1, HOME, now).unwrap();
    assert!(proved.changes.is_empty());
    assert_eq!(accounts.find("alice").map(|account| account.kdf.clone()), Some(weak_kdf()));
}

#[test]
fn changing_the_password_needs_the_current_one_and_clears_must_change() {
    let (mut accounts, now) = loaded();
    let not_logged_in = Err(Failure::AccountRefused("You are not logged in".into()));
    assert_eq!(
        accounts.challenge(ALICE, HOME, "alice", Purpose::ChangePassword, None, now).map(|_| ()),
        not_logged_in
    );
    accounts.reset_password("alice", COST.with_salt(vec![3; 16]), &tag(5)).unwrap();
    let proved = log_in(&mut accounts, "alice", 5, HOME, now).unwrap();
    assert!(proved.must_change);

    let challenge = accounts
        .challenge(ALICE, HOME, "whatever", Purpose::ChangePassword, Some("alice"), now)
        .unwrap();
    assert_eq!(challenge.nick, "alice");
    assert!(challenge.current.is_some() && challenge.fresh.is_some());
    let denied = accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), Some(&tag(6)), now, 1);
    assert_eq!(denied, wrong("alice"));
    let challenge = accounts
        .challenge(ALICE, HOME, "alice", Purpose::ChangePassword, Some("alice"), now)
        .unwrap();
    let proved =
        accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(5)), Some(&tag(6)), now, 1).unwrap();
    assert!(!proved.must_change);
    let [AccountChange::Put(record)] = proved.changes.as_slice() else { panic!("{proved:?}") };
    assert_eq!((record.must_change, record.kdf.clone()), (false, challenge.fresh.unwrap()));
    assert_eq!(log_in(&mut accounts, "alice", 5, HOME, now), wrong("alice"));
    assert!(log_in(&mut accounts, "alice", 6, HOME, now).is_ok());
}

#[test]
fn unregistering_deletes_the_account_and_its_kept_messages() {
    let (mut accounts, now) = loaded();
    accounts.keep("alice", "bob", "hi", (7, 1), 5).unwrap();
    let challenge =
        accounts.challenge(ALICE, HOME, "alice", Purpose::Unregister, Some("alice"), now).unwrap();
    assert_eq!(challenge.fresh, None);
    let proved = accounts.prove(ALICE, HOME, challenge.nonce, Some(&tag(1)), None, now, 1).unwrap();
    assert_eq!(proved.changes, vec![AccountChange::Delete { key: "alice".into() }]);
    assert_eq!(accounts.find("alice"), None);
    assert_eq!(accounts.take_kept("alice"), (Vec::new(), None));
    assert_eq!(
        log_in(&mut accounts, "alice", 1, HOME, now),
        Err(Denied::Failure(Failure::AccountRefused("alice is not registered".into())))
    );
}

#[test]
fn nothing_before_the_store_answered_and_nothing_when_accounts_are_off() {
    let mut accounts = Accounts::new(COST, AccountsMode::Optional, 3);
    let now = Instant::now();
    assert!(!accounts.is_loaded());
    assert_eq!(
        accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).map(|_| ()),
        Err(Failure::Unavailable("accounts are not loaded yet".into()))
    );
    assert_eq!(accounts.row("alice", false), Err("accounts are not loaded yet".into()));
    let (mut accounts, now) = loaded();
    accounts.reconfigure(COST, AccountsMode::Off, 3);
    assert_eq!(accounts.mode(), AccountsMode::Off);
    assert_eq!(
        accounts.challenge(ALICE, HOME, "carol", Purpose::Register, None, now).map(|_| ()),
        Err(Failure::AccountRefused("accounts are off on this server".into()))
    );
    assert_eq!(accounts.find("alice"), None, "no nick is reserved");
    assert_eq!(accounts.rows(|_| false).len(), 2, "operators still see them");
}

#[test]
fn kept_messages_are_bounded_and_delivered_once_oldest_first() {
    let (mut accounts, _) = loaded();
    for n in 0..3 {
        let change =
            accounts.keep("alice", "bob", &format!("line {n}"), (7, n + 1), 10 + n).unwrap();
        assert_eq!(
            change,
            Some(AccountChange::Keep(store::KeptMessage {
                to: "alice".into(),
                at: 10 + n,
                from: "bob".into(),
                text: format!("line {n}"),
                sender: 7,
                seq: n + 1,
            }))
        );
    }
    // A line sent again after a broker restart is kept already: nothing to write, no refusal.
    assert_eq!(accounts.keep("alice", "bob", "line 1", (7, 2), 30), Ok(None));
    assert_eq!(
        accounts.keep("alice", "bob", "one too many", (7, 9), 20),
        Err(Failure::AccountRefused("alice has too many messages waiting".into()))
    );
    assert_eq!(accounts.row("alice", false).map(|row| row.kept_messages), Ok(3));
    let (messages, change) = accounts.take_kept("alice");
    let texts: Vec<&str> = messages.iter().map(|message| message.text.as_str()).collect();
    assert_eq!(texts, ["line 0", "line 1", "line 2"]);
    assert_eq!(
        messages[0],
        proto::KeptMessage { at: 10, from: "bob".into(), text: "line 0".into() }
    );
    assert_eq!(change, Some(AccountChange::Delivered { to: "alice".into() }));
    assert_eq!(accounts.take_kept("alice"), (Vec::new(), None));
    assert!(accounts.keep("alice", "bob", "room again", (7, 10), 21).is_ok());
    // Kept messages load with the accounts.
    let mut reloaded = Accounts::new(COST, AccountsMode::Optional, 3);
    let kept = (0..2)
        .map(|n| store::KeptMessage {
            to: "bob".into(),
            at: n,
            from: "alice".into(),
            text: format!("{n}"),
            sender: 8,
            seq: n + 1,
        })
        .collect();
    reloaded.load(AccountsRecord {
        accounts: vec![account("bob", weak_kdf(), 2)],
        kept,
        token_key: vec![1],
    });
    assert_eq!(reloaded.keep("bob", "alice", "1", (8, 2), 40), Ok(None), "loaded with its name");
    assert_eq!(reloaded.take_kept("bob").0.len(), 2);
}

#[test]
fn a_token_keeps_its_account_for_its_sender_only() {
    let (accounts, _) = loaded();
    let token = accounts.token_for("alice", 42, 1_800_000_000);
    assert_eq!(accounts.check_token("alice", 42, &token).map(|a| a.key.as_str()), Some("alice"));
    assert_eq!(accounts.check_token("Alice", 42, &token).map(|a| a.key.as_str()), Some("alice"));
    assert_eq!(accounts.check_token("alice", 43, &token), None);
    assert_eq!(accounts.check_token("bob", 42, &token), None);
    assert_eq!(accounts.check_token("nobody", 42, &token), None);
    let mut flipped = token.clone();
    flipped[20] ^= 0x10;
    assert_eq!(accounts.check_token("alice", 42, &flipped), None);
    // Another broker with the same key (kept in the store) takes it.
    let (other, _) = loaded();
    assert!(other.check_token("alice", 42, &token).is_some());
}

#[test]
fn settings_and_last_seen_are_kept_per_account() {
    let (mut accounts, _) = loaded();
    let settings = AccountSettings {
        colour: Some(false),
        ignored: vec!["eve".into()],
        ..AccountSettings::default()
    };
    let Some(AccountChange::Put(record)) = accounts.save_settings("alice", settings.clone()) else {
        panic!("a change")
    };
    assert_eq!(record.settings, settings);
    assert_eq!(accounts.save_settings("alice", settings), None, "unchanged");
    assert_eq!(accounts.save_settings("nobody", AccountSettings::default()), None);
    assert!(matches!(accounts.seen("alice", 77, "lobby"), Some(AccountChange::Put(_))));
    assert_eq!(accounts.last_seen("alice"), Some((77, "lobby".to_string())));
    assert_eq!(accounts.last_seen("nobody"), None);
}

#[test]
fn operators_list_show_reset_delete_and_grant() {
    let (mut accounts, now) = loaded();
    let rows = accounts.rows(|key| key == "bob");
    let listed: Vec<(&str, bool)> =
        rows.iter().map(|row| (row.nick.as_str(), row.online)).collect();
    assert_eq!(listed, [("alice", false), ("bob", true)]);
    assert_eq!(accounts.row("nobody", false), Err("no such account: nobody".into()));
    // A reset lifts the throttle and must be changed.
    for _ in 0..3 {
        let _ = log_in(&mut accounts, "alice", 0, HOME, now);
    }
    let Ok(AccountChange::Put(record)) =
        accounts.reset_password("Alice", COST.with_salt(vec![3; 16]), &tag(8))
    else {
        panic!("reset")
    };
    assert!(record.must_change);
    assert!(accounts.row("alice", false).unwrap().must_change);
    assert!(log_in(&mut accounts, "alice", 8, HOME, now).unwrap().must_change);
    assert!(
        accounts
            .reset_password("alice", Kdf { lanes: 4, ..COST.with_salt(vec![3; 16]) }, &tag(8))
            .is_err()
    );
    assert!(accounts.reset_password("alice", COST.with_salt(vec![3; 16]), &[1, 2]).is_err());
    assert_eq!(
        accounts.reset_password("nobody", COST.with_salt(vec![3; 16]), &tag(8)),
        Err("no such account: nobody".into())
    );

    let Ok(AccountChange::Put(record)) = accounts.set_admin("bob", true) else { panic!("grant") };
    assert!(record.admin);
    assert!(accounts.row("bob", true).unwrap().admin);
    assert!(log_in(&mut accounts, "bob", 2, HOME, now).unwrap().admin);
    assert_eq!(accounts.delete("BOB"), Ok(AccountChange::Delete { key: "bob".into() }));
    assert_eq!(accounts.delete("bob"), Err("no such account: bob".into()));
    assert_eq!(accounts.count(), 1);
}

#[test]
fn a_corrupt_row_or_a_malformed_proof_is_refused_without_counting() {
    let (mut accounts, now) = loaded();
    let huge = Kdf { memory_kib: accounts::MAX_MEMORY_KIB + 1, ..weak_kdf() };
    accounts.load(AccountsRecord {
        accounts: vec![account("alice", huge, 1)],
        ..AccountsRecord::default()
    });
    assert_eq!(
        accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).map(|_| ()),
        Err(Failure::Unavailable(
            "the password of alice cannot be checked; an operator can reset it".into()
        ))
    );
    let (mut accounts, now) = loaded();
    let malformed =
        Err(Denied::Failure(Failure::AccountRefused("that proof is not a password tag".into())));
    for _ in 0..3 {
        let challenge =
            accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
        assert_eq!(
            accounts.prove(ALICE, HOME, challenge.nonce, Some(&[1; 31]), None, now, 1),
            malformed
        );
    }
    let challenge = accounts.challenge(ALICE, HOME, "alice", Purpose::Login, None, now).unwrap();
    let missing =
        Err(Denied::Failure(Failure::AccountRefused("the current password is missing".into())));
    assert_eq!(accounts.prove(ALICE, HOME, challenge.nonce, None, None, now, 1), missing);
    assert!(log_in(&mut accounts, "alice", 1, HOME, now).is_ok(), "none of those counted");
}

#[test]
fn a_throttled_source_takes_no_registration() {
    let (mut accounts, now) = loaded();
    for n in 0..10 {
        accounts.throttles.failed(&format!("user{n}"), &source_key(HOME), now);
    }
    let refused = accounts.challenge(BOB, HOME, "carol", Purpose::Register, None, now);
    assert!(matches!(refused, Err(Failure::Throttled { .. })), "{refused:?}");
    for n in 0..30 {
        let challenge =
            accounts.challenge(BOB, ELSEWHERE, &format!("new{n}"), Purpose::Register, None, now);
        assert!(challenge.is_ok(), "{n}: {challenge:?}");
    }
}

#[test]
fn challenges_gathered_beforehand_buy_no_more_guesses() {
    let (mut accounts, now) = loaded();
    let members: Vec<MemberId> = (10..20).collect();
    let nonces: Vec<u64> = members
        .iter()
        .map(|&member| {
            let source = format!("10.0.0.{member}:1");
            accounts.challenge(member, &source, "alice", Purpose::Login, None, now).unwrap().nonce
        })
        .collect();
    for (n, (&member, &nonce)) in members.iter().zip(&nonces).enumerate() {
        let source = format!("10.0.0.{member}:1");
        let proved = accounts.prove(member, &source, nonce, Some(&tag(0)), None, now, 1);
        if n < 3 {
            assert_eq!(proved, wrong("alice"), "{n}");
        } else {
            assert_eq!(proved, throttled(30), "{n}");
        }
    }
}

#[test]
fn a_nick_with_a_capital_i_and_its_lowercase_lookalike_are_one_account() {
    let (mut accounts, now) = loaded();
    assert!(register(&mut accounts, BOB, "AIex", 3, now).is_ok());
    for other in ["Alex", "aiex", "AIEX", "Aiex"] {
        let refused = accounts.challenge(ALICE, HOME, other, Purpose::Register, None, now);
        assert_eq!(
            refused.map(|_| ()),
            Err(Failure::AccountRefused("AIex is registered already".into())),
            "{other}"
        );
    }
    // Deleted, none of its keys is left behind.
    assert!(accounts.delete("aiex").is_ok());
    assert_eq!(accounts.find("AIex"), None);
    assert!(register(&mut accounts, BOB, "Alex", 3, now).is_ok());
}
