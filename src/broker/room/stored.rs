//! The rooms' side of the store: what they ask it to keep (lines said and topics set, taken
//! once per loop turn as a [`Batch`]), which rooms it is to load (each room made while the
//! store is on), and what a room takes from the store's answer (its topic, if it has none yet,
//! and its stored lines as history for newcomers).
//!
//! Pure, like the rest of `room`: it never calls the store; the broker's `storage` does, off the
//! loop, and hands the answer back here.

use super::{Delivery, MemberId, Room, Rooms, one};
use crate::names;
use crate::proto::{Event, HistoryLine, IdentifiedLine};
use crate::store::{Batch, NewLine, RoomRecord, StoredLine};

/// A room waiting for the store's answer.
#[derive(Debug)]
pub(super) struct Loading {
    /// Which load this is: a room that vanished and was made again waits for a newer one.
    generation: u64,
    /// Members who entered meanwhile: they are shown the stored history when it comes.
    pub(super) waiting: Vec<MemberId>,
    /// How many of the history's last lines it took meanwhile (at most all it holds): those
    /// the store turns out to have had are dropped again.
    meanwhile: usize,
}

impl Loading {
    /// The room's history took a line (and holds at most `history_lines`).
    pub(super) fn said_meanwhile(&mut self, history_lines: usize) {
        self.meanwhile = (self.meanwhile + 1).min(history_lines);
    }
}

/// What the rooms have for the store since it was last asked.
#[derive(Debug, Default)]
pub(super) struct ToStore {
    /// Whether there is a store at all (`history_days` > 0).
    on: bool,
    said: Batch,
    /// Rooms made, to load: (key, generation).
    loads: Vec<(String, u64)>,
    generations: u64,
}

/// Stored lines as the protocol shows history.
pub(in crate::broker) fn to_history(lines: Vec<StoredLine>) -> Vec<HistoryLine> {
    to_identified(lines).into_iter().map(|said| said.line).collect()
}

/// Stored lines with their names, as the protocol shows them.
pub(in crate::broker) fn to_identified(lines: Vec<StoredLine>) -> Vec<IdentifiedLine> {
    lines
        .into_iter()
        .map(|line| IdentifiedLine {
            sender: line.sender,
            seq: line.seq,
            line: HistoryLine {
                at: line.at,
                from: line.from,
                action: line.action,
                text: line.text,
            },
        })
        .collect()
}

impl ToStore {
    /// A chat or action line said in the room with key `room`.
    pub(super) fn keep_line(&mut self, room: &str, said: &IdentifiedLine) {
        if self.on {
            let line = &said.line;
            self.said.lines.push(NewLine {
                room: room.to_string(),
                at: line.at,
                from: line.from.clone(),
                from_key: names::fold(&line.from),
                sender: said.sender,
                seq: said.seq,
                action: line.action,
                text: line.text.clone(),
            });
        }
    }

    /// The topic of the room with key `room` was set.
    pub(super) fn keep_topic(&mut self, room: &str, topic: &str) {
        if self.on {
            self.said.topics.push((room.to_string(), topic.to_string()));
        }
    }
}

