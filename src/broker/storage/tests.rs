//! The storage side's tests: the loop's bookkeeping against a database thread that is the
//! test itself (it takes the jobs and sends the answers).

use super::*;
use crate::store::AccountsRecord;

/// A storage whose database thread is the test: it takes the jobs and sends the answers.
fn storage(queued: usize) -> (Storage, Receiver<Job>, mpsc::Sender<Outcome>) {
    let (jobs, job_rx) = mpsc::sync_channel(queued);
    let (outcome_tx, outcomes) = mpsc::channel();
    let mut link = Link::new(jobs, outcomes, "sqlite", Instant::now());
    // Retention is not what these tests are about.
    link.next_expire = Instant::now() + Duration::from_secs(3600);
    (Storage { link: Some(link), history_days: 30 }, job_rx, outcome_tx)
}

/// A moment when what waits now is due to be written.
fn due() -> Instant {
    Instant::now() + BATCH_EVERY
}

fn line(seq: u64) -> NewLine {
    NewLine {
        room: "lobby".into(),
        at: 1,
        from: "alice".into(),
        from_key: "alice".into(),
        sender: 7,
        seq,
        action: false,
        text: format!("line {seq}"),
    }
}

fn said(seqs: std::ops::Range<u64>) -> Batch {
    Batch { lines: seqs.map(line).collect(), topics: Vec::new(), accounts: Vec::new() }
}

fn written(job: Job) -> Batch {
    match job {
        Job::Write(batch) => batch,
        _ => panic!("not a write"),
    }
}

fn seqs(batch: &Batch) -> Vec<u64> {
    batch.lines.iter().map(|line| line.seq).collect()
}

fn done(batch: &Batch) -> Outcome {
    Outcome::Written {
        result: Ok(()),
        took: Duration::from_millis(1),
        lines: batch.lines.len(),
        accounts: batch.accounts.len(),
        bytes: Some(4096),
    }
}

fn failed(batch: Batch) -> Outcome {
    let (lines, accounts) = (batch.lines.len(), batch.accounts.len());
    Outcome::Written {
        result: Err(("disk full".into(), batch)),
        took: Duration::ZERO,
        lines,
        accounts,
        bytes: None,
    }
}

#[test]
fn a_turns_lines_go_as_one_write_and_later_ones_wait_for_it() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    storage.keep(said(1..4));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    assert_eq!(seqs(&first), [1, 2, 3]);
    // While it is under way, the next turns' lines gather.
    storage.keep(said(4..6));
    storage.end_turn(due(), 100);
    storage.keep(said(6..7));
    storage.end_turn(due(), 100);
    assert!(jobs.try_recv().is_err(), "one write at a time");
    assert_eq!(storage.figures().expect("on").waiting_lines, 3);
    answers.send(done(&first)).expect("sent");
    assert!(storage.take_answers(now).is_empty());
    storage.end_turn(due(), 100);
    assert_eq!(seqs(&written(jobs.try_recv().expect("the next write"))), [4, 5, 6]);
    let figures = storage.figures().expect("on");
    assert_eq!((figures.written_lines, figures.bytes, figures.waiting_lines), (3, 4096, 0));
}

#[test]
fn lines_gather_for_the_interval_and_the_loop_is_told_when_to_write_them() {
    let (mut storage, jobs, _answers) = storage(16);
    assert_eq!(storage.next_wake(), None, "nothing waits");
    let before = Instant::now();
    storage.keep(said(1..3));
    let at = storage.next_wake().expect("a write is due");
    assert!(at >= before + BATCH_EVERY && at <= Instant::now() + BATCH_EVERY, "{at:?}");
    storage.end_turn(Instant::now(), 100);
    assert!(jobs.try_recv().is_err(), "not before the interval");
    storage.end_turn(at, 100);
    assert_eq!(seqs(&written(jobs.try_recv().expect("a write"))), [1, 2]);
    assert_eq!(storage.next_wake(), None, "its answer wakes the loop");
    // A full batch does not wait for the interval.
    let (mut full, jobs, _answers) = self::storage(16);
    full.keep(said(0..MAX_BATCH_LINES as u64));
    full.end_turn(Instant::now(), 100);
    assert_eq!(written(jobs.try_recv().expect("a full batch")).lines.len(), MAX_BATCH_LINES);
}

