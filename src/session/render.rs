//! Turns broker events and session notices into the text lines a client sees.
//!
//! Owns the look of chatd: user lines are `<nick> text`, actions `* nick text`, private lines
//! `*nick* text` and `-> *nick* text`, and everything the server says starts with `*** `.
//! Every field that came from a user is cleaned with `text::sanitize` here too, so no path can
//! put a control character on a client's screen, and defused with `text::defuse_line_starts`,
//! so that no stretch of it, wherever a terminal's wrapping puts a row break, reads as a line of
//! chatd's own or another person's ([`user_text`]). A line is a [`Shown`]: its kind and its
//! parts, so that the session's terminal can colour the nick, indent wrapped text under the
//! text and add timestamps; [`Shown::plain`] is the line as a monochrome terminal shows it.
//! No I/O, no state.

use std::borrow::Cow;
use std::fmt::Write;

use crate::proto::{Event, Failure, HistoryLine, LeaveReason};
use crate::session::help::HELP;
use crate::text::{age, defuse_line_starts, sanitize, sanitized};

/// Prefix of every line the server itself says.
pub const SYSTEM_PREFIX: &str = "*** ";

/// What a line is, which decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Said by the server: `*** ...`.
    System,
    /// A user's line or action in the room.
    Chat,
    /// A private message to this user.
    Private,
    /// A private message this user sent.
    PrivateSent,
    /// A room line from before this user joined.
    History,
}

/// One line for the client: `before`, the speaker's `nick` (empty for the server), `after`,
/// then `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub kind: Kind,
    pub before: String,
    pub nick: String,
    pub after: String,
    pub text: String,
}

impl Shown {
    /// The line without colour, wrapping or timestamp.
    pub fn plain(&self) -> String {
        format!("{}{}{}{}", self.before, self.nick, self.after, self.text)
    }
}

/// A field that came from a user, as it may be shown: cleaned ([`sanitized`]) and defused
/// ([`defuse_line_starts`]); borrowed when there was nothing to change (most fields), so that
/// a line rendered from a ring record allocates nothing. The operator's texts (announcements,
/// the message of the day) are only cleaned.
pub fn user_text(text: &str) -> Cow<'_, str> {
    match sanitized(text) {
        Cow::Borrowed(clean) => defuse_line_starts(clean),
        // Most lines have nothing to defuse: keep the one allocation cleaning made.
        Cow::Owned(clean) => match defuse_line_starts(&clean) {
            Cow::Borrowed(_) => Cow::Owned(clean),
            Cow::Owned(defused) => Cow::Owned(defused),
        },
    }
}

/// Appends the text of the system line telling that `nick` has joined `room` to `text`.
/// Appending, not returning, is what lets `Terminal::write_system` show the arrivals of a
/// crowd in a room without allocating (cleaning copies only what it changes).
pub fn arrival_text(nick: &str, room: &str, text: &mut String) {
    let _ = write!(text, "{} has joined {}", user_text(nick), user_text(room));
}

/// Appends the text of the system line telling that `nick` has left `room` for `reason` to
/// `text` (see [`arrival_text`]: a crowd leaves the same way).
pub fn departure_text(nick: &str, room: &str, reason: &LeaveReason, text: &mut String) {
    let nick = user_text(nick);
    let _ = match reason {
        LeaveReason::JoinedOther(to) => {
            write!(text, "{nick} has left {} (joined {})", user_text(room), user_text(to))
        }
        LeaveReason::Quit(Some(why)) => write!(text, "{nick} has left ({})", user_text(why)),
        LeaveReason::Quit(None) => write!(text, "{nick} has left (quit)"),
        LeaveReason::ConnectionLost => write!(text, "{nick} has left (connection lost)"),
        LeaveReason::TooSlow => write!(text, "{nick} has left (too slow)"),
        LeaveReason::Kicked(Some(why)) => {
            write!(text, "{nick} was removed by an operator ({})", user_text(why))
        }
        LeaveReason::Kicked(None) => write!(text, "{nick} was removed by an operator"),
        LeaveReason::Replaced => write!(text, "{nick} reconnected"),
    };
}

/// A system line whose text `fill` appends.
fn system_with(fill: impl FnOnce(&mut String)) -> Shown {
    let mut text = String::new();
    fill(&mut text);
    Shown { text, ..system("") }
}

