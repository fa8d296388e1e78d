//! The room broker: one process, one mio event loop, all room state.
//!
//! It owns the Unix listener `broker.sock`, one [`Channel`] per session child, and the
//! [`Rooms`]. It reads [`Request`]s, applies them to the rooms, and writes [`Event`]s: each
//! event is encoded once and the same bytes are queued for every recipient; queued bytes are
//! written once per recipient per loop turn.
//!
//! It also serves operators: `control.sock` ([`control`]) for chatctl, the persisted
//! moderation state ([`crate::moderation`]: bans, mutes, message of the day), and the figures
//! ([`stats`]). The master links to it over a socket pair it created before forking the broker
//! (a connection nobody else can make); it reports its own figures every second, vouches for
//! the sessions it forks, and receives `Reload` and `Stop`. Only a broker whose master is gone
//! takes a `MasterHello` on `broker.sock` (a replacement master adopting it).
//!
//! Identity: a session is whoever the kernel says is at the other end of its connection. Its
//! sender id, stamped on its lines for the receivers' duplicate filter, is the caller's pid and
//! process start time (SO_PEERCRED, `/proc`): the same after a broker restart, and nobody else's
//! to claim. Its address is the one the master vouched for; `Hello` claims nothing the broker
//! believes. Numbered lines must follow each other on a connection.
//!
//! It must never block on one peer. Every socket is non-blocking and every peer's output queue
//! is bounded (`broker_queue_bytes`, 4 MiB by default); a peer whose queue would overflow is dropped (its room
//! sees "too slow") and everyone else carries on. A peer that sends a frame that is oversize or
//! does not decode is dropped and logged once. It never renders text for a terminal: that is the
//! session's job.

mod control;
pub mod room;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;

use crate::channel::{Channel, ReadOutcome};
use crate::config::{Config, ConfigSource};
use crate::logging::FailureEpisode;
use crate::moderation::{self, Moderation};
use crate::proto::codec;
use crate::proto::control::MasterFigures;
use crate::proto::{Event, Failure, LeaveReason, PROTOCOL_VERSION, Request};
use crate::signals::ChildSignals;
use crate::sys;
use control::{Access, ControlClient, Operators};
use room::{Audience, Delivery, MemberId, Rooms};
use stats::Stats;

/// How long `accept` must go without failing before its trouble counts as over.
const ACCEPT_TROUBLE_QUIET: Duration = Duration::from_secs(5);
/// How long a stopping broker spends telling sessions so.
const GOODBYE_GRACE: Duration = Duration::from_secs(1);

/// Sessions re-register within seconds of a broker (re)start; a `Resume` later than this is
/// announced to the room like a login, since the room has no reason to believe it was there.
const RESUME_WINDOW: Duration = Duration::from_secs(60);

/// The first line number a connection may use: a session re-sends what it kept, so it starts
/// wherever its counter is, but no session says 2^40 lines in its life.
const MAX_FIRST_SEQ: u64 = 1 << 40;
/// Largest step between two line numbers on one connection. A session numbers its lines one
/// by one; this leaves room for what it keeps for re-sending (`session::link`).
const MAX_SEQ_STEP: u64 = 1024;

/// Sessions dropped as too slow that are remembered, so that one that reconnects is told why
/// instead of being taken back (the oldest is forgotten first).
const DROPPED_REMEMBERED: usize = 4096;

/// What `chatctl who` shows as the address of a session the master did not vouch for.
const UNVOUCHED: &str = "unvouched";

/// Sender ids with this bit come from the broker's random numbers, for a caller the kernel
/// cannot name (no pid in its credentials, e.g. from another pid namespace). Kernel-derived
/// ids never have it (see [`sys::process_identity`]).
const ANONYMOUS_SENDER: u64 = 1 << 63;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const CONTROL: Token = Token(2);
const FIRST_PEER: usize = 3;

/// One connection on `broker.sock`: a session child, or the master's link.
struct Peer {
    channel: Channel,
    /// The caller's pid, from SO_PEERCRED, for logs and operators.
    pid: i32,
    /// Who the kernel says the caller is ([`sys::process_identity`]): the session's sender id.
    identity: u64,
    /// The client address for logs and operators: the one the master vouched for; without a
    /// master, the one the session reported; else [`UNVOUCHED`].
    client: String,
    /// The sender id, once `Hello` arrived (every other request must come after it); `None`
    /// before and for the master's link.
    session: Option<u64>,
    /// The last line number accepted on this connection, and whether a refused one was logged.
    last_seq: Option<u64>,
    out_of_sequence_logged: bool,
    /// Dropped as too slow: nothing more is queued for it (nor logged) until it is removed.
    too_slow: bool,
    /// This connection is the master's link (it started with `MasterHello`).
    is_master: bool,
    /// When the client connected (Unix seconds, from `Hello`).
    connected_at: u64,
    /// When the user last said something, for `chatctl who`.
    last_active: Instant,
    /// Removed by an operator: told so, out of its room, and ignored until it closes.
    kicked: bool,
    /// Already queued for flushing this turn.
    dirty: bool,
}

