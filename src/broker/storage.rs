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
//! Accounts: they live in the store, so there are none without one ([`Storage::is_on`] is
//! false when `history_days` is 0). When the store opens (at start, or later once it can be
//! reached), the accounts are loaded ([`Job::LoadAccounts`], again every [`RETRY_EVERY`]
//! until it works) and handed to the broker once as [`Outcome::Accounts`]. Changes to them
//! ([`Storage::account_change`]) go with the next batch, in the order they were made, in the
//! transaction of its lines. They are never dropped by the lines' bound: at most
//! [`MAX_WAITING_ACCOUNT_CHANGES`] wait on their own, and beyond that the newest are not
//! stored (the database then holds every change up to a moment, never a later change without
//! an earlier one), counted and warned of once per episode. A batch with account changes is
//! sent only while no other write is under way, and one that fails goes back before the
//! changes made since: changes are never written out of order (a retried `Put` after a later
//! `Delete` would bring an account back).
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
use crate::store::{AccountChange, AccountsRecord, Batch, NewLine, Target};

/// Most lines waiting for the store; the oldest beyond it are not stored.
pub const MAX_WAITING_LINES: usize = 100_000;
/// Most account changes waiting for the store; the newest beyond it are not stored.
pub const MAX_WAITING_ACCOUNT_CHANGES: usize = 10_000;
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
/// How far back a line a session sends again can have been said: a session keeps its lines
/// for `session::link::RETAIN` (5 s) and resumes within `dispatch::RESUME_WINDOW` (60 s) of
/// a broker's start. A room loaded from the store learns its senders' last stored line
/// numbers this far back, and takes no line it already stored as new (`room::stored`).
const REPLAYS_REACH: Duration = Duration::from_secs(120);
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
    /// Account changes not yet sent, in the order they were made.
    account_changes: VecDeque<AccountChange>,
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
    /// The same for account changes, and how many were not stored.
    dropping_account_changes: bool,
    dropped_account_changes: u64,
    /// Account changes made, and those on disk or dropped (the numbers of
    /// [`Storage::account_change`]).
    account_changes_made: u64,
    account_changes_settled: u64,
    /// The accounts are to be loaded (the store opened, or the last load failed) from then.
    load_accounts_at: Option<Instant>,
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
    ) -> Result<(Storage, Option<AccountsRecord>), Unusable> {
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
        let mut accounts = None;
        match link.outcomes.recv_timeout(OPEN_WAIT) {
            Ok(Outcome::Opened(Ok((location, bytes)))) => {
                info!("history is stored in {kind} {location}");
                link.figures.location = location;
                link.figures.bytes = bytes;
                // The accounts too, before anyone is served: a client quick off the mark
                // must not find them "not loaded yet", nor take a registered nick.
                let left = OPEN_WAIT.saturating_sub(now.elapsed());
                let loaded = match link.jobs.try_send(Job::LoadAccounts) {
                    Ok(()) => link.outcomes.recv_timeout(left).ok(),
                    Err(_) => None,
                };
                match loaded {
                    Some(Outcome::Accounts(record)) => accounts = Some(record),
                    Some(Outcome::AccountsFailed(why)) => {
                        link.failed(why);
                        link.load_accounts_at = Some(now + RETRY_EVERY);
                    }
                    // Not answered in time: the answer comes to the loop like any other.
                    _ => {}
                }
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
        Ok((storage, accounts))
    }

    /// Whether there is a store.
    pub fn is_on(&self) -> bool {
        self.link.is_some()
    }

    /// A change to accounts, written with the next batch after the changes made before it.
    /// Not stored (and counted) while [`MAX_WAITING_ACCOUNT_CHANGES`] wait; nothing without a
    /// store.
    ///
    /// Returns the change's number: once [`account_changes_settled`] reaches it, it is on disk
    /// (or was dropped, counted and warned about). Account changes do not wait out the lines'
    /// gathering: they go with the next write the loop can start.
    ///
    /// [`account_changes_settled`]: Storage::account_changes_settled
    pub fn account_change(&mut self, change: AccountChange) -> u64 {
        let Some(link) = &mut self.link else { return 0 };
        link.gathering_since.get_or_insert_with(Instant::now);
        link.account_changes.push_back(change);
        link.account_changes_made += 1;
        let number = link.account_changes_made;
        link.limit_account_changes();
        number
    }

    /// How many account changes are on disk (or will never be: dropped); see
    /// [`account_change`](Storage::account_change).
    pub fn account_changes_settled(&self) -> u64 {
        self.link.as_ref().map_or(u64::MAX, |link| link.account_changes_settled)
    }

    /// Asks how many lines of `room` said at or after `since` (Unix seconds) have the word
    /// `nick` (a login's "lines mentioned you since you left"), after the lines waiting:
    /// answered as [`Outcome::Mentions`] for `asker`, which may have other queries under way.
    /// `false` if it cannot be asked now (no store, the store failing, the queue full).
    pub fn mentions(&mut self, asker: Asker, room: String, nick: String, since: u64) -> bool {
        if self.link.as_ref().is_some_and(|link| link.figures.failing.is_some()) {
            return false;
        }
        self.submit(None, Job::Mentions { asker, room, nick, since }).is_ok()
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

    /// Asks the store for a room's history (a room was made): answered as [`Outcome::Loaded`].
    /// `false` if it cannot be asked now.
    pub fn load(&mut self, room: String, generation: u64, lines: usize) -> bool {
        let senders_since = crate::clock::unix_now().saturating_sub(REPLAYS_REACH.as_secs());
        self.submit(None, Job::Load { room, generation, lines, senders_since }).is_ok()
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

    /// Reads the accounts again (another node of a cluster changed one in the shared
    /// database).
    pub fn reload_accounts(&mut self) {
        if let Some(link) = &mut self.link {
            link.load_accounts_at = Some(Instant::now());
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
            || link.waiting.len() >= MAX_BATCH_LINES
            || !link.account_changes.is_empty();
        if link.writes_in_flight == 0 && due {
            link.write_waiting(false);
        }
        if link.load_accounts_at.is_some_and(|at| now >= at) {
            link.load_accounts_at = match link.jobs.try_send(Job::LoadAccounts) {
                Ok(()) => None,
                Err(_) => Some(now + RETRY_EVERY),
            };
        }
        if now >= link.next_expire {
            let cutoff = unix_now.saturating_sub(days * 86_400);
            if link.jobs.try_send(Job::Expire { cutoff }).is_ok() {
                link.next_expire = now + EXPIRE_EVERY;
            }
        }
    }

    /// When the loop must wake for the store: the next write (none while one is under way:
    /// its answer wakes the loop), a failed write's retry, or the accounts' load.
    pub fn next_wake(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        let write = match link.gathering_since {
            // Account changes go at once; lines wait to gather.
            Some(since) if link.writes_in_flight == 0 && !link.account_changes.is_empty() => {
                Some(link.retry_at.unwrap_or(since))
            }
            Some(since) if link.writes_in_flight == 0 => {
                Some(link.retry_at.unwrap_or(since + BATCH_EVERY))
            }
            _ => None,
        };
        [write, link.load_accounts_at].into_iter().flatten().min()
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
        let deadline = Instant::now() + LAST_WRITE_WAIT;
        loop {
            // Account changes go only once the writes before them have ended: sent here.
            link.write_waiting(true);
            if link.writes_in_flight == 0 {
                break;
            }
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
        let why = link.figures.failing.as_deref().unwrap_or("the database did not answer in time");
        let unwritten = link.waiting.len() + link.returned.lines.len();
        if unwritten > 0 {
            error!("{unwritten} lines said before the stop were not stored ({why})");
        }
        let changes = link.account_changes.len() + link.returned.accounts.len();
        if changes > 0 {
            error!("{changes} changes to accounts made before the stop were not stored ({why})");
        }
    }

    /// The store's figures now.
    pub fn figures(&self) -> Option<StoreStatus> {
        let link = self.link.as_ref()?;
        let mut figures = link.figures.clone();
        figures.waiting_lines = (link.waiting.len() + link.returned.lines.len()) as u64;
        figures.dropped_account_changes = link.dropped_account_changes;
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
            account_changes: VecDeque::new(),
            gathering_since: None,
            writes_in_flight: 0,
            returned: Batch::default(),
            retry_at: None,
            next_expire: now,
            asking: HashSet::new(),
            dropping: false,
            dropping_account_changes: false,
            dropped_account_changes: 0,
            account_changes_made: 0,
            account_changes_settled: 0,
            load_accounts_at: None,
            figures: StoreStatus { kind: kind.to_string(), ..StoreStatus::default() },
        }
    }

    /// Sends the waiting lines as one write, unless a failed write is waiting for its retry
    /// (or, without `even_if_writing`, another write is under way: the lines gather for the
    /// next batch). Account changes go only when no write is under way (see the module docs);
    /// until then they keep the next write due.
    fn write_waiting(&mut self, even_if_writing: bool) {
        if self.retry_at.is_some() || (self.writes_in_flight > 0 && !even_if_writing) {
            return;
        }
        let mut accounts_now = self.writes_in_flight == 0;
        while !self.waiting.is_empty()
            || !self.topics.is_empty()
            || (accounts_now && !self.account_changes.is_empty())
        {
            let take = self.waiting.len().min(MAX_BATCH_LINES);
            let accounts = match std::mem::take(&mut accounts_now) {
                true => self.account_changes.drain(..).collect(),
                false => Vec::new(),
            };
            let batch = Batch {
                accounts,
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
        if self.account_changes.is_empty() {
            self.gathering_since = None;
        }
    }

    /// Lines and account changes that were not written go back before those made since.
    fn put_back(&mut self, batch: Batch) {
        if !batch.is_empty() {
            self.gathering_since.get_or_insert_with(Instant::now);
        }
        for line in batch.lines.into_iter().rev() {
            self.waiting.push_front(line);
        }
        for change in batch.accounts.into_iter().rev() {
            self.account_changes.push_front(change);
        }
        let newer = std::mem::replace(&mut self.topics, batch.topics);
        self.topics.extend(newer);
        self.limit_waiting();
        self.limit_account_changes();
    }

    /// Drops the newest account changes beyond [`MAX_WAITING_ACCOUNT_CHANGES`], warning once.
    fn limit_account_changes(&mut self) {
        let over = self.account_changes.len().saturating_sub(MAX_WAITING_ACCOUNT_CHANGES);
        if over == 0 {
            return;
        }
        self.account_changes.truncate(MAX_WAITING_ACCOUNT_CHANGES);
        self.dropped_account_changes += over as u64;
        // Never written, so never waited for: what waits on them is let go.
        self.account_changes_settled += over as u64;
        if !self.dropping_account_changes {
            self.dropping_account_changes = true;
            warn!(
                "more than {MAX_WAITING_ACCOUNT_CHANGES} changes to accounts wait for the database {}: the newest are not stored (the accounts in memory have them until the broker restarts)",
                self.figures.location
            );
        }
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
                self.load_accounts_at = Some(now);
                None
            }
            Outcome::AccountsFailed(why) => {
                self.failed(why);
                self.load_accounts_at = Some(now + RETRY_EVERY);
                None
            }
            Outcome::Accounts(record) => {
                // A load that failed before made the store failing: it works.
                self.recovered();
                Some(Outcome::Accounts(record))
            }
            Outcome::Opened(Err((why, _))) => {
                self.failed(why);
                None
            }
            Outcome::Written { result, took, lines, accounts, bytes } => {
                self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
                let ms = took.as_secs_f64() * 1000.0;
                self.figures.write_ms_last = ms;
                self.figures.write_ms_max = self.figures.write_ms_max.max(ms);
                match result {
                    Ok(()) => {
                        self.figures.writes += 1;
                        self.figures.write_seconds += took.as_secs_f64();
                        self.figures.written_lines += lines as u64;
                        self.account_changes_settled += accounts as u64;
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
                if self.dropping_account_changes && self.account_changes.is_empty() {
                    self.dropping_account_changes = false;
                    info!(
                        "the database {} caught up; {} changes to accounts were not stored",
                        self.figures.location, self.dropped_account_changes
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
mod tests;