/// A system line.
pub fn system(text: &str) -> Shown {
    Shown {
        kind: Kind::System,
        before: SYSTEM_PREFIX.to_string(),
        nick: String::new(),
        after: String::new(),
        text: text.to_string(),
    }
}

/// A line said by `nick`: `before nick after text`, every user field cleaned.
fn said(kind: Kind, before: &str, nick: &str, after: &str, text: &str) -> Shown {
    Shown {
        kind,
        before: before.to_string(),
        nick: user_text(nick).into_owned(),
        after: after.to_string(),
        text: user_text(text).into_owned(),
    }
}

/// What goes before and after the speaker's nick of a line (`<nick> text`) or an action
/// (`* nick text`) said in the room.
pub fn said_frame(action: bool) -> (&'static str, &'static str) {
    if action { ("* ", " ") } else { ("<", "> ") }
}

/// A line from a room's history: its time, then the line as it was shown.
pub fn history_line(line: &HistoryLine, hh_mm: &str) -> Shown {
    let (before, after) = said_frame(line.action);
    let mut shown = said(Kind::History, before, &line.from, after, &line.text);
    shown.before = format!("[{hh_mm}] {}", shown.before);
    shown
}

/// The answer to `/admin`, as chatctl prints it (tables aligned), one system line per row.
/// Nicks, reasons and topics in it came from users: every row is cleaned and defused.
pub fn admin_reply(reply: &crate::proto::control::ControlReply) -> Vec<Shown> {
    let text = crate::ctl::output::render(reply, crate::ctl::output::Format::Human);
    text.lines().map(|row| system(&user_text(row))).collect()
}

/// The lines shown for one event (history lines need the clock: see [`history_line`]).
pub fn event(event: &Event) -> Vec<Shown> {
    let line = match event {
        Event::Welcome { .. } => return Vec::new(),
        Event::LoggedIn { nick } => {
            system(&format!("You are now known as {}. Type /help for commands.", user_text(nick)))
        }
        Event::Chat { from, text, .. } => {
            let (before, after) = said_frame(false);
            said(Kind::Chat, before, from, after, text)
        }
        Event::Action { from, text, .. } => {
            let (before, after) = said_frame(true);
            said(Kind::Chat, before, from, after, text)
        }
        Event::Joined { nick, room } => system_with(|text| arrival_text(nick, room, text)),
        Event::Left { nick, room, reason } => {
            system_with(|text| departure_text(nick, room, reason, text))
        }
        Event::NickChanged { old, new } => {
            system(&format!("{} is now known as {}", user_text(old), user_text(new)))
        }
        Event::TopicChanged { room, by, text } => system(&format!(
            "{} set the topic of {} to: {}",
            user_text(by),
            user_text(room),
            user_text(text)
        )),
        Event::Topic { room, text: Some(text) } => {
            system(&format!("Topic for {}: {}", user_text(room), user_text(text)))
        }
        Event::Topic { room, text: None } => {
            system(&format!("No topic is set for {}", user_text(room)))
        }
        Event::Private { from, text, .. } => said(Kind::Private, "*", from, "* ", text),
        Event::PrivateSent { to, text, .. } => said(Kind::PrivateSent, "-> *", to, "* ", text),
        Event::Members { room, nicks, away, idle, tls, registered } => {
            let names: Vec<String> = nicks
                .iter()
                .zip(idle.iter().chain(std::iter::repeat(&0)))
                .map(|(n, &idle)| {
                    let mut notes = Vec::new();
                    if idle >= 60 {
                        notes.push(format!("idle {}", age(idle)));
                    }
                    if away.contains(n) {
                        notes.push("away".to_string());
                    }
                    if tls.contains(n) {
                        notes.push("tls".to_string());
                    }
                    if registered.contains(n) {
                        notes.push("registered".to_string());
                    }
                    match notes.is_empty() {
                        true => user_text(n).into_owned(),
                        false => format!("{} ({})", user_text(n), notes.join(", ")),
                    }
                })
                .collect();
            system(&format!("In {} ({}): {}", user_text(room), names.len(), names.join(", ")))
        }
        Event::WhoIs(who) => system(&whois_line(who, None)),
        Event::WhoIsOn { who, node } => system(&whois_line(who, Some(node))),
        Event::Cluster(news) => system(&news.words()),
        Event::MemberNodes { nicks, nodes, .. } => {
            let names: Vec<String> = nicks
                .iter()
                .zip(nodes)
                .map(|(nick, node)| format!("{} (on {})", user_text(nick), user_text(node)))
                .collect();
            system(&format!("On other servers: {}", names.join(", ")))
        }
        // Needs the clock for each line's time: the session renders it with `history`.
        Event::History { .. } => return Vec::new(),
        Event::RoomList { rooms } => {
            let rows: Vec<String> =
                rooms.iter().map(|r| format!("{} ({})", user_text(&r.name), r.members)).collect();
            system(&format!("Rooms: {}", rows.join(", ")))
        }
        Event::Failed(failure) | Event::Rejected { failure, .. } => system(&self::failure(failure)),
        // The session words this itself: it knows what it asked for.
        Event::Resumed { .. } => return Vec::new(),
        Event::Shutdown => notice::shutting_down(),
        Event::Kicked { reason: Some(why) } => {
            system(&format!("You were removed by an operator ({}).", user_text(why)))
        }
        Event::Kicked { reason: None } => system("You were removed by an operator."),
        Event::Away { reason: Some(reason) } => system(&format!(
            "You are marked as away ({}). /back when you return.",
            user_text(reason)
        )),
        Event::Away { reason: None } => system("You are back."),
        Event::IsAway { nick, reason } => {
            system(&format!("{} is away: {}", user_text(nick), user_text(reason)))
        }
        Event::Announcement { text } => system(&format!("Announcement: {}", sanitize(text))),
        Event::Motd { lines } => {
            let mut out = vec![system("Message of the day:")];
            out.extend(lines.iter().map(|line| system(&format!("  {}", sanitize(line)))));
            return out;
        }
        Event::Dropped { reason: LeaveReason::TooSlow } => {
            system("Disconnected: too slow (this connection fell too far behind the room).")
        }
        Event::Dropped { .. } => notice::disconnected_by_server(),
        // The ring's bookkeeping: nothing to show.
        Event::RingMark { .. } | Event::RingHandover { .. } => return Vec::new(),
        // Framed by the session's state (they change where the next /history starts).
        Event::HistoryPage { .. } | Event::SearchResults { .. } => return Vec::new(),
        // The page's own request: the session sends it whole (`session::web`).
        Event::Missed { .. } => return Vec::new(),
        // Accounts: the session's state machine words them (`state`).
        Event::Challenge(_)
        | Event::Identified { .. }
        | Event::Account(_)
        | Event::WhileAway { .. }
        | Event::PrivateKept { .. }
        | Event::Replaced => return Vec::new(),
        Event::AdminReply(reply) => return admin_reply(reply),
    };
    vec![line]
}

