//! Request dispatch: what the broker does with each frame a session sends once it is read —
//! the session's `Hello` (version, identity, the master's vouch, address bans), then logins,
//! chat lines (numbered, in sequence, mutes in force), nick changes, rooms and quitting — and
//! an operator's kick.
//!
//! It applies requests to the [`Rooms`] and the moderation state and hands the resulting
//! deliveries to the fan-out engine ([`super::peers`]). It must not touch sockets or encode
//! frames itself, and it does not answer the master's link (that is the master link's).

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::Broker;
use super::room::{Audience, Delivery, MemberId, Rooms};
use crate::proto::{
    Event, Failure, LeaveReason, OLDEST_SESSION_PROTOCOL, PROTOCOL_VERSION, Request, SessionHello,
    serves_session_protocol,
};
use crate::sys;

/// Sessions re-register within seconds of a broker (re)start; a `Resume` later than this is
/// announced to the room like a login, since the room has no reason to believe it was there.
pub(super) const RESUME_WINDOW: Duration = Duration::from_secs(60);

/// The first line number a connection may use: a session re-sends what it kept, so it starts
/// wherever its counter is, but no session says 2^40 lines in its life.
const MAX_FIRST_SEQ: u64 = 1 << 40;
/// Largest step between two line numbers on one connection. A session numbers its lines one
/// by one; this leaves room for what it keeps for re-sending (`session::link`).
const MAX_SEQ_STEP: u64 = 1024;

/// What `chatctl who` shows as the address of a session the master did not vouch for.
const UNVOUCHED: &str = "unvouched";

