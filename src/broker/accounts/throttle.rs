//! The limits on proving passwords, as arithmetic on instants the caller passes in: per
//! account, per source address, and on registrations server-wide (SPEC17, "Throttles and
//! logs"). No clock, no I/O, no logging: `broker::accounts` asks and records, the caller logs.
//!
//! Per account: 3 failures within a minute start a back-off of 30 s, doubled by each further
//! failure (at most an hour); a success ends it, and so does an hour without a failure after
//! the last back-off ran out. Not a lockout: a victim waits at most an hour, and an attacker
//! gets one guess per back-off. Per source (an IPv4 address or an IPv6 /64): 10 failures
//! within a minute, whatever the accounts. Registrations: 30 challenges per 10 minutes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Failures of one account within [`ACCOUNT_WINDOW`] that start its back-off.
pub const ACCOUNT_FAILURES: usize = 3;
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(60);
/// The first back-off, doubled by each further failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long after a back-off ran out without a failure the account starts afresh.
pub const QUIET_RESET: Duration = Duration::from_secs(3600);
/// Failures from one source within [`SOURCE_WINDOW`] after which it gets no challenge.
pub const SOURCE_FAILURES: usize = 10;
pub const SOURCE_WINDOW: Duration = Duration::from_secs(60);
/// Registrations (challenges for one) server-wide within [`REGISTRATION_WINDOW`].
pub const REGISTRATIONS: usize = 30;
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(600);
/// Sources remembered before those without a recent failure are forgotten.
const SOURCES_KEPT: usize = 4096;

/// One account's failures.
#[derive(Debug, Default)]
struct AccountFailures {
    /// Failures within the last minute (while not backing off).
    recent: VecDeque<Instant>,
    /// The back-off under way: until when, and how many times it was doubled.
    backoff: Option<(Instant, u32)>,
}

/// Every limit's memory.
#[derive(Debug, Default)]
pub struct Throttles {
    accounts: HashMap<String, AccountFailures>,
    sources: HashMap<String, VecDeque<Instant>>,
    registrations: VecDeque<Instant>,
}