/// A room's history as shown on entering it: marked as history, each line with its time.
/// `hh_mm` gives a line's local time from its Unix time.
pub fn history(room: &str, lines: &[HistoryLine], hh_mm: impl Fn(u64) -> String) -> Vec<Shown> {
    let heading = format!(
        "Last {} {} in {} before you came:",
        lines.len(),
        if lines.len() == 1 { "line" } else { "lines" },
        user_text(room)
    );
    stored(&heading, lines, "End of history.", hh_mm)
}

/// How stored lines are framed: a heading and a footer around them, or one line alone when
/// there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    Around { heading: String, footer: String },
    Alone(String),
}

/// The framing of a `/history` page of `count` lines; `more`: there are earlier ones.
pub fn history_page(room: &str, count: usize, more: bool) -> Framing {
    let room = user_text(room);
    if count == 0 {
        return Framing::Alone(format!("No earlier lines in {room}."));
    }
    let footer = if more {
        "End of history page; /history again for earlier lines."
    } else {
        "End of history page; there is nothing earlier."
    };
    Framing::Around {
        heading: format!(
            "History of {room}, {count} {}:",
            if count == 1 { "line" } else { "lines" }
        ),
        footer: footer.to_string(),
    }
}

/// The framing of `/search WORDS` results (`count`, newest first).
pub fn search_results(room: &str, words: &str, count: usize) -> Framing {
    let (room, words) = (user_text(room), user_text(words));
    if count == 0 {
        return Framing::Alone(format!("Nothing in {room} matches \"{words}\"."));
    }
    Framing::Around {
        heading: format!(
            "{count} {} in {room} {} \"{words}\", newest first:",
            if count == 1 { "line" } else { "lines" },
            if count == 1 { "matches" } else { "match" }
        ),
        footer: "End of search.".to_string(),
    }
}

