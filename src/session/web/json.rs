//! What the session sends a browser: one JSON object per WebSocket message, structured, not
//! rendered text, so that the page shows nicks, system lines, actions, private messages and
//! history each in their own style, and keeps its member list and room list without parsing
//! what a terminal would have shown.
//!
//! Every object has `"t"`:
//! - `line`: one line a terminal would show (`kind`: system, chat, private, sent, history;
//!   `nick`, `text`, `action`, `at` in Unix seconds, `mention` when a terminal would ring; a
//!   line said in the room also has its `id`, `"SENDER.SEQ"`, the same on every page);
//! - `missed`: the answer to the page's `/missed ID` after it reconnected: `lines` (chat
//!   lines with their ids) said after line ID, oldest first; `found: false` when the room no
//!   longer knows ID (then `lines` are only its last ones), `more` when there are more after
//!   these (the page asks again after the last);
//! - `prompt`: the session waits for a nickname, or (`secret`) a password; `secret: false`
//!   also ends a password prompt (the page shows what is typed again);
//! - `you`: this user's nick, room, account and admin role, whenever one of them changes;
//! - `joined`, `left`, `renamed`, `topic`, `members`, `rooms`: the structure behind some lines
//!   (the page shows only `line` objects as text);
//! - `admin`: the answer to `/admin` (the reply chatctl would get, as serde writes it);
//! - `closed`: the server is about to close the connection, and why.
//!
//! Text is cleaned exactly as for a terminal (`render::user_text`); the page must still insert
//! it as text (`textContent`), never as HTML. Pure functions; no I/O.

use std::borrow::Cow;

use serde::Serialize;

use crate::proto::broadcast::Said;
use crate::proto::control::ControlReply;
use crate::proto::{Event, HistoryLine, IdentifiedLine};
use crate::session::render::{Kind, Shown, user_text};

// Every object is written from a borrowed, typed struct: no `serde_json::Value` tree, whose
// small maps a session would allocate by the hundred for a room's member list and keep.

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Serialize)]
struct Line<'a> {
    t: &'static str,
    kind: &'static str,
    nick: Cow<'a, str>,
    text: Cow<'a, str>,
    action: bool,
    at: u64,
    #[serde(skip_serializing_if = "is_false")]
    mention: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<LineId>,
}

/// A room line's name on the page: `"SENDER.SEQ"`, a string (JavaScript's numbers hold 53
/// bits of a sender's 64), written straight into the message.
struct LineId {
    sender: u64,
    seq: u64,
}

impl Serialize for LineId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}.{}", self.sender, self.seq))
    }
}

fn write(object: &impl Serialize) -> String {
    // Only strings, numbers and booleans: serialising cannot fail.
    serde_json::to_string(object).unwrap_or_default()
}

/// One line as a terminal would show it, said (or shown) at `at`.
pub fn line(shown: &Shown, at: u64, mention: bool) -> String {
    let (kind, action) = match shown.kind {
        Kind::System => ("system", false),
        Kind::Chat => ("chat", shown.before == "* "),
        Kind::Private => ("private", shown.before.ends_with("* ")),
        Kind::PrivateSent => ("sent", false),
        Kind::History => ("history", shown.before.ends_with("* ")),
    };
    let text = match shown.kind {
        // The server's own lines keep their `*** `, which marks them in a copy and paste too.
        Kind::System => Cow::Owned(shown.plain()),
        _ => Cow::Borrowed(shown.text.as_str()),
    };
    let nick = Cow::Borrowed(shown.nick.as_str());
    write(&Line { t: "line", kind, nick, text, action, at, mention, id: None })
}

/// A line or action said in the room, from its ring record.
pub fn said(said: &Said<'_>, action: bool, at: u64, mention: bool) -> String {
    let (nick, text) = (user_text(said.from), user_text(said.text));
    let id = Some(LineId { sender: said.sender, seq: said.seq });
    write(&Line { t: "line", kind: "chat", nick, text, action, at, mention, id })
}

/// A line from before this user came (a room's recent lines, `/history`, `/search`).
pub fn history(line: &HistoryLine) -> String {
    write(&said_line(line, "history", None))
}

