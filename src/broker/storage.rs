//! The broker's side of the store: the database thread (`store_thread`) and what the loop
//! keeps for it — the lines waiting to be written, the writes and queries under way, the
//! retention schedule, and the figures operators see.
//!
//! Writes: the lines said (and topics set) go to the thread as one batch, one transaction,
//! every [`BATCH_EVERY`] (100 ms; sooner once [`MAX_BATCH_LINES`] wait); while a write is under
//! way, newer lines wait here and go as the next batch. A transaction per loop turn cost the
//! sessions' fan-out 5% on two cores (docs/PERFORMANCE.md, "The store"): each commit, and each
//! FTS5 segment it makes, has a fixed price. At most [`MAX_WAITING_LINES`] wait: beyond that the oldest are not stored (they
//! stay in the rooms' memory), counted, and warned of once per episode. A write that fails
//! comes back and is tried again every [`RETRY_EVERY`], the failure logged once and its end
//! once. Queries (a room's history when it is made, `/history`, `/search`, the operators'
//! commands) go in the same queue, after the lines waiting, so that they see everything said
//! before them. The queue to the thread is bounded ([`JOBS_QUEUED`]): a query that finds it
//! full is answered "busy" at once. The loop never waits for the thread, except for the store
//! opening at start and the last lines at a stop, both bounded.
//!
//! It owns no room state and no connections: what an answer means for rooms, members and
//! operators is the broker's (`mod.rs`, `dispatch`, `control`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::store_thread::{self, Asker, Job, Outcome};
use crate::proto::control::StoreStatus;
use crate::store::{AccountChange, Batch, NewLine, Target};

/// Most lines waiting for the store; the oldest beyond it are not stored.
pub const MAX_WAITING_LINES: usize = 100_000;
/// Most lines in one write; this many waiting are written without waiting for the interval.
const MAX_BATCH_LINES: usize = 5_000;
/// How long said lines gather before they are written (at most).
pub const BATCH_EVERY: Duration = Duration::from_millis(100);
/// Jobs queued for the thread at once.
const JOBS_QUEUED: usize = 256;
/// How often a failed write is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How often old lines are deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
/// How long the broker waits at start for the store to open before it serves without it.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// How long a stopping broker waits for its last lines to be written.
const LAST_WRITE_WAIT: Duration = Duration::from_secs(5);

/// Why the store cannot be used at all: the broker refuses to start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

/// The store and the loop's bookkeeping for it; `None` parts when `history_days` is 0.
pub struct Storage {
    link: Option<Link>,
    history_days: u32,
}

struct Link {
    jobs: SyncSender<Job>,
    outcomes: Receiver<Outcome>,
    /// Lines said, not yet sent to the thread, oldest first, and topics set.
    waiting: VecDeque<NewLine>,
    topics: Vec<(String, String)>,
    /// Changes to accounts, in the order they were made (written with the next batch).
    accounts: Vec<AccountChange>,
    /// Since when something waits (the next write is due [`BATCH_EVERY`] after).
    gathering_since: Option<Instant>,
    /// Writes sent and not answered; the batches of failed ones, to go first again.
    writes_in_flight: usize,
    returned: Batch,
    /// A write failed: the next is not before this.
    retry_at: Option<Instant>,
    next_expire: Instant,
    /// Members and operators with a query under way (one each).
    asking: HashSet<Asker>,
    /// Dropping waiting lines: warned once until the queue is empty again.
    dropping: bool,
    /// The figures operators see (`waiting_lines` is filled in when asked).
    figures: StoreStatus,
}

impl Storage {
    /// No store: what is said stays in memory only.
    pub fn none() -> Storage {
        Storage { link: None, history_days: 0 }
    }