struct Broker {
    poll: Poll,
    listener: UnixListener,
    signals: ChildSignals,
    peers: HashMap<MemberId, Peer>,
    rooms: Rooms,
    next_id: MemberId,
    /// Peers with bytes queued this turn.
    dirty: Vec<MemberId>,
    /// Most peers connected since the heap was last trimmed (see [`Broker::trim_after_crowd`]).
    peers_high_water: usize,
    /// Peers to remove after the current event, with what their room is told.
    doomed: Vec<(MemberId, LeaveReason)>,
    /// Reused buffer for encoding one event.
    scratch: Vec<u8>,
    /// Most bytes queued for one session before it is dropped as too slow.
    queue_bytes: usize,
    /// Where to read the settings again on SIGHUP.
    source: ConfigSource,
    uid: u32,
    /// `control.sock` and the operators connected to it.
    control: UnixListener,
    controls: HashMap<MemberId, ControlClient>,
    access: Access,
    /// Operators' bookkeeping beyond their connections (see [`control`]).
    operators: Operators,
    /// Bans, mutes and the message of the day, and where they persist.
    moderation: Moderation,
    state_path: PathBuf,
    /// The state file could not be read at start: it is not overwritten until it can be.
    state_unreadable: Option<String>,
    /// The master's link, and the figures it sent last.
    master: Option<MemberId>,
    master_figures: Option<MasterFigures>,
    /// Operators waiting for the master's answer to a reload.
    pending_reloads: Vec<MemberId>,
    /// When an operator's `shutdown --grace` is due.
    stop_at: Option<Instant>,
    stats: Stats,
    /// When chat lines handled this turn were read, for the fan-out latency.
    lines_this_turn: Vec<Instant>,
    started_at: u64,
    /// `accept` failing for lack of descriptors: logged once per episode, not per event.
    accept_trouble: FailureEpisode,
    /// The same for `control.sock`'s accept.
    control_accept_trouble: FailureEpisode,
    started: Instant,
    /// This broker process, as sessions are told in `Welcome`.
    instance: u64,
    /// The master's end of the socket pair this broker inherited, while it is open. Until it
    /// closes, a `MasterHello` on `broker.sock` is refused.
    inherited_link: Option<MemberId>,
    /// A master started this broker: it vouches for its sessions' addresses, so a session it
    /// did not vouch for shows none.
    vouching: bool,
    /// The session greeted with each sender id, to apply a vouch that comes after `Hello`.
    identities: HashMap<u64, MemberId>,
    /// Vouches for sessions that have not said `Hello` yet.
    vouches: Remembered<Vouch>,
    /// Sessions dropped as too slow, and why, in case they come back.
    dropped: Remembered<LeaveReason>,
}

/// What the master vouched for about a session.
struct Vouch {
    peer: String,
    connected_at: u64,
}

/// At most `limit` entries by sender id; the oldest goes first.
struct Remembered<V> {
    entries: HashMap<u64, (u64, V)>,
    order: VecDeque<(u64, u64)>,
    next: u64,
    limit: usize,
}

impl<V> Remembered<V> {
    fn new(limit: usize) -> Self {
        Remembered { entries: HashMap::new(), order: VecDeque::new(), next: 0, limit }
    }

    fn insert(&mut self, key: u64, value: V) {
        self.next += 1;
        self.entries.insert(key, (self.next, value));
        self.order.push_back((key, self.next));
        while self.order.len() > self.limit {
            let Some((old, stamp)) = self.order.pop_front() else { break };
            if self.entries.get(&old).is_some_and(|(at, _)| *at == stamp) {
                self.entries.remove(&old);
            }
        }
    }

    fn take(&mut self, key: u64) -> Option<V> {
        self.entries.remove(&key).map(|(_, value)| value)
    }
}

/// The broker's two listening sockets, bound by whoever starts it (so that they exist, and
/// keep their backlog, across broker restarts).
pub struct Listeners {
    /// `broker.sock`: sessions and the master's link.
    pub sessions: StdUnixListener,
    /// `control.sock`: operators.
    pub control: StdUnixListener,
    /// The broker's end of the master's link, a socket pair the master created before forking
    /// the broker; `None` for a broker without a master (`chatd broker`).
    pub master: Option<StdUnixStream>,
    /// chatd switched from root to a service user (`user`). Then that user is no operator:
    /// every session child runs as it, and a compromised one must not be able to kick, ban or
    /// stop. Started by an ordinary user, that user is the operator.
    pub service_user: bool,
}

