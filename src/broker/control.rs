//! The broker's side of `control.sock`: who may use it, and the answer to each operator
//! request (`chatctl`).
//!
//! The socket (bound by `master::listen`) is mode 0666 on purpose: access is decided here, from
//! the caller's credentials (SO_PEERCRED, SO_PEERGROUPS), so that a refused caller gets a clear
//! answer and the refusal is logged. Allowed: root, the daemon's own user, and members of the
//! admin group.
//!
//! Any local user can connect, so a connection costs the broker nothing until it is known to
//! be an operator's: access is decided at accept, before a byte is read. A stranger gets its
//! `Denied` in one non-blocking write and is closed at once, so it never holds a descriptor or
//! a buffer; refusals are logged once per [`REFUSAL_LOG_WINDOW`] (then counted). Operators'
//! connections are capped ([`CONNECTIONS_PER_UID`] per uid, [`CONNECTIONS_TOTAL`] in all,
//! root apart: it has its own [`CONNECTIONS_PER_UID`] beyond the total, so that it keeps a way
//! in whatever others hold). A request may declare at most [`MAX_REQUEST_LEN`] bytes and must
//! arrive whole within [`REQUEST_TIMEOUT`]; the answer must be written within
//! [`CONTROL_TIMEOUT`]. One connection carries one request and its reply. Requests never block
//! the broker: the only ones that wait are `reload`, whose answer comes from the master over
//! its link, and changes to the moderation state, whose answer waits for the state file.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event as MioEvent;
use mio::net::UnixStream;
use mio::{Interest, Token};

use super::{Broker, ban_reason};
use crate::clock::unix_now;
use crate::logging::{self, LogThrottle};
use crate::moderation::{self, Ban, BanTarget, Change, Moderation, Mute, StateWriter};
use crate::names;
use crate::outbuf::OutBuf;
use crate::proto::codec;
use crate::proto::control::{
    CONTROL_VERSION, ControlFrame, ControlReply, ControlRequest, MAX_REQUEST_LEN, Status, UserRow,
};
use crate::proto::{Event, PROTOCOL_VERSION};
use crate::sys;
use crate::text;

/// How long an operator's connection may take to send its whole request: chatctl sends it as
/// soon as it is connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the answer to a request may take to be written (a reload waits for the master).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes queued for one operator: one reply frame (a `who` of 10,000 users is below).
const CONTROL_QUEUE_BYTES: usize = codec::MAX_FRAME_LEN + codec::HEADER_LEN;

/// Most connections one operator uid may hold at once (chatctl uses one at a time).
const CONNECTIONS_PER_UID: usize = 8;

/// Most connections all operators but root may hold at once; root has its own
/// [`CONNECTIONS_PER_UID`] beyond it.
const CONNECTIONS_TOTAL: usize = 32;

/// Refusals of one kind are logged once per window, then counted in one summary line.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(60);

/// How much one read of a request takes at most.
const READ_CHUNK: usize = 4096;

/// Who may use the control socket.
#[derive(Debug)]
pub struct Access {
    uid: u32,
    user: String,
    /// `uid` is a service user chatd switched to from root: its own processes (every session
    /// child) are no operators, so a compromised session cannot act as one.
    service_user: bool,
    group: Option<(String, u32)>,
}

impl Access {
    pub fn new(uid: u32, service_user: bool, group: Option<&str>) -> Access {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name);
        let group = group.and_then(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some((name.to_string(), group.gid.as_raw())),
            Ok(None) => {
                let who =
                    if service_user { "root".to_string() } else { format!("root and {user}") };
                info!("admin group {name} does not exist; only {who} may use chatctl");
                None
            }
            Err(err) => {
                warn!("cannot look up admin group {name}: {err}");
                None
            }
        });
        Access { uid, user, service_user, group }
    }

    pub fn service_user(&self) -> bool {
        self.service_user
    }

    /// Whether the process behind `stream`, running as `uid`, may use the control socket.
    fn allows(&self, stream: &UnixStream, uid: u32) -> bool {
        if uid == 0 || (uid == self.uid && !self.service_user) {
            return true;
        }
        let Some((_, gid)) = &self.group else { return false };
        sys::peer_gid(stream).ok() == Some(*gid)
            || sys::peer_groups(stream).unwrap_or_default().contains(gid)
    }

    /// What a refused caller is told.
    fn denial(&self) -> String {
        let group = match &self.group {
            Some((name, _)) => format!(", or members of group {name}"),
            None => String::new(),
        };
        if self.service_user {
            // Not the daemon's own user: that is what every session runs as.
            return format!("permission denied: only root{group} may control chatd");
        }
        format!("permission denied: only root, user {}{group} may control chatd", self.user)
    }
}

