//! Operators' changes to the moderation state (ban, unban, mute, unmute, motd) on their way
//! to disk: each is checked against the state in force, saved by the writer thread, and in
//! force (and answered) only once it is saved; one at a time, the others wait their turn. Also
//! the state file's reload and a mute following its nick.
//!
//! It must not write the file on the loop's thread (the writer thread does, off the loop) and
//! does not read or write connections (answers go through [`Broker::reply`]).

use std::collections::VecDeque;
use std::path::Path;

use log::{error, info, warn};

use super::super::Broker;
use super::super::dispatch::ban_reason;
use super::super::room::Rooms;
use super::commands::{clean, for_how_long};
use crate::clock::unix_now;
use crate::logging;
use crate::moderation::{self, Ban, BanTarget, Change, Moderation, Mute, StateWriter};
use crate::names;
use crate::proto::control::{ControlReply, ControlRequest};
use crate::text;

/// The state writer and the operator changes waiting for it.
pub(super) struct Saving {
    /// Writes `state.toml` off the loop; wakes the loop (`STATE_SAVED`) after each write.
    pub(super) writer: StateWriter,
    /// The operator change being saved: not in force until it is on disk.
    in_flight: Option<InFlight>,
    /// Operators' changes waiting for the one in flight (at most one per control connection).
    pub(super) waiting: VecDeque<(u64, ControlRequest)>,
    /// The last write failed (logged once, until one succeeds again).
    save_failing: bool,
    /// A reload arrived while a save was under way: done once it is over.
    reload_deferred: bool,
}

impl Saving {
    /// Nothing saved yet; `writer` writes the file.
    pub(super) fn new(writer: StateWriter) -> Saving {
        Saving {
            writer,
            in_flight: None,
            waiting: VecDeque::new(),
            save_failing: false,
            reload_deferred: false,
        }
    }
}

/// The id of a change a cluster's other node made: nobody here waits for its answer, and it
/// is not sent back to the others.
pub(in crate::broker) const FROM_CLUSTER: u64 = u64::MAX;

/// An operator's change on its way to disk.
struct InFlight {
    /// The control connection waiting for the answer ([`FROM_CLUSTER`]: none).
    id: u64,
    /// What was asked, for the other nodes of a cluster once it is in force.
    request: ControlRequest,
    generation: u64,
    change: Change,
    /// The state in force with the change applied: in force once saved.
    staged: Moderation,
    /// What the operator is told once it is.
    done: String,
}

/// Warns if the daemon cannot write the state file's directory: every change an operator
/// asks for would be refused.
pub(super) fn check_state_dir(state_path: &Path) {
    let Some(dir) = state_path.parent() else { return };
    if let Err(why) = moderation::check_writable(dir) {
        warn!(
            "the state directory {} is not writable ({why}): chatctl ban, unban, mute, unmute and motd will be refused until it is",
            dir.display()
        );
    }
}