    /// Starts the database thread on `target` and waits (at most [`OPEN_WAIT`]) for the
    /// store to open. A store that cannot be used at all (not a database, a newer schema) is
    /// an error; one that cannot be reached is logged, and the broker serves without it
    /// while the thread keeps trying. The thread inherits the caller's signal mask: call
    /// this after the broker's signals are blocked.
    pub fn start(
        target: Target,
        history_days: u32,
        wake: Arc<mio::Waker>,
    ) -> Result<Storage, Unusable> {
        let kind = match target {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres { .. } => "postgres",
        };
        // What people said is for the daemon's user only, also without systemd's UMask=0077:
        // SQLite creates the database and its -wal and -shm files with the process's umask.
        // (The broker never forks, and everything else it creates is its own too.)
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let (jobs, job_rx) = mpsc::sync_channel(JOBS_QUEUED);
        let (outcome_tx, outcomes) = mpsc::channel();
        std::thread::Builder::new()
            .name("chatd-store".into())
            .spawn(move || store_thread::run(target, job_rx, outcome_tx, wake))
            .map_err(|err| Unusable(format!("cannot start the database thread: {err}")))?;
        let now = Instant::now();
        let mut link = Link::new(jobs, outcomes, kind, now);
        match link.outcomes.recv_timeout(OPEN_WAIT) {
            Ok(Outcome::Opened(Ok((location, bytes)))) => {
                info!("history is stored in {kind} {location}");
                link.figures.location = location;
                link.figures.bytes = bytes;
            }
            Ok(Outcome::Opened(Err((why, true)))) => return Err(Unusable(why)),
            Ok(Outcome::Opened(Err((why, false)))) => {
                error!(
                    "{why}; chat goes on, history is kept in memory and written once the database can be reached (trying every {} s)",
                    store_thread::REOPEN_EVERY.as_secs()
                );
                link.figures.failing = Some(why);
            }
            Ok(_) | Err(_) => {
                let why =
                    format!("the {kind} database did not open within {} s", OPEN_WAIT.as_secs());
                warn!("{why}; chat goes on, history is kept in memory until it does");
                link.figures.failing = Some(why);
            }
        }
        let mut storage = Storage { link: Some(link), history_days };
        // Old lines go before anything is read: the first rooms loaded show none of them.
        storage.end_turn(now, crate::clock::unix_now());
        Ok(storage)
    }

    /// Whether there is a store.
    pub fn is_on(&self) -> bool {
        self.link.is_some()
    }

    /// Retention from now on (a change between 0 and not needs a restart).
    pub fn set_history_days(&mut self, days: u32) {
        if days > 0 {
            self.history_days = days;
        }
    }

    /// Lines and topics the rooms said this turn.
    pub fn keep(&mut self, batch: Batch) {
        let Some(link) = &mut self.link else { return };
        if batch.is_empty() {
            return;
        }
        link.gathering_since.get_or_insert_with(Instant::now);
        link.waiting.extend(batch.lines);
        link.topics.extend(batch.topics);
        link.limit_waiting();
    }

    /// A change to accounts (a registration, a new password, a kept message, ...): written
    /// with the next batch, in order.
    pub fn account_change(&mut self, change: AccountChange) {
        let Some(link) = &mut self.link else { return };
        link.gathering_since.get_or_insert_with(Instant::now);
        link.accounts.push(change);
    }

    /// Asks the store for a room's history (a room was made): answered as [`Outcome::Loaded`].
    /// `false` if it cannot be asked now.
    pub fn load(&mut self, room: String, generation: u64, lines: usize) -> bool {
        self.submit(None, Job::Load { room, generation, lines }).is_ok()
    }

    /// Sends a query for `asker` (one at a time each) after the lines waiting. `Err`: the
    /// words to answer with at once.
    /// While the store fails, nobody is answered from it: what it has lacks the lines that
    /// wait for it, and a page or a search without them would mislead.
    pub fn ask(&mut self, asker: Asker, job: Job) -> Result<(), String> {
        if let Some(link) = &self.link
            && link.figures.failing.is_some()
        {
            return Err("the history database is not available now".into());
        }
        self.submit(Some(asker), job)
    }

