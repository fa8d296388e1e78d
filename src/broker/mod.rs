//! The room broker: one process, one mio event loop, all room state.
//!
//! It owns the Unix listener `broker.sock`, one channel (`link::PeerChannel`) per session child
//! and for the master's link, and the [`Rooms`]. It reads `Request`s, applies them to the
//! rooms, and writes [`Event`]s: each event is encoded once and the same bytes are queued for
//! every recipient; queued bytes are written once per recipient per loop turn.
//!
//! It also serves operators: `control.sock` (`control`) for chatctl, the persisted
//! moderation state ([`crate::moderation`]: bans, mutes, message of the day), and the figures
//! ([`stats`]). The master links to it over a socket pair it created before forking the broker
//! (a connection nobody else can make); it reports its own figures every second, vouches for
//! the sessions it forks, and receives `Reload` and `Stop` (its own frames: `proto::master`; the
//! broker's side is `link`). Only a broker whose master is gone takes a `MasterHello` on
//! `broker.sock` (a replacement master adopting it).
//!
//! Identity: a session is whoever the kernel says is at the other end of its connection. Its
//! sender id, stamped on its lines for the receivers' duplicate filter, is the caller's pid and
//! process start time (SO_PEERCRED, `/proc`): the same after a broker restart, and nobody else's
//! to claim. Its address is the one the master vouched for; `Hello` claims nothing the broker
//! believes. Numbered lines must follow each other on a connection.
//!
//! It must never block on one peer. A room's broadcasts go once into the room's ring (`rings`),
//! which no reader holds back; every socket is non-blocking and every peer's output queue is
//! bounded (`broker_queue_bytes`, 4 MiB by default); a peer whose queue would overflow, or that
//! stays a ring behind, is dropped (its room sees "too slow") and everyone else carries on. A peer that sends a frame that is oversize or
//! does not decode is dropped and logged once. It never renders text for a terminal: that is the
//! session's job.
//!
//! This file holds the start-up ([`run`]), the event loop, signals and the goodbye; each other
//! step of the data flow has its own file: `connections` accepts and reads `broker.sock`,
//! `dispatch` applies each session request to the [`Rooms`] ([`room`], pure), `peers` is
//! the fan-out engine that encodes and queues what the rooms say (the one place that writes to
//! sessions), and `control` serves operators.

pub mod accounts;
mod cluster;
mod connections;
mod control;
mod dispatch;
mod held_privates;
mod history;
mod identity;
mod link;
mod peers;
mod remembered;
mod rings;
pub mod room;
pub mod stats;
mod storage;
mod store_thread;

use std::collections::HashMap;
use std::io;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;

use crate::config::{Config, ConfigSource};
use crate::logging::FailureEpisode;
use crate::moderation::{self, Moderation};
use crate::proto::control::MasterFigures;
use crate::proto::{Event, Greeting, PROTOCOL_VERSION};
use crate::signals::ChildSignals;
use crate::sys;
use accounts::Accounts;
use control::{Access, ControlClient, Operators};
use peers::Peers;
use remembered::Remembered;
use room::{Delivery, MemberId, Rooms};
use stats::Stats;
use storage::Storage;

/// How long `accept` must go without failing before its trouble counts as over.
const ACCEPT_TROUBLE_QUIET: Duration = Duration::from_secs(5);
/// How long a stopping broker spends telling sessions so.
const GOODBYE_GRACE: Duration = Duration::from_secs(1);

/// Sessions dropped as too slow that are remembered, so that one that reconnects is told why
/// instead of being taken back (the oldest is forgotten first).
const DROPPED_REMEMBERED: usize = 4096;

/// Sender ids with this bit come from the broker's random numbers, for a caller the kernel
/// cannot name (no pid in its credentials, e.g. from another pid namespace). Kernel-derived
/// ids never have it (see [`sys::process_identity`]).
const ANONYMOUS_SENDER: u64 = 1 << 63;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const CONTROL: Token = Token(2);
const FIRST_PEER: usize = 3;
/// The broker's helper threads (the state writer, the database thread) wake the loop with
/// this one waker (mio allows one per poller); each then looks at its own answers.
const HELPERS: Token = Token(usize::MAX);