/// The broker's bookkeeping for operators beyond their connections, and the state writer.
pub struct Operators {
    /// Refused connections (strangers, too many at once): logged once per window.
    refusals: LogThrottle,
    /// Writes `state.toml` off the loop; wakes the loop (`STATE_SAVED`) after each write.
    writer: StateWriter,
    /// The operator change being saved: not in force until it is on disk.
    in_flight: Option<InFlight>,
    /// Operators' changes waiting for the one in flight (at most one per control connection).
    waiting: VecDeque<(u64, ControlRequest)>,
    /// The last write failed (logged once, until one succeeds again).
    save_failing: bool,
    /// A reload arrived while a save was under way: done once it is over.
    reload_deferred: bool,
}

/// An operator's change on its way to disk.
struct InFlight {
    /// The control connection waiting for the answer.
    id: u64,
    generation: u64,
    change: Change,
    /// The state in force with the change applied: in force once saved.
    staged: Moderation,
    /// What the operator is told once it is.
    done: String,
}

/// The waker token of the state writer: far above any peer's.
pub const STATE_SAVED: Token = Token(usize::MAX);

impl Operators {
    /// Sets up the state writer for `state_path`, waking `registry`'s poller with
    /// [`STATE_SAVED`], and says at warning level if the state directory is not writable.
    pub fn new(registry: &mio::Registry, state_path: &Path) -> io::Result<Operators> {
        let waker = mio::Waker::new(registry, STATE_SAVED)?;
        check_state_dir(state_path);
        Ok(Operators {
            refusals: LogThrottle::new(REFUSAL_LOG_WINDOW),
            writer: StateWriter::new(state_path.to_path_buf(), move || {
                let _ = waker.wake();
            }),
            in_flight: None,
            waiting: VecDeque::new(),
            save_failing: false,
            reload_deferred: false,
        })
    }
}

/// Warns if the daemon cannot write the state file's directory: every change an operator
/// asks for would be refused.
fn check_state_dir(state_path: &Path) {
    let Some(dir) = state_path.parent() else { return };
    if let Err(why) = moderation::check_writable(dir) {
        warn!(
            "the state directory {} is not writable ({why}): chatctl ban, unban, mute, unmute and motd will be refused until it is",
            dir.display()
        );
    }
}

/// One operator's connection.
pub struct ControlClient {
    stream: UnixStream,
    /// The request read so far: at most one header and [`MAX_REQUEST_LEN`] bytes.
    request: Vec<u8>,
    reply: OutBuf,
    pid: i32,
    uid: u32,
    /// When the connection is closed if it is still open: [`REQUEST_TIMEOUT`] after accept,
    /// then [`CONTROL_TIMEOUT`] after its request arrived.
    deadline: Instant,
    /// The request was read; no more bytes are taken from this connection.
    asked: bool,
    /// The reply is queued; close once it is written.
    answered: bool,
}

/// Why a connection's request could not be read.
enum Unreadable {
    /// It closed or failed before a whole request (not worth a warning).
    Closed,
    /// It sent something that is not a request.
    Garbage(String),
}

impl ControlClient {
    /// Reads what has arrived; `Ok(Some(frame))` once the whole request is here.
    fn read_request(&mut self) -> Result<Option<ControlFrame>, Unreadable> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match codec::declared_len(&self.request) {
                Ok(Some(len)) if len > MAX_REQUEST_LEN => {
                    return Err(Unreadable::Garbage(format!(
                        "frame declares {len} bytes, more than the {MAX_REQUEST_LEN} a request may have"
                    )));
                }
                Ok(_) => {}
                Err(err) => return Err(Unreadable::Garbage(err.to_string())),
            }
            match codec::decode_frame::<ControlFrame>(&self.request) {
                Ok(Some((frame, _))) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(err) => return Err(Unreadable::Garbage(err.to_string())),
            }
            // Never more than the frame can still need: the buffer stays within the limit.
            let wanted = match codec::declared_len(&self.request) {
                Ok(Some(len)) => codec::HEADER_LEN + len - self.request.len(),
                _ => codec::HEADER_LEN - self.request.len(),
            };
            let take = wanted.min(READ_CHUNK);
            match self.stream.read(&mut chunk[..take]) {
                Ok(0) => return Err(Unreadable::Closed),
                Ok(n) => self.request.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Unreadable::Closed),
            }
        }
    }
}

