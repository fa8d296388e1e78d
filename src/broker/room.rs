//! Room state: who is logged in under which nickname, who is in which room, and each room's
//! topic. Pure logic — no sockets, no clocks, no logging.
//!
//! Every operation applies its change and returns the [`Delivery`]s that tell everyone affected.
//! A [`Audience::Room`] is resolved by the broker *after* the change, so a delivery to a room
//! reaches whoever is in it once the operation is done (a user who moved out is not told of
//! their own departure; a newcomer is told of their own arrival).
//!
//! Each room also keeps its chat lines of the last [`RECENT_AGE`] (at most [`RECENT_LINES`]).
//! A session that re-registers
//! after a broker restart ([`Rooms::resume`]) gets them replayed: lines that were re-sent by
//! sessions that came back before it would otherwise never reach it. The session drops the
//! ones it already showed (by sender and sequence number).
//!
//! With a store (`stored`), rooms also say what to keep on disk (the lines and topics, taken
//! once per loop turn) and take a room's stored topic and history when the store answers, after
//! the room was made; this module still never waits for it.

mod elsewhere;
mod identity;
pub(super) mod stored;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::names::{self, DEFAULT_ROOM};
use crate::proto::control::RoomRow;
use crate::proto::{Event, Failure, HistoryLine, IdentifiedLine, LeaveReason, RoomInfo, WhoIs};
use crate::text;

/// The broker's handle for one logged-in session.
pub type MemberId = u64;

/// How long, and how many, chat lines a room keeps for replay to sessions that re-register.
/// After a broker restart every session re-sends its last few seconds of lines; the replay
/// must cover all of them until the last session has re-registered.
pub const RECENT_AGE: Duration = Duration::from_secs(30);
pub use crate::config::{DEFAULT_HISTORY_LINES, RECENT_LINES};

/// Who receives an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// One member only (replies and errors).
    One(MemberId),
    /// Everyone in the room with this key (see [`names::fold`]) at delivery time.
    Room(String),
}

/// One event for one audience.
#[derive(Debug, Clone, PartialEq)]
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
    /// The latest chat and action lines, oldest first.
    recent: VecDeque<(Instant, Event)>,
    /// The last `history_lines` lines, shown to whoever enters, and what a page that
    /// reconnects is sent after the last line it showed (`missed`).
    history: VecDeque<IdentifiedLine>,
    /// The store has not yet said what this room had (`stored`).
    loading: Option<stored::Loading>,
    /// Sender id → the last line number the store had of it when this room was loaded
    /// (`stored`): a line at or below it is one a session sends again after a broker
    /// restart, stored already, which the history must not take twice.
    stored_through: HashMap<u64, u64>,
}

impl Room {
    /// Keeps a chat line for replay to resuming sessions, dropping what is too old or too
    /// many.
    fn keep_recent(&mut self, now: Instant, event: &Event) {
        while self.recent.front().is_some_and(|(at, _)| {
            self.recent.len() >= RECENT_LINES || now.saturating_duration_since(*at) > RECENT_AGE
        }) {
            self.recent.pop_front();
        }
        self.recent.push_back((now, event.clone()));
    }

    fn new(name: &str) -> Room {
        Room {
            name: name.to_string(),
            topic: None,
            members: BTreeSet::new(),
            recent: VecDeque::new(),
            history: VecDeque::new(),
            loading: None,
            stored_through: HashMap::new(),
        }
    }

    /// Whether the store had line `seq` of `sender` when the room was loaded.
    fn stored_already(&self, sender: u64, seq: u64) -> bool {
        self.stored_through.get(&sender).is_some_and(|&last| seq <= last)
    }

    /// Keeps `line` in the history shown to newcomers (at most `history_lines`).
    fn remember(&mut self, history_lines: usize, line: IdentifiedLine) {
        if history_lines == 0 {
            return;
        }
        if self.history.len() >= history_lines {
            self.history.pop_front();
        }
        self.history.push_back(line);
        if let Some(loading) = &mut self.loading {
            loading.said_meanwhile(history_lines);
        }
    }

    /// The history as a newcomer is shown it.
    fn history_shown(&self) -> Vec<HistoryLine> {
        self.history.iter().map(|said| said.line.clone()).collect()
    }
}

#[derive(Debug)]
struct Member {
    nick: String,
    /// Key of the member's room.
    room: String,
    /// The session's sender id (from its `Hello`), stamped on its lines.
    session: u64,
    /// Muted by an operator: its lines and private messages reach only itself.
    muted: bool,
    /// `/away` reason, while away.
    away: Option<String>,
    /// When the client connected, and when it last said something (Unix seconds).
    connected_at: u64,
    last_spoke: u64,
    /// Connected over TLS.
    tls: bool,
    /// The key of the account this member is logged in to.
    account: Option<String>,
}

