//! Who may connect: the master's bookkeeping of live sessions per source, and the limits it
//! checks before forking (no fork is spent on a refused client).
//!
//! Owns the counts (all clients, per source, not yet admitted — in total and per source),
//! sshd-style `MaxStartups` random early drop, and per-source penalties. Pure logic with the clock passed in: no sockets, no
//! logging. A *source* is an IPv4 address or an IPv6 /64 (one customer's network).
//!
//! Clients still choosing a nickname are capped per source too (`max_startups_per_ip`), and
//! the random early drop prefers the sources that hold the most of them: a few addresses
//! holding the door with idle connections must not shut out newcomers from elsewhere.
//!
//! Penalties: a source *trips* when it is refused or when one of its clients leaves before
//! choosing a nickname. `penalty_trips` trips in a row (an admitted client resets the count)
//! put it in the penalty box for `penalty`, doubling with each further sentence up to
//! `penalty_max`; sentences expire by themselves, and so does the doubling once a source has
//! behaved for `penalty_max`.
//!
//! Behind a reverse proxy (`trusted_proxies`): a connection from a trusted proxy meets only the
//! totals at accept (the proxy's address holds everyone's connections, so per-source limits and
//! penalties on it would shut out every user at once), and its leaving before it is forwarded
//! is no trip. Once its session reports the client's own address ([`Admission::forwarded`]),
//! the client counts under that source like a direct one, and the per-source limits and the
//! penalty box apply to it there.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use nix::unistd::Pid;

use crate::config::AdmissionLimits;

/// Descriptors the broker needs besides one per session: its two listeners, poller, signals,
/// log, the master's link, operators' connections and a state file being replaced.
pub const BROKER_SPARE_FILES: u64 = 24;

