//! The rooms' side of accounts and transports: which member is on TLS and logged in to which
//! account, and a login that takes over the nick of the account's old session.
//!
//! Pure, like the rest of `room`: the broker's `identity` decides who may log in (challenges,
//! proofs, throttles are `broker::accounts`'); this file only records the outcome on the
//! member and moves the nick.

use super::{Delivery, MemberId, Rooms, one};
use crate::names;
use crate::proto::{Event, LeaveReason};

impl Rooms {
    /// The account (its key) the member is logged in to, or none.
    pub fn set_account(&mut self, id: MemberId, key: Option<String>) {
        if let Some(member) = self.members.get_mut(&id) {
            member.account = key;
        }
    }

    pub fn account_of(&self, id: MemberId) -> Option<&str> {
        self.members.get(&id).and_then(|member| member.account.as_deref())
    }

    /// The member whose nick is the account `key`'s (by lookalike key), or who is logged in
    /// to it: the session a new login of that account replaces.
    pub fn holder_of(&self, key: &str, except: MemberId) -> Option<MemberId> {
        self.members
            .iter()
            .filter(|(id, _)| **id != except)
            .find(|(_, member)| {
                member.account.as_deref() == Some(key) || names::lookalike_key(&member.nick) == key
            })
            .map(|(id, _)| *id)
    }

    /// Members logged in to no account, with their nicks.
    pub fn members_without_account(&self) -> impl Iterator<Item = (MemberId, &str)> + '_ {
        self.members
            .iter()
            .filter(|(_, member)| member.account.is_none())
            .map(|(id, member)| (*id, member.nick.as_str()))
    }

    /// The key of the member's room.
    pub fn room_key_of(&self, id: MemberId) -> Option<&str> {
        self.members.get(&id).map(|member| member.room.as_str())
    }

    /// A free guest name (`Guest-` and four hex digits).
    pub fn guest_name(&self) -> String {
        loop {
            let name = format!("Guest-{:04x}", fastrand::u16(..));
            if self.check_free_nick(&name, None).is_ok() {
                return name;
            }
        }
    }

    /// `id` (not yet a member) logs in as `nick`, replacing the member `old`, which held the
    /// account: `old` leaves (its room sees `nick reconnected`, not a leave and a join) and
    /// `id` enters `old`'s room silently, as its login. `old` is told first, so that it closes.
    pub fn take_over(
        &mut self,
        id: MemberId,
        session: u64,
        nick: &str,
        old: MemberId,
    ) -> Vec<Delivery> {
        let room_name = self
            .room_key_of(old)
            .and_then(|key| self.rooms.get(key))
            .map(|room| room.name.clone())
            .unwrap_or_else(|| names::DEFAULT_ROOM.to_string());
        let mut out = vec![one(old, Event::Replaced)];
        out.extend(self.leave(old, LeaveReason::Replaced));
        out.extend(self.login_into(id, session, nick, &room_name));
        out
    }

    /// Registers `id` as `nick` and puts it in `room_name` without a join line (the room was
    /// just told who it is). Like a login, it is answered `LoggedIn`, the topic and history.
    fn login_into(
        &mut self,
        id: MemberId,
        session: u64,
        nick: &str,
        room_name: &str,
    ) -> Vec<Delivery> {
        self.register(id, session, nick);
        let mut out = vec![one(id, Event::LoggedIn { nick: nick.to_string() })];
        // What `enter` tells the room, the join line, goes to the newcomer only: its session
        // learns its room from it; the room was told `nick reconnected`.
        for delivery in self.enter(id, room_name) {
            match delivery.event {
                Event::Joined { .. } => out.push(one(id, delivery.event)),
                _ => out.push(delivery),
            }
        }
        out
    }

    /// A logged-in guest (`id`) whose login replaced `old`: `old` leaves as replaced, and
    /// `id` takes the account's `nick` (its room sees the rename).
    pub fn rename_replacing(
        &mut self,
        id: MemberId,
        nick: &str,
        old: Option<MemberId>,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        if let Some(old) = old {
            out.push(one(old, Event::Replaced));
            out.extend(self.leave(old, LeaveReason::Replaced));
        }
        if self.nick(id).is_some_and(|current| current != nick) {
            out.extend(self.change_nick(id, nick));
        }
        out
    }
}