/// All rooms and members.
#[derive(Debug)]
pub struct Rooms {
    rooms: BTreeMap<String, Room>,
    members: HashMap<MemberId, Member>,
    /// Folded nickname → member, for uniqueness and `/msg`.
    by_nick: HashMap<String, MemberId>,
    /// Lookalike key ([`names::lookalike_key`]) → members, to refuse lookalike nicknames.
    by_look: HashMap<String, Vec<MemberId>>,
    /// The broker's clocks, set once per loop turn ([`Rooms::set_now`]); this module never
    /// reads a clock itself.
    now: Instant,
    unix_now: u64,
    /// Lines of history each room keeps for newcomers (0: none).
    history_lines: usize,
    /// Most rooms at once (`max_rooms`).
    max_rooms: usize,
    /// Members who entered a room since [`Rooms::take_changes`] last ran (each reads that
    /// room's ring from then on), and keys of rooms that vanished meanwhile.
    entered: Vec<MemberId>,
    vanished: Vec<String>,
    /// What the store is to keep, and rooms it is to load (`stored`).
    store: stored::ToStore,
    /// Nicks that members of other nodes of a cluster hold: folded → as written
    /// (`elsewhere`).
    elsewhere: HashMap<String, String>,
}

/// What changed in the rooms' membership since it was last asked (see [`Rooms::take_changes`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Members who entered a room, in order (one may appear twice).
    pub entered: Vec<MemberId>,
    /// Rooms that vanished (their last member left); one may exist again since.
    pub vanished: Vec<String>,
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

/// A failure of a numbered request, which also acknowledges it.
fn rejected(id: MemberId, seq: u64, failure: Failure) -> Vec<Delivery> {
    vec![one(id, Event::Rejected { seq, failure })]
}

/// A chat or action line as a room's history keeps it.
fn history_line(event: &Event, at: u64) -> Option<IdentifiedLine> {
    let (from, sender, seq, text, action) = match event {
        Event::Chat { from, sender, seq, text } => (from, sender, seq, text, false),
        Event::Action { from, sender, seq, text } => (from, sender, seq, text, true),
        _ => return None,
    };
    let line = HistoryLine { at, from: from.clone(), action, text: text.clone() };
    Some(IdentifiedLine { sender: *sender, seq: *seq, line })
}