impl Rooms {
    /// Whether rooms keep what is said in a store from now on. Turned on, every room there
    /// is (the lobby at start) is loaded, as each room made from then on.
    pub fn set_store(&mut self, on: bool) {
        self.store.on = on;
        if !on {
            self.store.loads.clear();
            for room in self.rooms.values_mut() {
                room.loading = None;
            }
            return;
        }
        let keys: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.loading.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.start_loading(&key);
        }
    }

    /// Makes the room with key `key` (to be loaded, with a store) if it does not exist.
    pub(super) fn make_room(&mut self, key: &str, name: &str) {
        if !self.rooms.contains_key(key) {
            self.rooms.insert(key.to_string(), Room::new(name));
            if self.store.on {
                self.start_loading(key);
            }
        }
    }

    fn start_loading(&mut self, key: &str) {
        self.store.generations += 1;
        let generation = self.store.generations;
        if let Some(room) = self.rooms.get_mut(key) {
            room.loading = Some(Loading { generation, waiting: Vec::new(), meanwhile: 0 });
            self.store.loads.push((key.to_string(), generation));
        }
    }

    /// The lines and topics to store since the last call.
    pub fn take_said(&mut self) -> Batch {
        std::mem::take(&mut self.store.said)
    }

    /// The rooms to load since the last call, as (key, generation).
    pub fn take_loads(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.store.loads)
    }

    /// The store's answer for a room it was asked to load (`record`: `None` if it could not
    /// say). The room takes the stored topic if it has none yet, and the stored lines before
    /// its own as history; members who entered meanwhile are shown them (and the topic). An
    /// answer for a room that is gone, or for an older making of it, changes nothing.
    pub fn loaded(
        &mut self,
        key: &str,
        generation: u64,
        record: Option<RoomRecord>,
    ) -> Vec<Delivery> {
        let history_lines = self.history_lines;
        let Some(room) = self.rooms.get_mut(key) else { return Vec::new() };
        if room.loading.as_ref().is_none_or(|loading| loading.generation != generation) {
            return Vec::new();
        }
        let Some(loading) = room.loading.take() else { return Vec::new() };
        let waiting: Vec<MemberId> =
            loading.waiting.into_iter().filter(|id| room.members.contains(id)).collect();
        let record = record.unwrap_or_default();
        if room.topic.is_none() {
            room.topic = record.topic;
        }
        // Lines sessions sent again after a broker restart, taken meanwhile, that the store
        // had: they are among the stored lines below (or older), not new. The history's last
        // `meanwhile` entries are the lines said meanwhile.
        room.stored_through = record.last_seqs.into_iter().collect();
        let meanwhile = loading.meanwhile.min(room.history.len());
        let mut tail = room.history.split_off(room.history.len() - meanwhile);
        tail.retain(|said| !room.stored_already(said.sender, said.seq));
        room.history.extend(tail);
        let stored = to_identified(record.lines);
        let keep = history_lines.saturating_sub(room.history.len()).min(stored.len());
        let older = &stored[stored.len() - keep..];
        for line in older.iter().rev() {
            room.history.push_front(line.clone());
        }
        let older: Vec<HistoryLine> = older.iter().map(|said| said.line.clone()).collect();
        // What entering shows, which those who came meanwhile have not seen yet (the lines
        // said since, they saw as they were said).
        let mut out = Vec::new();
        for &id in &waiting {
            out.push(one(id, Event::Topic { room: room.name.clone(), text: room.topic.clone() }));
            if !older.is_empty() {
                out.push(one(id, Event::History { room: room.name.clone(), lines: older.clone() }));
            }
        }
        out
    }

    /// The key and name of the room a member is in.
    pub fn room_key_and_name_of(&self, id: MemberId) -> Option<(String, String)> {
        let key = &self.members.get(&id)?.room;
        let room = self.rooms.get(key)?;
        Some((key.clone(), room.name.clone()))
    }

    /// The last `count` lines the room with key `key` keeps in memory, oldest first.
    pub fn history_tail(&self, key: &str, count: usize) -> Vec<HistoryLine> {
        let Some(room) = self.rooms.get(key) else { return Vec::new() };
        let skip = room.history.len().saturating_sub(count);
        room.history.iter().skip(skip).map(|said| said.line.clone()).collect()
    }

    /// The lines the room with key `key` keeps in memory after line `seq` of `sender`, oldest
    /// first, if it keeps that line (in order: they are every line said there since).
    pub fn history_after(&self, key: &str, sender: u64, seq: u64) -> Option<Vec<IdentifiedLine>> {
        let room = self.rooms.get(key)?;
        let at = room.history.iter().position(|said| said.sender == sender && said.seq == seq)?;
        Some(room.history.iter().skip(at + 1).cloned().collect())
    }

    /// Every line the room with key `key` keeps in memory, with their names, oldest first.
    pub fn history_identified(&self, key: &str) -> Vec<IdentifiedLine> {
        self.rooms.get(key).map(|room| room.history.iter().cloned().collect()).unwrap_or_default()
    }

    /// Lines of history each room keeps for newcomers.
    pub fn history_lines(&self) -> usize {
        self.history_lines
    }

    /// The display name of the room with key `key`, if it exists.
    pub fn room_name(&self, key: &str) -> Option<&str> {
        self.rooms.get(key).map(|room| room.name.as_str())
    }

    /// Drops every line said under `nick` (any case) from the rooms' memory (history and the
    /// lines kept for replay), and from what waits for the store: an operator's `forget`.
    pub fn forget_nick(&mut self, nick: &str) -> usize {
        let key = names::fold(nick);
        let mut dropped = 0;
        for room in self.rooms.values_mut() {
            let before = room.history.len();
            room.history.retain(|said| names::fold(&said.line.from) != key);
            if let Some(loading) = &mut room.loading
                && room.history.len() != before
            {
                // No longer in step with the history's last entries: none is dropped.
                loading.meanwhile = 0;
            }
            dropped += before - room.history.len();
            room.recent.retain(|(_, event)| match event {
                Event::Chat { from, .. } | Event::Action { from, .. } => names::fold(from) != key,
                _ => true,
            });
        }
        self.store.said.lines.retain(|line| line.from_key != key);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::Audience;
    use super::*;
    use crate::store::StoredLine;

    fn stored(id: i64, from: &str, text: &str) -> StoredLine {
        let (at, sender, seq) = (100 + id as u64, 9_000, id as u64);
        StoredLine { id, at, from: from.into(), sender, seq, action: false, text: text.into() }
    }

    fn with_store() -> Rooms {
        let mut rooms = Rooms::new(Instant::now());
        rooms.set_store(true);
        rooms
    }

    #[test]
    fn the_lobby_and_each_room_made_are_loaded_once() {
        let mut rooms = with_store();
        assert_eq!(rooms.take_loads(), vec![("lobby".to_string(), 1)]);
        rooms.login(1, 1001, "alice");
        rooms.join(1, "rust");
        rooms.join(1, "go");
        // rust vanished when alice left it: made again, it is a newer load.
        rooms.join(1, "rust");
        assert_eq!(
            rooms.take_loads(),
            vec![("rust".to_string(), 2), ("go".to_string(), 3), ("rust".to_string(), 4)]
        );
        assert!(rooms.take_loads().is_empty());
    }

    #[test]
    fn lines_and_topics_go_to_the_store_in_order_and_muted_lines_do_not() {
        let mut rooms = with_store();
        rooms.login(1, 1001, "Alice");
        rooms.login(2, 1002, "bob");
        rooms.say(1, 1, "hello");
        rooms.act(2, 1, "waves");
        rooms.topic(1, Some("Rust only"));
        rooms.set_muted(2, true);
        rooms.say(2, 2, "nobody hears this");
        let batch = rooms.take_said();
        let lines: Vec<(&str, &str, u64, u64, bool, &str)> = batch
            .lines
            .iter()
            .map(|l| {
                (l.from.as_str(), l.from_key.as_str(), l.sender, l.seq, l.action, l.text.as_str())
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("Alice", "alice", 1001, 1, false, "hello"),
                ("bob", "bob", 1002, 1, true, "waves")
            ]
        );
        assert!(batch.lines.iter().all(|l| l.room == "lobby"));
        assert_eq!(batch.topics, vec![("lobby".to_string(), "Rust only".to_string())]);
        assert!(rooms.take_said().is_empty());
    }

    #[test]
    fn without_a_store_nothing_is_kept_or_loaded() {
        let mut rooms = Rooms::new(Instant::now());
        rooms.login(1, 1001, "alice");
        rooms.join(1, "rust");
        rooms.say(1, 1, "hello");
        assert!(rooms.take_said().is_empty());
        assert!(rooms.take_loads().is_empty());
    }

    fn history_texts(rooms: &Rooms, key: &str) -> Vec<String> {
        rooms.history_tail(key, 100).into_iter().map(|line| line.text).collect()
    }

    /// After a broker restart, sessions send their last lines again: those the store had
    /// (by sender and number) are neither remembered twice nor stored again, whether they
    /// come before the room's stored lines are loaded or after; new ones are kept.
    #[test]
    fn lines_sent_again_that_the_store_had_are_not_remembered_twice() {
        let mut rooms = with_store();
        rooms.set_history_lines(10);
        let (key, generation) = rooms.take_loads()[0].clone();
        rooms.login(1, 1001, "alice");
        // Before the answer: line 2 the store had, line 3 it did not.
        rooms.say(1, 2, "two");
        rooms.say(1, 3, "three");
        let record = RoomRecord {
            topic: None,
            lines: vec![stored(1, "alice", "one"), stored(2, "alice", "two")],
            last_seqs: vec![(1001, 2), (2002, 9)],
        };
        rooms.loaded(&key, generation, Some(record));
        assert_eq!(history_texts(&rooms, &key), ["one", "two", "three"]);
        // After it: line 1 again (stored), then a new line 4.
        let shown = rooms.say(1, 1, "one");
        assert_eq!(shown.len(), 1, "a line sent again is still shown: {shown:?}");
        rooms.say(1, 4, "four");
        assert_eq!(history_texts(&rooms, &key), ["one", "two", "three", "four"]);
        let stored_seqs: Vec<u64> = rooms.take_said().lines.iter().map(|l| l.seq).collect();
        // Line 2 went to the store before the answer said it had it; the store skips it.
        assert_eq!(stored_seqs, [2, 3, 4]);
    }

    /// The history keeps each line's name, stored lines' too: the lines after one it holds
    /// are every line said since, and one it dropped (or never had) is not found.
    #[test]
    fn the_history_tells_the_lines_said_after_one_it_holds() {
        let mut rooms = with_store();
        rooms.set_history_lines(3);
        let (key, generation) = rooms.take_loads()[0].clone();
        rooms.login(1, 1001, "alice");
        let record = RoomRecord {
            topic: None,
            lines: vec![stored(1, "x", "one"), stored(2, "y", "two")],
            last_seqs: Vec::new(),
        };
        rooms.loaded(&key, generation, Some(record));
        rooms.say(1, 1, "three");
        rooms.say(1, 2, "four");
        let names = |lines: Option<Vec<IdentifiedLine>>| -> Option<Vec<(u64, u64, String)>> {
            lines.map(|l| l.into_iter().map(|s| (s.sender, s.seq, s.line.text)).collect())
        };
        assert_eq!(
            names(rooms.history_after(&key, 9_000, 2)),
            Some(vec![(1001, 1, "three".into()), (1001, 2, "four".into())])
        );
        assert_eq!(names(rooms.history_after(&key, 1001, 2)), Some(Vec::new()));
        assert_eq!(rooms.history_after(&key, 9_000, 1), None, "dropped: the history holds 3");
        assert_eq!(rooms.history_after(&key, 1001, 3), None, "never said");
        assert_eq!(rooms.history_after("nowhere", 1001, 1), None);
        let all: Vec<u64> = rooms.history_identified(&key).iter().map(|s| s.seq).collect();
        assert_eq!(all, [2, 1, 2]);
    }

    #[test]
    fn a_loaded_room_shows_its_stored_lines_to_who_came_meanwhile_and_to_newcomers() {
        let mut rooms = with_store();
        rooms.set_history_lines(3);
        rooms.take_loads();
        rooms.login(1, 1001, "alice");
        rooms.join(1, "rust");
        let (key, generation) = rooms.take_loads()[0].clone();
        rooms.say(1, 1, "live");
        let record = RoomRecord {
            topic: Some("stored topic".into()),
            lines: vec![stored(1, "x", "one"), stored(2, "y", "two"), stored(3, "z", "three")],
            last_seqs: Vec::new(),
        };
        let out = rooms.loaded(&key, generation, Some(record));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].to, Audience::One(1));
        assert!(matches!(&out[0].event, Event::Topic { text: Some(t), .. } if t == "stored topic"));
        // Two stored lines fit before the live one: the newest two.
        match &out[1].event {
            Event::History { lines, .. } => {
                let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
                assert_eq!(texts, vec!["two", "three"]);
            }
            other => panic!("{other:?}"),
        }
        // A newcomer sees them and the live line, oldest first.
        rooms.login(2, 1002, "bob");
        let out = rooms.join(2, "rust");
        let history = out.iter().find_map(|d| match &d.event {
            Event::History { lines, .. } => {
                Some(lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>())
            }
            _ => None,
        });
        assert_eq!(history, Some(vec!["two".into(), "three".into(), "live".into()]));
        // A second answer changes nothing.
        assert!(rooms.loaded(&key, generation, Some(RoomRecord::default())).is_empty());
    }

    #[test]
    fn an_answer_for_an_older_making_of_a_room_or_a_gone_room_is_ignored() {
        let mut rooms = with_store();
        rooms.take_loads();
        rooms.login(1, 1001, "alice");
        rooms.join(1, "rust");
        rooms.join(1, "lobby");
        rooms.join(1, "rust");
        let loads = rooms.take_loads();
        let record = || {
            Some(RoomRecord {
                topic: Some("old".into()),
                lines: vec![stored(1, "x", "a")],
                last_seqs: vec![],
            })
        };
        assert!(rooms.loaded(&loads[0].0, loads[0].1, record()).is_empty());
        assert!(rooms.loaded("nowhere", 99, record()).is_empty());
        assert_eq!(rooms.loaded(&loads[1].0, loads[1].1, record()).len(), 2);
    }

    #[test]
    fn a_topic_set_before_the_answer_is_kept() {
        let mut rooms = with_store();
        rooms.take_loads();
        rooms.login(1, 1001, "alice");
        rooms.join(1, "rust");
        rooms.topic(1, Some("fresh"));
        let (key, generation) = rooms.take_loads()[0].clone();
        let out = rooms.loaded(
            &key,
            generation,
            Some(RoomRecord { topic: Some("stale".into()), lines: vec![], last_seqs: vec![] }),
        );
        // Who came meanwhile is told the topic in force, not the stored one.
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(matches!(&out[0].event, Event::Topic { text: Some(t), .. } if t == "fresh"));
        assert!(
            matches!(&rooms.topic(1, None)[0].event, Event::Topic { text: Some(t), .. } if t == "fresh")
        );
    }

    #[test]
    fn a_room_the_store_could_not_load_still_shows_its_topic_to_who_came_meanwhile() {
        let mut rooms = with_store();
        rooms.take_loads();
        rooms.login(1, 1001, "alice");
        let entered = rooms.join(1, "rust");
        assert!(
            !entered.iter().any(|d| matches!(d.event, Event::Topic { .. } | Event::History { .. })),
            "the topic waits for the store: {entered:?}"
        );
        let (key, generation) = rooms.take_loads()[0].clone();
        let out = rooms.loaded(&key, generation, None);
        assert_eq!(out, vec![one(1, Event::Topic { room: "rust".into(), text: None })]);
    }

    #[test]
    fn forget_drops_a_nicks_lines_from_memory_and_from_what_waits_for_the_store() {
        let mut rooms = with_store();
        rooms.take_loads();
        rooms.login(1, 1001, "Alice");
        rooms.login(2, 1002, "bob");
        rooms.say(1, 1, "mine");
        rooms.say(2, 1, "yours");
        assert_eq!(rooms.forget_nick("ALICE"), 1);
        let batch = rooms.take_said();
        assert_eq!(batch.lines.len(), 1);
        assert_eq!(batch.lines[0].from, "bob");
        let history = rooms.history_tail("lobby", 10);
        assert_eq!(history.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), vec!["yours"]);
    }
}