impl Broker {
    /// Applies one request. Returns false if the peer is gone afterwards.
    pub(super) fn handle(&mut self, id: MemberId, request: Request) -> bool {
        // In a cluster a nick is first claimed in Redis; the request comes back when it is.
        if let Request::Login { nick, .. } | Request::ChangeNick { nick } = &request
            && self.waits_for_claim(id, &nick.clone(), &request)
        {
            return true;
        }
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
        // Requests come only on a session's channel, which its greeting made (and named);
        // one without a name is a bug here, and the peer goes rather than stay unserved.
        let Some(session) = peer.session else {
            warn!("dropping session pid {} ({}): a request before its name", peer.pid, peer.client);
            self.peers.doom(id, LeaveReason::ConnectionLost);
            return false;
        };
        if peer.kicked {
            // Out of its room already; it closes as soon as it reads why.
            return true;
        }
        let now = crate::clock::unix_now();
        let deliveries = match request {
            Request::Admin(request) => self.admin_request(id, request),
            Request::Traffic { received, sent } => {
                self.stats.bytes_received += received;
                self.stats.bytes_sent += sent;
                return true;
            }
            Request::RingRead { position } => {
                self.peers.ring_read(id, position);
                return true;
            }
            Request::Login { nick, tls } => {
                if self.refuse_banned_nick(id, &nick, now) {
                    return true;
                }
                self.login_request(id, session, &nick, tls, Instant::now())
            }
            Request::Resume { nick, room, topic, tls, token } => {
                if let Some(ban) = self.moderation.nick_ban(&nick, now) {
                    let reason = ban_reason(ban.reason.as_deref());
                    self.kick(id, Some(reason));
                    return true;
                }
                let announce = self.started.elapsed() > RESUME_WINDOW
                    || sys::started_after(peer.identity, self.instance);
                let (pid, client) = (peer.pid, peer.client.clone());
                // A room whose ring cannot be made now: the lobby, as for a room too many.
                let room = match self.peers.prepare_ring(&room) {
                    Ok(()) => room,
                    Err(_) => crate::names::DEFAULT_ROOM.to_string(),
                };
                if let Some(peer) = self.peers.get_mut(id) {
                    peer.tls = tls;
                    peer.resumed = true;
                }
                let (nick, account) = self.resume_nick(id, session, &nick, token);
                let deliveries =
                    self.rooms.resume(id, session, &nick, &room, topic.as_deref(), announce);
                self.rooms.set_tls(id, tls);
                self.rooms.set_account(id, account);
                match deliveries.first().map(|d| &d.event) {
                    Some(Event::Resumed { nick, room }) => {
                        info!("session pid {pid} ({client}) resumed as {nick} in {room}");
                    }
                    Some(Event::Failed(failure)) => info!(
                        "session pid {pid} ({client}) may not resume as {:?}: {failure:?}",
                        crate::text::sanitize(&nick)
                    ),
                    _ => {}
                }
                deliveries
            }
            Request::Say { seq, .. } | Request::Act { seq, .. } | Request::Private { seq, .. }
                if !self.in_sequence(id, seq) =>
            {
                return self.peers.contains(id);
            }
            Request::Say { seq, .. } | Request::Act { seq, .. } | Request::Private { seq, .. }
                if self.needs_an_account(id) =>
            {
                vec![Delivery {
                    to: Audience::One(id),
                    event: Event::Rejected { seq, failure: Failure::AccountRequired },
                }]
            }
            Request::Join { .. } if self.needs_an_account(id) => vec![Delivery {
                to: Audience::One(id),
                event: Event::Failed(Failure::AccountRequired),
            }],
            Request::Private { seq, ref to, ref text }
                if self.private_elsewhere(id, seq, &to.clone(), &text.clone()) =>
            {
                return self.peers.contains(id);
            }
            Request::Private { seq, to, text }
                if let Some(kept) = self.private_to_absent(id, seq, &to, &text) =>
            {
                kept
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
                if let Some(failure) = self.nick_reserved(id, &nick) {
                    self.deliver(vec![Delivery {
                        to: Audience::One(id),
                        event: Event::Failed(failure),
                    }]);
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
            Request::Join { room } => match self.peers.prepare_ring(crate::names::bare_room(&room))
            {
                Ok(()) => self.rooms.join(id, &room),
                Err(why) => vec![Delivery {
                    to: Audience::One(id),
                    event: Event::Failed(Failure::InvalidRoom { room, why }),
                }],
            },
            Request::Away { reason } => self.rooms.set_away(id, Some(&reason)),
            Request::Back => self.rooms.set_away(id, None),
            Request::Who => self.with_other_nodes(id, self.rooms.who(id)),
            Request::Whois { nick } => match self.whois_elsewhere(id, &nick) {
                Some(remote) => vec![remote],
                None => self.rooms.whois(id, &nick),
            },
            Request::Rooms => self.with_other_nodes(id, self.rooms.list_rooms(id)),
            Request::Topic { text } => self.rooms.topic(id, text.as_deref()),
            Request::History { before, count } => self.history_request(id, before, count),
            Request::Search { words } => self.search_request(id, &words),
            Request::Missed { sender, seq } => self.missed_request(id, sender, seq),
            Request::Quit { reason } => {
                self.peers.doom(id, LeaveReason::Quit(reason));
                return false;
            }
            Request::FellBehind => {
                self.peers.fell_behind(id);
                return false;
            }
            Request::Challenge { nick, purpose } => {
                // `/login` to a banned nick is refused like `/nick` to it.
                if purpose == crate::proto::Purpose::Login
                    && self.refuse_banned_nick(id, &nick, now)
                {
                    return true;
                }
                self.challenge_request(id, &nick, purpose, Instant::now())
            }
            Request::Prove { nonce, current, fresh } => self.prove_request(
                id,
                session,
                nonce,
                current.as_deref(),
                fresh.as_deref(),
                Instant::now(),
            ),
            Request::Logout => self.logout_request(id),
            Request::SaveSettings(settings) => {
                self.save_settings(id, settings);
                return true;
            }
        };
        self.deliver(deliveries);
        self.peers.contains(id)
    }

    /// The session part of a connection's first frame, `Hello`: checks the protocol version
    /// and whether the session was dropped as too slow before, takes the address the master
    /// vouched for (or the one reported, without a master), welcomes it and applies the
    /// address bans. Returns false if the peer is gone afterwards.
    pub(super) fn hello(&mut self, id: MemberId, hello: SessionHello) -> bool {
        let SessionHello { version, peer: reported, connected_at } = hello;
        let Some(peer) = self.peers.get(id) else {
            return false;
        };
        let (identity, pid) = (peer.identity, peer.pid);
        let version = match served_version(version) {
            Ok(version) => version,
            Err(refusal) => {
                warn!(
                    "dropping session pid {pid}: protocol version {version}, broker serves {OLDEST_SESSION_PROTOCOL}-{PROTOCOL_VERSION}"
                );
                let refused = Event::Failed(refusal);
                self.deliver(vec![Delivery { to: Audience::One(id), event: refused }]);
                self.peers.flush();
                self.peers.doom(id, LeaveReason::ConnectionLost);
                return false;
            }
        };
        if let Some(reason) = self.peers.take_dropped(identity) {
            // The drop was logged when it happened; its sequel is routine.
            debug!("session pid {pid} came back after being dropped; told it is over");
            let told = Event::Dropped { reason };
            self.deliver(vec![Delivery { to: Audience::One(id), event: told }]);
            self.peers.doom(id, LeaveReason::ConnectionLost);
            return false;
        }
        let claimed: String = reported.chars().take(64).collect();
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
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
        peer.protocol = version;
        self.identities.insert(identity, id);
        let banned = [peer.client.as_str(), claimed.as_str()]
            .iter()
            .filter_map(|address| address.parse::<std::net::SocketAddr>().ok())
            .find_map(|addr| self.moderation.address_ban(addr.ip(), crate::clock::unix_now()))
            .map(|ban| ban.reason.clone());
        self.greeted_as_session(id);
        let welcome = Event::Welcome { version, sender: identity, broker: self.instance };
        self.deliver(vec![Delivery { to: Audience::One(id), event: welcome }]);
        if let Some(reason) = banned {
            // Sessions the master did not vet (inetd-style) meet the address bans here.
            self.kick(id, Some(ban_reason(reason.as_deref())));
        }
        true
    }

    /// Whether line number `seq` may follow the previous one on `id`'s connection. A refused
    /// line is answered (which also acknowledges it) and the first refusal per connection is
    /// logged: only a broken or forged session numbers its lines otherwise.
    fn in_sequence(&mut self, id: MemberId, seq: u64) -> bool {
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
        if follows(peer.last_seq, seq) {
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
            if let Some(peer) = self.peers.get_mut(id) {
                peer.last_active = read_at;
            }
            self.stats.message(copies, read_at);
            self.lines_this_turn.push(read_at);
        }
        self.peers.contains(id)
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
    pub(super) fn kick(&mut self, id: MemberId, reason: Option<String>) {
        let Some(peer) = self.peers.get_mut(id) else { return };
        if peer.kicked || peer.channel.is_master() {
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
        self.member_leaving(id);
        deliveries.extend(self.rooms.leave(id, LeaveReason::Kicked(reason)));
        self.deliver(deliveries);
    }
}

/// Whether line number `seq` may follow `last` (the previous one accepted on the connection).
/// The protocol a session that says `version` in its hello is served in, which `Welcome`
/// tells it: its own, since a session speaks exactly the version it was built with (sessions
/// forked before an in-place upgrade keep their old code, and their frames are the same as
/// this version's: `proto::OLDEST_SESSION_PROTOCOL`). Any other version is refused, naming
/// this broker's own.
fn served_version(version: u32) -> Result<u32, Failure> {
    if serves_session_protocol(version) {
        Ok(version)
    } else {
        Err(Failure::VersionMismatch { broker: PROTOCOL_VERSION, session: version })
    }
}

fn follows(last: Option<u64>, seq: u64) -> bool {
    match last {
        None => seq <= MAX_FIRST_SEQ,
        Some(last) => seq > last && seq - last <= MAX_SEQ_STEP,
    }
}

/// What a banned session is told.
pub(super) fn ban_reason(reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("banned: {reason}"),
        None => "banned".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_number_may_be_anything_a_session_can_reach() {
        assert!(follows(None, 0));
        assert!(follows(None, 1));
        assert!(follows(None, MAX_FIRST_SEQ));
        assert!(!follows(None, MAX_FIRST_SEQ + 1));
        assert!(!follows(None, u64::MAX));
    }

    #[test]
    fn a_line_number_must_grow_by_at_most_the_step() {
        assert!(follows(Some(10), 11));
        assert!(follows(Some(10), 10 + MAX_SEQ_STEP));
        assert!(!follows(Some(10), 11 + MAX_SEQ_STEP));
        assert!(!follows(Some(u64::MAX - 1), 0));
    }

    #[test]
    fn a_line_number_never_repeats_or_goes_back() {
        assert!(!follows(Some(10), 10));
        assert!(!follows(Some(10), 9));
        assert!(!follows(Some(0), 0));
    }

    #[test]
    fn a_session_of_the_previous_protocol_is_welcomed_in_its_own() {
        // Sessions forked before an in-place upgrade still run protocol 9's code.
        assert_eq!(served_version(9), Ok(9));
        assert_eq!(served_version(OLDEST_SESSION_PROTOCOL), Ok(OLDEST_SESSION_PROTOCOL));
        assert_eq!(served_version(PROTOCOL_VERSION), Ok(PROTOCOL_VERSION));
    }

    #[test]
    fn sessions_older_than_the_range_or_newer_are_refused() {
        for version in [0, 8, PROTOCOL_VERSION + 1, u32::MAX] {
            assert_eq!(
                served_version(version),
                Err(Failure::VersionMismatch { broker: PROTOCOL_VERSION, session: version }),
                "version {version}"
            );
        }
        // The range these cases assume: a change to it revisits them.
        assert_eq!((OLDEST_SESSION_PROTOCOL, PROTOCOL_VERSION), (9, 14));
    }

    #[test]
    fn a_ban_reason_is_told_when_there_is_one() {
        assert_eq!(ban_reason(None), "banned");
        assert_eq!(ban_reason(Some("spam")), "banned: spam");
    }
}