/// Stored lines as `/history` and `/search` show them: each with its local date and time
/// (`when` gives `YYYY-MM-DD HH:MM` from a Unix time), marked as history.
pub fn stored(
    heading: &str,
    lines: &[HistoryLine],
    footer: &str,
    when: impl Fn(u64) -> String,
) -> Vec<Shown> {
    let mut out = vec![system(heading)];
    out.extend(lines.iter().map(|line| history_line(line, &when(line.at))));
    out.push(system(footer));
    out
}

/// What came while a user was away, at their login: the private lines kept for them (each
/// with its date) and how many lines of `room` named them.
pub fn while_away(
    messages: &[crate::proto::KeptMessage],
    mentions: u64,
    room: &str,
    when: impl Fn(u64) -> String,
) -> Vec<Shown> {
    let mut out = Vec::new();
    if !messages.is_empty() {
        let count = messages.len();
        let noun = if count == 1 { "message" } else { "messages" };
        out.push(system(&format!("{count} {noun} while you were away:")));
        for message in messages {
            let mut shown = said(Kind::Private, "*", &message.from, "* ", &message.text);
            shown.before = format!("[{}] {}", when(message.at), shown.before);
            out.push(shown);
        }
    }
    if mentions > 0 {
        let noun = if mentions == 1 { "line" } else { "lines" };
        out.push(system(&format!(
            "{mentions} {noun} in {} mentioned you since you left",
            user_text(room)
        )));
    }
    out
}

/// What a failed request tells its user.
pub fn failure(failure: &Failure) -> String {
    match failure {
        Failure::NickInUse(nick) => format!("The nickname {} is already in use", user_text(nick)),
        Failure::InvalidNick { nick, why } => {
            format!("Invalid nickname {:?}: {}", user_text(nick), user_text(why))
        }
        Failure::InvalidRoom { room, why } => {
            format!("Invalid room {:?}: {}", user_text(room), user_text(why))
        }
        Failure::AlreadyInRoom(room) => format!("You are already in {}", user_text(room)),
        Failure::NoSuchNick(nick) => format!("No such nick: {}", user_text(nick)),
        Failure::NotLoggedIn => "Choose a nickname first".to_string(),
        Failure::AlreadyLoggedIn => {
            "You already have a nickname; use /nick to change it".to_string()
        }
        Failure::VersionMismatch { .. } => {
            "The chat service is being upgraded; please try again later".to_string()
        }
        Failure::InvalidText(why) => format!("Not sent: {}", user_text(why)),
        Failure::NickBanned(nick) => format!("The nickname {} is banned here", user_text(nick)),
        Failure::NickLookalike { nick, existing } => format!(
            "The nickname {} looks too much like {}, who is here; please choose another",
            user_text(nick),
            user_text(existing)
        ),
        Failure::OutOfSequence { .. } => {
            "Not sent: the line was numbered out of sequence".to_string()
        }
        Failure::Unavailable(why) => {
            let why = user_text(why);
            let mut why = why.into_owned();
            if let Some(first) = why.get(..1) {
                let upper = first.to_uppercase();
                why.replace_range(..1, &upper);
            }
            why
        }
        Failure::NickRegistered(nick) => format!(
            "The nickname {} is registered; if it is yours, type /login {}",
            user_text(nick),
            user_text(nick)
        ),
        Failure::WrongPassword(nick) => format!("Wrong password for {}", user_text(nick)),
        Failure::Throttled { seconds } => {
            format!("Too many failed attempts; try again in {seconds} seconds")
        }
        Failure::AccountRefused(why) => user_text(why).into_owned(),
        Failure::AccountRequired => {
            "This server requires an account: /register to create one, or /login".to_string()
        }
    }
}

/// The `/help` listing.
pub fn help() -> Vec<Shown> {
    let mut lines = vec![system("Commands:")];
    lines.extend(HELP.iter().map(|(usage, what)| system(&format!("  {usage:<19} {what}"))));
    lines.push(system("Anything else you type is sent to everyone in your room."));
    lines.push(system("Keys, where chatd echoes what you type (telnet in character mode):"));
    lines.extend(
        crate::session::editor::KEYS
            .iter()
            .map(|(keys, what)| system(&format!("  {keys:<19} {what}"))),
    );
    lines
}

