//! The answer to each operator request (`chatctl`): the figures, who is online, rooms, kicks,
//! bans listed, announcements, reload and shutdown. Changes to the moderation state are handed
//! to [`super::state_writer`], which answers them once they are on disk.
//!
//! It must not read or write a connection (that is [`super::client`]'s) and never blocks: the
//! only answers that wait are a reload's (the master's, over its link) and a change's.

use std::time::{Duration, Instant};

use log::info;

use super::super::Broker;
use super::super::room::{Audience, Delivery};
use super::super::store_thread::Job;
use crate::clock::unix_now;
use crate::logging;
use crate::moderation::{Ban, Mute};
use crate::names;
use crate::proto::control::{ControlReply, ControlRequest, Status, UserRow};
use crate::proto::master::{MasterEvent, UpgradeAnswer};
use crate::proto::{Event, PROTOCOL_VERSION};
use crate::text;

/// How long an operator's store request may take (a backup copies the whole database).
const STORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

impl Broker {
    /// Carries out one request. `None`: the answer comes later (reload).
    pub(super) fn answer(&mut self, id: u64, request: ControlRequest) -> Option<ControlReply> {
        let now = unix_now();
        let reply = match request {
            ControlRequest::Accounts(request) => self.accounts_request(request),
            ControlRequest::Status => ControlReply::Status(Box::new(self.status())),
            ControlRequest::Who { room } => self.who(room.as_deref()),
            ControlRequest::Rooms => ControlReply::Rooms(self.rooms.room_rows()),
            ControlRequest::Kick { nick, reason } => match self.rooms.find(&nick) {
                Some(member) => {
                    let nick = self.rooms.nick(member).unwrap_or(&nick).to_string();
                    self.kick(member, clean(reason));
                    ControlReply::Done(format!("kicked {nick}"))
                }
                None => match self.kick_elsewhere(&nick, clean(reason)) {
                    Some(node) => ControlReply::Done(format!("asked node {node} to kick {nick}")),
                    None => ControlReply::Failed(format!("no such nick: {nick}")),
                },
            },
            ControlRequest::Bans => {
                let mut bans: Vec<Ban> =
                    self.moderation.bans.iter().filter(|ban| ban.in_force(now)).cloned().collect();
                bans.sort_by_key(|ban| ban.since);
                ControlReply::Bans(bans)
            }
            ControlRequest::Mutes => {
                let mut mutes: Vec<Mute> = self
                    .moderation
                    .mutes
                    .iter()
                    .filter(|mute| mute.in_force(now))
                    .cloned()
                    .collect();
                mutes.sort_by_key(|mute| mute.since);
                ControlReply::Mutes(mutes)
            }
            ControlRequest::Motd { text: None } => ControlReply::Motd(self.moderation.motd.clone()),
            change @ (ControlRequest::Ban { .. }
            | ControlRequest::Unban { .. }
            | ControlRequest::Mute { .. }
            | ControlRequest::Unmute { .. }
            | ControlRequest::Motd { text: Some(_) }) => return self.change(id, change, now),
            ControlRequest::Announce { room, text } => self.announce(room.as_deref(), &text),
            ControlRequest::Reload => match self.master {
                Some(_) => {
                    self.pending_reloads.push(id);
                    self.tell_master(&MasterEvent::Reload);
                    return None;
                }
                None => ControlReply::Failed(
                    "no master is linked to this broker; send SIGHUP to chatd instead".into(),
                ),
            },
            ControlRequest::Upgrade { binary } => match self.master {
                Some(_) => {
                    info!(target: logging::NOTICE, "an operator asked for an upgrade");
                    self.pending_upgrades.push(id);
                    self.tell_master(&MasterEvent::Upgrade { binary });
                    return None;
                }
                None => ControlReply::Failed(
                    "no master is linked to this broker: start chatd again (it adopts this \
                     broker) and upgrade then"
                        .into(),
                ),
            },
            ControlRequest::Backup => return self.backup(id),
            ControlRequest::History { room, since, limit } => {
                let job = Job::Since {
                    asker: id,
                    room: names::fold(names::bare_room(&room)),
                    since,
                    limit: limit.min(crate::ctl::HISTORY_LIMIT) as usize,
                };
                return self.ask_store(id, job);
            }
            ControlRequest::Forget { nick } => {
                let in_memory = self.rooms.forget_nick(&nick);
                info!(target: logging::NOTICE, "an operator asked to forget {nick} ({in_memory} lines in memory)");
                if !self.storage.is_on() {
                    return Some(ControlReply::Done(format!(
                        "forgot {nick}: {in_memory} lines in memory deleted (nothing is stored: history_days = 0)"
                    )));
                }
                let nick_key = names::fold(&nick);
                return self.ask_store(id, Job::Forget { asker: id, nick, nick_key });
            }
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

    /// Hands an operator's query to the store; `None`: the answer comes when it is done.
    fn ask_store(&mut self, id: u64, job: Job) -> Option<ControlReply> {
        self.hand_to_store();
        match self.storage.ask(id, job) {
            Ok(()) => {
                if let Some(client) = self.controls.get_mut(&id) {
                    client.wait_until(Instant::now() + STORE_ANSWER_TIMEOUT);
                }
                None
            }
            Err(why) => Some(ControlReply::Failed(why)),
        }
    }

    /// `chatctl backup`: the copy goes into the file that came with the request.
    fn backup(&mut self, id: u64) -> Option<ControlReply> {
        let file = self.controls.get_mut(&id).and_then(|client| client.take_attached());
        let Some(file) = file else {
            return Some(ControlReply::Failed(
                "a backup request must come with the file to write (use chatctl backup FILE)"
                    .into(),
            ));
        };
        let file = std::fs::File::from(file);
        match file.metadata() {
            Ok(meta) if meta.is_file() && meta.len() == 0 => {}
            Ok(_) => {
                return Some(ControlReply::Failed(
                    "the backup file must be an empty regular file".into(),
                ));
            }
            Err(err) => {
                return Some(ControlReply::Failed(format!("cannot use the backup file: {err}")));
            }
        }
        if !self.storage.is_on() {
            return Some(ControlReply::Failed(
                "nothing is stored to back up (history_days = 0)".into(),
            ));
        }
        info!(target: logging::NOTICE, "an operator asked for a backup of the database");
        self.ask_store(id, Job::Backup { asker: id, file })
    }

    fn status(&mut self) -> Status {
        let (messages_per_second, deliveries_per_second) = self.stats.rates(Instant::now());
        let now = unix_now();
        Status {
            version: crate::release::version().to_string(),
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
            store: self.storage.figures(),
            accounts: self.accounts.is_loaded().then(|| self.accounts.count() as u64),
            cluster: self.cluster_status(),
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
                    tls: self.rooms.is_tls(id),
                    registered: self.rooms.account_of(id).is_some(),
                    node: self.cluster_node().map(str::to_string),
                })
            })
            .collect();
        rows.extend(self.users_elsewhere(key.as_deref(), now));
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
                match self.announce_elsewhere(&text) {
                    true => ControlReply::Done("announced in every room on every node".into()),
                    false => ControlReply::Done("announced in every room".into()),
                }
            }
            Some(name) => match self.rooms.room_key(name) {
                None => ControlReply::Failed(format!("no such room: {name}")),
                Some(key) => {
                    self.deliver(vec![Delivery {
                        to: Audience::Room(key),
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

    /// The master answered a reload (or went away): tell the operators who asked.
    pub(in crate::broker) fn reloaded(&mut self, error: Option<String>) {
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

    /// The master answered an upgrade (or went away): tell the operators who asked.
    pub(in crate::broker) fn upgrade_answered(&mut self, answer: UpgradeAnswer) {
        let reply = match answer {
            UpgradeAnswer::Starting { binary, version, generation } => ControlReply::Done(format!(
                "upgrading to chatd {version} from {binary} (generation {generation})"
            )),
            UpgradeAnswer::Refused(reason) => ControlReply::Failed(reason),
        };
        for id in std::mem::take(&mut self.pending_upgrades) {
            self.reply(id, &reply);
        }
    }
}

/// Operator text, cleaned like user text; `None` if nothing is left.
pub(super) fn clean(raw: Option<String>) -> Option<String> {
    let clean = text::sanitize(&raw?);
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.chars().take(text::MAX_LINE_BYTES).collect())
}

/// How long a ban or a mute lasts, as the operator is told (nothing for one without end).
pub(super) fn for_how_long(seconds: Option<u64>) -> String {
    match seconds {
        Some(seconds) => {
            format!(" for {}", humantime::format_duration(Duration::from_secs(seconds)))
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_text_is_cleaned_and_nothing_left_is_none() {
        assert_eq!(clean(None), None);
        assert_eq!(clean(Some("   ".into())), None);
        assert_eq!(clean(Some("  spam, again ".into())), Some("spam, again".into()));
        let cleaned = clean(Some("evil\x1b[2Jtext".into())).unwrap_or_default();
        assert!(!cleaned.contains('\x1b'), "{cleaned:?}");
        let long = clean(Some("x".repeat(text::MAX_LINE_BYTES + 10))).unwrap_or_default();
        assert_eq!(long.chars().count(), text::MAX_LINE_BYTES);
    }

    #[test]
    fn how_long_is_said_only_for_a_limited_time() {
        assert_eq!(for_how_long(None), "");
        assert_eq!(for_how_long(Some(90)), " for 1m 30s");
        assert_eq!(for_how_long(Some(3600)), " for 1h");
    }
}
