//! What the store means for the rooms and their members: once per loop turn the rooms' lines
//! and loads go to `storage`; `/history` and `/search` become queries; the store's answers
//! become a room's stored history, a member's page or search results, an operator's reply.
//!
//! It must not call the store (only `storage` talks to the database thread) and does not
//! write to sockets itself (answers go through the fan-out engine and `Broker::reply`).

use std::time::Instant;

use log::{debug, warn};

use super::Broker;
use super::room::stored::{to_history, to_identified};
use super::room::{Audience, Delivery, MemberId};
use super::store_thread::{Job, Outcome};
use crate::proto::control::{ControlReply, StoredRow};
use crate::proto::{Event, Failure, IdentifiedLine, MAX_HISTORY_PAGE};
use crate::store::{Query, StoredLine};

/// Most results one `/search` shows.
pub const SEARCH_RESULTS: usize = 20;

/// The most text one answer to a reconnecting page carries (besides [`MAX_HISTORY_PAGE`]
/// lines): half a session's default output queue (`send_queue_bytes`), so that a page of long
/// lines is not taken for a client that does not read. The page asks again for the rest.
const MISSED_BYTES: usize = 32 * 1024;

/// The first of `lines` that one answer carries, and whether there are more after them
/// (`more`: there were more than `lines` to begin with).
fn missed_page(mut lines: Vec<IdentifiedLine>, more: bool) -> (Vec<IdentifiedLine>, bool) {
    let mut bytes = 0;
    let fit = lines
        .iter()
        .take(usize::from(MAX_HISTORY_PAGE))
        .take_while(|said| {
            // The JSON around a line is about 80 bytes.
            bytes += said.line.from.len() + said.line.text.len() + 80;
            bytes <= MISSED_BYTES
        })
        .count()
        .max(1);
    let more = more || lines.len() > fit;
    lines.truncate(fit);
    (lines, more)
}

/// What a member is told when the store cannot answer.
const NOT_AVAILABLE: &str = "the history database is not available now";

fn to_one(id: MemberId, event: Event) -> Vec<Delivery> {
    vec![Delivery { to: Audience::One(id), event }]
}

fn unavailable(id: MemberId, why: impl Into<String>) -> Vec<Delivery> {
    to_one(id, Event::Failed(Failure::Unavailable(why.into())))
}

impl Broker {
    /// End of a loop turn: what the rooms said goes to the store, rooms made are loaded.
    pub(super) fn store_turn(&mut self, now: Instant) {
        if !self.storage.is_on() {
            return;
        }
        self.hand_to_store();
        self.storage.end_turn(now, crate::clock::unix_now());
    }

    /// What the rooms have for the store so far this turn goes to it: the rooms made are
    /// asked for, then the lines said wait for the next write (a query sent after this sees
    /// them). Loads first: a room made this turn shows as stored history only what was said
    /// before it was made, not the lines said in it since.
    pub(super) fn hand_to_store(&mut self) {
        if !self.storage.is_on() {
            return;
        }
        let history_lines = self.rooms.history_lines();
        for (room, generation) in self.rooms.take_loads() {
            if !self.storage.load(room.clone(), generation, history_lines) {
                // Not asked: the room goes on without its stored history.
                let deliveries = self.rooms.loaded(&room, generation, None);
                self.deliver(deliveries);
            }
        }
        let said = self.rooms.take_said();
        if !said.is_empty() {
            self.storage.keep(said);
        }
    }

    /// `/history [N]`: from the store after the lines waiting for it, or (no store) the
    /// room's history in memory as one page.
    pub(super) fn history_request(
        &mut self,
        id: MemberId,
        before: Option<i64>,
        count: u16,
    ) -> Vec<Delivery> {
        let Some((key, name)) = self.rooms.room_key_and_name_of(id) else {
            return to_one(id, Event::Failed(Failure::NotLoggedIn));
        };
        let count = count.clamp(1, MAX_HISTORY_PAGE);
        if !self.storage.is_on() {
            // One page: what memory keeps has nothing before it.
            let lines = match before {
                Some(_) => Vec::new(),
                None => self.rooms.history_tail(&key, usize::from(count)),
            };
            return to_one(id, Event::HistoryPage { room: name, lines, before: None });
        }
        let job = Job::Page { asker: id, room: key, before, count: usize::from(count) };
        self.hand_to_store();
        match self.storage.ask(id, job) {
            Ok(()) => Vec::new(),
            Err(why) => unavailable(id, why),
        }
    }