/// Cleans user text and refuses what is left empty or over the line limit.
pub(super) fn clean_text(raw: &str) -> Result<String, Failure> {
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
    /// Rooms with only the default one, at `now` (the loop's clock, as [`Rooms::set_now`]
    /// gets it every turn).
    pub fn new(now: Instant) -> Self {
        let mut rooms = BTreeMap::new();
        rooms.insert(DEFAULT_ROOM.to_string(), Room::new(DEFAULT_ROOM));
        Rooms {
            rooms,
            members: HashMap::new(),
            by_nick: HashMap::new(),
            by_look: HashMap::new(),
            now,
            unix_now: 0,
            history_lines: DEFAULT_HISTORY_LINES,
            max_rooms: usize::MAX,
            entered: Vec::new(),
            vanished: Vec::new(),
            store: stored::ToStore::default(),
            elsewhere: HashMap::new(),
        }
    }

    /// At most `max_rooms` rooms at once from now on (rooms beyond it, if any, stay).
    pub fn set_max_rooms(&mut self, max_rooms: usize) {
        self.max_rooms = max_rooms.max(1);
    }

    /// Who entered a room and which rooms vanished since the last call: the fan-out engine
    /// hands each newcomer its room's ring before delivering what the change produced.
    /// `into` is cleared first and keeps its capacity.
    pub fn take_changes(&mut self, into: &mut Changes) {
        into.entered.clear();
        into.vanished.clear();
        std::mem::swap(&mut self.entered, &mut into.entered);
        std::mem::swap(&mut self.vanished, &mut into.vanished);
    }

    /// Whether a room with key `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        self.rooms.contains_key(key)
    }

    /// How many members the room with key `key` has.
    pub fn members_in(&self, key: &str) -> usize {
        self.rooms.get(key).map_or(0, |room| room.members.len())
    }

    /// Tells the rooms what time it is (for aging recent lines).
    pub fn set_now(&mut self, now: Instant, unix_now: u64) {
        self.unix_now = unix_now;
        self.now = now;
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

    /// Number of rooms (the default room always counts).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The member logged in as `nick` (in any case).
    pub fn find(&self, nick: &str) -> Option<MemberId> {
        self.by_nick.get(&names::fold(nick)).copied()
    }

    /// The name of the room a member is in.
    pub fn room_of(&self, id: MemberId) -> Option<&str> {
        let member = self.members.get(&id)?;
        self.rooms.get(&member.room).map(|room| room.name.as_str())
    }

    /// The key of the room called `name` (with or without `#`), if it exists.
    pub fn room_key(&self, name: &str) -> Option<String> {
        let key = names::fold(names::bare_room(name));
        self.rooms.contains_key(&key).then_some(key)
    }

    /// Every room with its members and topic, for operators.
    pub fn room_rows(&self) -> Vec<RoomRow> {
        self.rooms
            .values()
            .map(|room| RoomRow {
                name: room.name.clone(),
                members: u32::try_from(room.members.len()).unwrap_or(u32::MAX),
                topic: room.topic.clone(),
            })
            .collect()
    }

    /// Why a member is away, if it is.
    pub fn away_of(&self, id: MemberId) -> Option<&str> {
        self.members.get(&id)?.away.as_deref()
    }

    /// `/away REASON` (`Some`) and `/back` (`None`).
    pub fn set_away(&mut self, id: MemberId, reason: Option<&str>) -> Vec<Delivery> {
        let reason = match reason.map(clean_text) {
            Some(Err(failure)) => return failed(id, failure),
            Some(Ok(reason)) => Some(reason.chars().take(text::MAX_REASON_CHARS).collect()),
            None => None,
        };
        let Some(member) = self.members.get_mut(&id) else {
            return failed(id, Failure::NotLoggedIn);
        };
        member.away.clone_from(&reason);
        vec![one(id, Event::Away { reason })]
    }

    /// Mutes or unmutes a member (the broker decides from the persisted mutes).
    pub fn set_muted(&mut self, id: MemberId, muted: bool) {
        if let Some(member) = self.members.get_mut(&id) {
            member.muted = muted;
        }
    }

    /// How many lines of history rooms keep for newcomers (0: none); takes effect at once.
    pub fn set_history_lines(&mut self, lines: usize) {
        self.history_lines = lines;
        for room in self.rooms.values_mut() {
            while room.history.len() > lines {
                room.history.pop_front();
            }
        }
    }

    /// Notes that member `id` (just logged in or resumed) is connected over TLS, for `/who`,
    /// `/whois` and operators. Not a member: nothing.
    pub fn set_tls(&mut self, id: MemberId, tls: bool) {
        if let Some(member) = self.members.get_mut(&id) {
            member.tls = tls;
        }
    }

    /// Whether member `id` is connected over TLS.
    pub fn is_tls(&self, id: MemberId) -> bool {
        self.members.get(&id).is_some_and(|member| member.tls)
    }

    /// Registers `id` (whose sender id is `session`) as `nick` and puts it in the default room.
    pub fn login(&mut self, id: MemberId, session: u64, nick: &str) -> Vec<Delivery> {
        if self.members.contains_key(&id) {
            return failed(id, Failure::AlreadyLoggedIn);
        }
        if let Err(failure) = self.check_free_nick(nick, None) {
            return failed(id, failure);
        }
        self.register(id, session, nick);
        let mut out = vec![one(id, Event::LoggedIn { nick: nick.to_string() })];
        out.extend(self.enter(id, DEFAULT_ROOM));
        out
    }

    fn register(&mut self, id: MemberId, session: u64, nick: &str) {
        self.index_nick(id, nick);
        self.members.insert(
            id,
            Member {
                nick: nick.to_string(),
                room: String::new(),
                session,
                muted: false,
                away: None,
                connected_at: self.unix_now,
                last_spoke: self.unix_now,
                tls: false,
                account: None,
            },
        );
    }

    /// Re-registers a session that was logged in with a broker that died: it takes back `nick`
    /// — or, if somebody registered that nick first, the first free `nick_2`, `nick_3`, ... —
    /// and enters `room` silently (the room already believed it was there). A room without a
    /// topic gets back the one this session had set. The session is then sent the room's recent
    /// lines.
    ///
    /// The nick meets the rules of a login: an invalid one, or one that would pass for someone
    /// online, is refused (the session asks its user for a nickname again). A resumer that
    /// could not keep its nick, or that the broker asks to `announce` (it comes long after the
    /// broker started, when no genuine resume is due), enters the room with a join line: the
    /// room never knew that name there.
    pub fn resume(
        &mut self,
        id: MemberId,
        session: u64,
        nick: &str,
        room_name: &str,
        topic: Option<&str>,
        announce: bool,
    ) -> Vec<Delivery> {
        if self.members.contains_key(&id) {
            return failed(id, Failure::AlreadyLoggedIn);
        }
        if let Err(why) = names::check_nick(nick) {
            return failed(id, Failure::InvalidNick { nick: text::sanitize(nick), why });
        }
        // Taken meanwhile, or passing for someone who came in meanwhile: the first free
        // variant, announced (a genuine resumer keeps its room; a forger gains no one's name).
        let Some(taken) = self.free_variant(nick) else {
            return failed(id, Failure::NickInUse(nick.to_string()));
        };
        let room_name = match names::check_room(room_name) {
            Ok(()) if self.has_room_for(room_name) => room_name,
            // An invalid room, or one too many: the lobby, which always exists.
            _ => DEFAULT_ROOM,
        };
        self.register(id, session, &taken);
        let key = names::fold(room_name);
        self.make_room(&key, room_name);
        let Some(room) = self.rooms.get_mut(&key) else { return Vec::new() };
        room.members.insert(id);
        self.entered.push(id);
        if room.topic.is_none() {
            room.topic = topic.and_then(|raw| clean_text(raw).ok());
        }
        let shown_name = room.name.clone();
        let mut out =
            vec![one(id, Event::Resumed { nick: taken.clone(), room: shown_name.clone() })];
        if announce || taken != nick {
            out.push(self::room(&key, Event::Joined { nick: taken, room: shown_name }));
        }
        out.extend(room.recent.iter().map(|(_, event)| one(id, event.clone())));
        if let Some(member) = self.members.get_mut(&id) {
            member.room = key;
        }
        out
    }

    /// `nick` if it is free and passes for nobody online, else the first such `nick_N` that
    /// is still a valid nickname.
    pub fn free_variant(&self, nick: &str) -> Option<String> {
        if self.check_free_nick(nick, None).is_ok() {
            return Some(nick.to_string());
        }
        (2..1000).find_map(|n| {
            let suffix = format!("_{n}");
            let keep = names::MAX_NICK_CHARS.saturating_sub(suffix.len());
            let candidate: String = nick.chars().take(keep).chain(suffix.chars()).collect();
            self.check_free_nick(&candidate, None).is_ok().then_some(candidate)
        })
    }

    /// Whether `nick` is free for `current` (a login: `None`), or why not.
    pub fn nick_free(&self, nick: &str, current: Option<MemberId>) -> Result<(), Failure> {
        self.check_free_nick(nick, current)
    }

    fn check_free_nick(&self, nick: &str, current: Option<MemberId>) -> Result<(), Failure> {
        names::check_nick(nick)
            .map_err(|why| Failure::InvalidNick { nick: text::sanitize(nick), why })?;
        match self.by_nick.get(&names::fold(nick)) {
            Some(&owner) if Some(owner) != current => Err(Failure::NickInUse(nick.to_string())),
            _ => match self.lookalike_of(nick, current) {
                Some(existing) => Err(Failure::NickLookalike { nick: nick.to_string(), existing }),
                None => match self.held_elsewhere(nick) {
                    Some(held) if names::fold(held) == names::fold(nick) => {
                        Err(Failure::NickInUse(nick.to_string()))
                    }
                    Some(held) => Err(Failure::NickLookalike {
                        nick: nick.to_string(),
                        existing: held.into(),
                    }),
                    None => Ok(()),
                },
            },
        }
    }

    /// The nickname of another member that `nick` would pass for on screen, if any.
    fn lookalike_of(&self, nick: &str, current: Option<MemberId>) -> Option<String> {
        let candidates = self.by_look.get(&names::lookalike_key(nick))?;
        candidates
            .iter()
            .filter(|&&id| Some(id) != current)
            .filter_map(|id| self.members.get(id))
            .find(|member| names::is_lookalike(nick, &member.nick))
            .map(|member| member.nick.clone())
    }

    fn index_nick(&mut self, id: MemberId, nick: &str) {
        self.by_nick.insert(names::fold(nick), id);
        self.by_look.entry(names::lookalike_key(nick)).or_default().push(id);
    }

    fn unindex_nick(&mut self, id: MemberId, nick: &str) {
        self.by_nick.remove(&names::fold(nick));
        let key = names::lookalike_key(nick);
        if let Some(ids) = self.by_look.get_mut(&key) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_look.remove(&key);
            }
        }
    }

    /// Whether room `name` exists or may be made.
    fn has_room_for(&self, name: &str) -> bool {
        self.rooms.len() < self.max_rooms || self.rooms.contains_key(&names::fold(name))
    }

    /// Puts a member (who is in no room) into room `name`, creating it if needed.
    fn enter(&mut self, id: MemberId, name: &str) -> Vec<Delivery> {
        let key = names::fold(name);
        self.make_room(&key, name);
        let Some(room) = self.rooms.get_mut(&key) else { return Vec::new() };
        room.members.insert(id);
        self.entered.push(id);
        let room_name = room.name.clone();
        let topic = room.topic.clone();
        let Some(member) = self.members.get_mut(&id) else {
            return Vec::new();
        };
        member.room = key.clone();
        let joined =
            self::room(&key, Event::Joined { nick: member.nick.clone(), room: room_name.clone() });
        if let Some(loading) = &mut room.loading {
            // The topic and history come when the store says what the room had.
            loading.waiting.push(id);
            return vec![joined];
        }
        let mut out = vec![joined, one(id, Event::Topic { room: room_name.clone(), text: topic })];
        if !room.history.is_empty() {
            out.push(one(id, Event::History { room: room_name, lines: room.history_shown() }));
        }
        out
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
            self.vanished.push(key.clone());
        }
        Some((key, name))
    }

    /// A line of chat from `id` to its room.
    pub fn say(&mut self, id: MemberId, seq: u64, raw: &str) -> Vec<Delivery> {
        self.broadcast_line(id, seq, raw, |from, sender, text| Event::Chat {
            from,
            sender,
            seq,
            text,
        })
    }

    /// An action (`/me`) from `id` to its room.
    pub fn act(&mut self, id: MemberId, seq: u64, raw: &str) -> Vec<Delivery> {
        self.broadcast_line(id, seq, raw, |from, sender, text| Event::Action {
            from,
            sender,
            seq,
            text,
        })
    }

    fn broadcast_line(
        &mut self,
        id: MemberId,
        seq: u64,
        raw: &str,
        make: impl FnOnce(String, u64, String) -> Event,
    ) -> Vec<Delivery> {
        let Some(member) = self.members.get_mut(&id) else {
            return rejected(id, seq, Failure::NotLoggedIn);
        };
        let text = match clean_text(raw) {
            Ok(text) => text,
            Err(failure) => return rejected(id, seq, failure),
        };
        let said_by = (member.session, seq);
        let event = make(member.nick.clone(), member.session, text);
        if member.muted {
            // Shown to its author as usual, to nobody else, and never replayed.
            return vec![one(id, event)];
        }
        member.last_spoke = self.unix_now;
        let key = member.room.clone();
        if let Some(room) = self.rooms.get_mut(&key) {
            room.keep_recent(self.now, &event);
            // A line sent again after a broker restart that the store had is in the room's
            // history already, loaded with it; it is still shown (members drop it by its
            // number if they saw it).
            if let Some(line) = history_line(&event, self.unix_now)
                && !room.stored_already(said_by.0, said_by.1)
            {
                self.store.keep_line(&key, &line);
                room.remember(self.history_lines, line);
            }
        }
        vec![room(&key, event)]
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
        self.unindex_nick(id, &old);
        self.index_nick(id, new);
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
        if !self.has_room_for(name) {
            let why = format!("the server has its maximum of {} rooms", self.max_rooms);
            return failed(id, Failure::InvalidRoom { room: name.to_string(), why });
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
        let mut present: Vec<&Member> =
            room.members.iter().filter_map(|m| self.members.get(m)).collect();
        present.sort_by_cached_key(|m| names::fold(&m.nick));
        let nicks = present.iter().map(|m| m.nick.clone()).collect();
        let away = present.iter().filter(|m| m.away.is_some()).map(|m| m.nick.clone()).collect();
        let idle = present.iter().map(|m| self.unix_now.saturating_sub(m.last_spoke)).collect();
        let tls = present.iter().filter(|m| m.tls).map(|m| m.nick.clone()).collect();
        let registered =
            present.iter().filter(|m| m.account.is_some()).map(|m| m.nick.clone()).collect();
        let room = room.name.clone();
        vec![one(id, Event::Members { room, nicks, away, idle, tls, registered })]
    }

    /// `/whois NICK`.
    pub fn whois(&self, id: MemberId, nick: &str) -> Vec<Delivery> {
        if !self.members.contains_key(&id) {
            return failed(id, Failure::NotLoggedIn);
        }
        let Some(member) = self.find(nick).and_then(|target| self.members.get(&target)) else {
            return failed(id, Failure::NoSuchNick(text::sanitize(nick)));
        };
        let room = self.rooms.get(&member.room).map_or_else(String::new, |r| r.name.clone());
        vec![one(
            id,
            Event::WhoIs(WhoIs {
                nick: member.nick.clone(),
                room,
                connected_seconds: self.unix_now.saturating_sub(member.connected_at),
                idle_seconds: self.unix_now.saturating_sub(member.last_spoke),
                away: member.away.clone(),
                tls: member.tls,
                registered: member.account.is_some(),
            }),
        )]
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
                    self.store.keep_topic(&key, &text);
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
    pub fn private(&mut self, id: MemberId, seq: u64, to: &str, raw: &str) -> Vec<Delivery> {
        let Some(member) = self.members.get(&id) else {
            return rejected(id, seq, Failure::NotLoggedIn);
        };
        let Some(&target) = self.by_nick.get(&names::fold(to)) else {
            return rejected(id, seq, Failure::NoSuchNick(text::sanitize(to)));
        };
        let text = match clean_text(raw) {
            Ok(text) => text,
            Err(failure) => return rejected(id, seq, failure),
        };
        let target_nick = self.nick(target).unwrap_or(to).to_string();
        let from = member.nick.clone();
        let sender = member.session;
        let away = self.away_of(target).map(|reason| {
            one(id, Event::IsAway { nick: target_nick.clone(), reason: reason.to_string() })
        });
        let mut out = Vec::new();
        if !member.muted {
            out.push(one(target, Event::Private { from, sender, seq, text: text.clone() }));
        }
        out.push(one(id, Event::PrivateSent { seq, to: target_nick, text }));
        out.extend(away);
        if let Some(member) = self.members.get_mut(&id) {
            member.last_spoke = self.unix_now;
        }
        out
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
        self.unindex_nick(id, &member.nick);
        vec![room(&key, Event::Left { nick: member.nick, room: room_name, reason })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged_in(nicks: &[&str]) -> Rooms {
        let mut rooms = Rooms::new(Instant::now());
        for (id, nick) in nicks.iter().enumerate() {
            let out = rooms.login(id as MemberId, 1000 + id as u64, nick);
            assert!(matches!(out[0].event, Event::LoggedIn { .. }), "{out:?}");
        }
        rooms
    }

    fn members(rooms: &Rooms, key: &str) -> Vec<MemberId> {
        rooms.members_of(key).collect()
    }

    #[test]
    fn login_joins_lobby_and_tells_the_room_and_the_topic() {
        let mut rooms = Rooms::new(Instant::now());
        let out = rooms.login(7, 1007, "alice");
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
        let out = rooms.login(9, 1009, "ALICE");
        assert_eq!(out, failed(9, Failure::NickInUse("ALICE".into())));
        assert_eq!(rooms.member_count(), 1);
    }

    #[test]
    fn invalid_nick_is_refused_by_the_broker_too() {
        let mut rooms = Rooms::new(Instant::now());
        let out = rooms.login(1, 1001, "9lives");
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
                Event::Chat { from: "alice".into(), sender: 1000, seq: 1, text: "hi there".into() }
            )]
        );
    }

    #[test]
    fn say_before_login_fails() {
        let mut rooms = Rooms::new(Instant::now());
        assert_eq!(rooms.say(3, 1, "x"), rejected(3, 1, Failure::NotLoggedIn));
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
    fn changes_name_who_entered_and_which_rooms_vanished() {
        let mut rooms = logged_in(&["alice", "bob"]);
        let mut changes = Changes::default();
        rooms.take_changes(&mut changes);
        assert_eq!(changes.entered, vec![0, 1], "both logged in to the lobby");
        rooms.join(0, "rust");
        rooms.join(0, "go");
        rooms.take_changes(&mut changes);
        assert_eq!(changes, Changes { entered: vec![0, 0], vanished: vec!["rust".into()] });
        rooms.take_changes(&mut changes);
        assert_eq!(changes, Changes::default(), "each change is told once");
    }

    #[test]
    fn rooms_beyond_the_limit_are_refused_and_a_resumer_lands_in_the_lobby() {
        let mut rooms = logged_in(&["alice", "bob"]);
        rooms.set_max_rooms(2);
        assert_eq!(rooms.join(0, "rust")[1].to, Audience::Room("rust".into()));
        let refused = rooms.join(1, "go");
        assert!(
            matches!(&refused[0].event, Event::Failed(Failure::InvalidRoom { room, why })
                if room == "go" && why.contains("maximum of 2 rooms")),
            "{refused:?}"
        );
        // An existing room may still be joined.
        assert_eq!(rooms.join(1, "Rust")[1].to, Audience::Room("rust".into()));
        let out = rooms.resume(2, 12, "carol", "go", None, false);
        assert_eq!(out[0].event, Event::Resumed { nick: "carol".into(), room: "lobby".into() });
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
        let mut rooms = logged_in(&["alice", "bob"]);
        assert_eq!(
            rooms.private(0, 4, "BOB", "psst"),
            vec![
                one(
                    1,
                    Event::Private {
                        from: "alice".into(),
                        sender: 1000,
                        seq: 4,
                        text: "psst".into()
                    }
                ),
                one(0, Event::PrivateSent { seq: 4, to: "bob".into(), text: "psst".into() }),
            ]
        );
        assert_eq!(
            rooms.private(0, 5, "nobody", "x"),
            rejected(0, 5, Failure::NoSuchNick("nobody".into()))
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
        let out = rooms.login(1, 1001, "bob");
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
                    nicks: vec!["Amy".into(), "bob".into(), "zed".into()],
                    away: vec![],
                    idle: vec![0, 0, 0],
                    tls: vec![],
                    registered: vec![],
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
        assert_eq!(
            rooms.login(5, 1005, "alice")[0],
            one(5, Event::LoggedIn { nick: "alice".into() })
        );
        assert_eq!(rooms.leave(42, LeaveReason::ConnectionLost), vec![]);
    }

    #[test]
    fn overlong_or_empty_text_is_refused() {
        let mut rooms = logged_in(&["alice"]);
        assert!(matches!(
            rooms.say(0, 1, &"x".repeat(513))[0].event,
            Event::Rejected { failure: Failure::InvalidText(_), .. }
        ));
        assert!(matches!(
            rooms.say(0, 1, "\x1b\x07")[0].event,
            Event::Rejected { failure: Failure::InvalidText(_), .. }
        ));
    }

    #[test]
    fn resume_takes_back_nick_and_room_silently() {
        let mut rooms = Rooms::new(Instant::now());
        let out = rooms.resume(4, 1004, "alice", "rust", Some("restored topic"), false);
        assert_eq!(out, vec![one(4, Event::Resumed { nick: "alice".into(), room: "rust".into() })]);
        assert_eq!(members(&rooms, "rust"), vec![4]);
        assert_eq!(
            rooms.topic(4, None),
            vec![one(4, Event::Topic { room: "rust".into(), text: Some("restored topic".into()) })]
        );
        // A second resumer does not overwrite a topic the room already has.
        rooms.resume(5, 1005, "bob", "RUST", Some("other"), false);
        assert_eq!(members(&rooms, "rust"), vec![4, 5]);
        assert_eq!(
            rooms.topic(5, None)[0].event,
            Event::Topic { room: "rust".into(), text: Some("restored topic".into()) }
        );
    }

    #[test]
    fn resume_of_a_taken_nick_gets_the_first_free_variant() {
        let mut rooms = logged_in(&["alice", "alice_2"]);
        let out = rooms.resume(7, 1007, "ALICE", "lobby", None, false);
        assert_eq!(out[0], one(7, Event::Resumed { nick: "ALICE_3".into(), room: "lobby".into() }));
        let long = "abcdefghijklmnopqrstuvwx";
        rooms.login(8, 1008, long);
        let out = rooms.resume(9, 1009, long, "lobby", None, false);
        assert_eq!(
            out[0],
            one(
                9,
                Event::Resumed { nick: "abcdefghijklmnopqrstuv_2".into(), room: "lobby".into() }
            )
        );
    }

    #[test]
    fn resume_meets_the_rules_of_a_login_and_a_renamed_or_late_resumer_is_announced() {
        let mut rooms = logged_in(&["alice"]);
        // A lookalike of someone online does not get that name: a variant, announced.
        let out = rooms.resume(5, 1005, "\u{430}lice", "lobby", None, false);
        assert_eq!(
            out[..2],
            [
                one(5, Event::Resumed { nick: "\u{430}lice_2".into(), room: "lobby".into() }),
                room("lobby", Event::Joined { nick: "\u{430}lice_2".into(), room: "lobby".into() }),
            ]
        );
        rooms.leave(5, LeaveReason::ConnectionLost);
        assert!(matches!(
            rooms.resume(5, 1005, "9lives", "lobby", None, false)[0].event,
            Event::Failed(Failure::InvalidNick { .. })
        ));
        assert_eq!(rooms.member_count(), 1);
        // Renamed: the room is told who came in.
        let out = rooms.resume(6, 1006, "Alice", "lobby", None, false);
        assert_eq!(
            out[..2],
            [
                one(6, Event::Resumed { nick: "Alice_2".into(), room: "lobby".into() }),
                room("lobby", Event::Joined { nick: "Alice_2".into(), room: "lobby".into() }),
            ]
        );
        // Long after the broker started, a resume is announced like a login.
        let out = rooms.resume(7, 1007, "carol", "lobby", None, true);
        assert_eq!(
            out[1],
            room("lobby", Event::Joined { nick: "carol".into(), room: "lobby".into() })
        );
    }

    #[test]
    fn resume_replays_the_rooms_recent_lines() {
        let mut rooms = Rooms::new(Instant::now());
        rooms.resume(1, 1001, "alice", "lobby", None, false);
        rooms.say(1, 7, "said while bob was away");
        let out = rooms.resume(2, 1002, "bob", "lobby", None, false);
        assert_eq!(
            out[1],
            one(
                2,
                Event::Chat {
                    from: "alice".into(),
                    sender: 1001,
                    seq: 7,
                    text: "said while bob was away".into()
                }
            )
        );
    }

    #[test]
    fn newcomers_see_the_last_lines_of_the_room() {
        let mut rooms = logged_in(&["alice"]);
        rooms.set_history_lines(2);
        rooms.set_now(Instant::now(), 1000);
        rooms.say(0, 1, "one");
        rooms.act(0, 2, "waves");
        rooms.say(0, 3, "three");
        let out = rooms.login(1, 1001, "bob");
        let history = out.iter().find_map(|d| match &d.event {
            Event::History { room, lines } => Some((d.to.clone(), room.clone(), lines.clone())),
            _ => None,
        });
        let line = |action, text: &str| HistoryLine {
            at: 1000,
            from: "alice".into(),
            action,
            text: text.into(),
        };
        assert_eq!(
            history,
            Some((
                Audience::One(1),
                "lobby".into(),
                vec![line(true, "waves"), line(false, "three")]
            ))
        );
        // Switched off: nothing is kept or shown.
        rooms.set_history_lines(0);
        rooms.say(0, 4, "four");
        let out = rooms.login(2, 1002, "carol");
        assert!(!out.iter().any(|d| matches!(d.event, Event::History { .. })), "{out:?}");
    }

    #[test]
    fn an_empty_room_shows_no_history() {
        let mut rooms = logged_in(&["alice"]);
        let out = rooms.login(1, 1001, "bob");
        assert!(!out.iter().any(|d| matches!(d.event, Event::History { .. })), "{out:?}");
    }

    #[test]
    fn lookalike_nicks_are_refused_and_case_folding_finds_cjk_and_greek() {
        let mut rooms = logged_in(&["alice", "小明", "Σοφία"]);
        assert_eq!(
            rooms.login(5, 1005, "\u{430}lice"),
            vec![one(
                5,
                Event::Failed(Failure::NickLookalike {
                    nick: "\u{430}lice".into(),
                    existing: "alice".into()
                })
            )]
        );
        assert_eq!(
            rooms.login(6, 1006, "ΣΟΦΊΑ"),
            vec![one(6, Event::Failed(Failure::NickInUse("ΣΟΦΊΑ".into())))]
        );
        assert_eq!(
            rooms.login(7, 1007, "小明"),
            vec![one(7, Event::Failed(Failure::NickInUse("小明".into())))]
        );
        // Once alice has gone, the name that looked like hers is free.
        rooms.leave(0, LeaveReason::Quit(None));
        assert!(matches!(rooms.login(5, 1005, "\u{430}lice")[0].event, Event::LoggedIn { .. }));
    }

    #[test]
    fn whois_tells_room_times_and_away() {
        let mut rooms = Rooms::new(Instant::now());
        rooms.set_now(Instant::now(), 100);
        rooms.login(0, 1000, "alice");
        rooms.login(1, 1001, "bob");
        rooms.set_now(Instant::now(), 160);
        rooms.say(1, 1, "hi");
        rooms.set_away(1, Some("lunch"));
        rooms.set_now(Instant::now(), 190);
        assert_eq!(
            rooms.whois(0, "BOB"),
            vec![one(
                0,
                Event::WhoIs(WhoIs {
                    nick: "bob".into(),
                    room: "lobby".into(),
                    connected_seconds: 90,
                    idle_seconds: 30,
                    away: Some("lunch".into()),
                    tls: false,
                    registered: false,
                })
            )]
        );
        assert_eq!(
            rooms.whois(0, "nobody"),
            vec![one(0, Event::Failed(Failure::NoSuchNick("nobody".into())))]
        );
    }

    #[test]
    fn recent_lines_age_out() {
        let mut rooms = logged_in(&["alice"]);
        let start = Instant::now();
        rooms.set_now(start, 0);
        rooms.say(0, 1, "old");
        rooms.set_now(start + RECENT_AGE + Duration::from_secs(1), 31);
        rooms.say(0, 2, "new");
        let out = rooms.resume(1, 1001, "bob", "lobby", None, false);
        assert_eq!(out.len(), 2, "only the new line is replayed: {out:?}");
    }

    #[test]
    fn recent_lines_are_bounded() {
        let mut rooms = logged_in(&["alice"]);
        for seq in 0..(RECENT_LINES as u64 + 10) {
            rooms.say(0, seq, "x");
        }
        let out = rooms.resume(1, 1001, "bob", "lobby", None, false);
        assert_eq!(out.len(), 1 + RECENT_LINES);
    }

    #[test]
    fn resume_into_an_invalid_room_lands_in_the_lobby() {
        let mut rooms = Rooms::new(Instant::now());
        let out = rooms.resume(1, 1001, "alice", "no spaces", None, false);
        assert_eq!(out[0], one(1, Event::Resumed { nick: "alice".into(), room: "lobby".into() }));
    }

    #[test]
    fn a_muted_member_sees_its_own_lines_and_nobody_else_does() {
        let mut rooms = logged_in(&["alice", "bob"]);
        rooms.set_muted(0, true);
        let said = rooms.say(0, 1, "spam");
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].to, Audience::One(0));
        let private = rooms.private(0, 2, "bob", "spam");
        assert!(matches!(
            private.as_slice(),
            [Delivery { to: Audience::One(0), event: Event::PrivateSent { .. } }]
        ));
        rooms.set_muted(0, false);
        assert_eq!(rooms.say(0, 3, "sorry")[0].to, Audience::Room("lobby".into()));
    }

    #[test]
    fn operators_can_find_members_and_list_rooms() {
        let mut rooms = logged_in(&["alice", "bob"]);
        rooms.join(1, "#Dev");
        assert_eq!(rooms.find("ALICE"), Some(0));
        assert_eq!(rooms.room_of(1), Some("Dev"));
        assert_eq!(rooms.room_key("#dev"), Some("dev".to_string()));
        assert_eq!(rooms.room_key("nowhere"), None);
        let rows = rooms.room_rows();
        assert_eq!(
            rows.iter().map(|r| (r.name.as_str(), r.members)).collect::<Vec<_>>(),
            [("Dev", 1), ("lobby", 1)]
        );
    }

    #[test]
    fn away_shows_in_who_and_to_whoever_sends_a_private_line() {
        let mut rooms = logged_in(&["alice", "bob"]);
        assert_eq!(
            rooms.set_away(1, Some("lunch")),
            vec![one(1, Event::Away { reason: Some("lunch".into()) })]
        );
        let who = rooms.who(0);
        assert!(
            matches!(&who[0].event, Event::Members { away, .. } if away == &["bob".to_string()]),
            "{who:?}"
        );
        let sent = rooms.private(0, 1, "bob", "hi");
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[2], one(0, Event::IsAway { nick: "bob".into(), reason: "lunch".into() }));
        rooms.set_away(1, None);
        assert_eq!(rooms.private(0, 2, "bob", "hi").len(), 2);
        assert_eq!(rooms.away_of(1), None);
    }
}
