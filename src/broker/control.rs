//! The broker's side of `control.sock`: who may use it, and the answer to each operator
//! request (`chatctl`).
//!
//! The socket (bound by `master::listen`) is mode 0666 on purpose: access is decided here, from the caller's credentials
//! (SO_PEERCRED, SO_PEERGROUPS), so that a refused caller gets a clear answer and the refusal is
//! logged. Allowed: root, the daemon's own user, and members of the admin group. One
//! connection carries one request and its reply; a connection that says nothing for
//! [`CONTROL_TIMEOUT`] is closed. Requests never block the broker: the only one that waits is
//! `reload`, whose answer comes from the master over its link.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event as MioEvent;
use mio::net::UnixStream;
use mio::{Interest, Token};

use super::{Broker, ban_reason};
use crate::channel::{Channel, ReadOutcome};
use crate::logging;
use crate::moderation::{Ban, BanTarget, Moderation, StateError, unix_now};
use crate::names;
use crate::proto::control::{
    CONTROL_VERSION, ControlFrame, ControlReply, ControlRequest, Status, UserRow,
};
use crate::proto::{Event, PROTOCOL_VERSION};
use crate::sys;
use crate::text;

/// How long an operator's connection may take to send its request and read the answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes queued for one operator (a `who` of 10,000 users is well below).
const CONTROL_QUEUE_BYTES: usize = 16 << 20;

/// Who may use the control socket.
#[derive(Debug)]
pub struct Access {
    uid: u32,
    user: String,
    group: Option<(String, u32)>,
}

impl Access {
    pub fn new(uid: u32, group: Option<&str>) -> Access {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name);
        let group = group.and_then(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some((name.to_string(), group.gid.as_raw())),
            Ok(None) => {
                info!("admin group {name} does not exist; only root and {user} may use chatctl");
                None
            }
            Err(err) => {
                warn!("cannot look up admin group {name}: {err}");
                None
            }
        });
        Access { uid, user, group }
    }

    /// Whether the process behind `stream` may use the control socket.
    fn check(&self, stream: &UnixStream) -> Result<(), String> {
        let uid = sys::peer_uid(stream).map_err(|err| format!("cannot read credentials: {err}"))?;
        if uid == 0 || uid == self.uid {
            return Ok(());
        }
        if let Some((_, gid)) = &self.group {
            let primary = sys::peer_gid(stream).ok();
            let groups = sys::peer_groups(stream).unwrap_or_default();
            if primary == Some(*gid) || groups.contains(gid) {
                return Ok(());
            }
        }
        let group = match &self.group {
            Some((name, _)) => format!(", or members of group {name}"),
            None => String::new(),
        };
        Err(format!("permission denied: only root, user {}{group} may control chatd", self.user))
    }
}

/// One operator's connection.
pub struct ControlClient {
    channel: Channel,
    pid: i32,
    uid: u32,
    opened: Instant,
    allowed: Result<(), String>,
    /// The reply is queued; close once it is written.
    answered: bool,
}

impl ControlClient {
    pub fn deadline(&self) -> Instant {
        self.opened + CONTROL_TIMEOUT
    }
}

impl Broker {
    pub(super) fn accept_controls(&mut self) {
        loop {
            let mut stream = match self.control.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    error!("cannot accept an operator's connection: {err}");
                    return;
                }
            };
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
            let allowed = self.access.check(&stream);
            let client = ControlClient {
                pid: sys::peer_pid(&stream).unwrap_or(0),
                uid: sys::peer_uid(&stream).unwrap_or(u32::MAX),
                channel: Channel::new(stream, CONTROL_QUEUE_BYTES),
                opened: Instant::now(),
                allowed,
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
        loop {
            let Some(client) = self.controls.get_mut(&id) else { return };
            if client.answered {
                return;
            }
            match client.channel.read_some() {
                Ok(ReadOutcome::Data { .. }) => {}
                Ok(ReadOutcome::WouldBlock) => return,
                Ok(ReadOutcome::Closed { .. }) | Err(_) => {
                    debug!("operator connection from pid {} closed before a request", client.pid);
                    self.close_control(id);
                    return;
                }
            }
            match client.channel.next_message::<ControlFrame>() {
                Ok(None) => continue,
                Ok(Some(frame)) => {
                    let (pid, uid) = (client.pid, client.uid);
                    let reply = match client.allowed.clone() {
                        Err(why) => {
                            info!(
                                target: logging::NOTICE,
                                "refused an operator request from uid {uid} (pid {pid}): not root, the daemon's user or in the admin group"
                            );
                            Some(ControlReply::Denied(why))
                        }
                        Ok(()) if frame.version != CONTROL_VERSION => {
                            Some(ControlReply::VersionMismatch { broker: CONTROL_VERSION })
                        }
                        Ok(()) => {
                            debug!("operator uid {uid} (pid {pid}): {:?}", frame.request);
                            self.answer(id, frame.request)
                        }
                    };
                    if let Some(reply) = reply {
                        self.reply(id, &reply);
                    }
                    return;
                }
                Err(err) => {
                    warn!("operator connection from pid {}: {err}", client.pid);
                    self.close_control(id);
                    return;
                }
            }
        }
    }