/// A line said earlier, at the time it was said: as history, or (with its id) as a chat line
/// the page missed.
fn said_line<'a>(line: &'a HistoryLine, kind: &'static str, id: Option<LineId>) -> Line<'a> {
    Line {
        t: "line",
        kind,
        nick: user_text(&line.from),
        text: user_text(&line.text),
        action: line.action,
        at: line.at,
        mention: false,
        id,
    }
}

#[derive(Serialize)]
struct Missed<'a> {
    t: &'static str,
    room: Cow<'a, str>,
    found: bool,
    more: bool,
    lines: Vec<Line<'a>>,
}

/// The answer to the page's `/missed`: the lines as they would have come, with their ids.
pub fn missed(room: &str, lines: &[IdentifiedLine], found: bool, more: bool) -> String {
    let lines = lines
        .iter()
        .map(|said| {
            let id = LineId { sender: said.sender, seq: said.seq };
            said_line(&said.line, "chat", Some(id))
        })
        .collect();
    write(&Missed { t: "missed", room: user_text(room), found, more, lines })
}

#[derive(Serialize)]
struct Prompt {
    t: &'static str,
    secret: bool,
}

/// The session waits for a nickname, or (`secret`) a password.
pub fn prompt(secret: bool) -> String {
    write(&Prompt { t: "prompt", secret })
}

#[derive(Serialize)]
struct You<'a> {
    t: &'static str,
    nick: Cow<'a, str>,
    room: Cow<'a, str>,
    account: bool,
    admin: bool,
}

/// Who this user is now.
pub fn you(nick: &str, room: &str, account: bool, admin: bool) -> String {
    write(&You { t: "you", nick: user_text(nick), room: user_text(room), account, admin })
}

#[derive(Serialize)]
struct InRoom<'a> {
    t: &'static str,
    nick: Cow<'a, str>,
    room: Cow<'a, str>,
}

#[derive(Serialize)]
struct Renamed<'a> {
    t: &'static str,
    old: Cow<'a, str>,
    new: Cow<'a, str>,
}

#[derive(Serialize)]
struct Topic<'a> {
    t: &'static str,
    room: Cow<'a, str>,
    text: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Member<'a> {
    nick: Cow<'a, str>,
    away: bool,
}

#[derive(Serialize)]
struct Members<'a> {
    t: &'static str,
    room: Cow<'a, str>,
    members: MemberList<'a>,
}

/// A room's members, written one by one as they are read: a list of 500 is not first made
/// into a second list of 500.
struct MemberList<'a> {
    nicks: &'a [String],
    away: &'a [String],
}

impl Serialize for MemberList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let away = self.away;
        serializer.collect_seq(
            self.nicks
                .iter()
                .map(|nick| Member { nick: user_text(nick), away: away.contains(nick) }),
        )
    }
}

#[derive(Serialize)]
struct RoomEntry<'a> {
    name: Cow<'a, str>,
    members: u32,
    topic: Option<&'a str>,
}

#[derive(Serialize)]
struct Rooms<'a> {
    t: &'static str,
    rooms: Vec<RoomEntry<'a>>,
}

/// The structure behind an event's line, for the page's lists and header; `None` for events
/// that have none.
pub fn structure(event: &Event) -> Option<String> {
    let text = match event {
        Event::Joined { nick, room } => {
            write(&InRoom { t: "joined", nick: user_text(nick), room: user_text(room) })
        }
        Event::Left { nick, room, .. } => {
            write(&InRoom { t: "left", nick: user_text(nick), room: user_text(room) })
        }
        Event::NickChanged { old, new } => {
            write(&Renamed { t: "renamed", old: user_text(old), new: user_text(new) })
        }
        Event::TopicChanged { room, text, .. } => {
            write(&Topic { t: "topic", room: user_text(room), text: Some(user_text(text)) })
        }
        Event::Topic { room, text } => write(&Topic {
            t: "topic",
            room: user_text(room),
            text: text.as_deref().map(user_text),
        }),
        Event::Members { room, nicks, away, .. } => write(&Members {
            t: "members",
            room: user_text(room),
            members: MemberList { nicks, away },
        }),
        Event::RoomList { rooms } => write(&Rooms {
            t: "rooms",
            rooms: rooms
                .iter()
                .map(|room| RoomEntry {
                    name: user_text(&room.name),
                    members: room.members,
                    topic: None,
                })
                .collect(),
        }),
        _ => return None,
    };
    Some(text)
}