/// How many of `wanted` clients a descriptor limit of `limit` leaves room for: the broker holds
/// one descriptor per session besides [`BROKER_SPARE_FILES`] of its own (the master closes its
/// copy of each connection, and each session has a limit of its own).
pub fn clients_within(limit: u64, wanted: usize) -> usize {
    let room = limit.saturating_sub(BROKER_SPARE_FILES);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Whether `peer` is one of `trusted_proxies`, whose `X-Forwarded-For` is believed. An
/// IPv4-mapped IPv6 peer (an IPv4 client of a dual-stack `[::]` socket, as systemd binds one)
/// is matched as the IPv4 address it is.
pub fn is_trusted_proxy(trusted_proxies: &[ipnet::IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted_proxies.iter().any(|net| net.contains(&peer))
}

/// An IPv4 address, or the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(addr: IpAddr) -> Source {
        match addr {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    Source(IpAddr::V6(octets.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `max_clients` clients are connected.
    Full,
    /// `max_clients_per_ip` clients from this source are connected.
    PerSource,
    /// Too many clients are still choosing a nickname (MaxStartups).
    Startups,
    /// Too many clients from this source are still choosing a nickname.
    StartupsPerSource,
    /// The source is in the penalty box.
    Penalty { seconds_left: u64 },
}

impl Refusal {
    /// The one line the refused client gets before the connection closes.
    pub fn message(&self) -> String {
        match self {
            Refusal::Full => "*** The server is full; please try again later.".to_string(),
            Refusal::PerSource => {
                "*** Too many connections from your address; please try again later.".to_string()
            }
            Refusal::Startups => {
                "*** Too many people are logging in right now; please try again in a moment."
                    .to_string()
            }
            Refusal::StartupsPerSource => "*** Too many connections from your address are still \
                                           logging in; please try again in a moment."
                .to_string(),
            Refusal::Penalty { seconds_left } => format!(
                "*** Your address is refused for {seconds_left} s after repeated failed connections."
            ),
        }
    }

    /// A short name for logs and metrics.
    /// A short name for figures (`chatctl status`, Prometheus labels).
    pub fn key(&self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::PerSource => "per_source",
            Refusal::Startups => "startups",
            Refusal::StartupsPerSource => "startups_per_source",
            Refusal::Penalty { .. } => "penalty",
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Full => "server full",
            Refusal::PerSource => "too many connections from this source",
            Refusal::Startups => "too many clients logging in",
            Refusal::StartupsPerSource => "too many clients logging in from this source",
            Refusal::Penalty { .. } => "source penalised",
        }
    }
}

#[derive(Debug)]
struct Client {
    source: Source,
    admitted: bool,
}

#[derive(Debug, Default)]
struct Record {
    /// Trips since the last admission.
    trips: u32,
    /// The last sentence; the next is twice as long.
    last_penalty: Duration,
    /// When the current sentence ends.
    until: Option<Instant>,
    /// When the source last tripped, to forget old sentences.
    last_trip: Option<Instant>,
}

/// The master's view of its sessions, for admission decisions.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    clients: HashMap<Pid, Client>,
    per_source: HashMap<Source, usize>,
    unadmitted: usize,
    /// Clients still choosing a nickname, per source (only sources that have some).
    unadmitted_per_source: HashMap<Source, usize>,
    records: HashMap<Source, Record>,
    /// Clients whose leaving before admission is no trip: a trusted proxy's connection not yet
    /// forwarded (the trip would be its real client's, who is unknown), and a client refused
    /// once forwarded (the refusal tripped already). Not handed over by an upgrade: such a
    /// client then trips its source as any would.
    exempt: HashSet<Pid>,
    rng: fastrand::Rng,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            clients: HashMap::new(),
            per_source: HashMap::new(),
            unadmitted: 0,
            unadmitted_per_source: HashMap::new(),
            records: HashMap::new(),
            exempt: HashSet::new(),
            rng: fastrand::Rng::new(),
        }
    }

    /// New limits (reload); counts and penalties are kept.
    pub fn set_limits(&mut self, limits: AdmissionLimits) {
        self.limits = limits;
    }

    /// Decides on a new connection from `addr`. A refusal counts as a trip for its source.
    pub fn check(&mut self, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        let source = Source::of(addr);
        let refusal = self.refusal(Some(source), now);
        if let Some(refusal) = refusal {
            if !matches!(refusal, Refusal::Penalty { .. }) {
                self.trip(source, now);
            }
            return Err(refusal);
        }
        Ok(())
    }

    /// Decides on a new connection from a trusted proxy: only the totals (`max_clients`,
    /// MaxStartups) apply, and a refusal is no trip; the client's own source is checked when
    /// it is known ([`Admission::forwarded`]).
    pub fn check_proxied(&mut self, now: Instant) -> Result<(), Refusal> {
        match self.refusal(None, now) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Why a connection from `source` (`None`: one from a trusted proxy, whose source is not
    /// known yet) is refused, if it is.
    fn refusal(&mut self, source: Option<Source>, now: Instant) -> Option<Refusal> {
        if let Some(refusal) = source.and_then(|source| self.penalty(source, now)) {
            return Some(refusal);
        }
        if self.clients.len() >= self.limits.max_clients {
            return Some(Refusal::Full);
        }
        let count = |counts: &HashMap<Source, usize>| {
            source.and_then(|source| counts.get(&source).copied()).unwrap_or(0)
        };
        if source.is_some() && count(&self.per_source) >= self.limits.max_clients_per_ip {
            return Some(Refusal::PerSource);
        }
        let startups = self.limits.max_startups;
        if self.unadmitted >= startups.full {
            return Some(Refusal::Startups);
        }
        let held = count(&self.unadmitted_per_source);
        if source.is_some() && held >= self.limits.max_startups_per_ip {
            return Some(Refusal::StartupsPerSource);
        }
        if self.unadmitted >= startups.start {
            // Linear from `rate`% at `start` to 100% at `full` (sshd), for a source holding
            // its share or more; one holding less than the average per source is refused in
            // proportion: (held + 1) / average, so that when every source holds one this is
            // sshd's rule, and a newcomer from an address holding none, while a few addresses
            // hold three each, is refused a third as often as they are.
            let span = (startups.full - startups.start).max(1) as u64;
            let over = (self.unadmitted - startups.start) as u64;
            let rate = u64::from(startups.rate);
            let probability = rate + (100 - rate) * over / span;
            // A proxy's connection, whose source is unknown, is refused at sshd's rate.
            let sources = self.unadmitted_per_source.len().max(1) as u64;
            let weighted = match source {
                Some(_) => (probability * (held as u64 + 1) * sources
                    / self.unadmitted.max(1) as u64)
                    .min(probability),
                None => probability,
            };
            if self.rng.u64(0..100) < weighted {
                return Some(Refusal::Startups);
            }
        }
        None
    }

    /// The penalty `source` is serving at `now`, if it is.
    fn penalty(&self, source: Source, now: Instant) -> Option<Refusal> {
        let until = self.records.get(&source).and_then(|r| r.until)?;
        let seconds_left = until.checked_duration_since(now)?.as_secs_f64().ceil() as u64;
        (until > now).then_some(Refusal::Penalty { seconds_left })
    }

    fn trip(&mut self, source: Source, now: Instant) {
        let limits = &self.limits;
        let record = self.records.entry(source).or_default();
        if record.last_trip.is_some_and(|at| now.saturating_duration_since(at) > limits.penalty_max)
        {
            record.last_penalty = Duration::ZERO;
        }
        record.last_trip = Some(now);
        record.trips += 1;
        if record.trips >= limits.penalty_trips {
            let sentence = if record.last_penalty.is_zero() {
                limits.penalty
            } else {
                (record.last_penalty * 2).min(limits.penalty_max)
            };
            record.last_penalty = sentence;
            record.until = Some(now + sentence);
            record.trips = 0;
        }
    }

    /// The penalty a source got at `now`, if its last trip started one (for logging).
    pub fn sentence(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let record = self.records.get(&Source::of(addr))?;
        let until = record.until?;
        (until > now && record.last_trip == Some(now)).then_some(record.last_penalty)
    }

    /// A session was forked for `addr`.
    pub fn accepted(&mut self, pid: Pid, addr: IpAddr) {
        let source = Source::of(addr);
        *self.per_source.entry(source).or_default() += 1;
        self.unadmitted += 1;
        *self.unadmitted_per_source.entry(source).or_default() += 1;
        self.clients.insert(pid, Client { source, admitted: false });
    }

    /// A session was forked for a connection from a trusted proxy at `proxy`: counted under the
    /// proxy's address until [`Admission::forwarded`] moves it, and its leaving before then is
    /// no trip.
    pub fn accepted_from_proxy(&mut self, pid: Pid, proxy: IpAddr) {
        self.accepted(pid, proxy);
        self.exempt.insert(pid);
    }

    /// The session `pid`'s trusted proxy says its client is `addr`: from now on the client
    /// counts under its own source, as if it had connected directly, and that source's limits
    /// apply to it there. `Err`: the source was already at `max_clients_per_ip` (or at
    /// `max_startups_per_ip` with clients still logging in) or is in the penalty box; the
    /// caller ends the session. Such a refusal trips the source as one at accept does (not for
    /// a penalty), and the session's leaving then trips it no further.
    pub fn forwarded(&mut self, pid: Pid, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Some(client) = self.clients.get_mut(&pid) else { return Ok(()) };
        let (old, admitted) = (client.source, client.admitted);
        let new = Source::of(addr);
        client.source = new;
        self.exempt.remove(&pid);
        if old != new {
            if let Some(count) = self.per_source.get_mut(&old) {
                *count -= 1;
                if *count == 0 {
                    self.per_source.remove(&old);
                }
            }
            *self.per_source.entry(new).or_default() += 1;
            if !admitted {
                self.no_longer_starting(old);
                *self.unadmitted_per_source.entry(new).or_default() += 1;
            }
        }
        // The counts include this client now: over the limit means it is one too many.
        let refusal = self.penalty(new, now).or_else(|| {
            if self.per_source.get(&new).copied().unwrap_or(0) > self.limits.max_clients_per_ip {
                Some(Refusal::PerSource)
            } else if !admitted
                && self.unadmitted_per_source.get(&new).copied().unwrap_or(0)
                    > self.limits.max_startups_per_ip
            {
                Some(Refusal::StartupsPerSource)
            } else {
                None
            }
        });
        let Some(refusal) = refusal else { return Ok(()) };
        if !matches!(refusal, Refusal::Penalty { .. }) {
            self.trip(new, now);
        }
        self.exempt.insert(pid);
        Err(refusal)
    }

    /// The session `pid` chose a nickname.
    pub fn admitted(&mut self, pid: Pid) {
        if let Some(client) = self.clients.get_mut(&pid)
            && !client.admitted
        {
            client.admitted = true;
            let source = client.source;
            self.unadmitted -= 1;
            self.no_longer_starting(source);
            if let Some(record) = self.records.get_mut(&source) {
                record.trips = 0;
            }
        }
    }

    /// The session `pid` answered an HTTP request (a browser on the chat port): no longer a
    /// client choosing a nickname, and its leaving is no trip; but nor does it forgive its
    /// source's earlier trips as an admitted client does.
    pub fn answered_http(&mut self, pid: Pid) {
        if let Some(client) = self.clients.get_mut(&pid)
            && !client.admitted
        {
            client.admitted = true;
            let source = client.source;
            self.unadmitted -= 1;
            self.no_longer_starting(source);
        }
    }

    /// The session `pid`'s client proved a wrong password: a trip for its source, as a login
    /// that timed out is (a password guesser reconnecting is slowed down like a scanner).
    pub fn failed_authentication(&mut self, pid: Pid, now: Instant) {
        if let Some(client) = self.clients.get(&pid) {
            let source = client.source;
            self.trip(source, now);
        }
    }

    /// The session `pid` is gone. Leaving before admission is a trip for its source.
    /// Returns whether its client had been admitted (`None`: not a session we counted).
    pub fn exited(&mut self, pid: Pid, now: Instant) -> Option<bool> {
        let client = self.clients.remove(&pid)?;
        if let Some(count) = self.per_source.get_mut(&client.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&client.source);
            }
        }
        let exempt = self.exempt.remove(&pid);
        if !client.admitted {
            self.unadmitted -= 1;
            self.no_longer_starting(client.source);
            if !exempt {
                self.trip(client.source, now);
            }
        }
        self.forget_old_records(now);
        Some(client.admitted)
    }

    fn no_longer_starting(&mut self, source: Source) {
        if let Some(count) = self.unadmitted_per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.unadmitted_per_source.remove(&source);
            }
        }
    }

    /// Drops records of sources that behaved for longer than the longest sentence.
    fn forget_old_records(&mut self, now: Instant) {
        let horizon = self.limits.penalty_max;
        self.records.retain(|_, record| {
            record.until.is_some_and(|until| until > now)
                || record.last_trip.is_some_and(|at| now.saturating_duration_since(at) <= horizon)
        });
    }
}

