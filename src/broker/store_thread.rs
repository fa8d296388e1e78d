//! The broker's database thread: the one place a [`Store`] lives and is called.
//!
//! It opens the store the settings name (again every [`REOPEN_EVERY`] while it cannot), then
//! serves [`Job`]s in the order the loop sent them, one at a time, and answers each with one
//! [`Outcome`], waking the loop through a `mio::Waker`. A job that comes while the store is not
//! open is answered at once with the reason, so that nothing waits on a database that is
//! down. Jobs run in order, so a query sent after a write sees that write. `storage` asks
//! for the accounts ([`Job::LoadAccounts`]) as soon as the store has opened.
//!
//! It owns the connection and nothing else: it never touches room state or connections, and
//! decides nothing about what is stored or what happens when a write fails (`storage` does).
//! It is started by the broker after its signals are blocked, and so inherits that mask.

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::store::{
    self, AccountsRecord, Batch, Query, RoomRecord, Store, StoreError, StoredLine, Target,
};

/// Most lines a login's mention count looks at, and so the most it counts.
pub const MAX_MENTIONS: usize = 1_000;

/// How long the thread waits before trying again to open a store it could not open.
pub const REOPEN_EVERY: Duration = Duration::from_secs(2);

/// Who asked a query, so that the loop can answer them.
pub type Asker = u64;

/// What the loop asks of the store.
pub enum Job {
    Write(Batch),
    /// A room was created: its topic, last lines, and its senders' last line numbers
    /// since `senders_since` ([`crate::store::RoomRecord`]).
    Load {
        room: String,
        generation: u64,
        lines: usize,
        senders_since: u64,
    },
    Page {
        asker: Asker,
        room: String,
        before: Option<i64>,
        count: usize,
    },
    /// The lines after line `seq` of `sender` (a reconnecting page's last line).
    After {
        asker: Asker,
        room: String,
        sender: u64,
        seq: u64,
        count: usize,
    },
    Search {
        asker: Asker,
        room: String,
        words: String,
        query: Query,
        limit: usize,
    },
    Since {
        asker: Asker,
        room: String,
        since: u64,
        limit: usize,
    },
    Forget {
        asker: Asker,
        nick: String,
        nick_key: String,
    },
    /// A copy into this file, empty, which an operator created.
    Backup {
        asker: Asker,
        file: File,
    },
    Expire {
        cutoff: u64,
    },
    /// Every account, kept message and the token key (`Store::load_accounts`).
    LoadAccounts,
    /// How many lines of `room` said at or after `since` have the word `nick`.
    Mentions {
        asker: Asker,
        room: String,
        nick: String,
        since: u64,
    },
}

/// A job's answer. Errors are the store's words (they name the database).
pub enum Outcome {
    /// The store opened (its location and size), or could not (and whether that is for
    /// good: a file that is not a database, or one from a newer chatd).
    Opened(Result<(String, u64), (String, bool)>),
    /// A write ended; on failure the batch comes back, to be written again.
    Written {
        result: Result<(), (String, Batch)>,
        took: Duration,
        lines: usize,
        /// The batch's account changes (written, or back in the batch).
        accounts: usize,
        bytes: Option<u64>,
    },
    Loaded {
        room: String,
        generation: u64,
        result: Result<RoomRecord, String>,
    },
    Page {
        asker: Asker,
        room: String,
        count: usize,
        result: Result<Vec<StoredLine>, String>,
    },
    /// `None`: the room has no such line stored.
    After {
        asker: Asker,
        room: String,
        result: Result<Option<Vec<StoredLine>>, String>,
    },
    Search {
        asker: Asker,
        room: String,
        words: String,
        result: Result<Vec<StoredLine>, String>,
    },
    Since {
        asker: Asker,
        result: Result<Vec<StoredLine>, String>,
    },
    Forgot {
        asker: Asker,
        nick: String,
        result: Result<u64, String>,
    },
    BackedUp {
        asker: Asker,
        result: Result<u64, String>,
    },
    Expired(Result<u64, String>),
    /// The accounts, loaded.
    Accounts(AccountsRecord),
    /// They could not be loaded (`storage` asks again).
    AccountsFailed(String),
    /// At most [`MAX_MENTIONS`]; 0 when the store could not count.
    Mentions {
        asker: Asker,
        count: usize,
    },
}

