//! The room broker: one process, one mio event loop, all room state.
//!
//! It owns the Unix listener `broker.sock`, one [`Channel`] per session child, and the
//! [`Rooms`]. It reads [`Request`]s, applies them to the rooms, and writes [`Event`]s: each
//! event is encoded once and the same bytes are queued for every recipient; queued bytes are
//! written once per recipient per loop turn.
//!
//! It must never block on one peer. Every socket is non-blocking and every peer's output queue
//! is bounded (`broker_queue_bytes`, 4 MiB by default); a peer whose queue would overflow is dropped (its room
//! sees "too slow") and everyone else carries on. A peer that sends a frame that is oversize or
//! does not decode is dropped and logged once. It never renders text for a terminal: that is the
//! session's job.

pub mod room;

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;

use crate::channel::{Channel, ReadOutcome};
use crate::config::ConfigSource;
use crate::proto::codec;
use crate::proto::{Event, Failure, LeaveReason, PROTOCOL_VERSION, Request};
use crate::signals::ChildSignals;
use crate::sys;
use room::{Audience, Delivery, MemberId, Rooms};

/// How long a stopping broker spends telling sessions so.
const GOODBYE_GRACE: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_PEER: usize = 2;

/// One connected session child.
struct Peer {
    channel: Channel,
    /// The session's pid, from SO_PEERCRED, for logs.
    pid: i32,
    /// The client address the session reported in `Hello`.
    client: String,
    /// The sender id from `Hello`; `None` until `Hello` arrived (every other request must
    /// come after it).
    session: Option<u64>,
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
    /// Peers to remove after the current event, with what their room is told.
    doomed: Vec<(MemberId, LeaveReason)>,
    /// Reused buffer for encoding one event.
    scratch: Vec<u8>,
    /// Most bytes queued for one session before it is dropped as too slow.
    queue_bytes: usize,
    /// Where to read the settings again on SIGHUP.
    source: ConfigSource,
    uid: u32,
}

/// Runs the broker on an already-listening socket until SIGTERM or SIGINT.
///
/// `source` is where the settings came from: on SIGHUP (which the master forwards after it
/// validated the file) the broker reads them again and applies `broker_queue_bytes` to new
/// sessions.
pub fn run(listener: StdUnixListener, queue_bytes: usize, source: ConfigSource) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let mut listener = UnixListener::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let signals = ChildSignals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP])?;
    signals.register(poll.registry(), SIGNALS)?;
    let mut broker = Broker {
        poll,
        listener,
        signals,
        peers: HashMap::new(),
        rooms: Rooms::new(),
        next_id: FIRST_PEER as MemberId,
        dirty: Vec::new(),
        doomed: Vec::new(),
        scratch: Vec::new(),
        queue_bytes,
        source,
        uid: nix::unistd::geteuid().as_raw(),
    };
    info!("broker ready (protocol version {PROTOCOL_VERSION})");
    broker.event_loop()
}

