//! A session's link to the broker, and what keeps it whole across a broker restart.
//!
//! Owns the broker channel ([`SessionToBroker`]: it sends requests, receives events) and three pieces of state that outlive any one connection:
//! - the numbering of this session's lines (`Say`, `Act`, `Private` share one counter) and the
//!   recent ones, which are re-sent in order after reconnecting;
//! - the duplicate filter: the highest sequence number shown per sender, so a line that the old
//!   broker delivered and a sender re-sent is shown once;
//! - the reconnection schedule when the broker is gone;
//! - which broker process welcomed it: a reconnection that reaches the same broker again was a
//!   connection the broker closed on purpose, not a restart, and must not be resumed.
//!
//! The sender id that names this session's lines is the broker's to give (in `Welcome`; it is
//! derived from the kernel's word about this process, so it stays the same across broker
//! restarts). A session claims none.
//!
//! An acknowledgement is whatever proves the broker processed a numbered request: the echo of
//! this session's own `Chat`/`Action` (a sender is always in its room), `PrivateSent`, or
//! `Rejected`. It does not prove that every *other* member got the line: a broker that dies
//! right after writing the sender's echo may not have written everyone else's copy yet. So a
//! session keeps even acknowledged lines for [`RETAIN`] (at most [`MAX_RETAINED`]) and re-sends
//! them all after a restart; receivers drop the copies they already showed. Lines still
//! unacknowledged are always kept (at most [`MAX_UNACKED`]; input pauses beyond that).
//! It does not decide what to re-register (nick, room): that is the session's.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::channel::{Channel, SendError, SessionToBroker};
use crate::proto::{PROTOCOL_VERSION, Request, SessionHello};

/// Most bytes queued towards the broker.
const MAX_BROKER_QUEUE: usize = 1 << 20;
/// Most numbered requests waiting for acknowledgement; input pauses beyond this.
pub const MAX_UNACKED: usize = 256;
/// How long an acknowledged line is kept for re-sending after a broker restart, and how many.
pub const RETAIN: Duration = Duration::from_secs(5);
pub const MAX_RETAINED: usize = 512;
/// Senders remembered by the duplicate filter before it starts afresh.
const MAX_SENDERS_REMEMBERED: usize = 16_384;
/// First and longest wait between reconnection attempts.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a session waits for a broker to come back before it gives up on its client.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// How long a connected session waits for the broker to answer a login before it gives up:
/// a broker out of descriptors leaves connections unaccepted in its backlog, where the
/// connection looks fine and nothing would ever come. Longer than the master's broker restart
/// back-off within a soak-like crash series (up to 8 s), during which a connection waits in
/// the same backlog; a re-registration (`Resume`) is never timed out this way, so that
/// established users outlive any broker restart.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker connection and the state that survives its loss.
pub struct BrokerLink {
    socket: PathBuf,
    token: Token,
    /// The greeting sent first on every connection.
    hello: SessionHello,
    /// This session's sender id, as the broker said in `Welcome` (0 before the first).
    session: u64,
    /// The broker process that welcomed this session last.
    broker: Option<u64>,
    channel: Option<SessionToBroker>,
    /// When the connection was lost, and when to try again.
    lost_at: Option<Instant>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    next_seq: u64,
    /// Numbered requests, oldest first: every unacknowledged one, and recent acknowledged ones.
    sent: VecDeque<Sent>,
    /// Highest sequence number acknowledged.
    acked: u64,
    /// Highest sequence number shown, per sender.
    shown: HashMap<u64, u64>,
    /// When the broker must have said something, since a login was sent on this connection
    /// (see [`ANSWER_TIMEOUT`]).
    answer_due: Option<Instant>,
}

/// A numbered request kept for re-sending.
#[derive(Debug)]
struct Sent {
    seq: u64,
    request: Request,
    at: Instant,
}

/// What a `Welcome` says about the connection it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Welcomed {
    /// The first connection of this session.
    First,
    /// A new broker process: the old one died, so the session re-registers.
    Restarted,
    /// The broker that closed the connection is still the one answering: it closed it on
    /// purpose, and the session must not come back as if nothing happened.
    SameBroker,
}

impl BrokerLink {
    /// Connects to the broker and queues the greeting.
    pub fn connect(
        socket: PathBuf,
        peer: SocketAddr,
        registry: &Registry,
        token: Token,
    ) -> io::Result<BrokerLink> {
        let hello = SessionHello {
            version: PROTOCOL_VERSION,
            peer: peer.to_string(),
            connected_at: crate::clock::unix_now(),
        };
        let mut link = BrokerLink::unconnected(socket, token, hello);
        link.open(registry)?;
        Ok(link)
    }

    fn unconnected(socket: PathBuf, token: Token, hello: SessionHello) -> BrokerLink {
        BrokerLink {
            socket,
            token,
            hello,
            session: 0,
            broker: None,
            channel: None,
            lost_at: None,
            retry_at: None,
            retry_delay: RETRY_FIRST,
            next_seq: 1,
            answer_due: None,
            sent: VecDeque::new(),
            acked: 0,
            shown: HashMap::new(),
        }
    }