impl Broker {
    /// The next moment the control side must act without I/O: a connection's deadline, or a
    /// summary of refusals.
    pub(super) fn control_deadline(&self) -> Option<Instant> {
        let connections = self.controls.values().map(|client| client.deadline).min();
        [connections, self.operators.refusals.next_due()].into_iter().flatten().min()
    }

    pub(super) fn accept_controls(&mut self) {
        loop {
            let mut stream = match self.control.accept() {
                Ok((stream, _)) => {
                    if let Some(failures) = self.control_accept_trouble.succeeded(Instant::now()) {
                        info!("accepting operators again after {failures} failed attempts");
                    }
                    stream
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // EMFILE and friends: every retry is another readiness event; say it once.
                    if self.control_accept_trouble.failed(Instant::now()) {
                        error!(
                            "cannot accept an operator's connection: {err} (said once; the \
                             recovery is logged)"
                        );
                    }
                    return;
                }
            };
            // Decided before anything is read or registered: a refused caller costs one write.
            let pid = sys::peer_pid(&stream).unwrap_or(0);
            let uid = match sys::peer_uid(&stream) {
                Ok(uid) => uid,
                Err(err) => {
                    warn!("refused an operator connection: cannot read its credentials: {err}");
                    continue;
                }
            };
            if !self.access.allows(&stream, uid) {
                let denial = self.access.denial();
                refuse(&mut stream, &ControlReply::Denied(denial));
                if self.operators.refusals.allow("stranger", Instant::now()) {
                    info!(
                        target: logging::NOTICE,
                        "refused an operator connection from uid {uid} (pid {pid}): not root, the daemon's user or in the admin group"
                    );
                }
                continue;
            }
            let of_uid = self.controls.values().filter(|client| client.uid == uid).count();
            let others = self.controls.values().filter(|client| client.uid != 0).count();
            if of_uid >= CONNECTIONS_PER_UID || (uid != 0 && others >= CONNECTIONS_TOTAL) {
                let why = format!(
                    "chatd is busy: too many operator connections are open (at most {CONNECTIONS_PER_UID} per user); try again"
                );
                refuse(&mut stream, &ControlReply::Denied(why));
                if self.operators.refusals.allow("busy", Instant::now()) {
                    warn!(
                        "refused an operator connection from uid {uid} (pid {pid}): {of_uid} of its own and {others} in all are open"
                    );
                }
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if let Err(err) = self.poll.registry().register(
                &mut stream,
                Token(id as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                error!("cannot watch an operator's connection: {err}");
                continue;
            }
            let client = ControlClient {
                stream,
                request: Vec::new(),
                reply: OutBuf::new(CONTROL_QUEUE_BYTES),
                pid,
                uid,
                deadline: Instant::now() + REQUEST_TIMEOUT,
                asked: false,
                answered: false,
            };
            self.controls.insert(id, client);
        }
    }

    pub(super) fn serve_control(&mut self, id: u64, event: &MioEvent) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_control(id);
        }
        self.flush_control(id);
    }

