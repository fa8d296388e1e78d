//! What the session writes, and how it ends.
//!
//! Owns the way out: lines rendered for the client's terminal (timestamps, the bell, the line
//! being typed kept out of their way), the editor's echo in the client's character set, raw
//! bytes (telnet answers) into the transport's bounded queue, flushing both peers each turn,
//! and starting to close (last words, the grace to deliver them, the log line). A line said in
//! the room reaches the client's queue through [`Session::show_said`] without allocating: the
//! bytes go through one reused buffer and the timestamp is formatted once a minute. A client
//! that does not read its output is disconnected here. It decides nothing about what to say.

use std::time::Instant;

use log::{debug, info, warn};

use super::render::Shown;
use super::state::Phase;
use super::telnet;
use super::terminal::Terminal;
use super::{CLOSE_GRACE, Closing, Session, TRAFFIC_REPORT};
use crate::proto::broadcast::Said;
use crate::sys;

/// What the session reuses for every write to its client: the bytes of the lines being
/// queued, and the time of day for their timestamps.
#[derive(Debug, Default)]
pub(super) struct OutputScratch {
    bytes: Vec<u8>,
    clock: MinuteClock,
}

/// The local time as `HH:MM`, formatted once a minute rather than once a line.
#[derive(Debug, Default)]
struct MinuteClock {
    /// The Unix minute `text` is for; `None` before the first use.
    minute: Option<u64>,
    text: String,
}

impl MinuteClock {
    /// The local time now, for timestamps; empty when they are off (nothing is formatted).
    fn hh_mm(&mut self, timestamps: bool) -> &str {
        if !timestamps {
            return "";
        }
        self.at(crate::clock::unix_now())
    }

    /// The local time at the Unix time `now`.
    fn at(&mut self, now: u64) -> &str {
        // Time zones (and their daylight saving changes) move by whole minutes.
        if self.minute != Some(now / 60) {
            self.minute = Some(now / 60);
            self.text.clear();
            self.text.push_str(&sys::local_hh_mm(now));
        }
        &self.text
    }
}

impl Session {
    /// Queues one line for the client.
    pub(super) fn show(&mut self, line: Shown) {
        self.write_lines(std::slice::from_ref(&line), false);
    }

    pub(super) fn show_all(&mut self, lines: &[Shown]) {
        self.write_lines(lines, false);
    }

    /// Queues lines for the client, rendered for its terminal, with the bell if `ring`.
    pub(super) fn write_lines(&mut self, lines: &[Shown], ring: bool) {
        if lines.is_empty() {
            return;
        }
        if self.is_browser() {
            return self.send_lines_to_browser(lines, ring);
        }
        self.queue_rendered(|terminal, hh_mm, bytes| {
            terminal.write_lines(lines, hh_mm, ring, bytes);
        });
    }

    /// Queues what `render` writes for the terminal (given the time of day for timestamps)
    /// into the session's reused output buffer. The buffer is taken for the call (rendering
    /// and queueing need the session) and put back: it keeps its capacity from line to line.
    fn queue_rendered(&mut self, render: impl FnOnce(&mut Terminal, &str, &mut Vec<u8>)) {
        let mut scratch = std::mem::take(&mut self.terminal.output);
        let hh_mm = scratch.clock.hh_mm(self.terminal.timestamps);
        render(&mut self.terminal, hh_mm, &mut scratch.bytes);
        self.send_text(&scratch.bytes);
        scratch.bytes.clear();
        self.terminal.output = scratch;
    }

    /// Shows a line or action said in the room (a ring record's, decoded borrowed) unless the
    /// state machine hides it: acknowledged if it is this session's, filtered for duplicates
    /// and ignored speakers, rendered and queued for the client without allocating.
    pub(super) fn show_said(&mut self, said: &Said<'_>, action: bool) {
        let Some(ring) = self.state.on_line(said, action, &mut self.broker, self.terminal.bell)
        else {
            return;
        };
        if self.is_browser() {
            let message =
                crate::session::web::json::said(said, action, crate::clock::unix_now(), ring);
            return self.send_raw(message.as_bytes());
        }
        self.queue_rendered(|terminal, hh_mm, bytes| {
            terminal.write_said(said, action, hh_mm, ring, bytes);
        });
    }