#[test]
fn a_failed_write_comes_back_first_and_is_tried_again_after_the_retry_time() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    storage.keep(said(1..3));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    storage.keep(said(3..4));
    answers.send(failed(first)).expect("sent");
    storage.take_answers(now);
    assert_eq!(storage.figures().expect("on").failing.as_deref(), Some("disk full"));
    assert_eq!(storage.next_wake(), Some(now + RETRY_EVERY));
    storage.end_turn(now + RETRY_EVERY / 2, 100);
    assert!(jobs.try_recv().is_err(), "not before the retry time");
    storage.end_turn(now + RETRY_EVERY, 100);
    let again = written(jobs.try_recv().expect("the retry"));
    assert_eq!(seqs(&again), [1, 2, 3], "the failed lines first, then the newer");
    answers.send(done(&again)).expect("sent");
    storage.take_answers(now + RETRY_EVERY);
    assert_eq!(storage.figures().expect("on").failing, None, "it works again");
}

#[test]
fn past_the_bound_the_oldest_waiting_lines_are_not_stored_and_counted() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    storage.keep(said(0..1));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    let over = MAX_WAITING_LINES as u64 + 5;
    storage.keep(said(1..over + 1));
    let figures = storage.figures().expect("on");
    assert_eq!((figures.waiting_lines, figures.dropped_lines), (MAX_WAITING_LINES as u64, 5));
    answers.send(done(&first)).expect("sent");
    storage.take_answers(now);
    storage.end_turn(due(), 100);
    let next = written(jobs.try_recv().expect("the next write"));
    assert_eq!(next.lines.first().map(|line| line.seq), Some(6), "the oldest went");
    assert_eq!(next.lines.len(), MAX_BATCH_LINES, "at most a batch at once");
}

#[test]
fn a_query_follows_the_lines_said_before_it_and_one_at_a_time_per_asker() {
    let (mut storage, jobs, _answers) = storage(16);
    storage.keep(said(1..2));
    storage.end_turn(due(), 100);
    storage.keep(said(2..3));
    let page = Job::Page { asker: 9, room: "lobby".into(), before: None, count: 20 };
    assert_eq!(storage.ask(9, page), Ok(()));
    assert_eq!(seqs(&written(jobs.try_recv().expect("first write"))), [1]);
    // Sent even though a write is under way: the page must see line 2.
    assert_eq!(seqs(&written(jobs.try_recv().expect("second write"))), [2]);
    assert!(matches!(jobs.try_recv(), Ok(Job::Page { asker: 9, .. })));
    let again = Job::Page { asker: 9, room: "lobby".into(), before: None, count: 20 };
    assert!(storage.ask(9, again).is_err_and(|why| why.contains("wait")));
    storage.answered(9);
    let third = Job::Page { asker: 9, room: "lobby".into(), before: None, count: 20 };
    assert_eq!(storage.ask(9, third), Ok(()));
}

#[test]
fn a_full_queue_is_busy_at_once_and_a_failing_store_is_not_available() {
    let (mut storage, jobs, answers) = storage(1);
    let now = Instant::now();
    storage.keep(said(1..2));
    storage.end_turn(due(), 100);
    let search = |asker| Job::Forget { asker, nick: "x".into(), nick_key: "x".into() };
    assert!(storage.ask(1, search(1)).is_err_and(|why| why.contains("busy")));
    let first = written(jobs.try_recv().expect("a write"));
    answers.send(failed(first)).expect("sent");
    storage.take_answers(now);
    assert!(storage.ask(2, search(2)).is_err_and(|why| why.contains("not available")));
    assert!(!storage.mentions(3, "lobby".into(), "alice".into(), 0), "nor a count of mentions");
    assert!(jobs.try_recv().is_err());
}

#[test]
fn without_a_store_nothing_waits_and_queries_say_why() {
    let mut storage = Storage::none();
    storage.keep(said(1..3));
    storage.end_turn(Instant::now(), 100);
    assert_eq!(storage.figures(), None);
    let page = Job::Page { asker: 1, room: "lobby".into(), before: None, count: 20 };
    assert!(storage.ask(1, page).is_err_and(|why| why.contains("history_days")));
}

/// A change told apart by its number.
fn change(n: usize) -> AccountChange {
    AccountChange::Delivered { to: format!("key{n}") }
}

