//! The session's conversation state and what each broker event does to it.
//!
//! Owns the phase machine (choosing a nickname, chatting, re-registering with a restarted
//! broker), the re-registration a reconnection sends, the topic this user set, whom this user
//! ignores and who last wrote to them privately, and the rules that read them: which events are
//! shown (acknowledgements and the duplicate filter, through [`Deliveries`]; the ignore filter),
//! and which ring the bell. [`SessionState::on_line`] decides about a line said in the room
//! (from the ring or the socket) without allocating; [`SessionState::on_event`] takes an
//! event and says what to do ([`Reaction`]). Neither touches a socket or reads a clock (the
//! one side effect is a log line when the phase changes), so every transition is unit-tested
//! here.
//! The session's loop carries the reaction out (writes, admission report, closing).

use std::net::SocketAddr;

use log::{error, info, warn};

use crate::names::{self, DEFAULT_ROOM};
use crate::proto::broadcast::Said;
use zeroize::Zeroizing;

use crate::proto::{
    AccountNews, AccountSettings, Event, Failure, HistoryLine, IdentifiedLine, KeptMessage,
    Purpose, Request,
};
use crate::session::password::PasswordPrompt;
use crate::session::render::{self, Shown, notice};

/// Where the conversation with the client stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No nickname yet. `asked` is the nickname sent to the broker and not yet answered.
    ChoosingNick { asked: Option<String> },
    /// Re-registering as `nick` with a restarted broker; lines wait until it answers.
    Resuming { nick: String },
    /// Logged in as `nick`, in the room called `room`.
    Chatting { nick: String, room: String },
}

/// The link's bookkeeping of numbered lines that events feed: acknowledgements and the
/// duplicate filter (a broker restart re-sends lines, and their echoes come twice).
pub trait Deliveries {
    /// This session's sender id.
    fn me(&self) -> u64;
    /// Everything up to and including `seq` reached the broker.
    fn acknowledge(&mut self, seq: u64);
    /// True the first time `(sender, seq)` is seen.
    fn first_sight(&mut self, sender: u64, seq: u64) -> bool;
}

/// What an event asks of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// Nothing to show (a duplicate, an ignored speaker, an event with no text).
    Nothing,
    /// Lines for the client in one write, with the bell if `ring`.
    Show { lines: Vec<Shown>, ring: bool },
    /// A room's recent lines (the ignored already left out), rendered with the local time.
    History { room: String, lines: Vec<HistoryLine> },
    /// The answer to the page's `/missed` (the ignored already left out): see
    /// [`Event::Missed`].
    Missed { room: String, lines: Vec<IdentifiedLine>, found: bool, more: bool },
    /// Stored lines asked for (`/history`, `/search`), between a heading and a footer,
    /// rendered with their dates.
    Stored { heading: String, lines: Vec<HistoryLine>, footer: String },
    /// The broker answered this session's login or re-registration. `admitted`: the client now
    /// has a nickname (the master is told once); `restart_login_grace`: it must choose one
    /// again, with a fresh grace time. `notices` are written one by one, then `lines` at once.
    Registered { admitted: bool, restart_login_grace: bool, notices: Vec<Shown>, lines: Vec<Shown> },
    /// The broker answered `Hello`.
    Welcome { sender: u64, broker: u64 },
    /// The session ends: the client gets `last_words`, the log `why`.
    Close { last_words: Option<Shown>, why: String },
    /// Ask for a password ([`SessionState::password`] holds the prompt): turn echo off and
    /// show `prompt`.
    AskPassword { prompt: Shown },
    /// Logged in to an account: apply its `settings` (silently), then show `lines`; with
    /// `must_change`, ask the broker at once for a new password's challenge.
    Identified { nick: String, settings: AccountSettings, lines: Vec<Shown>, must_change: bool },
    /// Private lines kept while away, and the count of lines that mentioned this user, to be
    /// shown with their dates.
    WhileAway { messages: Vec<KeptMessage>, mentions: u64, room: String },
}

/// The account this session is logged in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// Lets this session keep its login with a restarted broker.
    pub token: Vec<u8>,
    pub admin: bool,
}

/// The session's own state: everything its decisions about events and commands read.
#[derive(Debug)]
pub struct SessionState {
    pub phase: Phase,
    /// The topic this user set in its current room, restored after a broker restart.
    pub topic_set: Option<String>,
    /// How to re-register once the broker that answers a reconnection proves to be a new one;
    /// kept until the broker answers it.
    pub reregistration: Option<Request>,
    /// Nicks whose lines this user does not want to see (`/ignore`), as shown.
    pub ignored: Vec<String>,
    /// The [`names::lookalike_key`] of each of `ignored`, computed when it is ignored, so that
    /// a confusable nick is ignored too without a key computed on the heap per line.
    ignored_keys: Vec<String>,
    /// Who last sent this user a private line, for `/reply`.
    pub last_private_from: Option<String>,
    /// Where the next `/history` goes on from in this room: the cursor of the page before the
    /// one shown (`Some(0)` once the oldest was shown; `None`: from the newest).
    pub history_before: Option<i64>,
    /// The client's address, for log lines.
    peer: SocketAddr,
    /// The client's connection is TLS.
    pub tls: bool,
    /// Passwords may be typed on this connection (TLS, loopback, or the operator allows
    /// them on plain connections); when not, the TLS port to tell the user (if any).
    pub passwords_allowed: bool,
    pub tls_port: Option<u16>,
    /// The account this session is logged in to.
    pub account: Option<LoggedIn>,
    /// The password being asked for, while one is.
    pub password: Option<PasswordPrompt>,
    /// What the last proof sent was for, until the broker answers it.
    pub proving: Option<Purpose>,
    /// The password just logged in with, kept only until the broker says whether an
    /// operator's reset forces a new one (then it answers the "current password" step).
    pub login_password: Option<Zeroizing<String>>,
}