impl Broker {
    /// An operator's change to the moderation state: checked now, saved on the writer thread,
    /// in force (and answered) once saved. `None`: the answer comes when the save is done.
    /// One change is saved at a time; others wait their turn, so that each answer says
    /// whether that change is on disk.
    pub(in crate::broker) fn change(
        &mut self,
        id: u64,
        request: ControlRequest,
        now: u64,
    ) -> Option<ControlReply> {
        if self.operators.saving.in_flight.is_some() {
            self.operators.saving.waiting.push_back((id, request));
            return None;
        }
        let asked = request.clone();
        let (change, done) = match prepare(&self.moderation, &self.rooms, request, now) {
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
        let generation = self.operators.saving.writer.submit(staged.clone());
        self.operators.saving.in_flight =
            Some(InFlight { id, request: asked, generation, change, staged, done });
        None
    }

    /// The writer thread finished a write: the operator change waiting for it takes effect
    /// (or is refused, changing nothing), the next waiting change goes, and a deferred reload
    /// happens.
    pub(in crate::broker) fn state_saved(&mut self) {
        let Some((generation, result)) = self.operators.saving.writer.take_outcome() else {
            return;
        };
        match (&result, self.operators.saving.save_failing) {
            (Err(err), false) => {
                error!("{err}; bans, mutes and the message of the day in force are not all saved");
                self.operators.saving.save_failing = true;
            }
            (Ok(()), true) => {
                info!("{} saved again", self.state_path.display());
                self.operators.saving.save_failing = false;
            }
            _ => {}
        }
        if self
            .operators
            .saving
            .in_flight
            .as_ref()
            .is_some_and(|flight| flight.generation <= generation)
            && let Some(flight) = self.operators.saving.in_flight.take()
        {
            let reply = match result {
                Ok(()) => {
                    self.moderation = flight.staged;
                    if flight.id != FROM_CLUSTER {
                        self.moderation_elsewhere(flight.request);
                    }
                    ControlReply::Done(self.changed(&flight.change, flight.done))
                }
                Err(err) => {
                    // Anything submitted since carried the change: write the state in force.
                    if !self.operators.saving.writer.idle() {
                        self.operators.saving.writer.submit(self.moderation.clone());
                    }
                    ControlReply::Failed(format!("{err}; nothing was changed"))
                }
            };
            self.reply(flight.id, &reply);
        }
        while self.operators.saving.in_flight.is_none() {
            let Some((id, request)) = self.operators.saving.waiting.pop_front() else { break };
            if let Some(reply) = self.change(id, request, unix_now()) {
                self.reply(id, &reply);
            }
        }
        if self.operators.saving.reload_deferred
            && self.operators.saving.in_flight.is_none()
            && self.operators.saving.writer.idle()
        {
            self.operators.saving.reload_deferred = false;
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
            .filter(|(_, peer)| !peer.channel.is_master() && !peer.kicked)
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
    pub(in crate::broker) fn nick_changed(&mut self, old: &str, new: &str, now: u64) {
        let staged = self.operators.saving.in_flight.as_ref().map(|flight| &flight.staged);
        if !self.moderation.is_muted(old, now) && !staged.is_some_and(|s| s.is_muted(old, now)) {
            return;
        }
        self.moderation.rename_mute(old, new);
        if let Some(flight) = &mut self.operators.saving.in_flight {
            flight.staged.rename_mute(old, new);
        }
        if self.state_unreadable.is_some() {
            return;
        }
        let state = match &self.operators.saving.in_flight {
            Some(flight) => flight.staged.clone(),
            None => self.moderation.clone(),
        };
        self.operators.saving.writer.submit(state);
    }

    /// Reads the state file again (SIGHUP, `chatctl reload`): hand edits take effect. Waits
    /// for a save under way, which would otherwise overwrite what was just read.
    pub(in crate::broker) fn reload_moderation(&mut self) {
        if self.operators.saving.in_flight.is_some() || !self.operators.saving.writer.idle() {
            self.operators.saving.reload_deferred = true;
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
}

/// Checks an operator's change against the state in force: what it changes and what the
/// operator is told once it is saved, or why it is refused.
fn prepare(
    moderation: &Moderation,
    rooms: &Rooms,
    request: ControlRequest,
    now: u64,
) -> Result<(Change, String), String> {
    Ok(match request {
        ControlRequest::Ban { target, seconds, reason } => {
            let target = target.parse::<BanTarget>()?;
            let until = seconds.map(|s| now.saturating_add(s));
            let done = format!("banned {target}{}", for_how_long(seconds));
            (Change::Ban(Ban { target, since: now, until, reason: clean(reason) }), done)
        }
        ControlRequest::Unban { target } => {
            let target = target.parse::<BanTarget>()?;
            if !moderation.bans.iter().any(|ban| ban.target == target) {
                return Err(format!("{target} is not banned"));
            }
            (Change::Unban(target.clone()), format!("lifted the ban on {target}"))
        }
        ControlRequest::Mute { nick, seconds } => {
            // In a cluster, a member of another node is muted there and here alike.
            let nick = match rooms.find(&nick) {
                Some(member) => rooms.nick(member).unwrap_or(&nick).to_string(),
                None => rooms.held_elsewhere_as(&nick).ok_or(format!("no such nick: {nick}"))?,
            };
            let until = seconds.map(|s| now.saturating_add(s));
            let done = format!("muted {nick}{}", for_how_long(seconds));
            (Change::Mute(Mute { nick, since: now, until }), done)
        }
        ControlRequest::Unmute { nick } => {
            if !moderation.mutes.iter().any(|mute| names::passes_for(&mute.nick, &nick)) {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const NOW: u64 = 1_000_000;

    fn rooms_with(nick: &str) -> Rooms {
        let mut rooms = Rooms::new(Instant::now());
        rooms.login(1, 1001, nick);
        rooms
    }

    fn prepared(
        moderation: &Moderation,
        request: ControlRequest,
    ) -> Result<(Change, String), String> {
        prepare(moderation, &rooms_with("Alice"), request, NOW)
    }

    #[test]
    fn a_ban_runs_from_now_for_its_seconds_with_its_reason_cleaned() {
        let request = ControlRequest::Ban {
            target: "192.0.2.7".into(),
            seconds: Some(60),
            reason: Some("  flooding ".into()),
        };
        let (change, done) = prepared(&Moderation::default(), request).expect("a ban");
        let target = "192.0.2.7".parse::<BanTarget>().expect("an address");
        let ban =
            Ban { target, since: NOW, until: Some(NOW + 60), reason: Some("flooding".into()) };
        assert_eq!(change, Change::Ban(ban));
        assert_eq!(done, "banned 192.0.2.7 for 1m");
    }

    #[test]
    fn a_ban_without_seconds_has_no_end_and_a_bad_target_is_refused() {
        let request = ControlRequest::Ban { target: "mallory".into(), seconds: None, reason: None };
        let (change, done) = prepared(&Moderation::default(), request).expect("a ban");
        assert!(matches!(change, Change::Ban(Ban { until: None, reason: None, .. })));
        assert_eq!(done, "banned mallory");
        let bad = ControlRequest::Ban { target: "a.b/c".into(), seconds: None, reason: None };
        assert!(prepared(&Moderation::default(), bad).is_err());
    }

    #[test]
    fn only_a_ban_in_force_can_be_lifted() {
        let unban = || ControlRequest::Unban { target: "mallory".into() };
        assert_eq!(prepared(&Moderation::default(), unban()), Err("mallory is not banned".into()));
        let mut moderation = Moderation::default();
        let target = "mallory".parse::<BanTarget>().expect("a nick");
        moderation.bans.push(Ban { target: target.clone(), since: 1, until: None, reason: None });
        let (change, done) = prepared(&moderation, unban()).expect("an unban");
        assert_eq!(change, Change::Unban(target));
        assert_eq!(done, "lifted the ban on mallory");
    }

    #[test]
    fn a_mute_needs_someone_online_and_takes_their_spelling() {
        let mute = |nick: &str| ControlRequest::Mute { nick: nick.into(), seconds: Some(30) };
        assert_eq!(prepared(&Moderation::default(), mute("bob")), Err("no such nick: bob".into()));
        let (change, done) = prepared(&Moderation::default(), mute("alice")).expect("a mute");
        let muted = Mute { nick: "Alice".into(), since: NOW, until: Some(NOW + 30) };
        assert_eq!(change, Change::Mute(muted));
        assert_eq!(done, "muted Alice for 30s");
    }

    #[test]
    fn only_a_muted_nick_can_be_unmuted() {
        let unmute = ControlRequest::Unmute { nick: "alice".into() };
        assert_eq!(
            prepared(&Moderation::default(), unmute.clone()),
            Err("alice is not muted".into())
        );
        let mut moderation = Moderation::default();
        moderation.mutes.push(Mute { nick: "Alice".into(), since: 1, until: None });
        let (change, done) = prepared(&moderation, unmute).expect("an unmute");
        assert_eq!(change, Change::Unmute("alice".into()));
        assert_eq!(done, "unmuted alice");
    }

    #[test]
    fn a_message_of_the_day_is_cleaned_kept_to_fifty_lines_and_blank_clears_it() {
        let motd = |text: &str| ControlRequest::Motd { text: Some(text.into()) };
        let (change, done) = prepared(&Moderation::default(), motd(" \n  \n")).expect("a motd");
        assert_eq!(change, Change::Motd(None));
        assert_eq!(done, "cleared the message of the day");
        let many: Vec<String> = (0..60).map(|n| format!("line {n}   ")).collect();
        let (change, done) =
            prepared(&Moderation::default(), motd(&many.join("\n"))).expect("a motd");
        let kept: Vec<String> = (0..50).map(|n| format!("line {n}")).collect();
        assert_eq!(change, Change::Motd(Some(kept.join("\n"))));
        assert_eq!(done, "set the message of the day");
    }

    #[test]
    fn a_request_that_changes_nothing_is_not_a_change() {
        assert!(prepared(&Moderation::default(), ControlRequest::Status).is_err());
        let reading = ControlRequest::Motd { text: None };
        assert!(prepared(&Moderation::default(), reading).is_err());
    }
}
