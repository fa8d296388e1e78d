//! Room broadcasts: the records of a room's ring (`crate::ring`).
//!
//! A [`Broadcast`] is what everyone in a room is told at once: a line, an action, an arrival, a
//! departure, a new nickname or topic, an operator's announcement to that room. The broker
//! encodes each once, borrowing from the [`Event`] it has, and appends it once to the room's
//! ring; every member's session decodes it borrowed from its copy of the record, so that a chat
//! line reaches the terminal without a single allocation on the way.
//!
//! Only these events may enter a ring: the type is the rule. Replies, private lines, a muted
//! member's lines (shown to their author only) and everything else addressed to one session go
//! over that session's socket as [`Event`]s. This module owns the shapes and the conversions
//! to and from [`Event`]; the bytes are `codec`'s, the ring is `crate::ring`'s.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Event, LeaveReason};

/// A line or an action, as said in a room: who, the sender id and line number that identify
/// it (acknowledgement, duplicates after a broker restart) and the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said<'a> {
    pub from: &'a str,
    pub sender: u64,
    pub seq: u64,
    pub text: &'a str,
}

/// One record of a room's ring. Each variant is the [`Event`] of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast<'a> {
    #[serde(borrow)]
    Chat(Said<'a>),
    #[serde(borrow)]
    Action(Said<'a>),
    Joined {
        nick: &'a str,
        room: &'a str,
    },
    Left {
        nick: &'a str,
        room: &'a str,
        reason: Cow<'a, LeaveReason>,
    },
    NickChanged {
        old: &'a str,
        new: &'a str,
    },
    TopicChanged {
        room: &'a str,
        by: &'a str,
        text: &'a str,
    },
    Announcement {
        text: &'a str,
    },
}

impl<'a> Broadcast<'a> {
    /// The broadcast that tells a room `event`, borrowing its strings; `None` for an event
    /// that is not for a whole room (it must go to one session's socket).
    pub fn of(event: &'a Event) -> Option<Broadcast<'a>> {
        Some(match event {
            Event::Chat { from, sender, seq, text } => {
                Broadcast::Chat(Said { from, sender: *sender, seq: *seq, text })
            }
            Event::Action { from, sender, seq, text } => {
                Broadcast::Action(Said { from, sender: *sender, seq: *seq, text })
            }
            Event::Joined { nick, room } => Broadcast::Joined { nick, room },
            Event::Left { nick, room, reason } => {
                Broadcast::Left { nick, room, reason: Cow::Borrowed(reason) }
            }
            Event::NickChanged { old, new } => Broadcast::NickChanged { old, new },
            Event::TopicChanged { room, by, text } => Broadcast::TopicChanged { room, by, text },
            Event::Announcement { text } => Broadcast::Announcement { text },
            _ => return None,
        })
    }

    /// The same thing as an owned [`Event`] (for everything but lines, which have their own
    /// allocation-free path in the session).
    pub fn to_event(&self) -> Event {
        let said =
            |said: &Said<'_>| (said.from.to_string(), said.sender, said.seq, said.text.to_string());
        match self {
            Broadcast::Chat(line) => {
                let (from, sender, seq, text) = said(line);
                Event::Chat { from, sender, seq, text }
            }
            Broadcast::Action(line) => {
                let (from, sender, seq, text) = said(line);
                Event::Action { from, sender, seq, text }
            }
            Broadcast::Joined { nick, room } => {
                Event::Joined { nick: nick.to_string(), room: room.to_string() }
            }
            Broadcast::Left { nick, room, reason } => Event::Left {
                nick: nick.to_string(),
                room: room.to_string(),
                reason: reason.clone().into_owned(),
            },
            Broadcast::NickChanged { old, new } => {
                Event::NickChanged { old: old.to_string(), new: new.to_string() }
            }
            Broadcast::TopicChanged { room, by, text } => Event::TopicChanged {
                room: room.to_string(),
                by: by.to_string(),
                text: text.to_string(),
            },
            Broadcast::Announcement { text } => Event::Announcement { text: text.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec;

    fn room_events() -> Vec<Event> {
        vec![
            Event::Chat { from: "alice".into(), sender: 7, seq: 3, text: "hi".into() },
            Event::Action { from: "bob".into(), sender: 8, seq: 1, text: "waves".into() },
            Event::Joined { nick: "carol".into(), room: "lobby".into() },
            Event::Left {
                nick: "dave".into(),
                room: "lobby".into(),
                reason: LeaveReason::Quit(Some("bye".into())),
            },
            Event::NickChanged { old: "erin".into(), new: "erin2".into() },
            Event::TopicChanged { room: "lobby".into(), by: "alice".into(), text: "rust".into() },
            Event::Announcement { text: "maintenance".into() },
        ]
    }

    #[test]
    fn every_room_event_survives_the_ring_encoding() {
        for event in room_events() {
            let broadcast = Broadcast::of(&event).expect("a room event");
            let mut bytes = Vec::new();
            codec::encode_payload(&broadcast, &mut bytes).expect("encodes");
            let decoded: Broadcast<'_> = codec::decode_payload(&bytes).expect("decodes");
            assert_eq!(decoded, broadcast);
            assert_eq!(decoded.to_event(), event);
        }
    }

    #[test]
    fn events_for_one_session_never_become_broadcasts() {
        let private = Event::Private { from: "a".into(), sender: 1, seq: 1, text: "psst".into() };
        assert_eq!(Broadcast::of(&private), None);
        assert_eq!(Broadcast::of(&Event::Shutdown), None);
        assert_eq!(Broadcast::of(&Event::RingMark { position: 8 }), None);
    }

    #[test]
    fn a_decoded_line_borrows_its_strings_from_the_record() {
        let event = Event::Chat { from: "alice".into(), sender: 7, seq: 3, text: "hi".into() };
        let mut bytes = Vec::new();
        codec::encode_payload(&Broadcast::of(&event).expect("a line"), &mut bytes)
            .expect("encodes");
        let Broadcast::Chat(said) =
            codec::decode_payload::<Broadcast<'_>>(&bytes).expect("decodes")
        else {
            panic!("not a line");
        };
        let record = bytes.as_ptr_range();
        assert!(record.contains(&said.text.as_ptr()) && record.contains(&said.from.as_ptr()));
    }
}