/// Runs the broker on already-listening sockets until SIGTERM or SIGINT.
///
/// `source` is where the settings came from: on SIGHUP (which the master forwards after it
/// validated the file) the broker reads them again, applies `broker_queue_bytes` to new
/// sessions and `admin_group` to new operators, and re-reads the moderation state file.
pub fn run(listeners: Listeners, config: &Config, source: ConfigSource) -> io::Result<()> {
    let Listeners { sessions: listener, control, master: link, service_user } = listeners;
    listener.set_nonblocking(true)?;
    control.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let mut listener = UnixListener::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let signals = ChildSignals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP])?;
    signals.register(poll.registry(), SIGNALS)?;
    let mut control_listener = UnixListener::from_std(control);
    poll.registry().register(&mut control_listener, CONTROL, Interest::READABLE)?;
    let state_path = config.state_dir.join(moderation::STATE_FILE);
    let (state, state_unreadable) = match Moderation::load(&state_path) {
        Ok(state) => (state, None),
        Err(err) => {
            error!("{err}; bans and mutes are not in force until it is fixed");
            (Moderation::default(), Some(err.to_string()))
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    let queue_bytes = config.broker_queue_bytes;
    // The state writer's thread starts from this thread when there is something to save, so
    // it inherits the signal mask ChildSignals set above.
    let operators = Operators::new(poll.registry(), &state_path)?;
    let mut broker = Broker {
        poll,
        listener,
        signals,
        peers: HashMap::new(),
        rooms: {
            let mut rooms = Rooms::new();
            rooms.set_history_lines(config.history_lines);
            rooms
        },
        next_id: FIRST_PEER as MemberId,
        dirty: Vec::new(),
        peers_high_water: 0,
        doomed: Vec::new(),
        scratch: Vec::new(),
        queue_bytes,
        source,
        uid,
        control: control_listener,
        controls: HashMap::new(),
        access: Access::new(uid, service_user, config.admin_group.as_deref()),
        operators,
        moderation: state,
        state_path,
        state_unreadable,
        master: None,
        master_figures: None,
        pending_reloads: Vec::new(),
        stop_at: None,
        stats: Stats::new(Instant::now()),
        lines_this_turn: Vec::new(),
        started_at: crate::clock::unix_now(),
        accept_trouble: FailureEpisode::new(ACCEPT_TROUBLE_QUIET),
        control_accept_trouble: FailureEpisode::new(ACCEPT_TROUBLE_QUIET),
        started: Instant::now(),
        instance: sys::process_identity(std::process::id() as i32)
            .unwrap_or_else(|_| sys::random_u64() | ANONYMOUS_SENDER),
        inherited_link: None,
        vouching: link.is_some(),
        identities: HashMap::new(),
        vouches: Remembered::new(config.admission.max_clients + 1024),
        dropped: Remembered::new(DROPPED_REMEMBERED),
    };
    if let Some(link) = link {
        link.set_nonblocking(true)?;
        let pid = sys::peer_pid(&link).unwrap_or(0);
        broker.inherited_link = broker.add_peer(UnixStream::from_std(link), pid, 0);
    }
    info!("broker ready (protocol version {PROTOCOL_VERSION})");
    broker.event_loop()
}

impl Broker {
    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout =
                self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            sys::wait(&mut self.poll, &mut events, timeout)?;
            // Signals first: once shutdown is pending, departures caused by the shutdown itself
            // are not announced to anyone.
            let signalled = events.iter().any(|event| event.token() == SIGNALS);
            if (signalled && self.stop_requested()?) || self.stop_is_due() {
                info!("broker stopping");
                self.say_goodbye();
                return Ok(());
            }
            self.rooms.set_now(Instant::now(), crate::clock::unix_now());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => {}
                    CONTROL => self.accept_controls(),
                    control::STATE_SAVED => self.state_saved(),
                    Token(token) if self.controls.contains_key(&(token as MemberId)) => {
                        self.serve_control(token as MemberId, event);
                    }
                    Token(token) => {
                        let id = token as MemberId;
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            self.read_from(id, closed);
                        }
                        if event.is_writable() {
                            self.mark_dirty(id);
                        }
                    }
                }
                self.remove_doomed();
            }
            self.flush_dirty();
            self.remove_doomed();
            self.trim_after_crowd();
            let now = Instant::now();
            for read_at in self.lines_this_turn.drain(..) {
                self.stats.latency(now.saturating_duration_since(read_at));
            }
            self.expire_controls(now);
        }
    }

    /// The next moment the loop must wake without I/O: an operator's shutdown, or a control
    /// connection's time limit.
    fn next_deadline(&self) -> Option<Instant> {
        [self.stop_at, self.control_deadline()].into_iter().flatten().min()
    }

    /// An operator's `shutdown --grace` is over: the master stops the daemon (the broker
    /// included). Without a master (`chatd broker`, or the master died), the broker stops.
    fn stop_is_due(&mut self) -> bool {
        if self.stop_at.is_none_or(|at| Instant::now() < at) {
            return false;
        }
        self.stop_at = None;
        match self.master {
            Some(master) => {
                info!("shutdown grace time is over; asking the master to stop");
                self.send_to([master], &Event::Stop);
                self.flush_dirty();
                false
            }
            None => {
                warn!(
                    "shutdown grace time is over and no master is linked; the broker stops alone"
                );
                true
            }
        }
    }

    fn stop_requested(&mut self) -> io::Result<bool> {
        let mut stop = false;
        while let Some(signal) = self.signals.take_pending()? {
            match signal {
                Signal::SIGTERM | Signal::SIGINT => stop = true,
                Signal::SIGHUP => {
                    match self.source.load() {
                        Ok(config) => {
                            self.queue_bytes = config.broker_queue_bytes;
                            self.rooms.set_history_lines(config.history_lines);
                            self.access = Access::new(
                                self.uid,
                                self.access.service_user(),
                                config.admin_group.as_deref(),
                            );
                            info!("broker reloaded its configuration");
                        }
                        Err(err) => {
                            error!("broker reload failed, keeping the old configuration: {err}")
                        }
                    }
                    self.reload_moderation();
                }
                other => debug!("broker ignores {other}"),
            }
        }
        Ok(stop)
    }

    /// Tells every session that the daemon is stopping and gives the news up to
    /// [`GOODBYE_GRACE`] to leave. Departures are not announced from here on: everyone is
    /// leaving for the same reason, and each session says so to its own client.
    fn say_goodbye(&mut self) {
        self.doomed.clear();
        self.scratch.clear();
        if codec::encode_frame(&Event::Shutdown, &mut self.scratch).is_err() {
            return;
        }
        let deadline = Instant::now() + GOODBYE_GRACE;
        let mut pending: Vec<MemberId> = Vec::new();
        for (&id, peer) in &mut self.peers {
            if peer.channel.send_encoded(&self.scratch).is_ok() {
                pending.push(id);
            }
        }
        let mut events = Events::with_capacity(256);
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|id| {
                self.peers.get_mut(id).is_some_and(|peer| matches!(peer.channel.flush(), Ok(false)))
            });
            if pending.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.poll.poll(&mut events, Some(left)).is_err() {
                break;
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(failures) = self.accept_trouble.succeeded(Instant::now()) {
                        info!("broker accepting sessions again after {failures} failed attempts");
                    }
                    self.admit(stream)
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // EMFILE and friends: the connection stays in the backlog; the next
                    // readiness event retries. Every new session is such an event: say it once.
                    if self.accept_trouble.failed(Instant::now()) {
                        error!(
                            "broker cannot accept a session: {err}; sessions wait until it \
                             recovers (said once; the recovery is logged)"
                        );
                    }
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        match sys::peer_uid(&stream) {
            // Root may always connect: it can do everything the daemon can anyway.
            Ok(uid) if uid == self.uid || uid == 0 => {}
            Ok(uid) => {
                warn!(
                    "refused a broker connection from uid {uid}: only uid {} (and root) may connect",
                    self.uid
                );
                return;
            }
            Err(err) => {
                warn!("refused a broker connection: cannot read its credentials: {err}");
                return;
            }
        }
        let pid = sys::peer_pid(&stream).unwrap_or(0);
        let identity = match sys::process_identity(pid) {
            Ok(identity) => identity,
            Err(err) => {
                // Its lines are still told apart from everyone else's; only a broker restart
                // may show a few of them twice.
                info!(
                    "cannot tell who broker peer pid {pid} is ({err}); it gets a sender id of its own"
                );
                sys::random_u64() | ANONYMOUS_SENDER
            }
        };
        self.add_peer(stream, pid, identity);
    }

    /// Watches a new connection; returns its id, or `None` if it cannot be watched.
    fn add_peer(&mut self, mut stream: UnixStream, pid: i32, identity: u64) -> Option<MemberId> {
        let id = self.next_id;
        self.next_id += 1;
        let token = Token(id as usize);
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot watch broker peer pid {pid}: {err}");
            return None;
        }
        let peer = Peer {
            channel: Channel::new(stream, self.queue_bytes),
            pid,
            identity,
            client: String::new(),
            session: None,
            last_seq: None,
            out_of_sequence_logged: false,
            too_slow: false,
            is_master: false,
            connected_at: crate::clock::unix_now(),
            last_active: Instant::now(),
            kicked: false,
            dirty: false,
        };
        self.peers.insert(id, peer);
        self.peers_high_water = self.peers_high_water.max(self.peers.len());
        Some(id)
    }

    /// Reads what `id` sent. `to_the_end`: the poller saw the peer close or fail, so read until
    /// the socket says so even after a short read.
    fn read_from(&mut self, id: MemberId, to_the_end: bool) {
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            let outcome = match peer.channel.read_some() {
                Ok(outcome) => outcome,
                Err(err) => {
                    info!("session pid {} ({}) read error: {err}", peer.pid, peer.client);
                    self.doom(id, LeaveReason::ConnectionLost);
                    return;
                }
            };
            match outcome {
                ReadOutcome::WouldBlock => return,
                ReadOutcome::Closed { mid_frame } => {
                    if mid_frame {
                        warn!("session pid {} ({}) vanished mid-frame", peer.pid, peer.client);
                    } else {
                        debug!("session pid {} ({}) closed", peer.pid, peer.client);
                    }
                    self.doom(id, LeaveReason::ConnectionLost);
                    return;
                }
                ReadOutcome::Data { drained } => {
                    if !self.handle_frames(id) || (drained && !to_the_end) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles every whole frame read from `id`. Returns false if the peer is gone.
    fn handle_frames(&mut self, id: MemberId) -> bool {
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                return false;
            };
            let request = match peer.channel.next_message::<Request>() {
                Ok(Some(request)) => request,
                Ok(None) => return true,
                Err(err) => {
                    warn!("dropping session pid {} ({}): {err}", peer.pid, peer.client);
                    self.stats.drop_for("bad_frame");
                    self.doom(id, LeaveReason::ConnectionLost);
                    return false;
                }
            };
            if !self.handle(id, request) {
                return false;
            }
        }
    }

    /// Applies one request. Returns false if the peer is gone afterwards.
    fn handle(&mut self, id: MemberId, request: Request) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        if peer.is_master {
            return self.handle_master(id, request);
        }
        let Some(session) = peer.session else {
            return self.greet(id, request);
        };
        if peer.kicked {
            // Out of its room already; it closes as soon as it reads why.
            return true;
        }
        let now = crate::clock::unix_now();
        let deliveries = match request {
            Request::Hello { .. } | Request::MasterHello { .. } => {
                warn!("dropping session pid {} ({}): second Hello", peer.pid, peer.client);
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
            Request::MasterFigures(_) | Request::Reloaded { .. } | Request::Vouch { .. } => {
                warn!(
                    "dropping session pid {} ({}): it sent a master's frame",
                    peer.pid, peer.client
                );
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
            Request::Traffic { received, sent } => {
                self.stats.bytes_received += received;
                self.stats.bytes_sent += sent;
                return true;
            }
            Request::Login { nick } => {
                if self.refuse_banned_nick(id, &nick, now) {
                    return true;
                }
                let mut deliveries = self.rooms.login(id, session, &nick);
                if matches!(deliveries.first().map(|d| &d.event), Some(Event::LoggedIn { .. }))
                    && let Some(motd) = &self.moderation.motd
                {
                    let lines = motd.lines().map(str::to_string).collect();
                    deliveries
                        .push(Delivery { to: Audience::One(id), event: Event::Motd { lines } });
                }
                deliveries
            }
            Request::Resume { nick, room, topic } => {
                if let Some(ban) = self.moderation.nick_ban(&nick, now) {
                    let reason = ban_reason(ban.reason.as_deref());
                    self.kick(id, Some(reason));
                    return true;
                }
                let announce = self.started.elapsed() > RESUME_WINDOW
                    || sys::started_after(peer.identity, self.instance);
                let deliveries =
                    self.rooms.resume(id, session, &nick, &room, topic.as_deref(), announce);
                match deliveries.first().map(|d| &d.event) {
                    Some(Event::Resumed { nick, room }) => {
                        info!(
                            "session pid {} ({}) resumed as {nick} in {room}",
                            peer.pid, peer.client
                        );
                    }
                    Some(Event::Failed(failure)) => info!(
                        "session pid {} ({}) may not resume as {:?}: {failure:?}",
                        peer.pid,
                        peer.client,
                        crate::text::sanitize(&nick)
                    ),
                    _ => {}
                }
                deliveries
            }
            Request::Say { seq, .. } | Request::Act { seq, .. } | Request::Private { seq, .. }
                if !self.in_sequence(id, seq) =>
            {
                return self.peers.contains_key(&id);
            }
            Request::Say { seq, text } => {
                return self.chat_line(id, now, |rooms| rooms.say(id, seq, &text));
            }
            Request::Act { seq, text } => {
                return self.chat_line(id, now, |rooms| rooms.act(id, seq, &text));
            }
            Request::Private { seq, to, text } => {
                return self.chat_line(id, now, |rooms| rooms.private(id, seq, &to, &text));
            }
            Request::ChangeNick { nick } => {
                if self.refuse_banned_nick(id, &nick, now) {
                    return true;
                }
                let deliveries = self.rooms.change_nick(id, &nick);
                if let Some(Event::NickChanged { old, new }) = deliveries.first().map(|d| &d.event)
                {
                    // A mute follows the person, not the name (saved off the loop).
                    let (old, new) = (old.clone(), new.clone());
                    self.nick_changed(&old, &new, now);
                }
                deliveries
            }
            Request::Join { room } => self.rooms.join(id, &room),
            Request::Away { reason } => self.rooms.set_away(id, Some(&reason)),
            Request::Back => self.rooms.set_away(id, None),
            Request::Who => self.rooms.who(id),
            Request::Whois { nick } => self.rooms.whois(id, &nick),
            Request::Rooms => self.rooms.list_rooms(id),
            Request::Topic { text } => self.rooms.topic(id, text.as_deref()),
            Request::Quit { reason } => {
                self.doom(id, LeaveReason::Quit(reason));
                return false;
            }
        };
        self.deliver(deliveries);
        self.peers.contains_key(&id)
    }

    /// The first frame of a connection: a session's `Hello` or the master's `MasterHello`.
    fn greet(&mut self, id: MemberId, request: Request) -> bool {
        if matches!(request, Request::MasterHello { .. })
            && self.inherited_link != Some(id)
            && self.master_link_alive()
        {
            // Only a broker whose master is gone may be adopted through broker.sock.
            let pid = self.peers.get(&id).map_or(0, |peer| peer.pid);
            warn!(
                "refused a MasterHello on broker.sock from pid {pid}: the master's link is alive"
            );
            self.doom(id, LeaveReason::ConnectionLost);
            return false;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let (version, reported, connected_at) = match request {
            Request::Hello { version, peer: reported, connected_at } => {
                (version, reported, connected_at)
            }
            Request::MasterHello { version, pid, started_at } if version == PROTOCOL_VERSION => {
                let inherited = self.inherited_link == Some(id);
                peer.is_master = true;
                if let Some(old) = self.master.replace(id) {
                    self.doom(old, LeaveReason::ConnectionLost);
                }
                self.master_figures = Some(MasterFigures { pid, started_at, ..Default::default() });
                if inherited {
                    info!("master pid {pid} linked");
                } else {
                    info!("master pid {pid} linked through broker.sock (adopting this broker)");
                }
                return true;
            }
            _ => {
                warn!("dropping session pid {}: first frame was not Hello", peer.pid);
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
        };
        let identity = peer.identity;
        if version != PROTOCOL_VERSION {
            warn!(
                "dropping session pid {}: protocol version {version}, broker speaks {PROTOCOL_VERSION}",
                peer.pid
            );
            let refusal = Failure::VersionMismatch { broker: PROTOCOL_VERSION, session: version };
            self.deliver(vec![Delivery { to: Audience::One(id), event: Event::Failed(refusal) }]);
            self.flush_dirty();
            self.doom(id, LeaveReason::ConnectionLost);
            return false;
        }
        if let Some(reason) = self.dropped.take(identity) {
            // The drop was logged when it happened; its sequel is routine.
            debug!("session pid {} came back after being dropped; told it is over", peer.pid);
            let told = Event::Dropped { reason };
            self.deliver(vec![Delivery { to: Audience::One(id), event: told }]);
            self.doom(id, LeaveReason::ConnectionLost);
            return false;
        }
        let claimed: String = reported.chars().take(64).collect();
        match self.vouches.take(identity) {
            Some(vouch) => {
                peer.client = vouch.peer;
                peer.connected_at = vouch.connected_at;
            }
            None if self.vouching => {
                // Either the master's word is on its way, or this is no child of the master.
                peer.client = UNVOUCHED.to_string();
                peer.connected_at = connected_at;
            }
            None => {
                peer.client.clone_from(&claimed);
                peer.connected_at = connected_at;
            }
        }
        peer.session = Some(identity);
        self.identities.insert(identity, id);
        let banned = [peer.client.as_str(), claimed.as_str()]
            .iter()
            .filter_map(|address| address.parse::<std::net::SocketAddr>().ok())
            .find_map(|addr| self.moderation.address_ban(addr.ip(), crate::clock::unix_now()))
            .map(|ban| ban.reason.clone());
        let welcome =
            Event::Welcome { version: PROTOCOL_VERSION, sender: identity, broker: self.instance };
        self.deliver(vec![Delivery { to: Audience::One(id), event: welcome }]);
        if let Some(reason) = banned {
            // Sessions the master did not vet (inetd-style) meet the address bans here.
            self.kick(id, Some(ban_reason(reason.as_deref())));
        }
        true
    }

    /// Whether the master's link (the inherited one, even before it said `MasterHello`, or an
    /// adopting master's) is open. A master that died a moment ago may have closed it without
    /// the loop having seen it yet: it is read to the end first.
    fn master_link_alive(&mut self) -> bool {
        let Some(link) = self.inherited_link.or(self.master) else {
            return false;
        };
        self.read_from(link, true);
        self.peers.contains_key(&link) && !self.doomed.iter().any(|(doomed, _)| *doomed == link)
    }

    /// Whether line number `seq` may follow the previous one on `id`'s connection. A refused
    /// line is answered (which also acknowledges it) and the first refusal per connection is
    /// logged: only a broken or forged session numbers its lines otherwise.
    fn in_sequence(&mut self, id: MemberId, seq: u64) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let follows = match peer.last_seq {
            None => seq <= MAX_FIRST_SEQ,
            Some(last) => seq > last && seq - last <= MAX_SEQ_STEP,
        };
        if follows {
            peer.last_seq = Some(seq);
            return true;
        }
        if !peer.out_of_sequence_logged {
            peer.out_of_sequence_logged = true;
            warn!(
                "session pid {} ({}): refused line number {seq} after {}; later refusals on this connection are not logged",
                peer.pid,
                peer.client,
                peer.last_seq.map_or_else(|| "none".to_string(), |last| last.to_string())
            );
        }
        let refusal = Event::Rejected { seq, failure: Failure::OutOfSequence { seq } };
        self.deliver(vec![Delivery { to: Audience::One(id), event: refusal }]);
        false
    }

    /// Frames on the master's link.
    fn handle_master(&mut self, id: MemberId, request: Request) -> bool {
        match request {
            Request::MasterFigures(figures) => self.master_figures = Some(figures),
            Request::Reloaded { error } => self.reloaded(error),
            Request::Vouch { identity, peer, connected_at } => {
                let vouch = Vouch { peer: peer.chars().take(64).collect(), connected_at };
                match self.identities.get(&identity).and_then(|id| self.peers.get_mut(id)) {
                    Some(session) => {
                        session.client = vouch.peer;
                        session.connected_at = vouch.connected_at;
                    }
                    None => self.vouches.insert(identity, vouch),
                }
            }
            other => {
                warn!("dropping the master's link: unexpected frame {other:?}");
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
        }
        true
    }

    /// Applies a chat line (say, act or private message) from `id`, muted or not, and counts
    /// it for the figures. Returns false if the peer is gone afterwards.
    fn chat_line(
        &mut self,
        id: MemberId,
        now: u64,
        apply: impl FnOnce(&mut Rooms) -> Vec<Delivery>,
    ) -> bool {
        // The persisted mutes expire by time: bring the member's flag in line first.
        let muted = self.rooms.nick(id).is_some_and(|nick| self.moderation.is_muted(nick, now));
        self.rooms.set_muted(id, muted);
        let read_at = Instant::now();
        let deliveries = apply(&mut self.rooms);
        let accepted = matches!(
            deliveries.first().map(|d| &d.event),
            Some(
                Event::Chat { .. }
                    | Event::Action { .. }
                    | Event::Private { .. }
                    | Event::PrivateSent { .. }
            )
        );
        let copies = self.deliver(deliveries);
        if accepted {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.last_active = read_at;
            }
            self.stats.message(copies, read_at);
            self.lines_this_turn.push(read_at);
        }
        self.peers.contains_key(&id)
    }

    /// Refuses a nickname an operator banned; true if it was refused.
    fn refuse_banned_nick(&mut self, id: MemberId, nick: &str, now: u64) -> bool {
        if self.moderation.nick_ban(nick, now).is_none() {
            return false;
        }
        let failure = Failure::NickBanned(crate::text::sanitize(nick));
        self.deliver(vec![Delivery { to: Audience::One(id), event: Event::Failed(failure) }]);
        true
    }

    /// Removes a session for an operator: it is told why (and closes), its room is told.
    fn kick(&mut self, id: MemberId, reason: Option<String>) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.kicked || peer.is_master {
            return;
        }
        peer.kicked = true;
        let nick = self.rooms.nick(id).unwrap_or("(no nickname yet)").to_string();
        info!(
            target: crate::logging::NOTICE,
            "operator removed {nick} (session pid {}, {}): {}",
            peer.pid,
            peer.client,
            reason.as_deref().unwrap_or("no reason given")
        );
        let mut deliveries = vec![Delivery {
            to: Audience::One(id),
            event: Event::Kicked { reason: reason.clone() },
        }];
        deliveries.extend(self.rooms.leave(id, LeaveReason::Kicked(reason)));
        self.deliver(deliveries);
    }

    /// Encodes `event` once and queues it for each of `ids` (the master's link, every
    /// session for an operator's announcement).
    fn send_to(&mut self, ids: impl IntoIterator<Item = MemberId>, event: &Event) {
        self.scratch.clear();
        if let Err(err) = codec::encode_frame(event, &mut self.scratch) {
            error!("cannot encode an event: {err}");
            return;
        }
        for id in ids {
            self.queue(id);
        }
    }

    /// Encodes each event once and queues the same bytes for every recipient. Returns how
    /// many copies were queued.
    fn deliver(&mut self, deliveries: Vec<Delivery>) -> u64 {
        let mut copies = 0;
        for delivery in deliveries {
            self.scratch.clear();
            if let Err(err) = codec::encode_frame(&delivery.event, &mut self.scratch) {
                error!("cannot encode an event: {err}");
                continue;
            }
            match &delivery.to {
                Audience::One(id) => {
                    self.queue(*id);
                    copies += 1;
                }
                Audience::Room(key) => {
                    let members: Vec<MemberId> = self.rooms.members_of(key).collect();
                    copies += members.len() as u64;
                    for id in members {
                        self.queue(id);
                    }
                }
            }
        }
        copies
    }

    /// Queues `scratch` for one peer; a peer whose queue is full is dropped as too slow (once:
    /// what comes for it before it is removed is neither queued nor logged again).
    fn queue(&mut self, id: MemberId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.too_slow {
            return;
        }
        match peer.channel.send_encoded(&self.scratch) {
            Ok(()) => self.mark_dirty(id),
            Err(overflow) => {
                warn!("dropping session pid {} ({}): too slow, {overflow}", peer.pid, peer.client);
                peer.too_slow = true;
                if peer.session.is_some() {
                    // If it takes the closed connection for a broker restart, it is told.
                    self.dropped.insert(peer.identity, LeaveReason::TooSlow);
                }
                self.stats.drop_for("too_slow");
                self.doom(id, LeaveReason::TooSlow);
            }
        }
    }

    fn mark_dirty(&mut self, id: MemberId) {
        if let Some(peer) = self.peers.get_mut(&id)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(id);
        }
    }

    /// One write per peer with queued bytes. A peer that would block keeps its bytes; its next
    /// writable event brings it back here.
    fn flush_dirty(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            peer.dirty = false;
            if let Err(err) = peer.channel.flush() {
                debug!("session pid {} ({}) write error: {err}", peer.pid, peer.client);
                self.doom(id, LeaveReason::ConnectionLost);
            }
        }
    }

    fn doom(&mut self, id: MemberId, reason: LeaveReason) {
        if !self.doomed.iter().any(|(doomed, _)| *doomed == id) {
            self.doomed.push((id, reason));
        }
    }

    /// Once at least half of a crowd of sessions has left, hands the memory their queues and
    /// tables used back to the kernel: otherwise the broker keeps the high-water mark of its
    /// busiest moment (measured: 33 MiB after 5,000 sessions had come and gone, against 9 MiB
    /// for the 1,000 that followed). Trimming walks the heap, so it is done once per halving,
    /// never per departure.
    fn trim_after_crowd(&mut self) {
        const CROWD: usize = 256;
        if self.peers_high_water >= CROWD && self.peers.len() <= self.peers_high_water / 2 {
            sys::release_free_memory();
            debug!("{} sessions left of {}: heap trimmed", self.peers.len(), self.peers_high_water);
            self.peers_high_water = self.peers.len();
        }
    }

    /// Removes doomed peers and tells their rooms. Telling a room can doom more peers (a full
    /// queue), so this runs until nothing is left.
    fn remove_doomed(&mut self) {
        while let Some((id, reason)) = self.doomed.pop() {
            let Some(mut peer) = self.peers.remove(&id) else {
                continue;
            };
            if self.inherited_link == Some(id) {
                self.inherited_link = None;
            }
            if self.identities.get(&peer.identity) == Some(&id) {
                self.identities.remove(&peer.identity);
            }
            if self.master == Some(id) {
                info!("the master's link closed");
                self.master = None;
                self.master_figures = None;
                self.reloaded(Some("the master went away before answering".into()));
            }
            // Best effort, never blocking: a quitting session waits for what it was owed.
            let _ = peer.channel.flush();
            let _ = self.poll.registry().deregister(peer.channel.stream_mut());
            let nick = self.rooms.nick(id).map(str::to_string);
            let deliveries = self.rooms.leave(id, reason.clone());
            if let Some(nick) = nick {
                debug!("{nick} (session pid {}) left: {reason:?}", peer.pid);
            }
            self.deliver(deliveries);
        }
    }
}

/// What a banned session is told.
fn ban_reason(reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("banned: {reason}"),
        None => "banned".to_string(),
    }
}
