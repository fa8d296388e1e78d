//! Room state: who is logged in under which nickname, who is in which room, and each room's
//! topic. Pure logic — no sockets, no clocks, no logging.
//!
//! Every operation applies its change and returns the [`Delivery`]s that tell everyone affected.
//! A [`Audience::Room`] is resolved by the broker *after* the change, so a delivery to a room
//! reaches whoever is in it once the operation is done (a user who moved out is not told of
//! their own departure; a newcomer is told of their own arrival).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::names::{self, DEFAULT_ROOM};
use crate::proto::{Event, Failure, LeaveReason, RoomInfo};
use crate::text;

/// The broker's handle for one logged-in session.
pub type MemberId = u64;

/// Who receives an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// One member only (replies and errors).
    One(MemberId),
    /// Everyone in the room with this key (see [`names::fold`]) at delivery time.
    Room(String),
}

/// One event for one audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub to: Audience,
    pub event: Event,
}

#[derive(Debug)]
struct Room {
    /// The name as its first member typed it.
    name: String,
    topic: Option<String>,
    members: BTreeSet<MemberId>,
}

#[derive(Debug)]
struct Member {
    nick: String,
    /// Key of the member's room.
    room: String,
}

/// All rooms and members.
#[derive(Debug)]
pub struct Rooms {
    rooms: BTreeMap<String, Room>,
    members: HashMap<MemberId, Member>,
    /// Folded nickname → member, for uniqueness and `/msg`.
    by_nick: HashMap<String, MemberId>,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

fn one(id: MemberId, event: Event) -> Delivery {
    Delivery { to: Audience::One(id), event }
}

fn room(key: &str, event: Event) -> Delivery {
    Delivery { to: Audience::Room(key.to_string()), event }
}

fn failed(id: MemberId, failure: Failure) -> Vec<Delivery> {
    vec![one(id, Event::Failed(failure))]
}

/// Cleans user text and refuses what is left empty or over the line limit.
fn clean_text(raw: &str) -> Result<String, Failure> {
    let clean = text::sanitize(raw);
    if clean.trim().is_empty() {
        return Err(Failure::InvalidText("the message is empty".into()));
    }
    if clean.len() > text::MAX_LINE_BYTES {
        return Err(Failure::InvalidText(format!(
            "the message is longer than {} bytes",
            text::MAX_LINE_BYTES
        )));
    }
    Ok(clean)
}

impl Rooms {
    pub fn new() -> Self {
        let mut rooms = BTreeMap::new();
        rooms.insert(
            DEFAULT_ROOM.to_string(),
            Room { name: DEFAULT_ROOM.to_string(), topic: None, members: BTreeSet::new() },
        );
        Rooms { rooms, members: HashMap::new(), by_nick: HashMap::new() }
    }

    /// Members of the room with key `key`, for resolving [`Audience::Room`].
    pub fn members_of(&self, key: &str) -> impl Iterator<Item = MemberId> + '_ {
        self.rooms.get(key).into_iter().flat_map(|room| room.members.iter().copied())
    }

    /// The nickname of a logged-in member.
    pub fn nick(&self, id: MemberId) -> Option<&str> {
        self.members.get(&id).map(|member| member.nick.as_str())
    }

    /// Number of logged-in members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Registers `id` as `nick` and puts it in the default room.
    pub fn login(&mut self, id: MemberId, nick: &str) -> Vec<Delivery> {
        if self.members.contains_key(&id) {
            return failed(id, Failure::AlreadyLoggedIn);
        }
        if let Err(failure) = self.check_free_nick(nick, None) {
            return failed(id, failure);
        }
        self.by_nick.insert(names::fold(nick), id);
        self.members.insert(id, Member { nick: nick.to_string(), room: String::new() });
        let mut out = vec![one(id, Event::LoggedIn { nick: nick.to_string() })];
        out.extend(self.enter(id, DEFAULT_ROOM));
        out
    }

    fn check_free_nick(&self, nick: &str, current: Option<MemberId>) -> Result<(), Failure> {
        names::check_nick(nick)
            .map_err(|why| Failure::InvalidNick { nick: text::sanitize(nick), why })?;
        match self.by_nick.get(&names::fold(nick)) {
            Some(&owner) if Some(owner) != current => Err(Failure::NickInUse(nick.to_string())),
            _ => Ok(()),
        }
    }

    /// Puts a member (who is in no room) into room `name`, creating it if needed.
    fn enter(&mut self, id: MemberId, name: &str) -> Vec<Delivery> {
        let key = names::fold(name);
        let room = self.rooms.entry(key.clone()).or_insert_with(|| Room {
            name: name.to_string(),
            topic: None,
            members: BTreeSet::new(),
        });
        room.members.insert(id);
        let room_name = room.name.clone();
        let topic = room.topic.clone();
        let Some(member) = self.members.get_mut(&id) else {
            return Vec::new();
        };
        member.room = key.clone();
        vec![
            self::room(&key, Event::Joined { nick: member.nick.clone(), room: room_name.clone() }),
            one(id, Event::Topic { room: room_name, text: topic }),
        ]
    }