    fn submit(&mut self, asker: Option<Asker>, job: Job) -> Result<(), String> {
        let Some(link) = &mut self.link else {
            return Err("this server keeps no history on disk (history_days = 0)".into());
        };
        if let Some(asker) = asker
            && link.asking.contains(&asker)
        {
            return Err("wait for the answer to your last request".into());
        }
        // What was said before the question is part of what it asks about.
        link.write_waiting(true);
        match link.jobs.try_send(job) {
            Ok(()) => {
                link.asking.extend(asker);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err("the history database is busy; try again".into()),
            Err(TrySendError::Disconnected(_)) => {
                Err("the history database is not available".into())
            }
        }
    }

    /// End of a loop turn: writes what waits if it is due and no write is under way, and
    /// deletes old lines when that is due.
    pub fn end_turn(&mut self, now: Instant, unix_now: u64) {
        let days = u64::from(self.history_days);
        let Some(link) = &mut self.link else { return };
        if link.retry_at.is_some_and(|at| now >= at) {
            link.retry_at = None;
        }
        let due = link.gathering_since.is_some_and(|since| now >= since + BATCH_EVERY)
            || link.waiting.len() >= MAX_BATCH_LINES;
        if link.writes_in_flight == 0 && due {
            link.write_waiting(false);
        }
        if now >= link.next_expire {
            let cutoff = unix_now.saturating_sub(days * 86_400);
            if link.jobs.try_send(Job::Expire { cutoff }).is_ok() {
                link.next_expire = now + EXPIRE_EVERY;
            }
        }
    }

    /// When the loop must wake for the store: the next write (none while one is under way:
    /// its answer wakes the loop), or a failed write's retry.
    pub fn next_wake(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        if link.writes_in_flight > 0 {
            return None;
        }
        let since = link.gathering_since?;
        Some(link.retry_at.unwrap_or(since + BATCH_EVERY))
    }

    /// The thread's answers since the last call. Writes, retention and the store opening are
    /// taken care of here; the rest is returned for the broker to act on.
    pub fn take_answers(&mut self, now: Instant) -> Vec<Outcome> {
        let Some(link) = &mut self.link else { return Vec::new() };
        let mut answers = Vec::new();
        while let Ok(outcome) = link.outcomes.try_recv() {
            if let Some(answer) = link.handle(outcome, now) {
                answers.push(answer);
            }
        }
        answers
    }

    /// A query's answer was handed to `asker`: it may ask again.
    pub fn answered(&mut self, asker: Asker) {
        if let Some(link) = &mut self.link {
            link.asking.remove(&asker);
        }
    }

    /// The broker is stopping: writes what waits and waits (at most [`LAST_WRITE_WAIT`]) for
    /// the writes under way to end.
    pub fn finish(&mut self) {
        let Some(link) = &mut self.link else { return };
        link.retry_at = None;
        link.write_waiting(true);
        let deadline = Instant::now() + LAST_WRITE_WAIT;
        while link.writes_in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match link.outcomes.recv_timeout(left) {
                Ok(outcome) => {
                    link.handle(outcome, Instant::now());
                }
                Err(_) => break,
            }
            if link.retry_at.is_some() {
                // The store fails: what waits cannot be written now.
                break;
            }
        }
        let unwritten = link.waiting.len() + link.returned.lines.len();
        if unwritten > 0 {
            error!(
                "{} lines said before the stop were not stored ({})",
                unwritten,
                link.figures.failing.as_deref().unwrap_or("the database did not answer in time")
            );
        }
    }

    /// The store's figures now.
    pub fn figures(&self) -> Option<StoreStatus> {
        let link = self.link.as_ref()?;
        let mut figures = link.figures.clone();
        figures.waiting_lines = (link.waiting.len() + link.returned.lines.len()) as u64;
        Some(figures)
    }
}

impl Link {
    fn new(
        jobs: SyncSender<Job>,
        outcomes: Receiver<Outcome>,
        kind: &'static str,
        now: Instant,
    ) -> Link {
        Link {
            jobs,
            outcomes,
            waiting: VecDeque::new(),
            topics: Vec::new(),
            accounts: Vec::new(),
            gathering_since: None,
            writes_in_flight: 0,
            returned: Batch::default(),
            retry_at: None,
            next_expire: now,
            asking: HashSet::new(),
            dropping: false,
            figures: StoreStatus { kind: kind.to_string(), ..StoreStatus::default() },
        }
    }

    /// Sends the waiting lines as one write, unless a failed write is waiting for its retry
    /// (or, without `now`, another write is under way: the lines gather for the next batch).
    fn write_waiting(&mut self, even_if_writing: bool) {
        if self.retry_at.is_some() || (self.writes_in_flight > 0 && !even_if_writing) {
            return;
        }
        while !self.waiting.is_empty() || !self.topics.is_empty() || !self.accounts.is_empty() {
            let take = self.waiting.len().min(MAX_BATCH_LINES);
            let batch = Batch {
                accounts: std::mem::take(&mut self.accounts),
                lines: self.waiting.drain(..take).collect(),
                topics: std::mem::take(&mut self.topics),
            };
            match self.jobs.try_send(Job::Write(batch)) {
                Ok(()) => self.writes_in_flight += 1,
                Err(
                    TrySendError::Full(Job::Write(batch))
                    | TrySendError::Disconnected(Job::Write(batch)),
                ) => {
                    self.put_back(batch);
                    return;
                }
                Err(_) => return,
            }
        }
        self.gathering_since = None;
    }

