//! Supervision arithmetic: when to restart the broker, when sessions dying young mean a crash
//! loop and how long to pause accepting, when to tell systemd's watchdog the master is alive.
//!
//! Owns the numbers only, with the clock passed in (an `Instant` argument), so that it is
//! tested without sleeping or forking. It must not read a clock, log, signal or fork: the
//! master (`children`, the loop) does that with what these types answer.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// Back-off between broker restarts: the first restart is immediate (sessions are waiting to
/// re-register), later ones wait from the first to the last value, doubling.
pub const BROKER_BACKOFF_FIRST: Duration = Duration::from_millis(250);
pub const BROKER_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A broker that lived this long resets the back-off.
pub const BROKER_STABLE: Duration = Duration::from_secs(60);

/// A session that dies unadmitted within this time served nobody.
pub const EARLY_DEATH: Duration = Duration::from_secs(2);
/// Sessions in a row dying early before the master backs off.
pub const CRASH_LOOP_THRESHOLD: u32 = 5;
pub const CRASH_BACKOFF_FIRST: Duration = Duration::from_secs(2);
pub const CRASH_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The broker child and its restart policy.
#[derive(Debug)]
pub struct BrokerChild {
    /// The running broker, if any.
    pub pid: Option<Pid>,
    /// The broker is not our child but one adopted from a master that died: it cannot be
    /// reaped, so the end of the link tells that it is gone.
    pub adopted: bool,
    started: Instant,
    /// The delay before the next restart after this one.
    backoff: Duration,
    restart_at: Option<Instant>,
    /// An upgrade asked this broker to leave for one of the new code: its pid, and when it is
    /// killed if it has not left.
    replacing: Option<(Pid, Instant)>,
}

impl BrokerChild {
    /// No broker of ours yet; `adopted` is one a dead master left running.
    pub fn new(adopted: Option<Pid>, now: Instant) -> Self {
        BrokerChild {
            pid: adopted,
            adopted: adopted.is_some(),
            started: now,
            backoff: Duration::ZERO,
            restart_at: None,
            replacing: None,
        }
    }

    /// The broker `pid` was asked to leave; it is killed at `kill_at` if it has not.
    pub fn replacing_started(&mut self, pid: Pid, kill_at: Instant) {
        self.replacing = Some((pid, kill_at));
    }

    /// The broker being replaced, if one is, and when it is killed.
    pub fn replacing(&self) -> Option<(Pid, Instant)> {
        self.replacing
    }

    /// The broker being replaced is gone.
    pub fn replaced(&mut self) {
        self.replacing = None;
    }

    /// A broker of ours was forked.
    pub fn started(&mut self, pid: Pid, now: Instant) {
        self.pid = Some(pid);
        self.started = now;
    }

    /// The broker died (or could not start): schedules the next start and returns the delay.
    /// Immediate the first time, then doubling up to [`BROKER_BACKOFF_MAX`]; a broker that had
    /// run for [`BROKER_STABLE`] starts the series afresh.
    pub fn schedule_restart(&mut self, now: Instant) -> Duration {
        if now.saturating_duration_since(self.started) >= BROKER_STABLE {
            self.backoff = Duration::ZERO;
        }
        let delay = self.backoff;
        self.backoff = (delay * 2).clamp(BROKER_BACKOFF_FIRST, BROKER_BACKOFF_MAX);
        self.restart_at = Some(now + delay);
        delay
    }

    /// When the scheduled restart is due, if one is.
    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }

    /// True, once, when the scheduled restart is due at `now`.
    pub fn take_due_restart(&mut self, now: Instant) -> bool {
        let due = self.restart_at.is_some_and(|at| now >= at);
        if due {
            self.restart_at = None;
        }
        due
    }
}

/// Sessions dying before they serve anyone, and the back-off that answers it.
#[derive(Debug, Default)]
pub struct CrashLoop {
    /// Early deaths in a row.
    streak: u32,
    /// The current pause; zero while not throttling.
    backoff: Duration,
}

impl CrashLoop {
    /// Whether a session that ended served nobody: it failed (`crashed`: a non-zero status or
    /// a signal) before its client chose a nickname, within [`EARLY_DEATH`].
    pub fn died_early(admitted: bool, crashed: bool, lived: Duration) -> bool {
        !admitted && crashed && lived < EARLY_DEATH
    }

    /// Whether accepting is being paused for a crash loop.
    pub fn throttling(&self) -> bool {
        !self.backoff.is_zero()
    }

    /// Counts an early death; returns how long to pause accepting, once the streak is long
    /// enough.
    pub fn failed(&mut self) -> Option<Duration> {
        self.streak += 1;
        if self.streak < CRASH_LOOP_THRESHOLD {
            return None;
        }
        self.backoff = if self.backoff.is_zero() {
            CRASH_BACKOFF_FIRST
        } else {
            (self.backoff * 2).min(CRASH_BACKOFF_MAX)
        };
        Some(self.backoff)
    }

    /// True right after the first pause of a streak (the moment to log).
    pub fn first_pause(&self) -> bool {
        self.backoff == CRASH_BACKOFF_FIRST && self.streak == CRASH_LOOP_THRESHOLD
    }

    /// A session was served; true if this ends a throttled streak.
    pub fn recovered(&mut self) -> bool {
        let was = self.throttling();
        *self = CrashLoop::default();
        was
    }
}

/// When to tell systemd's watchdog that the master is alive: twice per interval.
#[derive(Debug)]
pub struct Watchdog {
    interval: Duration,
    next: Instant,
}