    /// Queues the one reply of an operator's connection; it closes once written.
    fn reply(&mut self, id: u64, reply: &ControlReply) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        client.answered = true;
        if let Err(err) = client.channel.send(reply) {
            error!("cannot answer an operator: {err}");
            self.close_control(id);
            return;
        }
        self.flush_control(id);
    }

    fn flush_control(&mut self, id: u64) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        match client.channel.flush() {
            Ok(true) if client.answered => self.close_control(id),
            Ok(_) => {}
            Err(_) => self.close_control(id),
        }
    }

    fn close_control(&mut self, id: u64) {
        if let Some(mut client) = self.controls.remove(&id) {
            let _ = self.poll.registry().deregister(client.channel.stream_mut());
        }
        self.pending_reloads.retain(|&waiting| waiting != id);
    }

    pub(super) fn expire_controls(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .controls
            .iter()
            .filter(|(_, client)| now >= client.deadline())
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            debug!("closing an operator connection that timed out");
            self.close_control(id);
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
            ControlRequest::Ban { target, seconds, reason } => {
                self.ban(&target, seconds, clean(reason), now)
            }
            ControlRequest::Unban { target } => match target.parse::<BanTarget>() {
                Err(why) => ControlReply::Failed(why),
                Ok(target) if !self.moderation.unban(&target) => {
                    ControlReply::Failed(format!("{target} is not banned"))
                }
                Ok(target) => self.saved(format!("lifted the ban on {target}")),
            },
            ControlRequest::Bans => {
                let mut bans: Vec<Ban> =
                    self.moderation.bans.iter().filter(|ban| ban.in_force(now)).cloned().collect();
                bans.sort_by_key(|ban| ban.since);
                ControlReply::Bans(bans)
            }
            ControlRequest::Mute { nick, seconds } => match self.rooms.find(&nick) {
                None => ControlReply::Failed(format!("no such nick: {nick}")),
                Some(member) => {
                    let nick = self.rooms.nick(member).unwrap_or(&nick).to_string();
                    self.moderation.mute(&nick, now, seconds.map(|s| now.saturating_add(s)));
                    self.rooms.set_muted(member, true);
                    info!(target: logging::NOTICE, "operator muted {nick}{}", for_how_long(seconds));
                    self.saved(format!("muted {nick}{}", for_how_long(seconds)))
                }
            },
            ControlRequest::Unmute { nick } => {
                if !self.moderation.unmute(&nick) {
                    ControlReply::Failed(format!("{nick} is not muted"))
                } else {
                    if let Some(member) = self.rooms.find(&nick) {
                        self.rooms.set_muted(member, false);
                    }
                    self.saved(format!("unmuted {nick}"))
                }
            }
            ControlRequest::Announce { room, text } => self.announce(room.as_deref(), &text),
            ControlRequest::Motd { text: None } => ControlReply::Motd(self.moderation.motd.clone()),
            ControlRequest::Motd { text: Some(raw) } => {
                let lines: Vec<String> = raw
                    .lines()
                    .map(|line| text::sanitize(line).trim_end().to_string())
                    .take(50)
                    .collect();
                let motd = lines.join("\n");
                if motd.trim().is_empty() {
                    self.moderation.motd = None;
                    self.saved("cleared the message of the day".into())
                } else {
                    self.moderation.motd = Some(motd);
                    self.saved("set the message of the day".into())
                }
            }
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

    fn ban(
        &mut self,
        target: &str,
        seconds: Option<u64>,
        reason: Option<String>,
        now: u64,
    ) -> ControlReply {
        let target = match target.parse::<BanTarget>() {
            Ok(target) => target,
            Err(why) => return ControlReply::Failed(why),
        };
        let ban = Ban {
            target: target.clone(),
            since: now,
            until: seconds.map(|s| now.saturating_add(s)),
            reason: reason.clone(),
        };
        self.moderation.ban(ban);
        if let Err(err) = self.save_moderation() {
            self.moderation.unban(&target);
            return ControlReply::Failed(err.to_string());
        }
        let covered: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, peer)| !peer.is_master && !peer.kicked)
            .filter(|&(&id, peer)| match &target {
                BanTarget::Nick(_) => {
                    self.rooms.nick(id).is_some_and(|nick| target.covers_nick(nick))
                }
                BanTarget::Net(_) => peer
                    .client
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|addr| target.covers_ip(addr.ip())),
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &covered {
            self.kick(id, Some(ban_reason(reason.as_deref())));
        }
        info!(
            target: logging::NOTICE,
            "operator banned {target}{}{}",
            for_how_long(seconds),
            reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        ControlReply::Done(format!(
            "banned {target}{}; {} session(s) disconnected",
            for_how_long(seconds),
            covered.len()
        ))
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

    /// Saves the moderation state and turns the outcome into a reply.
    fn saved(&mut self, done: String) -> ControlReply {
        match self.save_moderation() {
            Ok(()) => ControlReply::Done(done),
            Err(err) => ControlReply::Failed(err.to_string()),
        }
    }

    pub(super) fn save_moderation(&mut self) -> Result<(), StateError> {
        if let Some(why) = &self.state_unreadable {
            return Err(StateError::Write {
                path: self.state_path.clone(),
                source: io::Error::other(format!(
                    "not overwriting it: it could not be read at start ({why}); fix it and run chatctl reload"
                )),
            });
        }
        self.moderation.save(&self.state_path, unix_now())
    }

    /// Reads the state file again (SIGHUP, `chatctl reload`): hand edits take effect.
    pub(super) fn reload_moderation(&mut self) {
        match Moderation::load(&self.state_path) {
            Ok(state) => {
                self.moderation = state;
                self.state_unreadable = None;
                info!("moderation state reloaded from {}", self.state_path.display());
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