/// Why the broker could not start, or stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// One of the inherited listening sockets (`broker.sock`, `control.sock`) cannot be used.
    #[error("cannot use {socket}: {source}")]
    Socket { socket: &'static str, source: io::Error },
    /// The broker's end of the master's link cannot be made non-blocking.
    #[error("cannot use the master's link: {0}")]
    MasterLink(io::Error),
    #[error("cannot create the broker's poller: {0}")]
    Poll(io::Error),
    /// SIGTERM, SIGINT and SIGHUP cannot be watched, or their pipe cannot be read.
    #[error("cannot watch the broker's signals: {0}")]
    Signals(io::Error),
    /// The helper threads (the state writer, the database thread) cannot be given a way to
    /// wake the loop.
    #[error("cannot make the waker of the broker's helper threads: {0}")]
    HelperWaker(io::Error),
    /// Waiting for events failed (not interrupted: that is retried).
    #[error("the broker's event loop cannot wait for events: {0}")]
    Wait(io::Error),
    /// The store the settings name cannot be used (not a database, a newer schema): chatd
    /// must not run and lose what people say.
    #[error("{0}; chatd does not start without it (fix or move the file, or set history_days = 0)")]
    Store(String),
    /// The `[cluster]` settings cannot be used (a password file that cannot be read).
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
}

impl BrokerError {
    /// The exit status of a broker that stopped with this error: the master does not restart
    /// a broker whose settings cannot work, it stops.
    pub fn exit_status(&self) -> i32 {
        match self {
            BrokerError::Store(_) | BrokerError::Cluster(_) => {
                crate::config::EXIT_UNUSABLE_SETTINGS
            }
            _ => 1,
        }
    }
}

/// The broker: the loop's sockets, the fan-out engine, the rooms, the operators' side and the
/// master's link.
struct Broker {
    poll: Poll,
    listener: UnixListener,
    signals: ChildSignals,
    /// Every connection on `broker.sock` and the fan-out mechanics.
    peers: Peers,
    rooms: Rooms,
    /// The next token for a connection (on `broker.sock` or `control.sock`).
    next_id: MemberId,
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
    /// Operators waiting for the master's answer to an upgrade.
    pending_upgrades: Vec<MemberId>,
    /// SIGUSR2: an upgrade replaces this broker; it leaves without a word to the sessions.
    replaced: bool,
    /// When an operator's `shutdown --grace` is due.
    stop_at: Option<Instant>,
    /// When a room's ring, waiting out its quiet interval, is to be published.
    rings_due: Option<Instant>,
    stats: Stats,
    /// The store and what waits for it.
    storage: Storage,
    /// Registered nicks, password challenges and their throttles (loaded from the store).
    accounts: Accounts,
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
    /// Passwords are refused on plain connections from other hosts.
    passwords_need_tls: bool,
    /// Private lines kept for users who just logged in, until the store counts the lines
    /// that mentioned them.
    away_news: HashMap<MemberId, Vec<crate::proto::KeptMessage>>,
    /// Sessions that resumed with a login token before the accounts were loaded: (nick,
    /// sender id, token), checked once they are.
    unchecked_tokens: HashMap<MemberId, (String, u64, Vec<u8>)>,
    /// Answers to account requests, each held until the account change it confirms (its
    /// number from `Storage::account_change`) is on disk.
    held_until_stored: std::collections::VecDeque<(u64, Vec<Delivery>)>,
    /// Private lines that may be re-sent ones, held for their recipients (`held_privates`).
    held_privates: Vec<held_privates::HeldPrivate>,
    /// `[cluster]`: this node's side of the other nodes (`cluster`).
    cluster: Option<cluster::Cluster>,
}