    /// Takes a member out of its room, dropping the room if it is empty and not the default.
    /// Returns the room's key and display name.
    fn exit(&mut self, id: MemberId) -> Option<(String, String)> {
        let key = self.members.get(&id)?.room.clone();
        let room = self.rooms.get_mut(&key)?;
        room.members.remove(&id);
        let name = room.name.clone();
        if room.members.is_empty() && key != DEFAULT_ROOM {
            self.rooms.remove(&key);
        }
        Some((key, name))
    }

    /// A line of chat from `id` to its room.
    pub fn say(&mut self, id: MemberId, seq: u64, raw: &str) -> Vec<Delivery> {
        self.to_own_room(id, raw, |from, text| Event::Chat { from, seq, text })
    }

    /// An action (`/me`) from `id` to its room.
    pub fn act(&mut self, id: MemberId, seq: u64, raw: &str) -> Vec<Delivery> {
        self.to_own_room(id, raw, |from, text| Event::Action { from, seq, text })
    }

    fn to_own_room(
        &self,
        id: MemberId,
        raw: &str,
        make: impl FnOnce(String, String) -> Event,
    ) -> Vec<Delivery> {
        let Some(member) = self.members.get(&id) else {
            return failed(id, Failure::NotLoggedIn);
        };
        match clean_text(raw) {
            Ok(text) => vec![room(&member.room, make(member.nick.clone(), text))],
            Err(failure) => failed(id, failure),
        }
    }

    /// `/nick NEW`.
    pub fn change_nick(&mut self, id: MemberId, new: &str) -> Vec<Delivery> {
        if !self.members.contains_key(&id) {
            return failed(id, Failure::NotLoggedIn);
        }
        if let Err(failure) = self.check_free_nick(new, Some(id)) {
            return failed(id, failure);
        }
        let Some(member) = self.members.get_mut(&id) else {
            return Vec::new();
        };
        let old = std::mem::replace(&mut member.nick, new.to_string());
        let room_key = member.room.clone();
        self.by_nick.remove(&names::fold(&old));
        self.by_nick.insert(names::fold(new), id);
        vec![room(&room_key, Event::NickChanged { old, new: new.to_string() })]
    }

    /// `/join ROOM`: leave the current room and enter another.
    pub fn join(&mut self, id: MemberId, requested: &str) -> Vec<Delivery> {
        let Some(member) = self.members.get(&id) else {
            return failed(id, Failure::NotLoggedIn);
        };
        let name = names::bare_room(requested);
        if let Err(why) = names::check_room(name) {
            return failed(id, Failure::InvalidRoom { room: text::sanitize(requested), why });
        }
        if names::fold(name) == member.room {
            return failed(id, Failure::AlreadyInRoom(name.to_string()));
        }
        let nick = member.nick.clone();
        let mut out = Vec::new();
        if let Some((old_key, old_name)) = self.exit(id) {
            let new_name = self.rooms.get(&names::fold(name)).map_or(name, |r| &r.name).to_string();
            out.push(room(
                &old_key,
                Event::Left { nick, room: old_name, reason: LeaveReason::JoinedOther(new_name) },
            ));
        }
        out.extend(self.enter(id, name));
        out
    }

    /// `/who`: the members of the requester's room.
    pub fn who(&self, id: MemberId) -> Vec<Delivery> {
        let Some(member) = self.members.get(&id) else {
            return failed(id, Failure::NotLoggedIn);
        };
        let Some(room) = self.rooms.get(&member.room) else {
            return Vec::new();
        };
        let mut nicks: Vec<String> =
            room.members.iter().filter_map(|m| self.nick(*m).map(str::to_string)).collect();
        nicks.sort_by_key(|nick| names::fold(nick));
        vec![one(id, Event::Members { room: room.name.clone(), nicks })]
    }

    /// `/rooms`: every room with its member count.
    pub fn list_rooms(&self, id: MemberId) -> Vec<Delivery> {
        let rooms = self
            .rooms
            .values()
            .map(|room| RoomInfo {
                name: room.name.clone(),
                members: u32::try_from(room.members.len()).unwrap_or(u32::MAX),
            })
            .collect();
        vec![one(id, Event::RoomList { rooms })]
    }