fn changes(batch: &Batch) -> Vec<String> {
    let key = |change: &AccountChange| match change {
        AccountChange::Delivered { to } => to.clone(),
        _ => panic!("only Delivered in these tests"),
    };
    batch.accounts.iter().map(key).collect()
}

fn keys(numbers: std::ops::Range<usize>) -> Vec<String> {
    numbers.map(|n| format!("key{n}")).collect()
}

#[test]
fn account_changes_go_in_order_with_the_next_batch_and_the_lines_bound_never_drops_them() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    storage.keep(said(0..1));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    storage.account_change(change(0));
    storage.keep(said(1..MAX_WAITING_LINES as u64 + 10));
    storage.account_change(change(1));
    storage.keep(said(MAX_WAITING_LINES as u64 + 10..MAX_WAITING_LINES as u64 + 20));
    storage.account_change(change(2));
    let figures = storage.figures().expect("on");
    assert_eq!(figures.dropped_lines, 19, "lines went");
    assert_eq!(
        storage.figures().map_or(0, |f| f.dropped_account_changes),
        0,
        "no account change did"
    );
    answers.send(done(&first)).expect("sent");
    storage.take_answers(now);
    storage.end_turn(due(), 100);
    let next = written(jobs.try_recv().expect("the next write"));
    assert_eq!(changes(&next), keys(0..3));
    // The rest of the lines follow without them.
    let after = written(jobs.try_recv().expect("more lines"));
    assert!(after.accounts.is_empty());
}

#[test]
fn account_changes_alone_are_a_batch_and_keep_the_loop_waking_for_it() {
    let (mut storage, jobs, _answers) = storage(16);
    assert_eq!(storage.next_wake(), None);
    storage.account_change(change(7));
    assert!(storage.next_wake().is_some(), "a write is due");
    storage.end_turn(due(), 100);
    let batch = written(jobs.try_recv().expect("a write"));
    assert!(batch.lines.is_empty());
    assert_eq!(changes(&batch), keys(7..8));
}

#[test]
fn beyond_their_bound_the_newest_account_changes_are_not_stored_and_are_counted() {
    let (mut storage, jobs, _answers) = storage(16);
    for n in 0..MAX_WAITING_ACCOUNT_CHANGES + 3 {
        storage.account_change(change(n));
    }
    assert_eq!(storage.figures().map_or(0, |f| f.dropped_account_changes), 3);
    storage.end_turn(due(), 100);
    let batch = written(jobs.try_recv().expect("a write"));
    assert_eq!(changes(&batch), keys(0..MAX_WAITING_ACCOUNT_CHANGES), "the oldest are kept");
    // Room again once they are sent.
    storage.account_change(change(99));
    assert_eq!(storage.figures().map_or(0, |f| f.dropped_account_changes), 3);
}

#[test]
fn a_failed_batch_puts_its_account_changes_back_before_the_newer_ones() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    storage.account_change(change(0));
    storage.keep(said(1..2));
    storage.account_change(change(1));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    assert_eq!(changes(&first), keys(0..2));
    storage.account_change(change(2));
    answers.send(failed(first)).expect("sent");
    storage.take_answers(now);
    storage.account_change(change(3));
    storage.end_turn(now + RETRY_EVERY, 100);
    let again = written(jobs.try_recv().expect("the retry"));
    assert_eq!(changes(&again), keys(0..4));
    assert_eq!(seqs(&again), [1]);
    // Failing again with more behind it, and the bound counts the ones put back too.
    for n in 4..MAX_WAITING_ACCOUNT_CHANGES + 1 {
        storage.account_change(change(n));
    }
    answers.send(failed(again)).expect("sent");
    storage.take_answers(now + RETRY_EVERY);
    assert_eq!(storage.figures().map_or(0, |f| f.dropped_account_changes), 1);
    storage.end_turn(now + RETRY_EVERY * 2, 100);
    let third = written(jobs.try_recv().expect("the second retry"));
    assert_eq!(changes(&third), keys(0..MAX_WAITING_ACCOUNT_CHANGES), "the newest went");
}