/// What the master vouched for about a session.
struct Vouch {
    peer: String,
    connected_at: u64,
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
pub fn run(listeners: Listeners, config: &Config, source: ConfigSource) -> Result<(), BrokerError> {
    let Listeners { sessions: listener, control, master: link, service_user } = listeners;
    let sessions_socket = |source| BrokerError::Socket { socket: "broker.sock", source };
    let control_socket = |source| BrokerError::Socket { socket: "control.sock", source };
    listener.set_nonblocking(true).map_err(sessions_socket)?;
    control.set_nonblocking(true).map_err(control_socket)?;
    let poll = Poll::new().map_err(BrokerError::Poll)?;
    let mut listener = UnixListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(sessions_socket)?;
    let signals =
        ChildSignals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR2])
            .map_err(BrokerError::Signals)?;
    signals.register(poll.registry(), SIGNALS).map_err(BrokerError::Signals)?;
    let mut control_listener = UnixListener::from_std(control);
    poll.registry()
        .register(&mut control_listener, CONTROL, Interest::READABLE)
        .map_err(control_socket)?;
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
    let helpers_done =
        Arc::new(mio::Waker::new(poll.registry(), HELPERS).map_err(BrokerError::HelperWaker)?);
    // The state writer's thread starts from this thread when there is something to save, so
    // it inherits the signal mask ChildSignals set above.
    let operators = Operators::new(helpers_done.clone(), &state_path);
    // Before the clock is read: with LDAP or sssd the names can take a while.
    let access = Access::new(uid, service_user, config.admin_group.as_deref());
    // Its thread starts here, after ChildSignals blocked the signals: it inherits the mask.
    let (storage, loaded_accounts) = match config.store_target() {
        None => (Storage::none(), None),
        Some(target) => Storage::start(target, config.history_days, helpers_done.clone())
            .map_err(|unusable| BrokerError::Store(unusable.0))?,
    };
    let now = Instant::now();
    // Its threads start here too, after the signals were blocked. A restarted broker's
    // sessions resume within the resume window: only then is the node's roster whole.
    let cluster = match &config.cluster {
        None => None,
        Some(settings) => {
            let due = now + dispatch::RESUME_WINDOW.min(Duration::from_secs(10));
            Some(cluster::serve::start(settings, helpers_done, due).map_err(BrokerError::Cluster)?)
        }
    };
    let mut broker = Broker {
        poll,
        listener,
        signals,
        peers: Peers::new(DROPPED_REMEMBERED, config.ring_bytes),
        rooms: {
            let mut rooms = Rooms::new(now);
            rooms.set_history_lines(config.history_lines);
            rooms.set_max_rooms(config.max_rooms);
            rooms.set_store(storage.is_on());
            rooms
        },
        next_id: FIRST_PEER as MemberId,
        queue_bytes,
        source,
        uid,
        control: control_listener,
        controls: HashMap::new(),
        access,
        operators,
        moderation: state,
        state_path,
        state_unreadable,
        master: None,
        master_figures: None,
        pending_reloads: Vec::new(),
        pending_upgrades: Vec::new(),
        replaced: false,
        stop_at: None,
        rings_due: None,
        stats: Stats::new(now),
        storage,
        accounts: Accounts::new(config.password_cost, config.accounts, config.kept_messages),
        lines_this_turn: Vec::new(),
        started_at: crate::clock::unix_now(),
        accept_trouble: FailureEpisode::new(ACCEPT_TROUBLE_QUIET),
        control_accept_trouble: FailureEpisode::new(ACCEPT_TROUBLE_QUIET),
        started: now,
        instance: sys::process_identity(std::process::id() as i32)
            .unwrap_or_else(|_| sys::random_u64() | ANONYMOUS_SENDER),
        inherited_link: None,
        vouching: link.is_some(),
        identities: HashMap::new(),
        vouches: Remembered::new(config.admission.max_clients + 1024),
        passwords_need_tls: config.session.passwords_need_tls,
        away_news: HashMap::new(),
        unchecked_tokens: HashMap::new(),
        held_until_stored: std::collections::VecDeque::new(),
        held_privates: Vec::new(),
        cluster,
    };
    if let Some(record) = loaded_accounts {
        broker.accounts_loaded(record);
    }
    if let Some(link) = link {
        link.set_nonblocking(true).map_err(BrokerError::MasterLink)?;
        let pid = sys::peer_pid(&link).unwrap_or(0);
        broker.inherited_link = broker.add_peer(mio::net::UnixStream::from_std(link), pid, 0);
    }
    info!("broker ready (protocol version {PROTOCOL_VERSION})");
    broker.event_loop()
}