#[derive(Serialize)]
struct Admin<'a> {
    t: &'static str,
    reply: &'a ControlReply,
}

/// The answer to `/admin`.
pub fn admin(reply: &ControlReply) -> String {
    serde_json::to_string(&Admin { t: "admin", reply }).unwrap_or_else(|err| {
        // The error's words go through the encoder too: they may hold a quote.
        let failed = ControlReply::Failed(format!("cannot encode the answer: {err}"));
        write(&Admin { t: "admin", reply: &failed })
    })
}

#[derive(Serialize)]
struct Closed<'a> {
    t: &'static str,
    reason: &'a str,
}

/// The server closes the connection after this, for `reason`.
pub fn closed(reason: &str) -> String {
    write(&Closed { t: "closed", reason })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::session::render;

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }

    #[test]
    fn a_system_line_keeps_its_mark_and_a_user_line_its_nick() {
        let system = parsed(&line(&render::system("alice has joined #lobby"), 7, false));
        assert_eq!(system["t"], "line");
        assert_eq!(system["kind"], "system");
        assert_eq!(system["text"], "*** alice has joined #lobby");
        assert_eq!(system["at"], 7);
        assert!(system.get("mention").is_none());
        let said = Said { from: "bob", sender: 1, seq: 2, text: "hi \u{1b}[2J alice" };
        let chat = parsed(&super::said(&said, false, 9, true));
        assert_eq!((chat["kind"].clone(), chat["nick"].clone()), ("chat".into(), "bob".into()));
        assert!(!chat["text"].as_str().unwrap_or("\u{1b}").contains('\u{1b}'), "{chat}");
        assert_eq!(chat["mention"], true);
        let action = parsed(&super::said(&said, true, 9, false));
        assert_eq!(action["action"], true);
        assert_eq!((chat["id"].clone(), action["id"].clone()), ("1.2".into(), "1.2".into()));
        assert!(system.get("id").is_none(), "only lines said in a room have an id");
    }

    #[test]
    fn missed_lines_come_in_one_message_with_their_ids() {
        let said = |sender, seq, text: &str| IdentifiedLine {
            sender,
            seq,
            line: HistoryLine { at: 5, from: "bob".into(), action: false, text: text.into() },
        };
        let lines = [said(u64::MAX, 1, "one \u{1b}[2J"), said(7, 30, "two")];
        let object = parsed(&missed("#lobby", &lines, true, false));
        assert_eq!(object["t"], "missed");
        assert_eq!((object["found"].clone(), object["more"].clone()), (true.into(), false.into()));
        let ids: Vec<&str> = object["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["id"].as_str())
            .collect();
        assert_eq!(ids, ["18446744073709551615.1", "7.30"], "all 64 bits, as a string");
        assert_eq!(object["lines"][0]["kind"], "chat");
        assert!(!object["lines"][0]["text"].as_str().expect("text").contains('\u{1b}'), "{object}");
    }

    #[test]
    fn history_lines_carry_when_they_were_said() {
        let old = HistoryLine {
            at: 1_700_000_000,
            from: "carol".into(),
            action: true,
            text: "waves".into(),
        };
        let object = parsed(&history(&old));
        assert_eq!(object["kind"], "history");
        assert_eq!(object["at"], 1_700_000_000u64);
        assert_eq!(object["action"], true);
    }

    #[test]
    fn events_with_structure_have_it_and_others_none() {
        let joined = Event::Joined { nick: "alice".into(), room: "#lobby".into() };
        assert_eq!(parsed(&structure(&joined).unwrap_or_default())["t"], "joined");
        let members = Event::Members {
            room: "#lobby".into(),
            nicks: vec!["alice".into(), "bob".into()],
            away: vec!["bob".into()],
            idle: vec![0, 0],
            tls: vec![],
            registered: vec![],
        };
        let object = parsed(&structure(&members).unwrap_or_default());
        assert_eq!(object["members"][1], json!({ "nick": "bob", "away": true }));
        assert_eq!(structure(&Event::Shutdown), None);
        let reply = parsed(&admin(&ControlReply::Done("kicked bob".into())));
        assert_eq!(reply["reply"], json!({ "Done": "kicked bob" }));
        assert_eq!(parsed(&prompt(true))["secret"], true);
    }
}
