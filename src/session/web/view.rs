//! The session's output to a browser: where a terminal client gets rendered lines, a browser
//! gets the objects of [`super::json`], one WebSocket message each.
//!
//! Owns what only a browser needs beyond the lines: telling the page who the user is whenever
//! that changes (`you`), the prompts (nickname, or a password to hide), the structure of
//! events that change its lists, and the member and room lists it is sent after each join
//! without having asked (the session asks the broker, and the answers are then not shown as
//! text). It decides nothing the session's state machine decides; it only writes.

use crate::clock::unix_now;
use crate::proto::control::ControlReply;
use crate::proto::{Event, HistoryLine, IdentifiedLine, Request};
use crate::session::Session;
use crate::session::render::{Shown, notice};
use crate::session::state::Phase;

use super::json;

/// What the session keeps for its browser.
#[derive(Debug, Default)]
pub(in crate::session) struct BrowserView {
    /// The last `you` sent: nick, room, account, admin.
    you: Option<(String, String, bool, bool)>,
    /// Member lists and room lists the session asked for itself: their answers update the
    /// page's lists and are not shown as lines.
    quiet_members: u32,
    /// The last member list was one of those: so is the `MemberNodes` after it.
    quiet_nodes: bool,
    quiet_rooms: u32,
}

impl Session {
    /// Whether the client is a browser (its output is JSON).
    pub(in crate::session) fn is_browser(&self) -> bool {
        self.browser.is_some()
    }

    fn send_message(&mut self, message: &str) {
        self.send_raw(message.as_bytes());
    }

    /// Lines a terminal would show, for the browser; the bell becomes the last one's mention.
    pub(in crate::session) fn send_lines_to_browser(&mut self, lines: &[Shown], ring: bool) {
        let now = unix_now();
        for (index, line) in lines.iter().enumerate() {
            let mention = ring && index + 1 == lines.len();
            self.send_message(&json::line(line, now, mention));
            if *line == notice::prompt() {
                self.send_message(&json::prompt(false));
            }
        }
    }

    /// Lines from before the user came, each with the time it was said, between `heading` and
    /// `footer` system lines when given.
    pub(in crate::session) fn send_history_to_browser(
        &mut self,
        heading: Option<&str>,
        lines: &[HistoryLine],
        footer: Option<&str>,
    ) {
        let now = unix_now();
        if let Some(heading) = heading {
            self.send_message(&json::line(&crate::session::render::system(heading), now, false));
        }
        for line in lines {
            self.send_message(&json::history(line));
        }
        if let Some(footer) = footer {
            self.send_message(&json::line(&crate::session::render::system(footer), now, false));
        }
    }

    /// The answer to the page's `/missed`, in one message.
    pub(in crate::session) fn send_missed_to_browser(
        &mut self,
        room: &str,
        lines: &[IdentifiedLine],
        found: bool,
        more: bool,
    ) {
        self.send_message(&json::missed(room, lines, found, more));
    }

    /// A password is asked for: the page hides what is typed next.
    pub(in crate::session) fn ask_browser_for_a_secret(&mut self, prompt: Shown) {
        self.send_message(&json::prompt(true));
        self.send_lines_to_browser(std::slice::from_ref(&prompt), false);
    }

    /// The password prompt is over: what the user types next is shown again.
    pub(in crate::session) fn browser_input_is_plain(&mut self) {
        self.send_message(&json::prompt(false));
    }

    /// Before an event's lines: its structure, and whether its lines are shown (`false` for
    /// the answer to a member or room list the session asked for itself).
    pub(in crate::session) fn event_to_browser(&mut self, event: &Event) -> bool {
        if let Event::AdminReply(reply) = event {
            self.send_admin_reply(reply);
            return false;
        }
        if let Some(structure) = json::structure(event) {
            self.send_message(&structure);
        }
        let Some(view) = &mut self.browser else { return true };
        match event {
            Event::Members { .. } if view.quiet_members > 0 => {
                view.quiet_members -= 1;
                view.quiet_nodes = true;
                false
            }
            Event::Members { .. } => {
                view.quiet_nodes = false;
                true
            }
            // The nodes of the members just listed, as quiet as that list.
            Event::MemberNodes { .. } => !std::mem::take(&mut view.quiet_nodes),
            Event::RoomList { .. } if view.quiet_rooms > 0 => {
                view.quiet_rooms -= 1;
                false
            }
            _ => true,
        }
    }

    fn send_admin_reply(&mut self, reply: &ControlReply) {
        self.send_message(&json::admin(reply));
    }

    /// After an event: tell the page if the user's nick, room or account changed, and on
    /// entering a room ask for its members and the rooms' counts.
    pub(in crate::session) fn update_browser(&mut self) {
        let Phase::Chatting { nick, room } = &self.state.phase else { return };
        let account = self.state.account.as_ref();
        let now = (nick.clone(), room.clone(), account.is_some(), account.is_some_and(|a| a.admin));
        let Some(view) = &mut self.browser else { return };
        if view.you.as_ref() == Some(&now) {
            return;
        }
        let entered = view.you.as_ref().is_none_or(|(_, room, ..)| *room != now.1);
        let message = json::you(&now.0, &now.1, now.2, now.3);
        view.you = Some(now);
        if entered {
            view.quiet_members += 1;
            view.quiet_rooms += 1;
        }
        self.send_message(&message);
        if entered {
            for request in [Request::Who, Request::Rooms] {
                let sent = self.broker.send(&request);
                self.check_sent(sent);
            }
        }
    }

    /// The connection closes after this: the page says why instead of reconnecting at once.
    pub(in crate::session) fn browser_closing(&mut self, last_words: Option<&Shown>) {
        let reason = last_words.map(Shown::plain).unwrap_or_default();
        // Straight to the queue: this is part of closing, and a full queue is a reason to close
        // (through `send_raw`) that must not come back here.
        let _ = self.client.queue(json::closed(&reason).as_bytes());
    }
}