/// Notices the session itself produces.
pub mod notice {
    use super::{Shown, system};
    use crate::text::MAX_LINE_BYTES;

    pub fn greeting(version: &str) -> Vec<Shown> {
        vec![system(&format!("Welcome to chatd {version}.")), prompt()]
    }

    pub fn prompt() -> Shown {
        system("Please choose a nickname (1-24 letters, digits or _-[]{}|^`\\):")
    }

    pub fn too_long() -> Shown {
        system(&format!("Line too long (more than {MAX_LINE_BYTES} bytes); it was not sent."))
    }

    /// Said once per session: later lines that do not decode are sent as they decode.
    pub fn not_in_charset(charset: &str) -> Shown {
        system(&format!(
            "Your line was not valid {charset} and was not sent. If your terminal uses another \
             character set, type /charset and its name ({}).",
            crate::session::charset::NAMES
        ))
    }

    pub fn unknown(word: &str) -> Shown {
        system(&format!("Unknown command {}; try /help", super::sanitize(word)))
    }

    pub fn usage(usage: &str) -> Shown {
        system(&format!("Usage: {usage}"))
    }

    pub fn nick_first() -> Shown {
        system("Choose a nickname first.")
    }

    pub fn goodbye() -> Shown {
        system("Goodbye.")
    }

    pub fn login_timeout(seconds: u64) -> Shown {
        let unit = if seconds == 1 { "second" } else { "seconds" };
        system(&format!("No nickname chosen within {seconds} {unit}; goodbye."))
    }

    pub fn shutting_down() -> Shown {
        system("The server is shutting down. Goodbye.")
    }

    pub fn killed() -> Shown {
        system("You were disconnected by an operator.")
    }

    pub fn service_unavailable() -> Shown {
        system("The chat service is unavailable; please try again later.")
    }

    pub fn resumed(room: &str) -> Shown {
        system(&format!("The chat service restarted; you are still in {}.", super::sanitize(room)))
    }

    pub fn resumed_renamed(asked: &str, got: &str) -> Shown {
        system(&format!(
            "The chat service restarted and {} was taken meanwhile; you are now {}.",
            super::sanitize(asked),
            super::sanitize(got)
        ))
    }

    pub fn flooding() -> Shown {
        system("You are sending too fast; lines are being dropped until you slow down.")
    }

    pub fn too_many_errors(budget: u32) -> Shown {
        system(&format!("{budget} invalid commands in a row; goodbye."))
    }

    pub fn endless_line(limit: usize) -> Shown {
        system(&format!("More than {limit} bytes without a line end; goodbye."))
    }

    pub fn idle_warning(seconds_left: u64) -> Shown {
        system(&format!(
            "You have been idle; you will be disconnected in {seconds_left} s unless you type something."
        ))
    }

    pub fn idle_disconnect(seconds: u64) -> Shown {
        system(&format!("Disconnected after {seconds} s of inactivity."))
    }

    pub fn disconnected_by_server() -> Shown {
        system("Disconnected by the server.")
    }

    pub fn service_lost() -> Shown {
        system("Lost contact with the chat service; please reconnect.")
    }
}