impl Broker {
    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            sys::wait(&mut self.poll, &mut events, None)?;
            // Signals first: once shutdown is pending, departures caused by the shutdown itself
            // are not announced to anyone.
            if self.stop_requested()? {
                info!("broker stopping");
                self.say_goodbye();
                return Ok(());
            }
            self.rooms.set_now(Instant::now());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => {}
                    Token(token) => {
                        let id = token as MemberId;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_from(id);
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
        }
    }

    fn stop_requested(&mut self) -> io::Result<bool> {
        let mut stop = false;
        while let Some(signal) = self.signals.take_pending()? {
            match signal {
                Signal::SIGTERM | Signal::SIGINT => stop = true,
                Signal::SIGHUP => match self.source.load() {
                    Ok(config) => {
                        self.queue_bytes = config.broker_queue_bytes;
                        info!("broker reloaded its configuration");
                    }
                    Err(err) => {
                        error!("broker reload failed, keeping the old configuration: {err}")
                    }
                },
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
                Ok((stream, _)) => self.admit(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // EMFILE and friends: the connection stays in the backlog; the next
                    // readiness event retries.
                    error!("broker cannot accept a session: {err}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: UnixStream) {
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
        let id = self.next_id;
        self.next_id += 1;
        let token = Token(id as usize);
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot watch session pid {pid}: {err}");
            return;
        }
        let peer = Peer {
            channel: Channel::new(stream, self.queue_bytes),
            pid,
            client: String::new(),
            session: None,
            dirty: false,
        };
        self.peers.insert(id, peer);
    }

    fn read_from(&mut self, id: MemberId) {
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
                ReadOutcome::Data => {
                    if !self.handle_frames(id) {
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
        let Some(session) = peer.session else {
            let Request::Hello { version, pid: _, peer: client, session } = request else {
                warn!("dropping session pid {}: first frame was not Hello", peer.pid);
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            };
            peer.client = client.chars().take(64).collect();
            if version != PROTOCOL_VERSION {
                warn!(
                    "dropping session pid {} ({}): protocol version {version}, broker speaks {PROTOCOL_VERSION}",
                    peer.pid, peer.client
                );
                let refusal =
                    Failure::VersionMismatch { broker: PROTOCOL_VERSION, session: version };
                self.deliver(vec![Delivery {
                    to: Audience::One(id),
                    event: Event::Failed(refusal),
                }]);
                self.flush_dirty();
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
            peer.session = Some(session);
            let welcome = Event::Welcome { version: PROTOCOL_VERSION };
            self.deliver(vec![Delivery { to: Audience::One(id), event: welcome }]);
            return true;
        };
        let deliveries = match request {
            Request::Hello { .. } => {
                warn!("dropping session pid {} ({}): second Hello", peer.pid, peer.client);
                self.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
            Request::Login { nick } => self.rooms.login(id, session, &nick),
            Request::Resume { nick, room, topic } => {
                let deliveries = self.rooms.resume(id, session, &nick, &room, topic.as_deref());
                if let Some(Event::Resumed { nick, room }) = deliveries.first().map(|d| &d.event) {
                    info!("session pid {} ({}) resumed as {nick} in {room}", peer.pid, peer.client);
                }
                deliveries
            }
            Request::Say { seq, text } => self.rooms.say(id, seq, &text),
            Request::Act { seq, text } => self.rooms.act(id, seq, &text),
            Request::ChangeNick { nick } => self.rooms.change_nick(id, &nick),
            Request::Join { room } => self.rooms.join(id, &room),
            Request::Who => self.rooms.who(id),
            Request::Rooms => self.rooms.list_rooms(id),
            Request::Topic { text } => self.rooms.topic(id, text.as_deref()),
            Request::Private { seq, to, text } => self.rooms.private(id, seq, &to, &text),
            Request::Quit { reason } => {
                self.doom(id, LeaveReason::Quit(reason));
                return false;
            }
        };
        self.deliver(deliveries);
        self.peers.contains_key(&id)
    }

    /// Encodes each event once and queues the same bytes for every recipient.
    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            self.scratch.clear();
            if let Err(err) = codec::encode_frame(&delivery.event, &mut self.scratch) {
                error!("cannot encode an event: {err}");
                continue;
            }
            match &delivery.to {
                Audience::One(id) => self.queue(*id),
                Audience::Room(key) => {
                    let members: Vec<MemberId> = self.rooms.members_of(key).collect();
                    for id in members {
                        self.queue(id);
                    }
                }
            }
        }
    }

    /// Queues `scratch` for one peer; a peer whose queue is full is dropped as too slow.
    fn queue(&mut self, id: MemberId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.channel.send_encoded(&self.scratch) {
            Ok(()) => self.mark_dirty(id),
            Err(overflow) => {
                warn!("dropping session pid {} ({}): too slow, {overflow}", peer.pid, peer.client);
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

    /// Removes doomed peers and tells their rooms. Telling a room can doom more peers (a full
    /// queue), so this runs until nothing is left.
    fn remove_doomed(&mut self) {
        while let Some((id, reason)) = self.doomed.pop() {
            let Some(mut peer) = self.peers.remove(&id) else {
                continue;
            };
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