    fn open(&mut self, registry: &Registry) -> io::Result<()> {
        let stream = StdUnixStream::connect(&self.socket)?;
        stream.set_nonblocking(true)?;
        let mut channel =
            Channel::open(UnixStream::from_std(stream), MAX_BROKER_QUEUE, &self.hello)
                .map_err(io::Error::other)?;
        // Ring handovers carry the ring's descriptors.
        channel.accept_fds();
        registry.register(
            channel.stream_mut(),
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.channel = Some(channel);
        self.lost_at = None;
        self.retry_at = None;
        self.retry_delay = RETRY_FIRST;
        Ok(())
    }

    pub fn channel(&mut self) -> Option<&mut SessionToBroker> {
        self.channel.as_mut()
    }

    pub fn is_connected(&self) -> bool {
        self.channel.is_some()
    }

    /// Bytes waiting to be written to the broker.
    pub fn queued(&self) -> usize {
        self.channel.as_ref().map_or(0, Channel::queued)
    }

    /// Whether more input may be turned into numbered requests now.
    pub fn has_room(&self) -> bool {
        self.is_connected() && self.unacked() < MAX_UNACKED
    }

    /// Sends a request that needs no acknowledgement (it is not re-sent after a restart).
    pub fn send(&mut self, request: &Request) -> Result<(), SendError> {
        if self.channel.is_some() && matches!(request, Request::Login { .. }) {
            self.answer_due.get_or_insert(Instant::now() + ANSWER_TIMEOUT);
        }
        match self.channel.as_mut() {
            Some(channel) => channel.send(request),
            None => Ok(()),
        }
    }

    /// Numbers a request, keeps it until acknowledged, and sends it if connected.
    pub fn send_numbered(&mut self, make: impl FnOnce(u64) -> Request) -> Result<(), SendError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let request = make(seq);
        let result = self.send(&request);
        self.sent.push_back(Sent { seq, request, at: Instant::now() });
        self.forget_old();
        result
    }

    /// Numbered requests not yet acknowledged.
    fn unacked(&self) -> usize {
        self.sent.iter().rev().take_while(|sent| sent.seq > self.acked).count()
    }

    /// Re-sends every kept request, oldest first (after re-registering).
    pub fn resend_recent(&mut self) -> Result<(), SendError> {
        let Some(channel) = self.channel.as_mut() else { return Ok(()) };
        for sent in &self.sent {
            channel.send(&sent.request)?;
        }
        Ok(())
    }

    /// Everything up to and including `seq` reached the broker.
    pub fn acknowledge(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
        self.forget_old();
    }

    /// Drops acknowledged requests older than [`RETAIN`] or beyond [`MAX_RETAINED`].
    fn forget_old(&mut self) {
        let now = Instant::now();
        while let Some(oldest) = self.sent.front() {
            let acked = oldest.seq <= self.acked;
            let stale =
                now.saturating_duration_since(oldest.at) > RETAIN || self.sent.len() > MAX_RETAINED;
            if !(acked && stale) {
                break;
            }
            self.sent.pop_front();
        }
    }

    /// This session's sender id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The broker answered `Hello`: `sender` is this session's sender id, `broker` the broker
    /// process. Says whether this connection reached a restarted broker.
    pub fn welcomed(&mut self, sender: u64, broker: u64) -> Welcomed {
        self.session = sender;
        match self.broker.replace(broker) {
            None => Welcomed::First,
            Some(before) if before == broker => Welcomed::SameBroker,
            Some(_) => Welcomed::Restarted,
        }
    }

    /// True the first time a (sender, seq) line is seen; false for a duplicate.
    pub fn first_sight(&mut self, sender: u64, seq: u64) -> bool {
        if self.shown.len() >= MAX_SENDERS_REMEMBERED && !self.shown.contains_key(&sender) {
            self.shown.clear();
        }
        let highest = self.shown.entry(sender).or_insert(0);
        if seq <= *highest {
            return false;
        }
        *highest = seq;
        true
    }

    /// The broker said something: it is there and serving this connection.
    pub fn heard(&mut self) {
        self.answer_due = None;
    }

    /// The connection is gone: forget it and try again at once.
    pub fn lost(&mut self) {
        self.channel = None;
        // While it is gone, GIVE_UP_AFTER applies; the answer is awaited again once resent.
        self.answer_due = None;
        let now = Instant::now();
        self.lost_at.get_or_insert(now);
        self.retry_at = Some(now);
    }

    /// When the next reconnection attempt is due, if the link is down.
    /// (Or when an awaited answer is due: the session must wake to give up then.)
    pub fn retry_at(&self) -> Option<Instant> {
        [self.retry_at, self.answer_due].into_iter().flatten().min()
    }

