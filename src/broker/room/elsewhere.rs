//! The rooms' side of a cluster: nicknames that members of other nodes hold (so that no
//! login, `/nick` or resume here takes one), the lines other nodes' members said (kept in a
//! room's history and recent lines like local ones, but stored by their own node), and a
//! local member's row as the other nodes are to know it.
//!
//! Pure, like the rest of `room`: `broker::cluster` decides what the stream means.

use super::{Delivery, MemberId, Rooms, clean_text, history_line, one, rejected};
use crate::names;
use crate::proto::cluster::RemoteMember;
use crate::proto::{Event, Failure};

impl Rooms {
    /// `nick` is (`true`) or is no longer (`false`) held by a member of another node.
    pub fn set_elsewhere(&mut self, nick: &str, held: bool) {
        let key = names::fold(nick);
        if held {
            self.elsewhere.insert(key, nick.to_string());
        } else {
            self.elsewhere.remove(&key);
        }
    }

    /// The nick held elsewhere that `nick` is, or would pass for on screen.
    pub(super) fn held_elsewhere(&self, nick: &str) -> Option<&str> {
        if let Some(held) = self.elsewhere.get(&names::fold(nick)) {
            return Some(held);
        }
        self.elsewhere.values().find(|held| names::is_lookalike(nick, held)).map(String::as_str)
    }

    /// The nick as written of a member of another node that `nick` names (folded alike).
    pub fn held_elsewhere_as(&self, nick: &str) -> Option<String> {
        self.elsewhere.get(&names::fold(nick)).cloned()
    }

    /// A room broadcast said on another node, shown here through the room's ring by the
    /// caller: a line is kept in the room's history and recent lines (its own node stores
    /// it), a topic becomes the room's.
    pub fn said_elsewhere(&mut self, key: &str, event: &Event) {
        let (now, unix_now, history_lines) = (self.now, self.unix_now, self.history_lines);
        let Some(room) = self.rooms.get_mut(key) else { return };
        match event {
            Event::Chat { sender, seq, .. } | Event::Action { sender, seq, .. } => {
                room.keep_recent(now, event);
                if let Some(line) = history_line(event, unix_now)
                    && !room.stored_already(*sender, *seq)
                {
                    room.remember(history_lines, line);
                }
            }
            Event::TopicChanged { text, .. } => room.topic = Some(text.clone()),
            _ => {}
        }
    }

    /// The member as the other nodes are to know it.
    pub fn row_of(&self, id: MemberId) -> Option<RemoteMember> {
        let member = self.members.get(&id)?;
        let room = self.rooms.get(&member.room).map_or_else(String::new, |r| r.name.clone());
        Some(RemoteMember {
            nick: member.nick.clone(),
            room,
            account: member.account.clone(),
            tls: member.tls,
            away: member.away.clone(),
            connected_at: member.connected_at,
            last_spoke: member.last_spoke,
        })
    }

    /// Every member, with its id.
    pub fn member_ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.keys().copied()
    }

    /// `/msg` to `to`, a member of another node: the line for its node to show (none from a
    /// muted member, whose private lines reach only itself) and what the sender is told, or
    /// the refusal.
    pub fn private_elsewhere(
        &mut self,
        id: MemberId,
        seq: u64,
        to: &str,
        raw: &str,
    ) -> (Option<Event>, Vec<Delivery>) {
        let Some(member) = self.members.get_mut(&id) else {
            return (None, rejected(id, seq, Failure::NotLoggedIn));
        };
        let text = match clean_text(raw) {
            Ok(text) => text,
            Err(failure) => return (None, rejected(id, seq, failure)),
        };
        member.last_spoke = self.unix_now;
        let line = (!member.muted).then(|| Event::Private {
            from: member.nick.clone(),
            sender: member.session,
            seq,
            text: text.clone(),
        });
        (line, vec![one(id, Event::PrivateSent { seq, to: to.to_string(), text })])
    }
}