    /// Lines that were not written go back before those said since.
    fn put_back(&mut self, batch: Batch) {
        if !batch.is_empty() {
            self.gathering_since.get_or_insert_with(Instant::now);
        }
        for line in batch.lines.into_iter().rev() {
            self.waiting.push_front(line);
        }
        let newer = std::mem::replace(&mut self.topics, batch.topics);
        self.topics.extend(newer);
        let newer = std::mem::replace(&mut self.accounts, batch.accounts);
        self.accounts.extend(newer);
        self.limit_waiting();
    }

    /// Drops the oldest waiting lines beyond [`MAX_WAITING_LINES`], warning once.
    fn limit_waiting(&mut self) {
        let over = self.waiting.len().saturating_sub(MAX_WAITING_LINES);
        if over == 0 {
            return;
        }
        self.waiting.drain(..over);
        self.figures.dropped_lines += over as u64;
        if !self.dropping {
            self.dropping = true;
            warn!(
                "more than {MAX_WAITING_LINES} lines wait for the database {}: the oldest are not stored (they stay in memory history)",
                self.figures.location
            );
        }
    }

    fn handle(&mut self, outcome: Outcome, now: Instant) -> Option<Outcome> {
        match outcome {
            Outcome::Opened(Ok((location, bytes))) => {
                info!("the {} database {location} is open", self.figures.kind);
                self.figures.location = location;
                self.figures.bytes = bytes;
                self.recovered();
                None
            }
            Outcome::Opened(Err((why, _))) => {
                self.failed(why);
                None
            }
            Outcome::Written { result, took, lines, bytes } => {
                self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
                let ms = took.as_secs_f64() * 1000.0;
                self.figures.write_ms_last = ms;
                self.figures.write_ms_max = self.figures.write_ms_max.max(ms);
                match result {
                    Ok(()) => {
                        self.figures.writes += 1;
                        self.figures.write_seconds += took.as_secs_f64();
                        self.figures.written_lines += lines as u64;
                        if let Some(bytes) = bytes {
                            self.figures.bytes = bytes;
                        }
                        self.recovered();
                    }
                    Err((why, batch)) => {
                        self.returned.lines.extend(batch.lines);
                        self.returned.topics.extend(batch.topics);
                        self.returned.accounts.extend(batch.accounts);
                        self.failed(why);
                        self.retry_at = Some(now + RETRY_EVERY);
                    }
                }
                if self.writes_in_flight == 0 && !self.returned.is_empty() {
                    let returned = std::mem::take(&mut self.returned);
                    self.put_back(returned);
                }
                if self.dropping && self.waiting.is_empty() {
                    self.dropping = false;
                    info!(
                        "the database {} caught up; {} lines were not stored",
                        self.figures.location, self.figures.dropped_lines
                    );
                }
                None
            }
            Outcome::Expired(Ok(deleted)) => {
                if deleted > 0 {
                    info!("deleted {deleted} stored lines older than the retention");
                }
                None
            }
            Outcome::Expired(Err(why)) => {
                self.failed(why);
                None
            }
            answer => Some(answer),
        }
    }

    /// The store failed: logged once, until it works again.
    fn failed(&mut self, why: String) {
        if self.figures.failing.is_none() {
            error!(
                "{why}; chat goes on, history is kept in memory and written when the database works again"
            );
        }
        self.figures.failing = Some(why);
    }

    fn recovered(&mut self) {
        if self.figures.failing.take().is_some() {
            info!("the database {} works again", self.figures.location);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            bytes: Some(4096),
        }
    }

    fn failed(batch: Batch) -> Outcome {
        let lines = batch.lines.len();
        Outcome::Written {
            result: Err(("disk full".into(), batch)),
            took: Duration::ZERO,
            lines,
            bytes: None,
        }
    }

    #[test]
    fn account_changes_go_with_the_next_write_in_order_and_come_back_if_it_fails() {
        let (mut storage, jobs, answers) = storage(16);
        let delivered = |to: &str| AccountChange::Delivered { to: to.into() };
        storage.account_change(delivered("alice"));
        storage.account_change(delivered("bob"));
        storage.end_turn(due(), 100);
        let first = written(jobs.try_recv().expect("a write"));
        assert_eq!(first.accounts, [delivered("alice"), delivered("bob")]);
        storage.account_change(delivered("carol"));
        answers.send(failed(first)).expect("answer");
        storage.take_answers(Instant::now());
        storage.end_turn(due() + RETRY_EVERY, 100);
        let again = written(jobs.try_recv().expect("the retry"));
        assert_eq!(again.accounts, [delivered("alice"), delivered("bob"), delivered("carol")]);
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
}