    /// True once the broker has been gone for longer than [`GIVE_UP_AFTER`], or has left a
    /// login unanswered for [`ANSWER_TIMEOUT`].
    pub fn gave_up(&self) -> bool {
        self.lost_at.is_some_and(|at| at.elapsed() >= GIVE_UP_AFTER)
            || self.answer_due.is_some_and(|due| Instant::now() >= due)
    }

    /// True if what [`BrokerLink::gave_up`] on is an answer the connected broker never sent
    /// (not a broker that went away).
    pub fn never_answered(&self) -> bool {
        self.answer_due.is_some() && self.lost_at.is_none()
    }

    /// Tries to reconnect if an attempt is due. True: connected again and `Hello` queued; once
    /// `Welcome` says the broker restarted ([`BrokerLink::welcomed`]), the caller re-registers
    /// and then calls [`BrokerLink::resend_recent`].
    pub fn try_reconnect(&mut self, registry: &Registry) -> bool {
        if self.channel.is_some() || self.retry_at.is_none_or(|at| Instant::now() < at) {
            return false;
        }
        match self.open(registry) {
            Ok(()) => true,
            Err(_) => {
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> BrokerLink {
        BrokerLink::unconnected(
            PathBuf::new(),
            Token(0),
            SessionHello { version: PROTOCOL_VERSION, peer: String::new(), connected_at: 0 },
        )
    }

    #[test]
    fn a_welcome_from_the_same_broker_is_no_restart() {
        let mut link = link();
        assert_eq!(link.welcomed(7, 100), Welcomed::First);
        assert_eq!(link.session(), 7);
        assert_eq!(link.welcomed(7, 100), Welcomed::SameBroker);
        assert_eq!(link.welcomed(7, 200), Welcomed::Restarted);
    }

    #[test]
    fn numbered_requests_wait_for_their_acknowledgement() {
        let mut link = link();
        for text in ["a", "b", "c"] {
            link.send_numbered(|seq| Request::Say { seq, text: text.into() }).expect("queued");
        }
        link.acknowledge(2);
        assert_eq!(link.unacked(), 1);
        // Acknowledged lines are kept for a while: the broker may have died mid-fan-out.
        assert_eq!(link.sent.len(), 3);
        for entry in &mut link.sent {
            entry.at -= RETAIN + Duration::from_secs(1);
        }
        link.acknowledge(2);
        let left: Vec<u64> = link.sent.iter().map(|sent| sent.seq).collect();
        assert_eq!(left, vec![3], "old acknowledged lines are dropped, unacknowledged ones kept");
    }

    #[test]
    fn duplicates_are_seen_once_per_sender() {
        let mut link = link();
        assert!(link.first_sight(7, 1));
        assert!(link.first_sight(7, 2));
        assert!(!link.first_sight(7, 2));
        assert!(!link.first_sight(7, 1));
        assert!(link.first_sight(8, 1));
    }

    #[test]
    fn a_lost_link_retries_at_once_and_then_backs_off() {
        let poll = mio::Poll::new().expect("poll");
        // Its socket path is empty: every attempt to reconnect fails.
        let mut link = link();
        link.lost();
        assert!(link.retry_at().is_some_and(|at| at <= Instant::now()), "the first try is due");
        assert!(!link.gave_up());
        let mut delays = Vec::new();
        for _ in 0..7 {
            let (tried_at, delay) = (Instant::now(), link.retry_delay);
            assert!(!link.try_reconnect(poll.registry()), "nothing listens there");
            let next = link.retry_at.expect("another attempt is scheduled");
            assert!(next >= tried_at + delay, "the next attempt waits the back-off");
            assert!(
                !link.try_reconnect(poll.registry()) && link.retry_at == Some(next),
                "not early"
            );
            delays.push(delay.as_millis());
            link.retry_at = Some(tried_at); // as if the wait were over
        }
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000], "doubling up to a second");
    }

    #[test]
    fn an_unanswered_login_gives_up_after_the_answer_timeout_and_an_answer_clears_it() {
        let mut link = link();
        link.channel = Some(Channel::new(
            UnixStream::from_std(StdUnixStream::pair().expect("pair").0),
            MAX_BROKER_QUEUE,
        ));
        let resume = Request::Resume {
            nick: "alice".into(),
            room: "lobby".into(),
            topic: None,
            tls: false,
            token: None,
        };
        link.send(&resume).expect("queued");
        assert_eq!(link.answer_due, None, "a re-registration waits as long as the broker takes");
        link.send(&Request::Login { nick: "alice".into(), tls: false }).expect("queued");
        let due = link.answer_due.expect("an answer is awaited");
        assert_eq!(link.retry_at(), Some(due), "the session wakes when it is due");
        assert!(!link.gave_up());
        link.answer_due = Some(Instant::now() - Duration::from_millis(1));
        assert!(link.gave_up() && link.never_answered());
        link.heard();
        assert!(!link.gave_up());
        assert_eq!(link.retry_at(), None);
    }
}