    /// A page that reconnected asks for the lines said after the last one it showed: from
    /// memory when the room still holds that line, else from the store after the lines
    /// waiting for it. Where neither has it, the answer says so, with what a newcomer is shown.
    pub(super) fn missed_request(&mut self, id: MemberId, sender: u64, seq: u64) -> Vec<Delivery> {
        let Some((key, name)) = self.rooms.room_key_and_name_of(id) else {
            return to_one(id, Event::Failed(Failure::NotLoggedIn));
        };
        if let Some(lines) = self.rooms.history_after(&key, sender, seq) {
            let (lines, more) = missed_page(lines, false);
            return to_one(id, Event::Missed { room: name, lines, found: true, more });
        }
        if !self.storage.is_on() {
            return self.not_missed(id, &key, name);
        }
        // One more than a page: whether there are more after it.
        let count = usize::from(MAX_HISTORY_PAGE) + 1;
        let job = Job::After { asker: id, room: key.clone(), sender, seq, count };
        self.hand_to_store();
        match self.storage.ask(id, job) {
            Ok(()) => Vec::new(),
            Err(why) => {
                debug!("lines missed by a reconnecting page are not looked up: {why}");
                self.not_missed(id, &key, name)
            }
        }
    }

    /// The answer to a page whose last line is not known: the room's history as a newcomer
    /// sees it.
    fn not_missed(&self, id: MemberId, key: &str, room: String) -> Vec<Delivery> {
        let lines = self.rooms.history_identified(key);
        to_one(id, Event::Missed { room, lines, found: false, more: false })
    }

    /// `/search WORDS`: a query of the store (there is nothing to search without one).
    pub(super) fn search_request(&mut self, id: MemberId, words: &str) -> Vec<Delivery> {
        let Some((key, _)) = self.rooms.room_key_and_name_of(id) else {
            return to_one(id, Event::Failed(Failure::NotLoggedIn));
        };
        let query = match Query::parse(words) {
            Ok(query) => query,
            Err(why) => return to_one(id, Event::Failed(Failure::InvalidText(why))),
        };
        if !self.storage.is_on() {
            return unavailable(
                id,
                "this server keeps no history on disk to search (history_days = 0)",
            );
        }
        let words: String = crate::text::sanitize(words).chars().take(200).collect();
        let job = Job::Search { asker: id, room: key, words, query, limit: SEARCH_RESULTS };
        self.hand_to_store();
        match self.storage.ask(id, job) {
            Ok(()) => Vec::new(),
            Err(why) => unavailable(id, why),
        }
    }