    /// `/topic [text]`: show or set the topic of the requester's room.
    pub fn topic(&mut self, id: MemberId, new: Option<&str>) -> Vec<Delivery> {
        let Some(member) = self.members.get(&id) else {
            return failed(id, Failure::NotLoggedIn);
        };
        let key = member.room.clone();
        let by = member.nick.clone();
        let Some(room) = self.rooms.get_mut(&key) else {
            return Vec::new();
        };
        match new {
            None => {
                vec![one(id, Event::Topic { room: room.name.clone(), text: room.topic.clone() })]
            }
            Some(raw) => match clean_text(raw) {
                Ok(text) => {
                    room.topic = Some(text.clone());
                    vec![self::room(
                        &key,
                        Event::TopicChanged { room: room.name.clone(), by, text },
                    )]
                }
                Err(failure) => failed(id, failure),
            },
        }
    }

    /// `/msg NICK text`.
    pub fn private(&self, id: MemberId, to: &str, raw: &str) -> Vec<Delivery> {
        let Some(member) = self.members.get(&id) else {
            return failed(id, Failure::NotLoggedIn);
        };
        let Some(&target) = self.by_nick.get(&names::fold(to)) else {
            return failed(id, Failure::NoSuchNick(text::sanitize(to)));
        };
        let text = match clean_text(raw) {
            Ok(text) => text,
            Err(failure) => return failed(id, failure),
        };
        let target_nick = self.nick(target).unwrap_or(to).to_string();
        vec![
            one(target, Event::Private { from: member.nick.clone(), text: text.clone() }),
            one(id, Event::PrivateSent { to: target_nick, text }),
        ]
    }