impl SessionState {
    pub fn new(peer: SocketAddr) -> SessionState {
        SessionState {
            phase: Phase::ChoosingNick { asked: None },
            topic_set: None,
            reregistration: None,
            ignored: Vec::new(),
            ignored_keys: Vec::new(),
            last_private_from: None,
            history_before: None,
            peer,
            tls: false,
            passwords_allowed: peer.ip().is_loopback(),
            tls_port: None,
            account: None,
            password: None,
            proving: None,
            login_password: None,
        }
    }

    /// The line that refuses a password on this connection.
    pub fn passwords_need_tls(&self) -> String {
        match self.tls_port {
            Some(port) => format!("passwords are accepted only over TLS (port {port})"),
            None => {
                "passwords are accepted only over TLS, which this server does not offer".to_string()
            }
        }
    }

    /// The preferences an account keeps that this state holds (the terminal's are added by
    /// the session).
    pub fn ignored(&self) -> Vec<String> {
        self.ignored.clone()
    }

    /// `lines` without those of speakers this user ignores.
    fn not_ignored(&self, lines: &[HistoryLine]) -> Vec<HistoryLine> {
        lines.iter().filter(|line| !self.is_ignored(&line.from)).cloned().collect()
    }

    /// Stored lines between the heading and footer `framing` gives, or its one line when there
    /// are none; the ignored speakers' lines left out.
    fn stored(&self, framing: render::Framing, lines: &[HistoryLine]) -> Reaction {
        let lines = self.not_ignored(lines);
        match framing {
            render::Framing::Alone(line) => {
                Reaction::Show { lines: vec![render::system(&line)], ring: false }
            }
            render::Framing::Around { heading, footer } => {
                Reaction::Stored { heading, lines, footer }
            }
        }
    }

    /// Whether `nick` is someone else's, in a session that is chatting (whose own arrivals and
    /// renames change its state; others' change nothing here).
    pub fn is_someone_else(&self, nick: &str) -> bool {
        matches!(&self.phase, Phase::Chatting { nick: mine, .. } if !names::same(mine, nick))
    }

    /// Whether this user asked not to see `nick`'s lines: `nick` is one of the ignored, in any
    /// case, or would pass for one on screen (so a lookalike nick does not dodge `/ignore`).
    pub fn is_ignored(&self, nick: &str) -> bool {
        self.ignored.iter().any(|ignored| names::same(ignored, nick))
            || names::lookalike_key_in(nick, &self.ignored_keys)
    }

    /// Hides `nick`'s lines from now on (once, whatever the spelling).
    pub fn ignore(&mut self, nick: String) {
        if !self.is_ignored(&nick) {
            self.ignored_keys.push(names::lookalike_key(&nick));
            self.ignored.push(nick);
        }
    }

    /// Shows `nick`'s lines again, and those of every ignored nick that passes for it.
    pub fn unignore(&mut self, nick: &str) {
        let mut keys = std::mem::take(&mut self.ignored_keys).into_iter();
        let key = names::lookalike_key(nick);
        let mut kept = Vec::new();
        self.ignored.retain(|ignored| {
            let ignored_key = keys.next().unwrap_or_default();
            let keep = !names::same(ignored, nick) && ignored_key != key;
            if keep {
                kept.push(ignored_key);
            }
            keep
        });
        self.ignored_keys = kept;
    }

    /// A private line, or a room line naming this user (by someone else), rings the bell
    /// (when the user has it on).
    pub fn rings_the_bell(&self, event: &Event, bell_on: bool) -> bool {
        match event {
            Event::Private { .. } => bell_on && matches!(self.phase, Phase::Chatting { .. }),
            Event::Chat { from, text, .. } | Event::Action { from, text, .. } => {
                self.mentioned(from, text, bell_on)
            }
            _ => false,
        }
    }

    /// Whether a room line `text` by `from` rings the bell: it names this user, and someone
    /// else said it.
    fn mentioned(&self, from: &str, text: &str, bell_on: bool) -> bool {
        let Phase::Chatting { nick: mine, .. } = &self.phase else { return false };
        bell_on && !names::same(from, mine) && names::mentions(text, mine)
    }

    /// What a line or action said in the room does (one from the ring, or an `Event::Chat` or
    /// `Event::Action` from the socket): this session's own is acknowledged; a duplicate (a
    /// broker restart re-sends lines) or an ignored speaker's is hidden (`None`); otherwise
    /// `Some(ring)`, whether it rings the bell. Allocates nothing: it runs for every line.
    /// Lines and actions are treated alike (`_action` says which this is).
    pub fn on_line(
        &mut self,
        said: &Said<'_>,
        _action: bool,
        deliveries: &mut impl Deliveries,
        bell_on: bool,
    ) -> Option<bool> {
        if said.sender == deliveries.me() {
            deliveries.acknowledge(said.seq);
        }
        if !deliveries.first_sight(said.sender, said.seq) || self.is_ignored(said.from) {
            return None;
        }
        Some(self.mentioned(said.from, said.text, bell_on))
    }

    /// The link reached a broker again: prepares, in [`reregistration`](Self::reregistration),
    /// what to register with it once it proves to be a new one (the nickname asked for before
    /// login, or nick, room and topic after). Nothing before a nickname was asked for; the same
    /// request again when the broker went away before answering it.
    pub fn reconnected(&mut self) {
        if self.reregistration.is_some() {
            // The broker went away again before this session was back: the same request (with
            // the room it was in) goes to the next one.
            return;
        }
        let request = match &self.phase {
            Phase::ChoosingNick { asked: None } => return,
            Phase::ChoosingNick { asked: Some(nick) } => {
                Request::Login { nick: nick.clone(), tls: self.tls }
            }
            Phase::Resuming { nick } | Phase::Chatting { nick, .. } => {
                let room = match &self.phase {
                    Phase::Chatting { room, .. } => room.clone(),
                    _ => DEFAULT_ROOM.to_string(),
                };
                let nick = nick.clone();
                self.phase = Phase::Resuming { nick: nick.clone() };
                Request::Resume {
                    nick,
                    room,
                    topic: self.topic_set.clone(),
                    tls: self.tls,
                    token: self.account.as_ref().map(|account| account.token.clone()),
                }
            }
        };
        self.reregistration = Some(request);
    }