    fn read_control(&mut self, id: u64) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        if client.asked {
            return;
        }
        let frame = match client.read_request() {
            Ok(None) => return,
            Ok(Some(frame)) => frame,
            Err(Unreadable::Closed) => {
                debug!("operator connection from pid {} closed before a request", client.pid);
                self.close_control(id);
                return;
            }
            Err(Unreadable::Garbage(why)) => {
                warn!("operator connection from pid {} (uid {}): {why}", client.pid, client.uid);
                self.close_control(id);
                return;
            }
        };
        client.asked = true;
        client.request = Vec::new();
        client.deadline = Instant::now() + CONTROL_TIMEOUT;
        let (pid, uid) = (client.pid, client.uid);
        let reply = if frame.version != CONTROL_VERSION {
            Some(ControlReply::VersionMismatch { broker: CONTROL_VERSION })
        } else {
            debug!("operator uid {uid} (pid {pid}): {:?}", frame.request);
            self.answer(id, frame.request)
        };
        if let Some(reply) = reply {
            self.reply(id, &reply);
        }
    }

    /// Queues the one reply of an operator's connection; it closes once written.
    fn reply(&mut self, id: u64, reply: &ControlReply) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        client.answered = true;
        let queued = codec::frame(reply)
            .map_err(|err| err.to_string())
            .and_then(|frame| client.reply.push(&frame).map_err(|err| err.to_string()));
        if let Err(err) = queued {
            error!("cannot answer an operator: {err}");
            self.close_control(id);
            return;
        }
        self.flush_control(id);
    }

    fn flush_control(&mut self, id: u64) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        match client.reply.write_to(&mut client.stream) {
            Ok(true) if client.answered => self.close_control(id),
            Ok(_) => {}
            Err(_) => self.close_control(id),
        }
    }

    fn close_control(&mut self, id: u64) {
        if let Some(mut client) = self.controls.remove(&id) {
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
        self.pending_reloads.retain(|&waiting| waiting != id);
        self.operators.waiting.retain(|(waiting, _)| *waiting != id);
    }

    /// Closes connections past their deadline and writes the refusal summaries that are due.
    pub(super) fn expire_controls(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .controls
            .iter()
            .filter(|(_, client)| now >= client.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(client) = self.controls.get(&id)
                && self.operators.refusals.allow("silent", now)
            {
                let what = if client.asked {
                    format!("its answer was not written within {} s", CONTROL_TIMEOUT.as_secs())
                } else {
                    format!("no whole request within {} s", REQUEST_TIMEOUT.as_secs())
                };
                info!(
                    "closed an operator connection from pid {} (uid {}): {what}",
                    client.pid, client.uid
                );
            }
            self.close_control(id);
        }
        for (kind, count) in self.operators.refusals.summaries(now) {
            info!(
                target: logging::NOTICE,
                "{count} more operator connections turned away ({kind}) in the last {} s",
                REFUSAL_LOG_WINDOW.as_secs()
            );
        }
    }

    /// Carries out one request. `None`: the answer comes later (reload).
    fn answer(&mut self, id: u64, request: ControlRequest) -> Option<ControlReply> {
        let now = unix_now();
        let reply = match request {
            ControlRequest::Status => ControlReply::Status(Box::new(self.status())),
            ControlRequest::Who { room } => self.who(room.as_deref()),
            ControlRequest::Rooms => ControlReply::Rooms(self.rooms.room_rows()),
            ControlRequest::Kick { nick, reason } => match self.rooms.find(&nick) {
                Some(member) => {
                    let nick = self.rooms.nick(member).unwrap_or(&nick).to_string();
                    self.kick(member, clean(reason));
                    ControlReply::Done(format!("kicked {nick}"))
                }
                None => ControlReply::Failed(format!("no such nick: {nick}")),
            },
            ControlRequest::Bans => {
                let mut bans: Vec<Ban> =
                    self.moderation.bans.iter().filter(|ban| ban.in_force(now)).cloned().collect();
                bans.sort_by_key(|ban| ban.since);
                ControlReply::Bans(bans)
            }
            ControlRequest::Motd { text: None } => ControlReply::Motd(self.moderation.motd.clone()),
            change @ (ControlRequest::Ban { .. }
            | ControlRequest::Unban { .. }
            | ControlRequest::Mute { .. }
            | ControlRequest::Unmute { .. }
            | ControlRequest::Motd { text: Some(_) }) => return self.change(id, change, now),
            ControlRequest::Announce { room, text } => self.announce(room.as_deref(), &text),
            ControlRequest::Reload => match self.master {
                Some(master) => {
                    self.pending_reloads.push(id);
                    self.send_to([master], &Event::Reload);
                    return None;
                }
                None => ControlReply::Failed(
                    "no master is linked to this broker; send SIGHUP to chatd instead".into(),
                ),
            },
            ControlRequest::Shutdown { grace_seconds, message } => {
                let mut text = if grace_seconds == 0 {
                    "The server is shutting down now.".to_string()
                } else {
                    format!("The server is shutting down in {grace_seconds} s.")
                };
                if let Some(message) = clean(message) {
                    text = format!("{text} {message}");
                }
                self.announce_everywhere(&text);
                self.stop_at = Some(Instant::now() + Duration::from_secs(grace_seconds));
                info!(target: logging::NOTICE, "operator asked for a shutdown in {grace_seconds} s");
                ControlReply::Done(format!("shutting down in {grace_seconds} s"))
            }
        };
        Some(reply)
    }

    fn status(&mut self) -> Status {
        let (messages_per_second, deliveries_per_second) = self.stats.rates(Instant::now());
        let now = unix_now();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            master: self.master_figures.clone(),
            broker_pid: std::process::id(),
            broker_started_at: self.started_at,
            now,
            sessions: self.peers.values().filter(|peer| peer.session.is_some()).count() as u64,
            users: self.rooms.member_count() as u64,
            rooms: self.rooms.room_count() as u64,
            messages: self.stats.messages,
            deliveries: self.stats.deliveries,
            messages_per_second,
            deliveries_per_second,
            bytes_received: self.stats.bytes_received,
            bytes_sent: self.stats.bytes_sent,
            drops: self.stats.drops(),
            bans: self.moderation.bans.iter().filter(|ban| ban.in_force(now)).count() as u64,
            mutes: self.moderation.mutes.iter().filter(|mute| mute.in_force(now)).count() as u64,
            fanout_latency: self.stats.histogram(),
        }
    }

    fn who(&self, room: Option<&str>) -> ControlReply {
        let key = match room {
            Some(name) => match self.rooms.room_key(name) {
                Some(key) => Some(key),
                None => return ControlReply::Failed(format!("no such room: {name}")),
            },
            None => None,
        };
        let now = unix_now();
        let instant = Instant::now();
        let mut rows: Vec<UserRow> = self
            .peers
            .iter()
            .filter(|(_, peer)| !peer.kicked)
            .filter_map(|(&id, peer)| {
                let nick = self.rooms.nick(id)?;
                let room = self.rooms.room_of(id)?;
                if key.as_deref().is_some_and(|key| names::fold(room) != key) {
                    return None;
                }
                Some(UserRow {
                    nick: nick.to_string(),
                    room: room.to_string(),
                    peer: peer.client.clone(),
                    pid: peer.pid.max(0) as u32,
                    connected_seconds: now.saturating_sub(peer.connected_at),
                    idle_seconds: instant.saturating_duration_since(peer.last_active).as_secs(),
                    away: self.rooms.away_of(id).map(str::to_string),
                    muted: self.moderation.is_muted(nick, now),
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            (names::fold(&a.room), names::fold(&a.nick))
                .cmp(&(names::fold(&b.room), names::fold(&b.nick)))
        });
        ControlReply::Users(rows)
    }

    fn announce(&mut self, room: Option<&str>, raw: &str) -> ControlReply {
        let Some(text) = clean(Some(raw.to_string())) else {
            return ControlReply::Failed("the announcement is empty".into());
        };
        match room {
            None => {
                self.announce_everywhere(&text);
                ControlReply::Done("announced in every room".into())
            }
            Some(name) => match self.rooms.room_key(name) {
                None => ControlReply::Failed(format!("no such room: {name}")),
                Some(key) => {
                    self.deliver(vec![super::Delivery {
                        to: super::Audience::Room(key),
                        event: Event::Announcement { text },
                    }]);
                    ControlReply::Done(format!("announced in {name}"))
                }
            },
        }
    }

    /// A system message to every session, logged in or not.
    fn announce_everywhere(&mut self, text: &str) {
        let sessions: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.session.is_some() && !peer.kicked)
            .map(|(&id, _)| id)
            .collect();
        self.send_to(sessions, &Event::Announcement { text: text.to_string() });
    }

    /// An operator's change to the moderation state: checked now, saved on the writer thread,
    /// in force (and answered) once saved. `None`: the answer comes when the save is done.
    /// One change is saved at a time; others wait their turn, so that each answer says
    /// whether that change is on disk.
    fn change(&mut self, id: u64, request: ControlRequest, now: u64) -> Option<ControlReply> {
        if self.operators.in_flight.is_some() {
            self.operators.waiting.push_back((id, request));
            return None;
        }
        let (change, done) = match self.prepare(request, now) {
            Ok(prepared) => prepared,
            Err(why) => return Some(ControlReply::Failed(why)),
        };
        if let Some(why) = &self.state_unreadable {
            return Some(ControlReply::Failed(format!(
                "{} could not be read ({why}): not overwriting it; fix it and run chatctl reload",
                self.state_path.display()
            )));
        }
        let mut staged = self.moderation.clone();
        staged.apply(&change);
        let generation = self.operators.writer.submit(staged.clone());
        self.operators.in_flight = Some(InFlight { id, generation, change, staged, done });
        None
    }

    /// Checks an operator's change against the state in force: what it changes and what the
    /// operator is told once it is saved, or why it is refused.
    fn prepare(&self, request: ControlRequest, now: u64) -> Result<(Change, String), String> {
        Ok(match request {
            ControlRequest::Ban { target, seconds, reason } => {
                let target = target.parse::<BanTarget>()?;
                let until = seconds.map(|s| now.saturating_add(s));
                let done = format!("banned {target}{}", for_how_long(seconds));
                (Change::Ban(Ban { target, since: now, until, reason: clean(reason) }), done)
            }
            ControlRequest::Unban { target } => {
                let target = target.parse::<BanTarget>()?;
                if !self.moderation.bans.iter().any(|ban| ban.target == target) {
                    return Err(format!("{target} is not banned"));
                }
                (Change::Unban(target.clone()), format!("lifted the ban on {target}"))
            }
            ControlRequest::Mute { nick, seconds } => {
                let member = self.rooms.find(&nick).ok_or(format!("no such nick: {nick}"))?;
                let nick = self.rooms.nick(member).unwrap_or(&nick).to_string();
                let until = seconds.map(|s| now.saturating_add(s));
                let done = format!("muted {nick}{}", for_how_long(seconds));
                (Change::Mute(Mute { nick, since: now, until }), done)
            }
            ControlRequest::Unmute { nick } => {
                if !self.moderation.mutes.iter().any(|mute| names::passes_for(&mute.nick, &nick)) {
                    return Err(format!("{nick} is not muted"));
                }
                (Change::Unmute(nick.clone()), format!("unmuted {nick}"))
            }
            ControlRequest::Motd { text: Some(raw) } => {
                let lines: Vec<String> = raw
                    .lines()
                    .map(|line| {
                        text::sanitize(line).trim_end().chars().take(text::MAX_LINE_BYTES).collect()
                    })
                    .take(50)
                    .collect();
                let motd = lines.join("\n");
                if motd.trim().is_empty() {
                    (Change::Motd(None), "cleared the message of the day".into())
                } else {
                    (Change::Motd(Some(motd)), "set the message of the day".into())
                }
            }
            other => return Err(format!("not a change: {other:?}")),
        })
    }

    /// The writer thread finished a write: the operator change waiting for it takes effect
    /// (or is refused, changing nothing), the next waiting change goes, and a deferred reload
    /// happens.
    pub(super) fn state_saved(&mut self) {
        let Some((generation, result)) = self.operators.writer.take_outcome() else { return };
        match (&result, self.operators.save_failing) {
            (Err(err), false) => {
                error!("{err}; bans, mutes and the message of the day in force are not all saved");
                self.operators.save_failing = true;
            }
            (Ok(()), true) => {
                info!("{} saved again", self.state_path.display());
                self.operators.save_failing = false;
            }
            _ => {}
        }
        if self.operators.in_flight.as_ref().is_some_and(|flight| flight.generation <= generation)
            && let Some(flight) = self.operators.in_flight.take()
        {
            let reply = match result {
                Ok(()) => {
                    self.moderation = flight.staged;
                    ControlReply::Done(self.changed(&flight.change, flight.done))
                }
                Err(err) => {
                    // Anything submitted since carried the change: write the state in force.
                    if !self.operators.writer.idle() {
                        self.operators.writer.submit(self.moderation.clone());
                    }
                    ControlReply::Failed(format!("{err}; nothing was changed"))
                }
            };
            self.reply(flight.id, &reply);
        }
        while self.operators.in_flight.is_none() {
            let Some((id, request)) = self.operators.waiting.pop_front() else { break };
            if let Some(reply) = self.change(id, request, unix_now()) {
                self.reply(id, &reply);
            }
        }
        if self.operators.reload_deferred
            && self.operators.in_flight.is_none()
            && self.operators.writer.idle()
        {
            self.operators.reload_deferred = false;
            self.reload_moderation();
        }
    }

    /// What a saved change does beyond the state (flags, kicks, the log); the operator's answer.
    fn changed(&mut self, change: &Change, done: String) -> String {
        match change {
            Change::Ban(ban) => {
                let covered = self.covered_by(&ban.target);
                for &id in &covered {
                    self.kick(id, Some(ban_reason(ban.reason.as_deref())));
                }
                info!(
                    target: logging::NOTICE,
                    "operator {done}{}",
                    ban.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                );
                format!("{done}; {} session(s) disconnected", covered.len())
            }
            Change::Mute(mute) => {
                if let Some(member) = self.rooms.find(&mute.nick) {
                    self.rooms.set_muted(member, true);
                }
                info!(target: logging::NOTICE, "operator {done}");
                done
            }
            Change::Unmute(nick) => {
                if let Some(member) = self.rooms.find(nick) {
                    self.rooms.set_muted(member, false);
                }
                done
            }
            Change::Unban(_) | Change::Motd(_) => done,
        }
    }

    /// Sessions a new ban covers.
    fn covered_by(&self, target: &BanTarget) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, peer)| !peer.is_master && !peer.kicked)
            .filter(|&(&id, peer)| match target {
                BanTarget::Nick(_) => {
                    self.rooms.nick(id).is_some_and(|nick| target.covers_nick(nick))
                }
                BanTarget::Net(_) => peer
                    .client
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|addr| target.covers_ip(addr.ip())),
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// A user changed nick: a mute (in force, or being saved) follows at once, and is saved in
    /// the background (the newest state wins; a failure is logged once, when saving starts
    /// failing).
    pub(super) fn nick_changed(&mut self, old: &str, new: &str, now: u64) {
        let staged = self.operators.in_flight.as_ref().map(|flight| &flight.staged);
        if !self.moderation.is_muted(old, now) && !staged.is_some_and(|s| s.is_muted(old, now)) {
            return;
        }
        self.moderation.rename_mute(old, new);
        if let Some(flight) = &mut self.operators.in_flight {
            flight.staged.rename_mute(old, new);
        }
        if self.state_unreadable.is_some() {
            return;
        }
        let state = match &self.operators.in_flight {
            Some(flight) => flight.staged.clone(),
            None => self.moderation.clone(),
        };
        self.operators.writer.submit(state);
    }

    /// Reads the state file again (SIGHUP, `chatctl reload`): hand edits take effect. Waits
    /// for a save under way, which would otherwise overwrite what was just read.
    pub(super) fn reload_moderation(&mut self) {
        if self.operators.in_flight.is_some() || !self.operators.writer.idle() {
            self.operators.reload_deferred = true;
            return;
        }
        check_state_dir(&self.state_path);
        let exists = self.state_path.exists();
        match Moderation::load(&self.state_path) {
            Ok(state) if exists => {
                info!(
                    "moderation state reloaded from {} ({} ban(s), {} mute(s))",
                    self.state_path.display(),
                    state.bans.len(),
                    state.mutes.len()
                );
                self.moderation = state;
                self.state_unreadable = None;
            }
            Ok(state) => {
                info!(
                    "moderation state: {} does not exist; no bans, mutes or message of the day",
                    self.state_path.display()
                );
                self.moderation = state;
                self.state_unreadable = None;
            }
            Err(err) => {
                error!("{err}; keeping the bans and mutes in force");
                self.state_unreadable = Some(err.to_string());
            }
        }
    }

    /// The master answered a reload (or went away): tell the operators who asked.
    pub(super) fn reloaded(&mut self, error: Option<String>) {
        let reply = match error {
            None => ControlReply::Done("configuration reloaded".into()),
            Some(err) => {
                ControlReply::Failed(format!("reload failed, the old configuration stays: {err}"))
            }
        };
        for id in std::mem::take(&mut self.pending_reloads) {
            self.reply(id, &reply);
        }
    }
}

/// Answers a refused connection in one non-blocking write (a fresh socket's buffer takes the
/// small frame); the caller then drops it, without having read what it sent.
fn refuse(stream: &mut UnixStream, reply: &ControlReply) {
    if let Ok(frame) = codec::frame(reply) {
        let _ = stream.write(&frame);
    }
}

/// Operator text, cleaned like user text; `None` if nothing is left.
fn clean(raw: Option<String>) -> Option<String> {
    let clean = text::sanitize(&raw?);
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.chars().take(text::MAX_LINE_BYTES).collect())
}

fn for_how_long(seconds: Option<u64>) -> String {
    match seconds {
        Some(seconds) => {
            format!(" for {}", humantime::format_duration(Duration::from_secs(seconds)))
        }
        None => String::new(),
    }
}