/// `/whois` in words: where the member is (and on which server, in a cluster), for how long.
fn whois_line(who: &crate::proto::WhoIs, node: Option<&str>) -> String {
    let mut line = format!(
        "{} is in {}{}, connected for {}, idle {}",
        user_text(&who.nick),
        user_text(&who.room),
        node.map(|node| format!(" on server {}", user_text(node))).unwrap_or_default(),
        age(who.connected_seconds),
        age(who.idle_seconds)
    );
    if who.tls {
        line.push_str(", over TLS");
    }
    if who.registered {
        line.push_str(", registered");
    }
    if let Some(reason) = &who.away {
        line.push_str(&format!(", away: {}", user_text(reason)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RoomInfo;

    fn one(e: Event) -> String {
        let mut lines = event(&e);
        assert_eq!(lines.len(), 1);
        lines.remove(0).plain()
    }

    #[test]
    fn user_lines_and_system_lines_look_different() {
        assert_eq!(
            one(Event::Chat { from: "alice".into(), sender: 9, seq: 1, text: "Hello,all".into() }),
            "<alice> Hello,all"
        );
        assert_eq!(
            one(Event::Joined { nick: "alice".into(), room: "lobby".into() }),
            "*** alice has joined lobby"
        );
        assert_eq!(
            one(Event::Action { from: "alice".into(), sender: 9, seq: 1, text: "waves".into() }),
            "* alice waves"
        );
    }

    #[test]
    fn departures_say_why() {
        let left = |reason| one(Event::Left { nick: "alice".into(), room: "lobby".into(), reason });
        assert_eq!(left(LeaveReason::Quit(Some("bye".into()))), "*** alice has left (bye)");
        assert_eq!(left(LeaveReason::ConnectionLost), "*** alice has left (connection lost)");
        assert_eq!(
            left(LeaveReason::JoinedOther("rust".into())),
            "*** alice has left lobby (joined rust)"
        );
    }

    #[test]
    fn user_text_is_defused_in_every_line_but_the_operators() {
        let forged = "*** alice has quit";
        assert_eq!(
            one(Event::Chat { from: "bob".into(), sender: 9, seq: 1, text: forged.into() }),
            "<bob> (***) alice has quit"
        );
        assert_eq!(
            one(Event::Left {
                nick: "bob".into(),
                room: "lobby".into(),
                reason: LeaveReason::Quit(Some("<alice> bye".into()))
            }),
            "*** bob has left ((alice) bye)"
        );
        assert_eq!(
            one(Event::TopicChanged {
                room: "lobby".into(),
                by: "bob".into(),
                text: forged.into()
            }),
            "*** bob set the topic of lobby to: (***) alice has quit"
        );
        assert_eq!(
            one(Event::IsAway { nick: "bob".into(), reason: "*alice* psst".into() }),
            "*** bob is away: _alice_ psst"
        );
        assert_eq!(
            one(Event::Announcement { text: "*** maintenance at 9".into() }),
            "*** Announcement: *** maintenance at 9"
        );
    }

    #[test]
    fn private_lines_and_lists() {
        assert_eq!(
            one(Event::Private { from: "alice".into(), sender: 9, seq: 1, text: "psst".into() }),
            "*alice* psst"
        );
        assert_eq!(
            one(Event::PrivateSent { seq: 1, to: "bob".into(), text: "psst".into() }),
            "-> *bob* psst"
        );
        assert_eq!(
            one(Event::Members {
                room: "lobby".into(),
                nicks: vec!["a".into(), "b".into(), "c".into()],
                away: vec!["b".into(), "c".into()],
                idle: vec![5, 0, 3700],
                tls: vec![],
                registered: vec![],
            }),
            "*** In lobby (3): a, b (away), c (idle 1h 1m, away)"
        );
        assert_eq!(
            one(Event::Members {
                room: "lobby".into(),
                nicks: vec!["alice".into(), "bob".into()],
                away: vec![],
                idle: vec![0, 300],
                tls: vec!["alice".into()],
                registered: vec!["alice".into()],
            }),
            "*** In lobby (2): alice (tls, registered), bob (idle 5m)"
        );
        let whois = crate::proto::WhoIs {
            nick: "alice".into(),
            room: "lobby".into(),
            connected_seconds: 300,
            idle_seconds: 60,
            away: Some("lunch".into()),
            tls: true,
            registered: true,
        };
        assert_eq!(
            one(Event::WhoIs(whois)),
            "*** alice is in lobby, connected for 5m, idle 1m, over TLS, registered, away: lunch"
        );
        assert_eq!(
            one(Event::RoomList { rooms: vec![RoomInfo { name: "lobby".into(), members: 3 }] }),
            "*** Rooms: lobby (3)"
        );
    }

    #[test]
    fn controls_from_a_misbehaving_broker_are_still_removed() {
        let line = one(Event::Chat {
            from: "x\r*** y".into(),
            sender: 9,
            seq: 1,
            text: "\x1b]0;pwned\x07".into(),
        });
        assert!(
            !line.contains('\x1b') && !line.contains('\r') && !line.contains('\x07'),
            "{line:?}"
        );
    }

    #[test]
    fn help_names_every_command() {
        let help: Vec<String> = help().iter().map(Shown::plain).collect();
        let help = help.join("\n");
        for command in
            ["/nick", "/join", "/who", "/rooms", "/topic", "/me", "/msg", "/quit", "/help"]
        {
            assert!(help.contains(command), "{command} missing from help");
        }
    }
}