/// Whole seconds until `until`, rounded up (a user told "0 seconds" would try at once).
fn seconds_until(until: Instant, now: Instant) -> u64 {
    let left = until.saturating_duration_since(now);
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

/// Drops the instants older than `window`.
fn prune(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while times.front().is_some_and(|&at| now.saturating_duration_since(at) >= window) {
        times.pop_front();
    }
}

/// What a throttle keys on for `source`, the address the broker knows a session by ("IP:port"
/// or an IP): the IP, an IPv6 address by its /64 (one customer's network), an IPv4-mapped one
/// as IPv4. Anything else is its own key.
pub fn source_key(source: &str) -> String {
    let ip = source
        .parse::<SocketAddr>()
        .map(|addr| addr.ip())
        .or_else(|_| source.parse::<IpAddr>())
        .map(|ip| ip.to_canonical());
    match ip {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
        Err(_) => source.to_string(),
    }
}

impl Throttles {
    /// Seconds until the account `key` may be tried again (`None`: now).
    pub fn account_wait(&self, key: &str, now: Instant) -> Option<u64> {
        let (until, _) = self.accounts.get(key)?.backoff?;
        (until > now).then(|| seconds_until(until, now))
    }

    /// Seconds until the source `source` (a [`source_key`]) may try again.
    pub fn source_wait(&self, source: &str, now: Instant) -> Option<u64> {
        let times = self.sources.get(source)?;
        if times.len() < SOURCE_FAILURES {
            return None;
        }
        // The window holds the last SOURCE_FAILURES failures: the oldest must leave it.
        let until = *times.front()? + SOURCE_WINDOW;
        (until > now).then(|| seconds_until(until, now))
    }

    /// The longer of the account's and the source's waits.
    pub fn wait(&self, key: &str, source: &str, now: Instant) -> Option<u64> {
        self.account_wait(key, now).max(self.source_wait(source, now))
    }

    /// A wrong password for the account `key` from `source`.
    pub fn failed(&mut self, key: &str, source: &str, now: Instant) {
        let account = self.accounts.entry(key.to_string()).or_default();
        if let Some((until, _)) = account.backoff
            && now.saturating_duration_since(until) >= QUIET_RESET
        {
            account.backoff = None;
        }
        account.backoff = match account.backoff {
            Some((_, doubled)) => {
                let doubled = doubled.saturating_add(1);
                let backoff = FIRST_BACKOFF.saturating_mul(1u32 << doubled.min(16));
                Some((now + backoff.min(MAX_BACKOFF), doubled))
            }
            None => {
                prune(&mut account.recent, ACCOUNT_WINDOW, now);
                account.recent.push_back(now);
                if account.recent.len() >= ACCOUNT_FAILURES {
                    account.recent.clear();
                    Some((now + FIRST_BACKOFF, 0))
                } else {
                    None
                }
            }
        };

        if self.sources.len() >= SOURCES_KEPT && !self.sources.contains_key(source) {
            self.sources.retain(|_, times| {
                prune(times, SOURCE_WINDOW, now);
                !times.is_empty()
            });
        }
        let times = self.sources.entry(source.to_string()).or_default();
        prune(times, SOURCE_WINDOW, now);
        times.push_back(now);
        while times.len() > SOURCE_FAILURES {
            times.pop_front();
        }
    }

    /// The right password for `key`: its failures are forgotten (the source's are not: they
    /// may have been against other accounts).
    pub fn succeeded(&mut self, key: &str) {
        self.accounts.remove(key);
    }

    /// Takes one registration if fewer than [`REGISTRATIONS`] were taken within the window.
    pub fn take_registration(&mut self, now: Instant) -> bool {
        prune(&mut self.registrations, REGISTRATION_WINDOW, now);
        if self.registrations.len() >= REGISTRATIONS {
            return false;
        }
        self.registrations.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_key_on_the_ip_and_on_the_64_of_ipv6() {
        assert_eq!(source_key("192.0.2.7:40000"), "192.0.2.7");
        assert_eq!(source_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("[2001:db8:1:2:3:4:5:6]:2323"), "2001:db8:1:2::/64");
        assert_eq!(source_key("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(source_key("[::ffff:192.0.2.7]:1"), "192.0.2.7");
        assert_eq!(source_key("somewhere"), "somewhere");
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        let now = Instant::now();
        assert_eq!(seconds_until(now + Duration::from_millis(29_001), now), 30);
        assert_eq!(seconds_until(now + Duration::from_secs(30), now), 30);
        assert_eq!(seconds_until(now, now), 0);
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_start_no_backoff() {
        let start = Instant::now();
        let mut throttles = Throttles::default();
        for minute in 0..10 {
            let now = start + Duration::from_secs(31 * minute);
            throttles.failed("alice", &format!("10.0.0.{minute}"), now);
            assert_eq!(throttles.account_wait("alice", now), None, "minute {minute}");
        }
    }

    #[test]
    fn an_hour_quiet_after_a_backoff_starts_afresh() {
        let start = Instant::now();
        let mut throttles = Throttles::default();
        for second in 0..3 {
            throttles.failed("alice", "a", start + Duration::from_secs(second));
        }
        let ran_out = start + Duration::from_secs(2) + FIRST_BACKOFF;
        let later = ran_out + QUIET_RESET;
        throttles.failed("alice", "a", later);
        assert_eq!(throttles.account_wait("alice", later), None);
        // Just before the hour, the back-off would have doubled.
        let mut throttles = Throttles::default();
        for second in 0..3 {
            throttles.failed("alice", "a", start + Duration::from_secs(second));
        }
        let sooner = later - Duration::from_secs(1);
        throttles.failed("alice", "a", sooner);
        assert_eq!(throttles.account_wait("alice", sooner), Some(60));
    }

    #[test]
    fn sources_without_recent_failures_are_forgotten_when_many() {
        let start = Instant::now();
        let mut throttles = Throttles::default();
        for n in 0..SOURCES_KEPT {
            throttles.failed("alice", &format!("s{n}"), start);
        }
        let later = start + SOURCE_WINDOW;
        throttles.failed("alice", "new", later);
        assert_eq!(throttles.sources.len(), 1);
    }
}