impl Broker {
    fn event_loop(&mut self) -> Result<(), BrokerError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout =
                self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            sys::wait(&mut self.poll, &mut events, timeout).map_err(BrokerError::Wait)?;
            // Signals first: once shutdown is pending, departures caused by the shutdown itself
            // are not announced to anyone.
            let signalled = events.iter().any(|event| event.token() == SIGNALS);
            if (signalled && self.stop_requested().map_err(BrokerError::Signals)?)
                || self.stop_is_due()
            {
                if self.replaced {
                    self.leave_for_replacement();
                } else {
                    info!("broker stopping");
                    self.say_goodbye();
                }
                return Ok(());
            }
            self.rooms.set_now(Instant::now(), crate::clock::unix_now());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => {}
                    CONTROL => self.accept_controls(),
                    HELPERS => {
                        self.state_saved();
                        self.store_answers();
                        self.release_stored();
                        self.cluster_turn(Instant::now());
                    }
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
                            self.peers.mark_dirty(id);
                        }
                    }
                }
                self.remove_doomed();
            }
            if self
                .cluster
                .as_ref()
                .and_then(cluster::Cluster::next_wake)
                .is_some_and(|at| Instant::now() >= at)
            {
                self.cluster_turn(Instant::now());
            }
            self.release_held_privates();
            // Before the flush: a room's stored history is delivered in the same turn.
            self.store_turn(Instant::now());
            self.peers.flush();
            self.remove_doomed();
            // What the removals told is written before the rings show what came after it.
            self.peers.flush();
            self.rings_due = self.peers.end_turn(&self.rooms, Instant::now());
            self.peers.trim_after_crowd();
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
        let cluster = self.cluster.as_ref().and_then(cluster::Cluster::next_wake);
        let held = self.held_privates_due();
        [
            self.stop_at,
            self.control_deadline(),
            self.rings_due,
            self.storage.next_wake(),
            cluster,
            held,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// An operator's `shutdown --grace` is over: the master stops the daemon (the broker
    /// included). Without a master (`chatd broker`, or the master died), the broker stops.
    fn stop_is_due(&mut self) -> bool {
        if self.stop_at.is_none_or(|at| Instant::now() < at) {
            return false;
        }
        self.stop_at = None;
        if self.ask_master_to_stop() {
            return false;
        }
        warn!("shutdown grace time is over and no master is linked; the broker stops alone");
        true
    }

    fn stop_requested(&mut self) -> io::Result<bool> {
        let mut stop = false;
        while let Some(signal) = self.signals.take_pending()? {
            match signal {
                Signal::SIGTERM | Signal::SIGINT => stop = true,
                // An in-place upgrade: a broker of the new code takes over.
                Signal::SIGUSR2 => {
                    self.replaced = true;
                    stop = true;
                }
                Signal::SIGHUP => {
                    match self.source.load() {
                        Ok(config) => {
                            self.queue_bytes = config.broker_queue_bytes;
                            self.rooms.set_history_lines(config.history_lines);
                            self.rooms.set_max_rooms(config.max_rooms);
                            self.peers.set_ring_bytes(config.ring_bytes);
                            self.storage.set_history_days(config.history_days);
                            self.accounts.reconfigure(
                                config.password_cost,
                                config.accounts,
                                config.kept_messages,
                            );
                            self.passwords_need_tls = config.session.passwords_need_tls;
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

    /// Leaves for a broker of an upgrade's new code, which the master starts on the same
    /// sockets once this process is gone: what the rooms said goes to the store and the rings,
    /// queued frames are written while the sockets take them (briefly), and nobody is told
    /// anything: each session sees its connection close, reconnects and resumes, as after any
    /// broker restart.
    fn leave_for_replacement(&mut self) {
        info!("broker replaced by a new one; exiting without disconnecting anyone");
        self.store_turn(Instant::now());
        self.storage.finish();
        self.peers.forget_doomed();
        self.peers.publish_all_rings();
        self.peers.flush();
    }

    /// Tells every session that the daemon is stopping and gives the news up to
    /// [`GOODBYE_GRACE`] to leave. Departures are not announced from here on: everyone is
    /// leaving for the same reason, and each session says so to its own client.
    fn say_goodbye(&mut self) {
        // Everything said until now goes to the store: a restart loses none of it.
        self.store_turn(Instant::now());
        self.storage.finish();
        self.peers.forget_doomed();
        self.peers.publish_all_rings();
        let deadline = Instant::now() + GOODBYE_GRACE;
        let everyone: Vec<MemberId> = self.peers.iter().map(|(&id, _)| id).collect();
        // Marked like any socket frame: each session shows its room's last lines first.
        self.peers.send_to(everyone.iter().copied(), &Event::Shutdown);
        let mut pending: Vec<MemberId> =
            everyone.into_iter().filter(|&id| !self.peers.is_doomed(id)).collect();
        let mut events = Events::with_capacity(256);
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|id| {
                self.peers
                    .get_mut(*id)
                    .is_some_and(|peer| matches!(peer.channel.flush(), Ok(false)))
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

    /// The first frame of a connection: a session's hello or the master's.
    fn greet(&mut self, id: MemberId, greeting: Greeting) -> bool {
        match greeting {
            Greeting::Session(hello) => self.hello(id, hello),
            Greeting::Master(hello) => self.greet_master(id, hello),
        }
    }

    /// Hands deliveries to this node's fan-out engine (rooms resolved as they are now) and
    /// counts what it dropped. Returns how many copies were queued. (`deliver`, in
    /// `cluster::serve`, first sends a cluster's room broadcasts through its stream.)
    fn deliver_here(&mut self, deliveries: Vec<Delivery>) -> u64 {
        let copies = self.peers.deliver(&mut self.rooms, deliveries);
        self.count_too_slow();
        copies
    }

    /// Encodes `event` once and queues it for each of `ids` (every session, for an
    /// operator's announcement), counting what that dropped as too slow.
    fn send_to(&mut self, ids: impl IntoIterator<Item = MemberId>, event: &Event) {
        self.peers.send_to(ids, event);
        self.count_too_slow();
    }

    /// Counts the sessions the fan-out engine dropped as too slow in the figures.
    fn count_too_slow(&mut self) {
        for _ in 0..self.peers.take_too_slow_drops() {
            self.stats.drop_for("too_slow");
        }
    }

    /// Removes doomed peers and tells their rooms. Telling a room can doom more peers (a full
    /// queue), so this runs until nothing is left.
    fn remove_doomed(&mut self) {
        while let Some((id, peer, reason)) = self.peers.remove_next_doomed(self.poll.registry()) {
            if self.identities.get(&peer.identity) == Some(&id) {
                self.identities.remove(&peer.identity);
            }
            self.forget_link(id);
            let nick = self.rooms.nick(id).map(str::to_string);
            self.member_leaving(id);
            let deliveries = self.rooms.leave(id, reason.clone());
            if let Some(nick) = nick {
                debug!("{nick} (session pid {}) left: {reason:?}", peer.pid);
            }
            self.deliver(deliveries);
        }
    }
}