/// The thread's body: runs until the loop drops its end of `jobs`.
pub fn run(target: Target, jobs: Receiver<Job>, outcomes: Sender<Outcome>, wake: Arc<mio::Waker>) {
    let tell = |outcome: Outcome| {
        // The loop gone means the broker is ending: nobody to tell.
        if outcomes.send(outcome).is_ok() {
            let _ = wake.wake();
        }
    };
    let mut store: Option<Box<dyn Store>> = None;
    let mut closed_why = String::from("the database is not open yet");
    let mut reopen_at = Instant::now();
    loop {
        if store.is_none() && Instant::now() >= reopen_at {
            match store::open(&target) {
                Ok(mut opened) => {
                    let bytes = opened.size().unwrap_or(0);
                    tell(Outcome::Opened(Ok((opened.location().to_string(), bytes))));
                    store = Some(opened);
                }
                Err(err) => {
                    let for_good =
                        matches!(err, StoreError::Corrupt { .. } | StoreError::TooNew { .. });
                    closed_why = err.to_string();
                    tell(Outcome::Opened(Err((closed_why.clone(), for_good))));
                    reopen_at = Instant::now() + REOPEN_EVERY;
                }
            }
        }
        let job = match &store {
            Some(_) => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            None => jobs.recv_timeout(reopen_at.saturating_duration_since(Instant::now())),
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let outcome = match store.as_deref_mut() {
            Some(open) => serve(open, job),
            None => refuse(job, &closed_why),
        };
        tell(outcome);
    }
}

/// Runs one job on an open store.
fn serve(store: &mut dyn Store, job: Job) -> Outcome {
    let said = |err: StoreError| err.to_string();
    match job {
        Job::Write(batch) => {
            let started = Instant::now();
            let result = store.write(&batch);
            let took = started.elapsed();
            let lines = batch.lines.len();
            let accounts = batch.accounts.len();
            match result {
                Ok(()) => Outcome::Written {
                    result: Ok(()),
                    took,
                    lines,
                    accounts,
                    bytes: store.size().ok(),
                },
                Err(err) => Outcome::Written {
                    result: Err((said(err), batch)),
                    took,
                    lines,
                    accounts,
                    bytes: None,
                },
            }
        }
        Job::Load { room, generation, lines, senders_since } => {
            let result = store.load_room(&room, lines, senders_since).map_err(said);
            Outcome::Loaded { room, generation, result }
        }
        Job::Page { asker, room, before, count } => {
            let result = store.page(&room, before, count).map_err(said);
            Outcome::Page { asker, room, count, result }
        }
        Job::After { asker, room, sender, seq, count } => {
            let result = store.after(&room, sender, seq, count).map_err(said);
            Outcome::After { asker, room, result }
        }
        Job::Search { asker, room, words, query, limit } => {
            let result = store.search(&room, &query, limit).map_err(said);
            Outcome::Search { asker, room, words, result }
        }
        Job::Since { asker, room, since, limit } => {
            Outcome::Since { asker, result: store.since(&room, since, limit).map_err(said) }
        }
        Job::Forget { asker, nick, nick_key } => {
            Outcome::Forgot { asker, nick, result: store.forget(&nick_key).map_err(said) }
        }
        Job::Backup { asker, mut file } => {
            Outcome::BackedUp { asker, result: store.backup(&mut file).map_err(said) }
        }
        Job::Expire { cutoff } => Outcome::Expired(store.expire(cutoff).map_err(said)),
        Job::LoadAccounts => match store.load_accounts() {
            Ok(record) => Outcome::Accounts(record),
            Err(err) => Outcome::AccountsFailed(said(err)),
        },
        Job::Mentions { asker, room, nick, since } => {
            Outcome::Mentions { asker, count: mentions(store, &room, &nick, since) }
        }
    }
}

/// How many of the newest [`MAX_MENTIONS`] lines of `room` with the word `nick` were said at
/// or after `since`. A nick that is no query, or a store that fails, counts none: the count
/// is a courtesy at login, not worth an error.
fn mentions(store: &mut dyn Store, room: &str, nick: &str, since: u64) -> usize {
    let Ok(query) = Query::parse(nick) else { return 0 };
    match store.search(room, &query, MAX_MENTIONS) {
        Ok(lines) => lines.iter().filter(|line| line.at >= since).count().min(MAX_MENTIONS),
        Err(err) => {
            log::debug!("mentions of {nick} in {room} not counted: {err}");
            0
        }
    }
}

/// Answers a job at once while the store is not open.
fn refuse(job: Job, why: &str) -> Outcome {
    let why = why.to_string();
    match job {
        Job::Write(batch) => {
            let (lines, accounts) = (batch.lines.len(), batch.accounts.len());
            let took = Duration::ZERO;
            Outcome::Written { result: Err((why, batch)), took, lines, accounts, bytes: None }
        }
        Job::Load { room, generation, .. } => {
            Outcome::Loaded { room, generation, result: Err(why) }
        }
        Job::Page { asker, room, count, .. } => {
            Outcome::Page { asker, room, count, result: Err(why) }
        }
        Job::After { asker, room, .. } => Outcome::After { asker, room, result: Err(why) },
        Job::Search { asker, room, words, .. } => {
            Outcome::Search { asker, room, words, result: Err(why) }
        }
        Job::Since { asker, .. } => Outcome::Since { asker, result: Err(why) },
        Job::Forget { asker, nick, .. } => Outcome::Forgot { asker, nick, result: Err(why) },
        Job::Backup { asker, .. } => Outcome::BackedUp { asker, result: Err(why) },
        Job::Expire { .. } => Outcome::Expired(Err(why)),
        Job::LoadAccounts => Outcome::AccountsFailed(why),
        Job::Mentions { asker, .. } => Outcome::Mentions { asker, count: 0 },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::NewLine;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn mentions_count_the_lines_of_the_room_since_then_with_the_word() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
        let said = [
            ("lobby", 100, "alice: early"),
            ("lobby", 200, "hello Alice"),
            ("lobby", 300, "malice is no mention"),
            ("other", 300, "alice elsewhere"),
            ("lobby", 400, "ALICE, are you there?"),
        ];
        let lines = (1..)
            .zip(said)
            .map(|(seq, (room, at, text))| NewLine {
                room: room.into(),
                at,
                from: "bob".into(),
                from_key: "bob".into(),
                sender: 1,
                seq,
                action: false,
                text: text.into(),
            })
            .collect();
        store.write(&Batch { lines, ..Batch::default() }).unwrap();
        let count = |store: &mut SqliteStore, nick: &str, since| {
            let job = Job::Mentions { asker: 5, room: "lobby".into(), nick: nick.into(), since };
            match serve(store, job) {
                Outcome::Mentions { asker: 5, count } => count,
                _ => panic!("not a count for its asker"),
            }
        };
        assert_eq!(count(&mut store, "alice", 150), 2);
        assert_eq!(count(&mut store, "Alice", 0), 3);
        assert_eq!(count(&mut store, "alice", 401), 0);
        assert_eq!(count(&mut store, "nobody", 0), 0);
        assert_eq!(count(&mut store, "", 0), 0, "no query");
        let refused = refuse(
            Job::Mentions { asker: 6, room: "lobby".into(), nick: "a".into(), since: 0 },
            "closed",
        );
        assert!(matches!(refused, Outcome::Mentions { asker: 6, count: 0 }));
    }

    #[test]
    fn the_mention_count_stops_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("chatd.db")).unwrap();
        let lines = (1..=MAX_MENTIONS as u64 + 10)
            .map(|seq| NewLine {
                room: "lobby".into(),
                at: 1_000 + seq,
                from: "bob".into(),
                from_key: "bob".into(),
                sender: 1,
                seq,
                action: false,
                text: format!("carol {seq}"),
            })
            .collect();
        store.write(&Batch { lines, ..Batch::default() }).unwrap();
        assert_eq!(mentions(&mut store, "lobby", "carol", 0), MAX_MENTIONS);
    }
}