    /// Updates the state from `event` and says what the session does about it. `deliveries` is
    /// the link's acknowledgement and duplicate bookkeeping; `bell_on` the user's bell setting.
    pub fn on_event(
        &mut self,
        event: &Event,
        deliveries: &mut impl Deliveries,
        bell_on: bool,
    ) -> Reaction {
        let me = deliveries.me();
        match event {
            Event::Chat { from, sender, seq, text } | Event::Action { from, sender, seq, text } => {
                let said = Said { from, sender: *sender, seq: *seq, text };
                let action = matches!(event, Event::Action { .. });
                return match self.on_line(&said, action, deliveries, bell_on) {
                    Some(ring) => Reaction::Show { lines: render::event(event), ring },
                    None => Reaction::Nothing,
                };
            }
            // Seen before: a duplicate. (Every private line passes the filter exactly once.)
            Event::Private { sender, seq, .. } if !deliveries.first_sight(*sender, *seq) => {
                return Reaction::Nothing;
            }
            Event::PrivateSent { seq, .. } | Event::Rejected { seq, .. } => {
                // Re-sent after a broker restart, these come twice: show them once.
                deliveries.acknowledge(*seq);
                if !deliveries.first_sight(me, *seq) {
                    return Reaction::Nothing;
                }
            }
            Event::LoggedIn { nick } => {
                self.reregistration = None;
                info!("{} logged in as {nick}", self.peer);
                self.phase = Phase::Chatting { nick: nick.clone(), room: DEFAULT_ROOM.to_string() };
                self.history_before = None;
                return Reaction::Registered {
                    admitted: true,
                    restart_login_grace: false,
                    notices: Vec::new(),
                    lines: render::event(event),
                };
            }
            Event::Failed(failure)
                if matches!(self.phase, Phase::ChoosingNick { asked: Some(_) }) =>
            {
                self.reregistration = None;
                self.phase = Phase::ChoosingNick { asked: None };
                self.proving = None;
                self.login_password = None;
                let mut notices = match failure {
                    Failure::NickRegistered(nick) if !self.passwords_allowed => {
                        vec![render::system(&format!(
                            "{} is registered; {}",
                            crate::text::sanitize(nick),
                            self.passwords_need_tls()
                        ))]
                    }
                    _ => render::event(event),
                };
                notices.push(notice::prompt());
                return Reaction::Registered {
                    admitted: false,
                    restart_login_grace: false,
                    notices,
                    lines: Vec::new(),
                };
            }
            Event::Failed(failure) if matches!(self.phase, Phase::Resuming { .. }) => {
                warn!("{}: could not re-register after a broker restart: {failure:?}", self.peer);
                self.reregistration = None;
                self.phase = Phase::ChoosingNick { asked: None };
                return Reaction::Registered {
                    admitted: false,
                    restart_login_grace: true,
                    notices: vec![render::system(&render::failure(failure)), notice::prompt()],
                    lines: Vec::new(),
                };
            }
            Event::Resumed { nick, room } => {
                self.reregistration = None;
                let asked = match &self.phase {
                    Phase::Resuming { nick } => nick.clone(),
                    _ => nick.clone(),
                };
                info!("{} re-registered as {nick} in {room} after a broker restart", self.peer);
                let line = if names::same(&asked, nick) {
                    notice::resumed(room)
                } else {
                    notice::resumed_renamed(&asked, nick)
                };
                self.phase = Phase::Chatting { nick: nick.clone(), room: room.clone() };
                self.history_before = None;
                return Reaction::Registered {
                    admitted: true,
                    restart_login_grace: false,
                    notices: vec![line],
                    lines: render::event(event),
                };
            }
            Event::Joined { nick, room } => {
                if let Phase::Chatting { nick: mine, room: current } = &mut self.phase
                    && names::same(mine, nick)
                {
                    *current = room.clone();
                    self.topic_set = None;
                    self.history_before = None;
                }
            }
            Event::TopicChanged { by, text, .. } => {
                let mine =
                    matches!(&self.phase, Phase::Chatting { nick, .. } if names::same(nick, by));
                self.topic_set = mine.then(|| text.clone());
            }
            Event::NickChanged { old, new } => {
                if let Phase::Chatting { nick, .. } = &mut self.phase
                    && names::same(nick, old)
                {
                    info!("{} ({old}) is now known as {new}", self.peer);
                    *nick = new.clone();
                }
                // Ignoring and replying follow the person, not the name.
                for (ignored, key) in self.ignored.iter_mut().zip(&mut self.ignored_keys) {
                    if names::same(ignored, old) {
                        ignored.clone_from(new);
                        *key = names::lookalike_key(new);
                    }
                }
                if self.last_private_from.as_deref().is_some_and(|from| names::same(from, old)) {
                    self.last_private_from = Some(new.clone());
                }
            }
            Event::Welcome { sender, broker, .. } => {
                return Reaction::Welcome { sender: *sender, broker: *broker };
            }
            Event::Dropped { reason } => {
                return Reaction::Close {
                    last_words: render::event(event).into_iter().next(),
                    why: format!("dropped by the broker ({reason:?})"),
                };
            }
            Event::Shutdown => {
                return Reaction::Close {
                    last_words: Some(notice::shutting_down()),
                    why: "server shutting down".to_string(),
                };
            }
            Event::Kicked { reason } => {
                return Reaction::Close {
                    last_words: render::event(event).into_iter().next(),
                    why: format!(
                        "removed by an operator ({})",
                        reason.as_deref().unwrap_or("no reason")
                    ),
                };
            }
            Event::Challenge(challenge) => {
                let prompt = PasswordPrompt::new(challenge.clone(), self.login_password.take());
                let line = render::system(&prompt.prompt());
                self.password = Some(prompt);
                return Reaction::AskPassword { prompt: line };
            }
            Event::Identified { nick, token, settings, admin, must_change } => {
                self.account = Some(LoggedIn { token: token.clone(), admin: *admin });
                if !*must_change {
                    self.login_password = None;
                }
                info!("{} logged in to the account {nick}", self.peer);
                let mut lines = Vec::new();
                match (self.proving.take(), &self.phase) {
                    (Some(Purpose::Login), Phase::ChoosingNick { .. }) => {
                        lines.push(render::system(&format!(
                            "Welcome back, {}.",
                            crate::text::sanitize(nick)
                        )));
                    }
                    (Some(Purpose::Login), _) => lines.push(render::system(&format!(
                        "You are logged in as {}",
                        crate::text::sanitize(nick)
                    ))),
                    _ => {}
                }
                if *must_change {
                    lines.push(render::system(
                        "An operator reset your password; choose a new one now.",
                    ));
                }
                return Reaction::Identified {
                    nick: nick.clone(),
                    settings: settings.clone(),
                    lines,
                    must_change: *must_change,
                };
            }
            Event::Account(news) => {
                self.proving = None;
                let line = match news {
                    AccountNews::Registered { nick } => {
                        format!("{} is registered; you are logged in", crate::text::sanitize(nick))
                    }
                    AccountNews::PasswordChanged => {
                        self.login_password = None;
                        "Your password is changed".to_string()
                    }
                    AccountNews::Unregistered { nick } => {
                        self.account = None;
                        format!("{} is no longer registered", crate::text::sanitize(nick))
                    }
                    AccountNews::LoggedOut { guest } => {
                        self.account = None;
                        format!("You are logged out; you are now {}", crate::text::sanitize(guest))
                    }
                };
                return Reaction::Show { lines: vec![render::system(&line)], ring: false };
            }
            Event::WhileAway { messages, mentions, .. } => {
                let room = match &self.phase {
                    Phase::Chatting { room, .. } => room.clone(),
                    _ => DEFAULT_ROOM.to_string(),
                };
                if messages.is_empty() && *mentions == 0 {
                    return Reaction::Nothing;
                }
                return Reaction::WhileAway {
                    messages: messages
                        .iter()
                        .filter(|message| !self.is_ignored(&message.from))
                        .cloned()
                        .collect(),
                    mentions: *mentions,
                    room,
                };
            }
            Event::PrivateKept { seq, to, .. } => {
                deliveries.acknowledge(*seq);
                if !deliveries.first_sight(me, *seq) {
                    return Reaction::Nothing;
                }
                let line = format!(
                    "{} is not connected; the message is kept for their next login",
                    crate::text::sanitize(to)
                );
                return Reaction::Show { lines: vec![render::system(&line)], ring: false };
            }
            Event::Replaced => {
                return Reaction::Close {
                    last_words: Some(render::system(
                        "You logged in from another connection; this one is closing.",
                    )),
                    why: "the account logged in from another connection".to_string(),
                };
            }
            Event::Failed(_) if self.proving.is_some() => {
                self.proving = None;
                self.login_password = None;
            }
            Event::Failed(Failure::VersionMismatch { broker, session }) => {
                error!("broker speaks protocol {broker}, this session {session}");
                let failure = Failure::VersionMismatch { broker: *broker, session: *session };
                return Reaction::Close {
                    last_words: Some(render::system(&render::failure(&failure))),
                    why: "protocol version mismatch".to_string(),
                };
            }
            _ => {}
        }
        self.shown(event, bell_on)
    }