#[test]
fn account_changes_wait_while_another_write_is_under_way() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    storage.keep(said(1..2));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    storage.account_change(change(0));
    storage.keep(said(2..3));
    // A query sends the lines at once, even while the first write is under way...
    let page = Job::Page { asker: 9, room: "lobby".into(), before: None, count: 20 };
    assert_eq!(storage.ask(9, page), Ok(()));
    let lines = written(jobs.try_recv().expect("the lines before the query"));
    assert_eq!((seqs(&lines), changes(&lines)), (vec![2], vec![]), "...but not the changes");
    assert!(matches!(jobs.try_recv(), Ok(Job::Page { .. })));
    answers.send(done(&first)).expect("sent");
    storage.take_answers(now);
    storage.end_turn(due(), 100);
    assert!(jobs.try_recv().is_err(), "still one write under way");
    answers.send(done(&lines)).expect("sent");
    storage.take_answers(now);
    storage.end_turn(due(), 100);
    assert_eq!(changes(&written(jobs.try_recv().expect("the changes"))), keys(0..1));
}

#[test]
fn the_accounts_are_loaded_when_the_store_opens_and_again_after_a_failed_load() {
    let (mut storage, jobs, answers) = storage(16);
    let now = Instant::now();
    answers.send(Outcome::Opened(Ok(("test.db".into(), 0)))).expect("sent");
    assert!(storage.take_answers(now).is_empty());
    assert_eq!(storage.next_wake(), Some(now));
    storage.end_turn(now, 100);
    assert!(matches!(jobs.try_recv(), Ok(Job::LoadAccounts)));
    storage.end_turn(now, 100);
    assert!(jobs.try_recv().is_err(), "asked once");
    answers.send(Outcome::AccountsFailed("locked".into())).expect("sent");
    assert!(storage.take_answers(now).is_empty(), "a failure is storage's own");
    assert_eq!(storage.next_wake(), Some(now + RETRY_EVERY));
    storage.end_turn(now + RETRY_EVERY / 2, 100);
    assert!(jobs.try_recv().is_err(), "not before the retry time");
    storage.end_turn(now + RETRY_EVERY, 100);
    assert!(matches!(jobs.try_recv(), Ok(Job::LoadAccounts)));
    let record = AccountsRecord { token_key: vec![1; 32], ..AccountsRecord::default() };
    assert_eq!(storage.figures().expect("on").failing.as_deref(), Some("locked"));
    answers.send(Outcome::Accounts(record.clone())).expect("sent");
    let handed = storage.take_answers(now + RETRY_EVERY);
    assert!(matches!(&handed[..], [Outcome::Accounts(got)] if *got == record));
    assert_eq!(storage.figures().expect("on").failing, None, "it works again");
    assert_eq!(storage.next_wake(), None);
}

#[test]
fn a_mention_count_follows_the_lines_and_blocks_no_other_query() {
    let (mut storage, jobs, _answers) = storage(16);
    storage.keep(said(1..2));
    assert!(storage.mentions(4, "lobby".into(), "alice".into(), 50));
    assert_eq!(seqs(&written(jobs.try_recv().expect("the lines first"))), [1]);
    let Ok(Job::Mentions { asker: 4, room, nick, since: 50 }) = jobs.try_recv() else {
        panic!("the count")
    };
    assert_eq!((room.as_str(), nick.as_str()), ("lobby", "alice"));
    let page = Job::Page { asker: 4, room: "lobby".into(), before: None, count: 20 };
    assert_eq!(storage.ask(4, page), Ok(()), "the same member may page meanwhile");
    assert!(storage.mentions(4, "lobby".into(), "alice".into(), 50), "and count again");
}

#[test]
fn without_a_store_there_are_no_accounts() {
    let mut storage = Storage::none();
    assert!(!storage.is_on());
    storage.account_change(change(1));
    assert!(!storage.mentions(1, "lobby".into(), "alice".into(), 0));
    assert_eq!(storage.figures().map_or(0, |f| f.dropped_account_changes), 0);
    let (with_store, _jobs, _answers) = self::storage(16);
    assert!(with_store.is_on());
}

#[test]
fn a_stop_writes_the_account_changes_after_the_writes_under_way() {
    let (mut storage, jobs, answers) = storage(16);
    storage.keep(said(1..2));
    storage.end_turn(due(), 100);
    let first = written(jobs.try_recv().expect("a write"));
    storage.account_change(change(0));
    // The thread: answers the write under way, then the one with the changes.
    let thread = std::thread::spawn(move || {
        answers.send(done(&first)).expect("sent");
        let last = written(jobs.recv().expect("the changes"));
        answers.send(done(&last)).expect("sent");
        changes(&last)
    });
    storage.finish();
    assert_eq!(thread.join().expect("no panic"), keys(0..1));
}