impl Watchdog {
    /// A watchdog of `interval` (`WatchdogSec`), first fed at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Watchdog { interval, next: now }
    }

    /// When it must be fed next.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// True when it must be fed at `now`; then the next time is half an interval away.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval / 2;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn broker_started_at(now: Instant) -> BrokerChild {
        let mut broker = BrokerChild::new(None, now);
        broker.started(Pid::from_raw(42), now);
        broker
    }

    #[test]
    fn a_dead_broker_restarts_at_once_then_backs_off_doubling_to_the_cap() {
        let start = Instant::now();
        let mut broker = broker_started_at(start);
        let mut now = start;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let delay = broker.schedule_restart(now);
            assert_eq!(broker.restart_at(), Some(now + delay));
            delays.push(delay);
            now += delay;
            assert!(broker.take_due_restart(now));
            broker.started(Pid::from_raw(43), now);
            now += MS; // it dies at once
        }
        let ms = |n| n * MS;
        assert_eq!(
            delays,
            [0, 250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000].map(ms).to_vec()
        );
    }

    #[test]
    fn a_broker_that_ran_long_enough_restarts_at_once_again() {
        let start = Instant::now();
        let mut broker = broker_started_at(start);
        assert_eq!(broker.schedule_restart(start), Duration::ZERO);
        broker.started(Pid::from_raw(43), start);
        assert_eq!(broker.schedule_restart(start + MS), BROKER_BACKOFF_FIRST);
        let later = start + 2 * MS;
        broker.started(Pid::from_raw(44), later);
        assert_eq!(broker.schedule_restart(later + BROKER_STABLE - MS), 2 * BROKER_BACKOFF_FIRST);
        broker.started(Pid::from_raw(45), later + BROKER_STABLE);
        let stable = later + 2 * BROKER_STABLE;
        assert_eq!(broker.schedule_restart(stable), Duration::ZERO, "the series starts afresh");
        broker.started(Pid::from_raw(46), stable);
        assert_eq!(broker.schedule_restart(stable + MS), BROKER_BACKOFF_FIRST);
    }

    #[test]
    fn a_restart_is_due_once_and_not_before_its_time() {
        let start = Instant::now();
        let mut broker = broker_started_at(start);
        assert!(!broker.take_due_restart(start), "nothing scheduled");
        broker.schedule_restart(start);
        broker.schedule_restart(start); // 250 ms after `start` now
        assert!(!broker.take_due_restart(start + 249 * MS));
        assert!(broker.take_due_restart(start + 250 * MS));
        assert!(!broker.take_due_restart(start + 251 * MS));
        assert_eq!(broker.restart_at(), None);
    }

    #[test]
    fn an_adopted_broker_is_known_by_its_pid() {
        let now = Instant::now();
        let broker = BrokerChild::new(Some(Pid::from_raw(7)), now);
        assert!(broker.adopted);
        assert_eq!(broker.pid, Some(Pid::from_raw(7)));
        let ours = BrokerChild::new(None, now);
        assert!(!ours.adopted);
        assert_eq!(ours.pid, None);
    }

    #[test]
    fn only_an_unadmitted_failure_within_the_early_window_served_nobody() {
        let young = EARLY_DEATH - MS;
        assert!(CrashLoop::died_early(false, true, young));
        assert!(!CrashLoop::died_early(true, true, young), "it served a client");
        assert!(!CrashLoop::died_early(false, false, young), "it exited cleanly");
        assert!(!CrashLoop::died_early(false, true, EARLY_DEATH), "it lived long enough");
    }

    #[test]
    fn a_crash_loop_is_a_streak_of_early_deaths() {
        let mut crashes = CrashLoop::default();
        for _ in 1..CRASH_LOOP_THRESHOLD {
            assert_eq!(crashes.failed(), None);
            assert!(!crashes.throttling());
            assert!(!crashes.first_pause());
        }
        assert_eq!(crashes.failed(), Some(CRASH_BACKOFF_FIRST));
        assert!(crashes.throttling());
        assert!(crashes.first_pause(), "the moment to say so, once");
        assert_eq!(crashes.failed(), Some(2 * CRASH_BACKOFF_FIRST));
        assert!(!crashes.first_pause());
    }

    #[test]
    fn the_crash_back_off_doubles_up_to_its_cap() {
        let mut crashes = CrashLoop::default();
        for _ in 1..CRASH_LOOP_THRESHOLD {
            crashes.failed();
        }
        let pauses: Vec<u64> =
            (0..8).filter_map(|_| crashes.failed()).map(|d| d.as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_served_session_ends_the_streak_and_the_back_off() {
        let mut crashes = CrashLoop::default();
        for _ in 1..CRASH_LOOP_THRESHOLD {
            crashes.failed();
        }
        assert!(!crashes.recovered(), "not throttled yet: nothing to announce");
        for _ in 1..CRASH_LOOP_THRESHOLD {
            assert_eq!(crashes.failed(), None, "the streak started again");
        }
        crashes.failed();
        crashes.failed();
        assert!(crashes.recovered(), "a throttled streak ended");
        assert!(!crashes.throttling());
        for _ in 1..CRASH_LOOP_THRESHOLD {
            crashes.failed();
        }
        assert_eq!(crashes.failed(), Some(CRASH_BACKOFF_FIRST), "the pause starts afresh");
        assert!(crashes.first_pause());
    }

    #[test]
    fn the_watchdog_is_fed_at_once_then_twice_per_interval() {
        let start = Instant::now();
        let interval = Duration::from_secs(10);
        let mut watchdog = Watchdog::new(interval, start);
        assert_eq!(watchdog.next(), start);
        assert!(watchdog.due(start));
        assert_eq!(watchdog.next(), start + interval / 2);
        assert!(!watchdog.due(start + interval / 2 - MS));
        assert!(watchdog.due(start + interval / 2 + MS), "late is still due");
        assert_eq!(watchdog.next(), start + interval + MS);
    }
}