    /// An event that is shown as the renderer has it, unless its speaker is ignored.
    fn shown(&mut self, event: &Event, bell_on: bool) -> Reaction {
        let from = match event {
            Event::Private { from, .. } => Some(from.as_str()),
            _ => None,
        };
        if from.is_some_and(|from| self.is_ignored(from)) {
            return Reaction::Nothing;
        }
        if let Event::Private { from, .. } = event {
            self.last_private_from = Some(from.clone());
        }
        if let Event::History { room, lines } = event {
            let lines = self.not_ignored(lines);
            if lines.is_empty() {
                return Reaction::Nothing;
            }
            return Reaction::History { room: room.clone(), lines };
        }
        match event {
            Event::Missed { room, lines, found, more } => {
                let lines = lines
                    .iter()
                    .filter(|said| !self.is_ignored(&said.line.from))
                    .cloned()
                    .collect();
                return Reaction::Missed { room: room.clone(), lines, found: *found, more: *more };
            }
            Event::HistoryPage { room, lines, before } => {
                self.history_before = match (lines.is_empty(), before) {
                    (true, _) => None,
                    (false, Some(before)) => Some(*before),
                    (false, None) => Some(0),
                };
                return self
                    .stored(render::history_page(room, lines.len(), before.is_some()), lines);
            }
            Event::SearchResults { room, words, lines } => {
                return self.stored(render::search_results(room, words, lines.len()), lines);
            }
            _ => {}
        }
        let ring = self.rings_the_bell(event, bell_on);
        let lines = render::event(event);
        if lines.is_empty() {
            return Reaction::Nothing;
        }
        Reaction::Show { lines, ring }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::proto::LeaveReason;

    /// The link's bookkeeping, as [`BrokerLink`] keeps it: the highest seq seen per sender.
    #[derive(Default)]
    struct Link {
        me: u64,
        acked: u64,
        seen: HashMap<u64, u64>,
    }

    impl Deliveries for Link {
        fn me(&self) -> u64 {
            self.me
        }
        fn acknowledge(&mut self, seq: u64) {
            self.acked = self.acked.max(seq);
        }
        fn first_sight(&mut self, sender: u64, seq: u64) -> bool {
            let highest = self.seen.entry(sender).or_insert(0);
            let first = seq > *highest;
            *highest = (*highest).max(seq);
            first
        }
    }

    const ME: u64 = 7;
    const BOB: u64 = 8;

    fn state(phase: Phase) -> SessionState {
        let mut state = SessionState::new(([127, 0, 0, 1], 4000).into());
        state.phase = phase;
        state
    }

    fn chatting() -> SessionState {
        state(Phase::Chatting { nick: "alice".into(), room: "lobby".into() })
    }

    fn link() -> Link {
        Link { me: ME, ..Link::default() }
    }

    fn chat(from: &str, sender: u64, seq: u64, text: &str) -> Event {
        Event::Chat { from: from.into(), sender, seq, text: text.into() }
    }

    fn private(from: &str, seq: u64) -> Event {
        Event::Private { from: from.into(), sender: BOB, seq, text: "psst".into() }
    }

    fn shown(event: &Event, ring: bool) -> Reaction {
        Reaction::Show { lines: render::event(event), ring }
    }

    /// A resume answered as asked, back in `room` (the renderer adds nothing to it).
    fn resumed_in(room: &str) -> Reaction {
        Reaction::Registered {
            admitted: true,
            restart_login_grace: false,
            notices: vec![notice::resumed(room)],
            lines: Vec::new(),
        }
    }

    #[test]
    fn a_login_answered_makes_the_session_chat_in_the_default_room() {
        let mut state = state(Phase::ChoosingNick { asked: Some("alice".into()) });
        state.reregistration = Some(Request::Login { nick: "alice".into(), tls: false });
        let event = Event::LoggedIn { nick: "alice".into() };
        let reaction = state.on_event(&event, &mut link(), true);
        assert_eq!(
            reaction,
            Reaction::Registered {
                admitted: true,
                restart_login_grace: false,
                notices: Vec::new(),
                lines: render::event(&event),
            }
        );
        assert_eq!(
            state.phase,
            Phase::Chatting { nick: "alice".into(), room: DEFAULT_ROOM.into() }
        );
        assert_eq!(state.reregistration, None);
    }

    #[test]
    fn a_login_refused_while_choosing_asks_again_within_the_same_grace() {
        let mut state = state(Phase::ChoosingNick { asked: Some("alice".into()) });
        state.reregistration = Some(Request::Login { nick: "alice".into(), tls: false });
        let event = Event::Failed(Failure::NickInUse("alice".into()));
        let mut notices = render::event(&event);
        notices.push(notice::prompt());
        assert_eq!(
            state.on_event(&event, &mut link(), true),
            Reaction::Registered {
                admitted: false,
                restart_login_grace: false,
                notices,
                lines: Vec::new()
            }
        );
        assert_eq!(state.phase, Phase::ChoosingNick { asked: None });
        assert_eq!(state.reregistration, None);
    }

    #[test]
    fn a_resume_refused_starts_the_login_over_with_a_fresh_grace() {
        let mut state = state(Phase::Resuming { nick: "alice".into() });
        let failure = Failure::NickBanned("alice".into());
        let event = Event::Failed(failure.clone());
        assert_eq!(
            state.on_event(&event, &mut link(), true),
            Reaction::Registered {
                admitted: false,
                restart_login_grace: true,
                notices: vec![render::system(&render::failure(&failure)), notice::prompt()],
                lines: Vec::new(),
            }
        );
        assert_eq!(state.phase, Phase::ChoosingNick { asked: None });
    }

    #[test]
    fn a_failure_while_chatting_is_shown_and_changes_nothing() {
        let mut state = chatting();
        let event = Event::Failed(Failure::NickInUse("bob".into()));
        assert_eq!(state.on_event(&event, &mut link(), true), shown(&event, false));
        assert_eq!(state.phase, chatting().phase);
    }

    #[test]
    fn a_version_mismatch_closes_unless_it_answers_a_login() {
        let failure = Failure::VersionMismatch { broker: 2, session: 1 };
        let event = Event::Failed(failure.clone());
        assert_eq!(
            chatting().on_event(&event, &mut link(), true),
            Reaction::Close {
                last_words: Some(render::system(&render::failure(&failure))),
                why: "protocol version mismatch".into()
            }
        );
        let mut asking = state(Phase::ChoosingNick { asked: Some("alice".into()) });
        assert!(matches!(
            asking.on_event(&event, &mut link(), true),
            Reaction::Registered { admitted: false, .. }
        ));
    }

    #[test]
    fn resumed_as_asked_says_so_and_goes_back_to_the_room() {
        let mut state = state(Phase::Resuming { nick: "alice".into() });
        state.reregistration = Some(Request::Resume {
            nick: "alice".into(),
            room: "rust".into(),
            topic: None,
            tls: false,
            token: None,
        });
        let event = Event::Resumed { nick: "Alice".into(), room: "rust".into() };
        assert_eq!(state.on_event(&event, &mut link(), true), resumed_in("rust"));
        assert_eq!(state.phase, Phase::Chatting { nick: "Alice".into(), room: "rust".into() });
        assert_eq!(state.reregistration, None);
    }

    #[test]
    fn resumed_with_a_new_nick_names_both() {
        let mut state = state(Phase::Resuming { nick: "alice".into() });
        let event = Event::Resumed { nick: "alice_".into(), room: "lobby".into() };
        let Reaction::Registered { notices, .. } = state.on_event(&event, &mut link(), true) else {
            panic!("a resume answer is a registration");
        };
        assert_eq!(notices, vec![notice::resumed_renamed("alice", "alice_")]);
        assert_eq!(state.phase, Phase::Chatting { nick: "alice_".into(), room: "lobby".into() });
    }

    #[test]
    fn a_reconnection_prepares_what_to_register_again() {
        let mut fresh = state(Phase::ChoosingNick { asked: None });
        fresh.reconnected();
        assert_eq!(fresh.reregistration, None, "nothing was asked yet");

        let mut asking = state(Phase::ChoosingNick { asked: Some("alice".into()) });
        asking.reconnected();
        assert_eq!(
            asking.reregistration,
            Some(Request::Login { nick: "alice".into(), tls: false })
        );

        let mut chatting = chatting();
        chatting.topic_set = Some("Rust only".into());
        chatting.reconnected();
        let resume = Request::Resume {
            nick: "alice".into(),
            room: "lobby".into(),
            topic: Some("Rust only".into()),
            tls: false,
            token: None,
        };
        assert_eq!(chatting.reregistration, Some(resume.clone()));
        assert_eq!(chatting.phase, Phase::Resuming { nick: "alice".into() });
        // The broker went away again before answering: the same request, room and all.
        chatting.reconnected();
        assert_eq!(chatting.reregistration, Some(resume));
    }

    #[test]
    fn joining_moves_this_user_and_forgets_the_topic_it_set() {
        let mut state = chatting();
        state.topic_set = Some("t".into());
        let others = Event::Joined { nick: "bob".into(), room: "rust".into() };
        assert_eq!(state.on_event(&others, &mut link(), true), shown(&others, false));
        assert_eq!(state.topic_set, Some("t".into()));
        let mine = Event::Joined { nick: "ALICE".into(), room: "rust".into() };
        state.on_event(&mine, &mut link(), true);
        assert_eq!(state.phase, Phase::Chatting { nick: "alice".into(), room: "rust".into() });
        assert_eq!(state.topic_set, None);
    }

    #[test]
    fn the_topic_set_is_remembered_only_when_this_user_set_it() {
        let mut state = chatting();
        let by = |by: &str| Event::TopicChanged {
            room: "lobby".into(),
            by: by.into(),
            text: "t".into(),
        };
        state.on_event(&by("alice"), &mut link(), true);
        assert_eq!(state.topic_set, Some("t".into()));
        state.on_event(&by("bob"), &mut link(), true);
        assert_eq!(state.topic_set, None);
    }

    #[test]
    fn a_new_nick_is_followed_by_the_phase_the_ignore_list_and_reply() {
        let mut state = chatting();
        state.ignore("bob".into());
        state.last_private_from = Some("bob".into());
        let event = Event::NickChanged { old: "Bob".into(), new: "robert".into() };
        assert_eq!(state.on_event(&event, &mut link(), true), shown(&event, false));
        assert_eq!(state.ignored, vec!["robert".to_string()]);
        assert_eq!(state.last_private_from, Some("robert".into()));
        let mine = Event::NickChanged { old: "alice".into(), new: "alicia".into() };
        state.on_event(&mine, &mut link(), true);
        assert_eq!(state.phase, Phase::Chatting { nick: "alicia".into(), room: "lobby".into() });
    }

    #[test]
    fn ignored_speakers_are_not_shown_nor_replied_to() {
        let mut state = chatting();
        state.ignore("bob".into());
        let mut link = link();
        assert_eq!(state.on_event(&chat("BOB", BOB, 1, "hi"), &mut link, true), Reaction::Nothing);
        assert_eq!(state.on_event(&private("bob", 2), &mut link, true), Reaction::Nothing);
        assert_eq!(state.last_private_from, None);
        let carol = chat("carol", 9, 1, "hi");
        assert_eq!(state.on_event(&carol, &mut link, true), shown(&carol, false));
        let from_carol =
            Event::Private { from: "carol".into(), sender: 9, seq: 2, text: "x".into() };
        state.on_event(&from_carol, &mut link, true);
        assert_eq!(state.last_private_from, Some("carol".into()));
    }

    #[test]
    fn history_leaves_out_ignored_speakers() {
        let mut state = chatting();
        state.ignore("bob".into());
        let line =
            |from: &str| HistoryLine { at: 0, from: from.into(), action: false, text: "x".into() };
        let event =
            Event::History { room: "lobby".into(), lines: vec![line("bob"), line("carol")] };
        assert_eq!(
            state.on_event(&event, &mut link(), true),
            Reaction::History { room: "lobby".into(), lines: vec![line("carol")] }
        );
        let only_bob = Event::History { room: "lobby".into(), lines: vec![line("bob")] };
        assert_eq!(state.on_event(&only_bob, &mut link(), true), Reaction::Nothing);
    }

    #[test]
    fn the_bell_rings_for_private_lines_and_mentions_by_others() {
        let state = chatting();
        assert!(state.rings_the_bell(&private("bob", 1), true));
        assert!(state.rings_the_bell(&chat("bob", BOB, 1, "hi Alice!"), true));
        assert!(!state.rings_the_bell(&chat("bob", BOB, 1, "hi all"), true));
        assert!(!state.rings_the_bell(&chat("alice", ME, 1, "I am alice"), true), "own line");
        assert!(!state.rings_the_bell(&private("bob", 1), false), "bell off");
        let action =
            Event::Action { from: "bob".into(), sender: BOB, seq: 1, text: "pokes alice".into() };
        assert!(state.rings_the_bell(&action, true));
        let joined = Event::Joined { nick: "alice".into(), room: "lobby".into() };
        assert!(!state.rings_the_bell(&joined, true));
        let choosing = self::state(Phase::ChoosingNick { asked: None });
        assert!(!choosing.rings_the_bell(&private("bob", 1), true), "not logged in");
        // And on_event passes it on.
        let mut state = chatting();
        let event = private("bob", 1);
        assert_eq!(state.on_event(&event, &mut link(), true), shown(&event, true));
    }

    #[test]
    fn own_lines_are_acknowledged_and_shown_once_after_a_reconnect() {
        let mut state = chatting();
        let mut link = link();
        let mine = chat("alice", ME, 1, "hello");
        assert_eq!(state.on_event(&mine, &mut link, true), shown(&mine, false));
        assert_eq!(link.acked, 1);
        // The restarted broker echoes the re-sent line again: acknowledged, not shown twice.
        assert_eq!(state.on_event(&mine, &mut link, true), Reaction::Nothing);
        let others = chat("bob", BOB, 1, "hi");
        assert_eq!(state.on_event(&others, &mut link, true), shown(&others, false));
        assert_eq!(state.on_event(&others, &mut link, true), Reaction::Nothing);
        assert_eq!(link.acked, 1, "another sender's line acknowledges nothing of ours");
        let sent = Event::PrivateSent { seq: 2, to: "bob".into(), text: "psst".into() };
        assert_eq!(state.on_event(&sent, &mut link, true), shown(&sent, false));
        assert_eq!(link.acked, 2);
        assert_eq!(state.on_event(&sent, &mut link, true), Reaction::Nothing);
        let rejected = Event::Rejected { seq: 3, failure: Failure::NoSuchNick("carol".into()) };
        assert_eq!(state.on_event(&rejected, &mut link, true), shown(&rejected, false));
        assert_eq!(link.acked, 3);
        assert_eq!(state.on_event(&rejected, &mut link, true), Reaction::Nothing);
        let from_bob = private("bob", 2);
        assert_eq!(state.on_event(&from_bob, &mut link, true), shown(&from_bob, true));
        assert_eq!(state.on_event(&from_bob, &mut link, true), Reaction::Nothing);
    }

    #[test]
    fn welcome_and_the_broker_s_goodbyes() {
        let mut state = chatting();
        let welcome = Event::Welcome { version: 1, sender: ME, broker: 42 };
        assert_eq!(
            state.on_event(&welcome, &mut link(), true),
            Reaction::Welcome { sender: ME, broker: 42 }
        );
        assert_eq!(
            state.on_event(&Event::Shutdown, &mut link(), true),
            Reaction::Close {
                last_words: Some(notice::shutting_down()),
                why: "server shutting down".into()
            }
        );
        let dropped = Event::Dropped { reason: LeaveReason::TooSlow };
        assert_eq!(
            state.on_event(&dropped, &mut link(), true),
            Reaction::Close {
                last_words: render::event(&dropped).into_iter().next(),
                why: "dropped by the broker (TooSlow)".into()
            }
        );
        let kicked = Event::Kicked { reason: None };
        assert_eq!(
            state.on_event(&kicked, &mut link(), true),
            Reaction::Close {
                last_words: render::event(&kicked).into_iter().next(),
                why: "removed by an operator (no reason)".into()
            }
        );
    }

    #[test]
    fn a_resumed_while_chatting_still_re_registers_as_the_nick_it_names() {
        let mut state = chatting();
        let event = Event::Resumed { nick: "alice".into(), room: "rust".into() };
        assert!(render::event(&event).is_empty(), "the notice is the session's own");
        assert_eq!(state.on_event(&event, &mut link(), true), resumed_in("rust"));
    }

    fn said<'a>(from: &'a str, sender: u64, seq: u64, text: &'a str) -> Said<'a> {
        Said { from, sender, seq, text }
    }

    #[test]
    fn a_line_from_the_ring_is_acknowledged_filtered_and_rings_as_its_event_would() {
        let mut state = chatting();
        state.ignore("mallory".into());
        let mut link = link();
        assert_eq!(state.on_line(&said("alice", ME, 1, "hi"), false, &mut link, true), Some(false));
        assert_eq!(link.acked, 1, "own line acknowledged");
        assert_eq!(state.on_line(&said("alice", ME, 1, "hi"), false, &mut link, true), None);
        assert_eq!(
            state.on_line(&said("bob", BOB, 1, "hi ALICE"), true, &mut link, true),
            Some(true)
        );
        assert_eq!(
            state.on_line(&said("bob", BOB, 2, "hi alice"), false, &mut link, false),
            Some(false)
        );
        assert_eq!(
            state.on_line(&said("bob", BOB, 2, "again"), false, &mut link, true),
            None,
            "dup"
        );
        assert_eq!(state.on_line(&said("Mallory", 9, 1, "hi alice"), false, &mut link, true), None);
        assert_eq!(link.acked, 1, "another sender's line acknowledges nothing of ours");
        // The socket's events take the same path and agree.
        let mut state = chatting();
        let mut link = self::link();
        let event = chat("bob", BOB, 1, "hi alice");
        assert_eq!(state.on_event(&event, &mut link, true), shown(&event, true));
        assert_eq!(state.on_line(&said("bob", BOB, 1, "hi alice"), false, &mut link, true), None);
    }

    #[test]
    fn a_lookalike_nick_does_not_dodge_ignore() {
        let mut state = chatting();
        state.ignore("bob".into());
        let mut link = link();
        for (seq, lookalike) in
            ["b0b", "B0B", "\u{FF42}\u{FF4F}\u{FF42}", "b\u{43E}b"].iter().enumerate()
        {
            let seq = seq as u64 + 1;
            assert!(state.is_ignored(lookalike), "{lookalike}");
            assert_eq!(
                state.on_line(&said(lookalike, BOB, seq, "hi"), false, &mut link, true),
                None
            );
            let event = chat(lookalike, BOB, seq + 10, "hi");
            assert_eq!(state.on_event(&event, &mut link, true), Reaction::Nothing, "{lookalike}");
        }
        assert!(!state.is_ignored("bob2") && !state.is_ignored("rob"));
        // Ignoring a lookalike of someone ignored adds nothing; unignoring any spelling frees
        // every name that passes for it.
        state.ignore("B0B".into());
        assert_eq!(state.ignored, vec!["bob".to_string()]);
        state.ignore("carol".into());
        state.unignore("b0b");
        assert_eq!(state.ignored, vec!["carol".to_string()]);
        assert!(!state.is_ignored("bob") && !state.is_ignored("b0b") && state.is_ignored("CAROL"));
        // The key follows a rename.
        let renamed = Event::NickChanged { old: "carol".into(), new: "dave".into() };
        state.on_event(&renamed, &mut link, true);
        assert!(
            state.is_ignored("dave")
                && state.is_ignored("d\u{430}ve")
                && !state.is_ignored("carol")
        );
    }

    fn challenge(purpose: Purpose) -> Event {
        Event::Challenge(crate::proto::Challenge {
            nick: "alice".into(),
            purpose,
            nonce: 1,
            current: None,
            fresh: None,
        })
    }

    fn identified(must_change: bool) -> Event {
        Event::Identified {
            nick: "alice".into(),
            token: vec![1, 2, 3],
            settings: AccountSettings::default(),
            admin: false,
            must_change,
        }
    }

    fn shown_text(reaction: &Reaction) -> Vec<String> {
        match reaction {
            Reaction::Show { lines, .. } | Reaction::Identified { lines, .. } => {
                lines.iter().map(Shown::plain).collect()
            }
            other => panic!("nothing shown: {other:?}"),
        }
    }

    #[test]
    fn a_login_at_the_prompt_asks_welcomes_and_keeps_the_token_for_a_resume() {
        let mut state = state(Phase::ChoosingNick { asked: Some("alice".into()) });
        let reaction = state.on_event(&challenge(Purpose::Login), &mut link(), true);
        assert!(
            matches!(reaction, Reaction::AskPassword { ref prompt } if prompt.plain() == "*** Password for alice:")
        );
        assert!(state.password.is_some());
        state.password = None;
        state.proving = Some(Purpose::Login);
        let reaction = state.on_event(&identified(false), &mut link(), true);
        assert_eq!(shown_text(&reaction), vec!["*** Welcome back, alice."]);
        assert_eq!(state.account.as_ref().map(|a| a.token.clone()), Some(vec![1, 2, 3]));
        state.phase = Phase::Chatting { nick: "alice".into(), room: "rust".into() };
        state.reconnected();
        assert!(matches!(
            state.reregistration,
            Some(Request::Resume { token: Some(ref token), .. }) if token == &vec![1, 2, 3]
        ));
    }

    #[test]
    fn a_reset_password_must_be_changed_and_the_one_typed_is_kept_for_that() {
        let mut state = chatting();
        state.proving = Some(Purpose::Login);
        state.login_password = Some(Zeroizing::new("one-time-pass".into()));
        let reaction = state.on_event(&identified(true), &mut link(), true);
        assert!(matches!(reaction, Reaction::Identified { must_change: true, .. }));
        assert!(
            shown_text(&reaction).iter().any(|l| l.contains("An operator reset your password"))
        );
        assert!(state.login_password.is_some(), "kept for the forced change");
        let reaction = state.on_event(&challenge(Purpose::ChangePassword), &mut link(), true);
        assert!(
            matches!(reaction, Reaction::AskPassword { ref prompt } if prompt.plain() == "*** New password:")
        );
        assert!(state.login_password.is_none());
    }

    #[test]
    fn a_registered_nick_on_a_plain_connection_points_to_tls() {
        let mut state = state(Phase::ChoosingNick { asked: Some("alice".into()) });
        state.passwords_allowed = false;
        state.tls_port = Some(2324);
        let event = Event::Failed(Failure::NickRegistered("alice".into()));
        let Reaction::Registered { notices, .. } = state.on_event(&event, &mut link(), true) else {
            panic!("not answered as a login")
        };
        assert_eq!(
            notices[0].plain(),
            "*** alice is registered; passwords are accepted only over TLS (port 2324)"
        );
        assert_eq!(state.phase, Phase::ChoosingNick { asked: None });
    }

    #[test]
    fn replaced_closes_and_kept_lines_acknowledge() {
        let mut state = chatting();
        assert!(matches!(
            state.on_event(&Event::Replaced, &mut link(), true),
            Reaction::Close { .. }
        ));
        let mut link = link();
        let kept = Event::PrivateKept { seq: 4, to: "bob".into(), text: "hi".into() };
        let reaction = state.on_event(&kept, &mut link, true);
        assert_eq!(link.acked, 4);
        assert_eq!(
            shown_text(&reaction),
            vec!["*** bob is not connected; the message is kept for their next login"]
        );
        assert_eq!(state.on_event(&kept, &mut link, true), Reaction::Nothing, "once");
    }

    #[test]
    fn logging_out_and_unregistering_forget_the_account() {
        let mut state = chatting();
        state.account = Some(LoggedIn { token: vec![], admin: false });
        let news = Event::Account(AccountNews::LoggedOut { guest: "Guest-00ff".into() });
        assert_eq!(
            shown_text(&state.on_event(&news, &mut link(), true)),
            vec!["*** You are logged out; you are now Guest-00ff"]
        );
        assert!(state.account.is_none());
        state.account = Some(LoggedIn { token: vec![], admin: false });
        let news = Event::Account(AccountNews::Unregistered { nick: "alice".into() });
        state.on_event(&news, &mut link(), true);
        assert!(state.account.is_none());
    }
}