    /// Removes a member for good (quit, lost connection, dropped) and tells its room.
    /// Unknown ids (sessions that never logged in) produce nothing.
    pub fn leave(&mut self, id: MemberId, reason: LeaveReason) -> Vec<Delivery> {
        let reason = match reason {
            LeaveReason::Quit(Some(raw)) => {
                let clean = text::sanitize(&raw);
                let clean = clean.trim();
                let clipped: String = clean.chars().take(text::MAX_REASON_CHARS).collect();
                LeaveReason::Quit((!clipped.is_empty()).then_some(clipped))
            }
            other => other,
        };
        let Some((key, room_name)) = self.exit(id) else {
            return Vec::new();
        };
        let Some(member) = self.members.remove(&id) else {
            return Vec::new();
        };
        self.by_nick.remove(&names::fold(&member.nick));
        vec![room(&key, Event::Left { nick: member.nick, room: room_name, reason })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged_in(nicks: &[&str]) -> Rooms {
        let mut rooms = Rooms::new();
        for (id, nick) in nicks.iter().enumerate() {
            let out = rooms.login(id as MemberId, nick);
            assert!(matches!(out[0].event, Event::LoggedIn { .. }), "{out:?}");
        }
        rooms
    }

    fn members(rooms: &Rooms, key: &str) -> Vec<MemberId> {
        rooms.members_of(key).collect()
    }

    #[test]
    fn login_joins_lobby_and_tells_the_room_and_the_topic() {
        let mut rooms = Rooms::new();
        let out = rooms.login(7, "alice");
        assert_eq!(
            out,
            vec![
                one(7, Event::LoggedIn { nick: "alice".into() }),
                room("lobby", Event::Joined { nick: "alice".into(), room: "lobby".into() }),
                one(7, Event::Topic { room: "lobby".into(), text: None }),
            ]
        );
        assert_eq!(members(&rooms, "lobby"), vec![7]);
    }

    #[test]
    fn nicknames_are_unique_regardless_of_case() {
        let mut rooms = logged_in(&["alice"]);
        let out = rooms.login(9, "ALICE");
        assert_eq!(out, failed(9, Failure::NickInUse("ALICE".into())));
        assert_eq!(rooms.member_count(), 1);
    }

    #[test]
    fn invalid_nick_is_refused_by_the_broker_too() {
        let mut rooms = Rooms::new();
        let out = rooms.login(1, "9lives");
        assert!(matches!(&out[0].event, Event::Failed(Failure::InvalidNick { .. })), "{out:?}");
    }

    #[test]
    fn say_goes_to_the_senders_room_cleaned() {
        let mut rooms = logged_in(&["alice"]);
        let out = rooms.say(0, 1, "hi\x1b[2J there");
        assert_eq!(
            out,
            vec![room(
                "lobby",
                Event::Chat { from: "alice".into(), seq: 1, text: "hi[2J there".into() }
            )]
        );
    }

    #[test]
    fn say_before_login_fails() {
        let mut rooms = Rooms::new();
        assert_eq!(rooms.say(3, 1, "x"), failed(3, Failure::NotLoggedIn));
    }

    #[test]
    fn join_moves_between_rooms_and_empty_rooms_vanish() {
        let mut rooms = logged_in(&["alice", "bob"]);
        let out = rooms.join(0, "#Rust");
        assert_eq!(
            out[0],
            room(
                "lobby",
                Event::Left {
                    nick: "alice".into(),
                    room: "lobby".into(),
                    reason: LeaveReason::JoinedOther("Rust".into())
                }
            )
        );
        assert_eq!(
            out[1],
            room("rust", Event::Joined { nick: "alice".into(), room: "Rust".into() })
        );
        assert_eq!(members(&rooms, "rust"), vec![0]);
        assert_eq!(members(&rooms, "lobby"), vec![1]);
        rooms.join(0, "lobby");
        assert_eq!(members(&rooms, "rust"), Vec::<MemberId>::new());
        let Event::RoomList { rooms: list } = &rooms.list_rooms(0)[0].event else {
            panic!("not a room list");
        };
        assert_eq!(list, &vec![RoomInfo { name: "lobby".into(), members: 2 }]);
    }

    #[test]
    fn lobby_stays_when_empty() {
        let mut rooms = logged_in(&["alice"]);
        rooms.join(0, "other");
        let Event::RoomList { rooms: list } = &rooms.list_rooms(0)[0].event else {
            panic!("not a room list");
        };
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn joining_the_same_room_is_an_error() {
        let mut rooms = logged_in(&["alice"]);
        assert_eq!(rooms.join(0, "LOBBY"), failed(0, Failure::AlreadyInRoom("LOBBY".into())));
    }

    #[test]
    fn nick_change_frees_the_old_name_and_allows_a_case_change() {
        let mut rooms = logged_in(&["alice", "bob"]);
        assert_eq!(rooms.change_nick(1, "Alice"), failed(1, Failure::NickInUse("Alice".into())));
        assert_eq!(
            rooms.change_nick(0, "ALICE"),
            vec![room("lobby", Event::NickChanged { old: "alice".into(), new: "ALICE".into() })]
        );
        rooms.change_nick(0, "carol");
        assert_eq!(rooms.change_nick(1, "alice")[0].to, Audience::Room("lobby".into()));
    }

    #[test]
    fn private_messages_reach_only_the_target_and_confirm_to_the_sender() {
        let rooms = logged_in(&["alice", "bob"]);
        assert_eq!(
            rooms.private(0, "BOB", "psst"),
            vec![
                one(1, Event::Private { from: "alice".into(), text: "psst".into() }),
                one(0, Event::PrivateSent { to: "bob".into(), text: "psst".into() }),
            ]
        );
        assert_eq!(
            rooms.private(0, "nobody", "x"),
            failed(0, Failure::NoSuchNick("nobody".into()))
        );
    }

    #[test]
    fn topic_is_set_announced_and_shown_on_join() {
        let mut rooms = logged_in(&["alice"]);
        let out = rooms.topic(0, Some("Rust only"));
        assert_eq!(
            out,
            vec![room(
                "lobby",
                Event::TopicChanged {
                    room: "lobby".into(),
                    by: "alice".into(),
                    text: "Rust only".into()
                }
            )]
        );
        let out = rooms.login(1, "bob");
        assert_eq!(
            out[2],
            one(1, Event::Topic { room: "lobby".into(), text: Some("Rust only".into()) })
        );
    }

    #[test]
    fn who_lists_the_room_sorted() {
        let rooms = logged_in(&["zed", "Amy", "bob"]);
        assert_eq!(
            rooms.who(2),
            vec![one(
                2,
                Event::Members {
                    room: "lobby".into(),
                    nicks: vec!["Amy".into(), "bob".into(), "zed".into()]
                }
            )]
        );
    }

    #[test]
    fn leave_frees_the_nick_and_tells_the_room() {
        let mut rooms = logged_in(&["alice", "bob"]);
        let out = rooms.leave(0, LeaveReason::Quit(Some("bye\x07".into())));
        assert_eq!(
            out,
            vec![room(
                "lobby",
                Event::Left {
                    nick: "alice".into(),
                    room: "lobby".into(),
                    reason: LeaveReason::Quit(Some("bye".into()))
                }
            )]
        );
        assert_eq!(rooms.login(5, "alice")[0], one(5, Event::LoggedIn { nick: "alice".into() }));
        assert_eq!(rooms.leave(42, LeaveReason::ConnectionLost), vec![]);
    }

    #[test]
    fn overlong_or_empty_text_is_refused() {
        let mut rooms = logged_in(&["alice"]);
        assert!(matches!(
            rooms.say(0, 1, &"x".repeat(513))[0].event,
            Event::Failed(Failure::InvalidText(_))
        ));
        assert!(matches!(
            rooms.say(0, 1, "\x1b\x07")[0].event,
            Event::Failed(Failure::InvalidText(_))
        ));
    }
}
