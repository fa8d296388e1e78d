//! What chat nodes tell each other through the cluster's Redis stream (`[cluster]`).
//!
//! Nodes never talk to each other directly: each appends [`Entry`]s to one Redis stream and
//! reads everyone's back in the stream's order (`broker::cluster`). An entry is three stream
//! fields: `v` ([`CLUSTER_VERSION`], decimal), `n` (the writing node's name) and `e` (its
//! [`EntryBody`], bincode like every frame, encoded in [`crate::proto::codec`]). A reader skips,
//! and logs, an entry of a newer version or one that does not decode (a foreign writer): the
//! stream is shared with whatever else can reach Redis, so nothing in it is trusted beyond
//! what a node could have said anyway.
//!
//! This module owns the shapes only; what they do lives in `broker::cluster`.

use serde::{Deserialize, Serialize};

use super::Event;
use super::control::ControlRequest;

/// Version of [`EntryBody`]: bumped when its bytes change. Variants are only ever appended,
/// so a node reads every version up to its own; it skips newer ones, saying so once.
pub const CLUSTER_VERSION: u32 = 1;

/// One member of another node, as every node keeps it for `/who`, `/whois`, `/msg` and
/// nickname checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMember {
    pub nick: String,
    /// The room's name as its node shows it.
    pub room: String,
    /// The account the member is logged in to.
    pub account: Option<String>,
    pub tls: bool,
    pub away: Option<String>,
    /// When the client connected, and when it last said something (Unix seconds).
    pub connected_at: u64,
    pub last_spoke: u64,
}

/// What one entry of the stream says. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryBody {
    /// A room broadcast (a line, an action, a join, a departure, a nick or topic change, an
    /// announcement to a room): every node shows it to its own members of `room` (a folded
    /// room key), the writer included, in the stream's order. `number`: the writer's own
    /// count of what it published, rising, by which it knows what it showed already (said
    /// while out of contact, or in the writer's hands when contact was lost) when it reads
    /// its entries back.
    Room { room: String, event: Event, number: u64 },
    /// A private line (`Event::Private`) for the member whose folded nick is `to`, on
    /// whichever node has it.
    Private { to: String, event: Event },
    /// A member of the writing node, new or changed (room, nick, away, account): its row in
    /// everyone's replica. `previous`: the folded nick it had, when it changed.
    Present { member: RemoteMember, previous: Option<String> },
    /// A member of the writing node is gone (its departure went as a `Room` entry).
    Gone { nick: String },
    /// Every member of the writing node, replacing what the others knew of it (sent when the
    /// node connects to Redis).
    Roster { members: Vec<RemoteMember> },
    /// An operator's announcement to everyone on every node (`chatctl announce`).
    Announce { text: String },
    /// An operator's kick of the member whose folded nick is `nick`, done by its own node.
    Kick { nick: String, reason: Option<String> },
    /// An account was registered, changed or dropped on the writing node: the others read
    /// the accounts again from the shared database.
    AccountsChanged,
    /// An operator's ban, unban, mute, unmute or message of the day, saved on the writing
    /// node: every node applies it to its own state (a cluster-wide ban or mute).
    Moderation { request: ControlRequest },
    /// The writing node found `node`'s heartbeat lapsed and forgot its members. Every node
    /// does the same; `node` itself, if it is alive after all, publishes its roster again.
    NodeGone { node: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec;

    #[test]
    fn every_entry_round_trips() {
        let member = RemoteMember {
            nick: "alice".into(),
            room: "lobby".into(),
            account: Some("alice".into()),
            tls: true,
            away: None,
            connected_at: 1,
            last_spoke: 2,
        };
        let entries = [
            EntryBody::Room {
                room: "lobby".into(),
                event: Event::Chat { from: "a".into(), sender: 1, seq: 2, text: "hi".into() },
                number: 7,
            },
            EntryBody::Private {
                to: "bob".into(),
                event: Event::Private { from: "a".into(), sender: 1, seq: 3, text: "psst".into() },
            },
            EntryBody::Present { member: member.clone(), previous: Some("al".into()) },
            EntryBody::Gone { nick: "alice".into() },
            EntryBody::Roster { members: vec![member] },
            EntryBody::Announce { text: "maintenance".into() },
            EntryBody::Kick { nick: "bob".into(), reason: None },
            EntryBody::AccountsChanged,
            EntryBody::NodeGone { node: "b".into() },
            EntryBody::Moderation {
                request: ControlRequest::Mute { nick: "bob".into(), seconds: Some(60) },
            },
        ];
        for entry in entries {
            let mut bytes = Vec::new();
            codec::encode_payload(&entry, &mut bytes).expect("encodes");
            let back: EntryBody = codec::decode_payload(&bytes).expect("decodes");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff\xff", b"\x07garbage"] {
            assert!(codec::decode_payload::<EntryBody>(bytes).is_err(), "{bytes:?}");
        }
    }
}