    /// Shows a system line whose text `fill` appends (someone else's arrival or departure, from
    /// a ring record decoded borrowed), as `write_lines` shows its event, without allocating:
    /// every member of a room is told every arrival and departure of a crowd, and allocating
    /// for each was a third of what a session did then (see docs/PERFORMANCE.md).
    pub(super) fn show_room_news(&mut self, fill: impl FnOnce(&mut String)) {
        self.queue_rendered(|terminal, hh_mm, bytes| terminal.write_system(fill, hh_mm, bytes));
    }

    /// Queues what the line editor echoes, in the client's character set.
    pub(super) fn send_echo(&mut self, echo: &str) {
        if echo.is_empty() {
            return;
        }
        let mut scratch = std::mem::take(&mut self.terminal.output);
        self.terminal.charset.encode(echo, &mut scratch.bytes);
        self.send_text(&scratch.bytes);
        scratch.bytes.clear();
        self.terminal.output = scratch;
    }

    /// Queues text for the client (rendered lines, echo): to a client that speaks telnet, a
    /// 0xFF byte (`ÿ` in Latin-1) goes doubled, as telnet's data byte 255, not as the start of
    /// a command that would eat the character after it. UTF-8, GBK and Big5 never have one.
    pub(super) fn send_text(&mut self, bytes: &[u8]) {
        let speaks_telnet = self.client.is_telnet() || self.telnet.spoke_telnet();
        if !speaks_telnet || !bytes.contains(&telnet::IAC) {
            return self.send_raw(bytes);
        }
        let mut doubled = Vec::with_capacity(bytes.len() + 8);
        for &byte in bytes {
            doubled.push(byte);
            if byte == telnet::IAC {
                doubled.push(telnet::IAC);
            }
        }
        self.send_raw(&doubled);
    }

    /// Queues bytes for the client as they are (telnet answers, and text once prepared).
    pub(super) fn send_raw(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() && self.client.queue(bytes).is_err() && self.closing.is_none() {
            self.close(None, "client does not read its output");
        }
    }

    /// Starts closing: the client gets `last_words` (if any), queues drain, and the loop ends.
    pub(super) fn close(&mut self, last_words: Option<Shown>, why: &str) {
        if self.closing.is_some() {
            return;
        }
        if self.is_browser() {
            self.browser_closing(last_words.as_ref());
        }
        if let Some(line) = last_words {
            self.show(line);
        }
        self.closing = Some(Closing { deadline: Instant::now() + CLOSE_GRACE });
        self.log_end(why);
    }

    pub(super) fn log_end(&self, why: &str) {
        let who = match &self.state.phase {
            Phase::Chatting { nick, .. } | Phase::Resuming { nick } => {
                format!("{nick} ({})", self.peer)
            }
            Phase::ChoosingNick { .. } => self.peer.to_string(),
        };
        info!("{who} disconnected after {}s: {why}", self.started.elapsed().as_secs());
    }