    /// The database thread answered: each answer goes where it belongs.
    pub(super) fn store_answers(&mut self) {
        for answer in self.storage.take_answers(Instant::now()) {
            match answer {
                Outcome::Loaded { room, generation, result } => {
                    let record = match result {
                        Ok(record) => Some(record),
                        Err(why) => {
                            debug!("room {room} goes on without its stored history: {why}");
                            None
                        }
                    };
                    let deliveries = self.rooms.loaded(&room, generation, record);
                    self.deliver(deliveries);
                }
                Outcome::Page { asker, room, count, result } => {
                    self.storage.answered(asker);
                    let name = self.rooms.room_name(&room).unwrap_or(&room).to_string();
                    let deliveries = match result {
                        Ok(lines) => {
                            let before = (lines.len() == count)
                                .then(|| lines.first().map(|l| l.id))
                                .flatten();
                            to_one(
                                asker,
                                Event::HistoryPage { room: name, lines: to_history(lines), before },
                            )
                        }
                        Err(why) => {
                            debug!("a /history failed: {why}");
                            unavailable(asker, NOT_AVAILABLE)
                        }
                    };
                    self.answer_member(asker, deliveries);
                }
                Outcome::After { asker, room, result } => {
                    self.storage.answered(asker);
                    let name = self.rooms.room_name(&room).unwrap_or(&room).to_string();
                    let deliveries = match result {
                        Ok(Some(lines)) => {
                            let (lines, more) = missed_page(to_identified(lines), false);
                            to_one(asker, Event::Missed { room: name, lines, found: true, more })
                        }
                        Ok(None) => self.not_missed(asker, &room, name),
                        Err(why) => {
                            debug!("lines missed by a reconnecting page: {why}");
                            self.not_missed(asker, &room, name)
                        }
                    };
                    self.answer_member(asker, deliveries);
                }
                Outcome::Search { asker, room, words, result } => {
                    self.storage.answered(asker);
                    let name = self.rooms.room_name(&room).unwrap_or(&room).to_string();
                    let deliveries = match result {
                        Ok(lines) => to_one(
                            asker,
                            Event::SearchResults { room: name, words, lines: to_history(lines) },
                        ),
                        Err(why) => {
                            debug!("a /search failed: {why}");
                            unavailable(asker, NOT_AVAILABLE)
                        }
                    };
                    self.answer_member(asker, deliveries);
                }
                Outcome::Since { asker, result } => {
                    self.storage.answered(asker);
                    let reply = match result {
                        Ok(lines) => {
                            ControlReply::Stored(lines.into_iter().map(stored_row).collect())
                        }
                        Err(why) => ControlReply::Failed(why),
                    };
                    self.reply(asker, &reply);
                }
                Outcome::Forgot { asker, nick, result } => {
                    self.storage.answered(asker);
                    let reply = match result {
                        Ok(deleted) => ControlReply::Done(format!(
                            "forgot {nick}: {deleted} stored lines deleted"
                        )),
                        Err(why) => ControlReply::Failed(format!(
                            "{why}; {nick}'s stored lines are not deleted"
                        )),
                    };
                    self.reply(asker, &reply);
                }
                Outcome::BackedUp { asker, result } => {
                    self.storage.answered(asker);
                    let reply = match result {
                        Ok(bytes) => ControlReply::BackedUp { bytes },
                        Err(why) => {
                            warn!("a backup failed: {why}");
                            ControlReply::Failed(why)
                        }
                    };
                    self.reply(asker, &reply);
                }
                Outcome::Accounts(record) => self.accounts_loaded(record),
                Outcome::Mentions { asker, count } => self.mentions_counted(asker, count as u64),
                // The rest is storage's own, and never returned.
                Outcome::Opened(_)
                | Outcome::Written { .. }
                | Outcome::Expired(_)
                | Outcome::AccountsFailed(_) => {}
            }
        }
    }

    /// Hands an answer to a member that may have left meanwhile.
    fn answer_member(&mut self, id: MemberId, deliveries: Vec<Delivery>) {
        if self.peers.contains(id) {
            self.deliver(deliveries);
        }
    }
}

fn stored_row(line: StoredLine) -> StoredRow {
    StoredRow { id: line.id, at: line.at, from: line.from, action: line.action, text: line.text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::HistoryLine;

    fn lines(count: u64, text_bytes: usize) -> Vec<IdentifiedLine> {
        let text = "x".repeat(text_bytes);
        let line = HistoryLine { at: 1, from: "bob".into(), action: false, text };
        (1..=count).map(|seq| IdentifiedLine { sender: 7, seq, line: line.clone() }).collect()
    }

    #[test]
    fn an_answer_to_a_reconnecting_page_holds_a_page_of_lines_or_of_bytes() {
        let (page, more) = missed_page(lines(201, 10), false);
        assert_eq!((page.len(), more), (usize::from(MAX_HISTORY_PAGE), true));
        let (page, more) = missed_page(lines(200, 10), false);
        assert_eq!((page.len(), more), (200, false));
        // 512-byte lines: about 32 KiB of them, the rest asked for again.
        let (page, more) = missed_page(lines(200, 512), false);
        assert_eq!((page.len(), more), (MISSED_BYTES / (3 + 512 + 80), true));
        assert_eq!(page.last().map(|l| l.seq), Some(page.len() as u64), "the oldest first");
        // One line always goes, however long: the page must get on.
        let (page, more) = missed_page(lines(2, MISSED_BYTES), false);
        assert_eq!((page.len(), more), (1, true));
        assert_eq!(missed_page(Vec::new(), false), (Vec::new(), false));
    }
}
