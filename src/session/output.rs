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
use crate::sys;

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
        let hh_mm = if self.terminal.timestamps {
            sys::local_hh_mm(crate::clock::unix_now())
        } else {
            String::new()
        };
        let mut bytes = Vec::new();
        self.terminal.write_lines(lines, &hh_mm, ring, &mut bytes);
        self.send_raw(&bytes);
    }

    /// Queues what the line editor echoes, in the client's character set.
    pub(super) fn send_echo(&mut self, echo: &str) {
        let mut bytes = Vec::new();
        self.terminal.charset.encode(echo, &mut bytes);
        self.send_raw(&bytes);
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