    /// Writes what waits for the broker and for the client, as far as each takes it.
    pub(super) fn flush(&mut self) {
        if let Some(channel) = self.broker.channel()
            && let Err(err) = channel.flush()
        {
            if self.closing.is_some() {
                // Leaving, most often because the daemon stops: the broker may be gone first,
                // and what was left to tell it (the last figures) no longer matters.
                debug!("session for {}: cannot write to the broker: {err}", self.peer);
            } else {
                warn!("session for {}: cannot write to the broker: {err}", self.peer);
            }
            self.broker_closed();
        }
        match self.client.flush() {
            Ok(sent) => {
                if sent > 0 {
                    self.traffic.sent += sent as u64;
                    self.traffic.next_report.get_or_insert_with(|| Instant::now() + TRAFFIC_REPORT);
                }
            }
            Err(err) => {
                // The client is gone; nothing more can be delivered.
                if self.closing.is_none() {
                    self.log_end(&format!("write error: {err}"));
                }
                self.closing = Some(Closing { deadline: Instant::now() });
                self.client.discard_output();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_count::allocations_in;
    use crate::proto::broadcast::Broadcast;
    use crate::proto::codec;
    use crate::session::charset::Charset;
    use crate::session::state::{Deliveries, SessionState};
    use crate::session::terminal::Terminal;

    /// The link's bookkeeping for a few senders, on the stack: the highest line seen of each.
    struct Seen {
        me: u64,
        acknowledged: u64,
        highest: [u64; 8],
    }

    impl Deliveries for Seen {
        fn me(&self) -> u64 {
            self.me
        }
        fn acknowledge(&mut self, seq: u64) {
            self.acknowledged = self.acknowledged.max(seq);
        }
        fn first_sight(&mut self, sender: u64, seq: u64) -> bool {
            let highest = &mut self.highest[sender as usize % 8];
            let first = seq > *highest;
            *highest = (*highest).max(seq);
            first
        }
    }

    const ME: u64 = 1;
    /// Who says the lines: this user, others, two ignored nicks and lookalikes of them.
    const SPEAKERS: [(&str, u64); 6] = [
        ("alice", ME),
        ("bob", 2),
        ("\u{5C0F}\u{660E}", 3),
        ("mallory", 4),
        ("ma1lory", 5),
        ("\u{FF25}ve", 6),
    ];
    const TEXTS: [&str; 5] = [
        "hello everyone",
        "2*3 is 6 <3, see Vec<u8>, *waves*",
        "hi Alice, are you there?",
        "\u{4F60}\u{597D}\u{FF0C}\u{4ECA}\u{5929}\u{5929}\u{6C14}\u{5F88}\u{597D}\u{3002}",
        "thumbs up \u{1F44D} for a line long enough to be wrapped on a narrow terminal window",
    ];

    /// The terminals the test delivers to: monochrome UTF-8; colour, timestamps and a width;
    /// GBK with colour, a width and a line being typed.
    fn terminals() -> Vec<Terminal> {
        let mut plain = Terminal::default();
        plain.bell = false;
        let mut coloured = Terminal::default();
        coloured.colour = true;
        coloured.timestamps = true;
        coloured.set_width(80);
        let mut gbk = Terminal::default();
        gbk.colour = true;
        gbk.set_width(40);
        gbk.set_charset(Charset::by_name("gbk").expect("gbk"));
        gbk.set_echo(true);
        if let Some(editor) = &mut gbk.editor {
            editor.feed(b"typing", &mut Vec::new(), &mut String::new());
        }
        vec![plain, coloured, gbk]
    }

    /// The records of lines `first..first + count`: senders, texts and actions in turn.
    fn records(first: u64, count: u64) -> Vec<Vec<u8>> {
        (first..first + count)
            .map(|seq| {
                let (from, sender) = SPEAKERS[seq as usize % SPEAKERS.len()];
                let said = Said { from, sender, seq, text: TEXTS[seq as usize % TEXTS.len()] };
                let broadcast =
                    if seq % 5 == 0 { Broadcast::Action(said) } else { Broadcast::Chat(said) };
                let mut record = Vec::new();
                codec::encode_payload(&broadcast, &mut record).expect("encodes");
                record
            })
            .collect()
    }

    /// What `show_said` does per record, but for queueing: decode borrowed, decide, render.
    /// Returns how many lines were shown and how many rang the bell.
    fn deliver(
        records: &[Vec<u8>],
        state: &mut SessionState,
        seen: &mut Seen,
        terminal: &mut Terminal,
        clock: &mut MinuteClock,
        out: &mut Vec<u8>,
    ) -> (usize, usize) {
        let (mut shown, mut rang) = (0, 0);
        for record in records {
            let Ok(broadcast) = codec::decode_payload::<Broadcast<'_>>(record) else { continue };
            let (said, action) = match &broadcast {
                Broadcast::Chat(said) => (said, false),
                Broadcast::Action(said) => (said, true),
                _ => continue,
            };
            let Some(ring) = state.on_line(said, action, seen, terminal.bell) else { continue };
            let hh_mm = if terminal.timestamps { clock.at(1_700_000_000) } else { "" };
            terminal.write_said(said, action, hh_mm, ring, out);
            shown += 1;
            rang += usize::from(ring);
            out.clear();
        }
        (shown, rang)
    }

    #[test]
    fn a_line_from_the_ring_reaches_the_queue_without_allocating() {
        for mut terminal in terminals() {
            let mut state = SessionState::new(([127, 0, 0, 1], 4000).into());
            state.phase = Phase::Chatting { nick: "alice".into(), room: "lobby".into() };
            state.ignore("Mallory".into());
            state.ignore("eve".into());
            let mut seen = Seen { me: ME, acknowledged: 0, highest: [0; 8] };
            let mut clock = MinuteClock::default();
            let mut out = Vec::new();
            // Warming up: the buffers grow to the longest line, the clock formats its minute.
            let warm_up = records(1, 24);
            deliver(&warm_up, &mut state, &mut seen, &mut terminal, &mut clock, &mut out);
            let lines = records(25, 1000);
            let ((shown, rang), allocations) = allocations_in(|| {
                deliver(&lines, &mut state, &mut seen, &mut terminal, &mut clock, &mut out)
            });
            assert_eq!(allocations, 0, "allocations for 1000 lines on {terminal:?}");
            // Half the speakers are ignored (two by lookalike nicks); the rest are all shown.
            assert_eq!(shown, 500, "{terminal:?}");
            assert!(rang > 0 || !terminal.bell, "mentions by others ring: {rang}");
            assert_eq!(seen.acknowledged, 1020, "this user's own lines are acknowledged");
        }
    }

    #[test]
    fn a_crowd_arriving_and_leaving_reaches_the_queue_without_allocating() {
        use crate::proto::LeaveReason;
        use crate::session::render;
        use std::borrow::Cow;
        let reasons = [LeaveReason::ConnectionLost, LeaveReason::Quit(None), LeaveReason::TooSlow];
        let records: Vec<Vec<u8>> = (0..600)
            .map(|n| {
                let nick = format!("guest{n}");
                let broadcast = if n % 2 == 0 {
                    Broadcast::Joined { nick: &nick, room: "lobby" }
                } else {
                    let reason = Cow::Borrowed(&reasons[n % 3]);
                    Broadcast::Left { nick: &nick, room: "lobby", reason }
                };
                let mut record = Vec::new();
                codec::encode_payload(&broadcast, &mut record).expect("encodes");
                record
            })
            .collect();
        // As `handle_record` and `show_room_news` do with each.
        let show = |records: &[Vec<u8>], terminal: &mut Terminal, out: &mut Vec<u8>| {
            for record in records {
                match codec::decode_payload::<Broadcast<'_>>(record) {
                    Ok(Broadcast::Joined { nick, room }) => terminal.write_system(
                        |text| render::arrival_text(nick, room, text),
                        "09:41",
                        out,
                    ),
                    Ok(Broadcast::Left { nick, room, reason }) => terminal.write_system(
                        |text| render::departure_text(nick, room, &reason, text),
                        "09:41",
                        out,
                    ),
                    other => panic!("{other:?}"),
                }
                out.clear();
            }
        };
        for mut terminal in terminals() {
            let mut out = Vec::new();
            show(&records[..24], &mut terminal, &mut out);
            let ((), allocations) = allocations_in(|| show(&records, &mut terminal, &mut out));
            assert_eq!(
                allocations, 0,
                "allocations for 600 arrivals and departures on {terminal:?}"
            );
        }
    }

    #[test]
    fn the_clock_formats_once_a_minute() {
        let mut clock = MinuteClock::default();
        let first = clock.at(1_700_000_040).to_string();
        let (again, allocations) = allocations_in(|| clock.at(1_700_000_059).len());
        assert_eq!((again, allocations), (first.len(), 0));
        assert_eq!(clock.at(1_700_000_040 + 60), sys::local_hh_mm(1_700_000_100));
        assert_eq!(clock.hh_mm(false), "");
    }
}