/// The counts and penalties, as an in-place upgrade hands them to the next image
/// (`master::upgrade`): times are kept as durations from the moment of the snapshot, since an
/// `Instant` means nothing in another process image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionSnapshot {
    /// Every counted session: pid, source, whether its client chose a nickname.
    pub clients: Vec<(i32, IpAddr, bool)>,
    pub records: Vec<RecordSnapshot>,
}

/// One source's penalty record (see [`Record`]), times relative to the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSnapshot {
    pub source: IpAddr,
    pub trips: u32,
    pub last_penalty_ms: u64,
    /// How long the current sentence still runs.
    pub sentence_left_ms: Option<u64>,
    /// How long ago the source last tripped.
    pub last_trip_ago_ms: Option<u64>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Admission {
    /// What the next image needs to go on counting as this one would have.
    pub fn snapshot(&self, now: Instant) -> AdmissionSnapshot {
        let clients = self
            .clients
            .iter()
            .map(|(pid, client)| (pid.as_raw(), client.source.0, client.admitted))
            .collect();
        let records = self
            .records
            .iter()
            .map(|(source, record)| RecordSnapshot {
                source: source.0,
                trips: record.trips,
                last_penalty_ms: millis(record.last_penalty),
                sentence_left_ms: record
                    .until
                    .filter(|&until| until > now)
                    .map(|until| millis(until - now)),
                last_trip_ago_ms: record
                    .last_trip
                    .map(|at| millis(now.saturating_duration_since(at))),
            })
            .collect();
        AdmissionSnapshot { clients, records }
    }

    /// The bookkeeping a previous image handed over, under `limits`.
    pub fn restore(limits: AdmissionLimits, snapshot: &AdmissionSnapshot, now: Instant) -> Self {
        let mut admission = Admission::new(limits);
        for &(pid, source, admitted) in &snapshot.clients {
            let pid = Pid::from_raw(pid);
            admission.accepted(pid, source);
            if admitted {
                // As `admitted` does, but without forgiving the source's trips a second time.
                if let Some(client) = admission.clients.get_mut(&pid) {
                    client.admitted = true;
                }
                admission.unadmitted -= 1;
                admission.no_longer_starting(Source::of(source));
            }
        }
        for saved in &snapshot.records {
            let record = Record {
                trips: saved.trips,
                last_penalty: Duration::from_millis(saved.last_penalty_ms),
                until: saved.sentence_left_ms.map(|left| now + Duration::from_millis(left)),
                last_trip: saved
                    .last_trip_ago_ms
                    .and_then(|ago| now.checked_sub(Duration::from_millis(ago))),
            };
            admission.records.insert(Source::of(saved.source), record);
        }
        admission
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaxStartups;

    #[test]
    fn a_snapshot_restores_the_counts_and_the_penalties() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        admission.accepted(Pid::from_raw(1), ip("10.0.0.1"));
        admission.admitted(Pid::from_raw(1));
        admission.accepted(Pid::from_raw(2), ip("10.0.0.1"));
        // Three trips of another source: a sentence of 10 s.
        for _ in 0..3 {
            let _ = admission.check(ip("10.0.9.9"), now);
            admission.trip(Source::of(ip("10.0.9.9")), now);
        }
        let later = now + Duration::from_secs(4);
        let snapshot = admission.snapshot(later);
        let json = serde_json::to_string(&snapshot).expect("encodes");
        let back: AdmissionSnapshot = serde_json::from_str(&json).expect("decodes");
        let mut restored = Admission::restore(limits(), &back, later);
        assert_eq!(restored.check(ip("10.0.0.1"), later), Err(Refusal::PerSource));
        assert_eq!(
            restored.check(ip("10.0.9.9"), later),
            Err(Refusal::Penalty { seconds_left: 6 })
        );
        // Pid 2 has not chosen a nickname: its leaving is a trip, pid 1's is not.
        assert_eq!(restored.exited(Pid::from_raw(2), later), Some(false));
        assert_eq!(restored.exited(Pid::from_raw(1), later), Some(true));
        assert_eq!(restored.unadmitted, 0);
        assert!(restored.per_source.is_empty());
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_clients: 4,
            max_clients_per_ip: 2,
            max_startups: MaxStartups { start: 3, rate: 100, full: 3 },
            max_startups_per_ip: 10,
            penalty_trips: 3,
            penalty: Duration::from_secs(10),
            penalty_max: Duration::from_secs(25),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(Source::of(ip("2001:db8::1")), Source::of(ip("2001:db8::ffff:1")));
        assert_ne!(Source::of(ip("2001:db8::1")), Source::of(ip("2001:db8:0:1::1")));
        assert_eq!(Source::of(ip("::ffff:10.0.0.1")), Source::of(ip("10.0.0.1")));
        assert_eq!(Source::of(ip("2001:db8::1")).to_string(), "2001:db8::/64");
    }

    #[test]
    fn per_source_and_total_limits() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        for (pid, addr) in [(1, "10.0.0.1"), (2, "10.0.0.1")] {
            assert_eq!(admission.check(ip(addr), now), Ok(()));
            admission.accepted(Pid::from_raw(pid), ip(addr));
            admission.admitted(Pid::from_raw(pid));
        }
        assert_eq!(admission.check(ip("10.0.0.1"), now), Err(Refusal::PerSource));
        for pid in [3, 4] {
            admission.accepted(Pid::from_raw(pid), ip(&format!("10.0.1.{pid}")));
            admission.admitted(Pid::from_raw(pid));
        }
        assert_eq!(admission.check(ip("10.0.2.1"), now), Err(Refusal::Full));
        admission.exited(Pid::from_raw(1), now);
        assert_eq!(admission.check(ip("10.0.0.1"), now), Ok(()));
    }

    #[test]
    fn max_startups_counts_only_clients_without_a_nickname() {
        let mut limits = limits();
        limits.max_clients_per_ip = 10;
        limits.max_clients = 10;
        let mut admission = Admission::new(limits);
        let now = Instant::now();
        for pid in 1..=3 {
            assert_eq!(admission.check(ip("10.0.0.1"), now), Ok(()));
            admission.accepted(Pid::from_raw(pid), ip("10.0.0.1"));
        }
        assert_eq!(admission.check(ip("10.0.0.1"), now), Err(Refusal::Startups));
        admission.admitted(Pid::from_raw(2));
        assert_eq!(admission.check(ip("10.0.0.1"), now), Ok(()));
    }

    #[test]
    fn random_early_drop_between_start_and_full() {
        let mut limits = limits();
        limits.max_clients = 1000;
        limits.max_clients_per_ip = 1000;
        limits.max_startups = MaxStartups { start: 10, rate: 30, full: 100 };
        let mut admission = Admission::new(limits);
        for pid in 0..10 {
            admission.accepted(Pid::from_raw(pid), ip(&format!("10.0.{pid}.1")));
        }
        let now = Instant::now();
        let refused = (0..2000)
            .filter(|n| admission.check(ip(&format!("10.1.{}.{}", n / 200, n % 200)), now).is_err())
            .count();
        assert!((450..750).contains(&refused), "about 30% of 2000 refused, got {refused}");
    }

    #[test]
    fn repeated_trips_earn_a_doubling_penalty_that_expires() {
        let mut admission = Admission::new(limits());
        let start = Instant::now();
        let bad = ip("192.0.2.7");
        for pid in 1..=3 {
            admission.accepted(Pid::from_raw(pid), bad);
            admission.exited(Pid::from_raw(pid), start);
        }
        assert_eq!(admission.sentence(bad, start), Some(Duration::from_secs(10)));
        assert_eq!(admission.check(bad, start), Err(Refusal::Penalty { seconds_left: 10 }));
        assert_eq!(
            admission.check(ip("192.0.2.8"), start),
            Ok(()),
            "other sources are not punished"
        );
        let later = start + Duration::from_secs(10);
        assert_eq!(admission.check(bad, later), Ok(()));
        for pid in 4..=6 {
            admission.accepted(Pid::from_raw(pid), bad);
            admission.exited(Pid::from_raw(pid), later);
        }
        assert_eq!(admission.check(bad, later), Err(Refusal::Penalty { seconds_left: 20 }));
        let again = later + Duration::from_secs(20);
        for pid in 7..=9 {
            admission.accepted(Pid::from_raw(pid), bad);
            admission.exited(Pid::from_raw(pid), again);
        }
        assert_eq!(
            admission.check(bad, again),
            Err(Refusal::Penalty { seconds_left: 25 }),
            "capped"
        );
    }

    #[test]
    fn an_admitted_client_resets_the_trip_count() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        let addr = ip("192.0.2.9");
        for pid in 1..=2 {
            admission.accepted(Pid::from_raw(pid), addr);
            admission.exited(Pid::from_raw(pid), now);
        }
        admission.accepted(Pid::from_raw(3), addr);
        admission.admitted(Pid::from_raw(3));
        admission.accepted(Pid::from_raw(4), addr);
        admission.exited(Pid::from_raw(4), now);
        assert_eq!(admission.check(addr, now), Ok(()));
    }

    #[test]
    fn max_clients_fits_the_descriptor_limit() {
        assert_eq!(clients_within(64, 1024), 40, "prlimit --nofile=64: the broker's own 24 first");
        assert_eq!(clients_within(u64::MAX, 1024), 1024, "unlimited");
        assert_eq!(clients_within(1 << 20, 1024), 1024);
        assert_eq!(clients_within(24, 1024), 0, "room for nobody");
        assert_eq!(clients_within(10, 1024), 0);
    }

    #[test]
    fn clients_still_choosing_a_nickname_are_capped_per_source() {
        let mut limits = limits();
        limits.max_clients = 100;
        limits.max_clients_per_ip = 100;
        limits.max_startups = MaxStartups { start: 100, rate: 30, full: 100 };
        limits.max_startups_per_ip = 3;
        let mut admission = Admission::new(limits);
        let now = Instant::now();
        for pid in 1..=3 {
            assert_eq!(admission.check(ip("10.0.0.1"), now), Ok(()));
            admission.accepted(Pid::from_raw(pid), ip("10.0.0.1"));
        }
        assert_eq!(admission.check(ip("10.0.0.1"), now), Err(Refusal::StartupsPerSource));
        assert_eq!(admission.check(ip("10.0.0.2"), now), Ok(()), "other sources come in");
        admission.admitted(Pid::from_raw(1));
        assert_eq!(admission.check(ip("10.0.0.1"), now), Ok(()), "one has chosen a nickname");
        admission.accepted(Pid::from_raw(4), ip("10.0.0.1"));
        admission.exited(Pid::from_raw(2), now);
        assert_eq!(admission.check(ip("10.0.0.1"), now), Ok(()), "one has left");
    }

    /// Issue 13: 13 addresses holding idle connections, newcomers from elsewhere.
    #[test]
    fn the_early_drop_prefers_the_sources_that_hold_many() {
        let mut limits = limits();
        limits.max_clients = 1000;
        limits.max_clients_per_ip = 1000;
        limits.max_startups = MaxStartups { start: 10, rate: 30, full: 100 };
        limits.max_startups_per_ip = 3;
        let mut admission = Admission::new(limits);
        admission.rng = fastrand::Rng::with_seed(13);
        let now = Instant::now();
        let mut pid = 0;
        for n in 0..100 {
            let attacker = ip(&format!("10.0.0.{}", n % 13));
            if admission.check(attacker, now).is_ok() {
                pid += 1;
                admission.accepted(Pid::from_raw(pid), attacker);
            }
        }
        assert!(admission.unadmitted <= 39, "at most 3 per source: {}", admission.unadmitted);
        // Each attacker's source holds three; its further connections are refused...
        let attackers_refused = (0..1000)
            .filter(|n| admission.check(ip(&format!("10.0.0.{}", n % 13)), now).is_err())
            .count();
        assert_eq!(attackers_refused, 1000, "all three of each attacker's are taken");
        // ...and a newcomer from an address holding none a third as often as the odds at 39
        // waiting (52%).
        let newcomers_refused = (0..1000)
            .filter(|n| admission.check(ip(&format!("10.1.{}.{}", n / 200, n % 200)), now).is_err())
            .count();
        assert!(
            (110..240).contains(&newcomers_refused),
            "about 17% refused, got {newcomers_refused}"
        );
    }

    #[test]
    fn an_answered_http_request_is_no_trip_and_forgives_none() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        let addr = ip("192.0.2.10");
        for pid in 1..=12 {
            admission.accepted(Pid::from_raw(pid), addr);
            admission.answered_http(Pid::from_raw(pid));
            assert_eq!(admission.exited(Pid::from_raw(pid), now), Some(true));
        }
        assert_eq!(admission.check(addr, now), Ok(()), "browsers are no trips");
        // Two trips, a probe, a third trip: the probe did not reset the count.
        for pid in 20..=21 {
            admission.accepted(Pid::from_raw(pid), addr);
            admission.exited(Pid::from_raw(pid), now);
        }
        admission.accepted(Pid::from_raw(22), addr);
        admission.answered_http(Pid::from_raw(22));
        admission.exited(Pid::from_raw(22), now);
        admission.accepted(Pid::from_raw(23), addr);
        admission.exited(Pid::from_raw(23), now);
        assert!(admission.check(addr, now).is_err());
    }

    #[test]
    fn a_trusted_proxy_is_matched_by_network_and_as_ipv4_when_mapped() {
        let proxies: Vec<ipnet::IpNet> = ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        for trusted in ["127.0.0.1", "10.20.30.40", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.9"] {
            assert!(is_trusted_proxy(&proxies, ip(trusted)), "{trusted}");
        }
        for untrusted in ["127.0.0.2", "192.0.2.1", "::2", "::ffff:192.0.2.1", "2001:db8::1"] {
            assert!(!is_trusted_proxy(&proxies, ip(untrusted)), "{untrusted}");
        }
        assert!(!is_trusted_proxy(&[], ip("127.0.0.1")), "no proxies: nobody is trusted");
    }

    #[test]
    fn a_proxy_meets_only_the_totals_and_its_clients_count_by_their_own_address() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        let (proxy, alice, bob) = (ip("127.0.0.1"), ip("198.51.100.1"), ip("198.51.100.2"));
        // More connections through the proxy than one address may hold (2).
        for pid in 1..=3 {
            assert_eq!(admission.check_proxied(now), Ok(()), "connection {pid}");
            admission.accepted_from_proxy(Pid::from_raw(pid), proxy);
        }
        // Three still logging in: MaxStartups (full at 3) is a total, and holds for proxies too.
        assert_eq!(admission.check_proxied(now), Err(Refusal::Startups));
        assert_eq!(admission.forwarded(Pid::from_raw(1), alice, now), Ok(()));
        assert_eq!(admission.forwarded(Pid::from_raw(2), alice, now), Ok(()));
        assert_eq!(admission.forwarded(Pid::from_raw(3), bob, now), Ok(()));
        assert!(!admission.per_source.contains_key(&Source::of(proxy)), "moved off the proxy");
        assert_eq!(admission.per_source[&Source::of(alice)], 2);
        assert_eq!(admission.unadmitted_per_source[&Source::of(alice)], 2);
        // Alice's address is full now, for direct connections as for proxied ones.
        assert_eq!(admission.check(alice, now), Err(Refusal::PerSource));
        admission.admitted(Pid::from_raw(1));
        admission.accepted_from_proxy(Pid::from_raw(4), proxy);
        assert_eq!(admission.forwarded(Pid::from_raw(4), alice, now), Err(Refusal::PerSource));
        // The refusal is a trip (pid 1's admission forgave the direct check's), and the
        // refused client's end is no second one.
        assert_eq!(admission.exited(Pid::from_raw(4), now), Some(false));
        assert_eq!(admission.records[&Source::of(alice)].trips, 1);
        assert!(admission.records[&Source::of(alice)].until.is_none());
        // Bob leaves before choosing a nickname: his trip, not the proxy's.
        admission.exited(Pid::from_raw(3), now);
        assert_eq!(admission.records[&Source::of(bob)].trips, 1);
        assert!(!admission.records.contains_key(&Source::of(proxy)));
        assert_eq!(admission.exited(Pid::from_raw(2), now), Some(false));
        assert_eq!(admission.exited(Pid::from_raw(1), now), Some(true));
        assert_eq!(admission.unadmitted, 0);
        assert!(admission.per_source.is_empty() && admission.unadmitted_per_source.is_empty());
    }

    #[test]
    fn a_proxied_connection_that_is_never_forwarded_trips_nobody() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        let proxy = ip("127.0.0.1");
        for pid in 1..=5 {
            admission.accepted_from_proxy(Pid::from_raw(pid), proxy);
            assert_eq!(admission.exited(Pid::from_raw(pid), now), Some(false));
        }
        assert!(admission.records.is_empty());
        assert_eq!(admission.check_proxied(now), Ok(()));
    }

    #[test]
    fn a_penalised_address_is_refused_behind_the_proxy_too() {
        let mut admission = Admission::new(limits());
        let now = Instant::now();
        let (proxy, mallory) = (ip("127.0.0.1"), ip("203.0.113.66"));
        for _ in 0..3 {
            admission.trip(Source::of(mallory), now);
        }
        // The proxy itself is no penalised source.
        assert_eq!(admission.check_proxied(now), Ok(()));
        admission.accepted_from_proxy(Pid::from_raw(1), proxy);
        assert_eq!(
            admission.forwarded(Pid::from_raw(1), mallory, now),
            Err(Refusal::Penalty { seconds_left: 10 })
        );
        // Ending the refused client does not lengthen the sentence.
        admission.exited(Pid::from_raw(1), now);
        assert_eq!(admission.records[&Source::of(mallory)].trips, 0);
        assert_eq!(admission.records[&Source::of(mallory)].last_penalty, Duration::from_secs(10));
        // A wrong password behind the proxy trips the client's own address.
        admission.accepted_from_proxy(Pid::from_raw(2), proxy);
        let later = now + Duration::from_secs(11);
        assert_eq!(admission.forwarded(Pid::from_raw(2), ip("198.51.100.9"), later), Ok(()));
        admission.failed_authentication(Pid::from_raw(2), later);
        assert_eq!(admission.records[&Source::of(ip("198.51.100.9"))].trips, 1);
    }
}
