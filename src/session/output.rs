//! What the session writes, and how it ends.
//!
//! Owns the way out: lines rendered for the client's terminal (timestamps, the bell, the line
//! being typed kept out of their way), the editor's echo in the client's character set, raw
//! bytes (telnet answers) into the transport's bounded queue, flushing both peers each turn,
//! and starting to close (last words, the grace to deliver them, the log line). A client that
//! does not read its output is disconnected here. It decides nothing about what to say.

use std::time::Instant;

use log::{debug, info, warn};

use super::render::Shown;
use super::state::Phase;
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
        let now = crate::clock::unix_now();
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
        // Taken for the call (rendering and queueing need the session) and put back: the
        // buffers keep their capacity from line to line.
        let mut scratch = std::mem::take(&mut self.terminal.output);
        let hh_mm = scratch.clock.hh_mm(self.terminal.timestamps);
        self.terminal.write_lines(lines, hh_mm, ring, &mut scratch.bytes);
        self.send_raw(&scratch.bytes);
        scratch.bytes.clear();
        self.terminal.output = scratch;
    }

    /// Shows a line or action said in the room (a ring record's, decoded borrowed) unless the
    /// state machine hides it: acknowledged if it is this session's, filtered for duplicates
    /// and ignored speakers, rendered and queued for the client without allocating.
    #[expect(
        dead_code,
        reason = "the ring reader (events.rs, the lead's) calls it once per record"
    )]
    pub(super) fn show_said(&mut self, said: &Said<'_>, action: bool) {
        let Some(ring) = self.state.on_line(said, action, &mut self.broker, self.terminal.bell)
        else {
            return;
        };
        let mut scratch = std::mem::take(&mut self.terminal.output);
        let hh_mm = scratch.clock.hh_mm(self.terminal.timestamps);
        self.terminal.write_said(said, action, hh_mm, ring, &mut scratch.bytes);
        self.send_raw(&scratch.bytes);
        scratch.bytes.clear();
        self.terminal.output = scratch;
    }

    /// Queues what the line editor echoes, in the client's character set.
    pub(super) fn send_echo(&mut self, echo: &str) {
        if echo.is_empty() {
            return;
        }
        let mut scratch = std::mem::take(&mut self.terminal.output);
        self.terminal.charset.encode(echo, &mut scratch.bytes);
        self.send_raw(&scratch.bytes);
        scratch.bytes.clear();
        self.terminal.output = scratch;
    }

    /// Queues bytes for the client as they are (telnet answers, echo, rendered lines).
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
