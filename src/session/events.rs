//! The broker's side of the session: its events, its reconnections, and what the session
//! tells it on its own.
//!
//! Owns reading events off the [`link`](super::link), carrying out what the state machine
//! ([`state`](super::state)) says about each, noticing the broker's close (the answer to
//! `/quit`, or a broker that died), re-registering with a restarted broker, and the requests
//! the session makes without a command (goodbye, traffic figures), and its one report to the
//! master's admission socket. It decides nothing about what an event means (that is
//! `state`'s) or how it looks (`render`'s).

use log::{debug, error, warn};

use super::link::{BrokerLink, Welcomed};
use super::render::{self, notice};
use super::state::{Deliveries, Reaction};
use super::{Session, Traffic};
use crate::channel::{ReadOutcome, SendError};
use crate::proto::{Event, Request};
use crate::sys;

impl Session {
    /// Reads the broker's events. `to_the_end`: the poller saw the connection close or fail,
    /// so read until the socket says so even after a short read.
    pub(super) fn read_broker(&mut self, to_the_end: bool) {
        loop {
            let Some(channel) = self.broker.channel() else { return };
            let drained = match channel.read_some() {
                Ok(ReadOutcome::Data { drained }) => drained && !to_the_end,
                Ok(ReadOutcome::WouldBlock) => return,
                Ok(ReadOutcome::Closed { .. }) => {
                    // Events that arrived with the close are still shown.
                    self.handle_events();
                    return self.broker_closed();
                }
                Err(err) if self.closing.is_some() => {
                    debug!("session for {}: broker connection failed: {err}", self.peer);
                    return self.broker_closed();
                }
                Err(err) => {
                    warn!("session for {}: broker connection failed: {err}", self.peer);
                    return self.broker_closed();
                }
            };
            if !self.handle_events() || drained {
                return;
            }
        }
    }

    /// The broker closed the connection: the answer to `/quit`, or a broker that died.
    pub(super) fn broker_closed(&mut self) {
        if self.quit_sent.is_some() {
            self.close(Some(notice::goodbye()), "quit");
        } else if self.closing.is_none() {
            warn!("session for {}: lost the broker; reconnecting", self.peer);
        }
        // What is queued for this connection can never be written now; a closing session must
        // not wait for it.
        self.broker.lost();
    }

    /// Reconnects to a restarted broker. Re-registering (the nickname asked for before login,
    /// or nick, room and topic after) and re-sending unacknowledged lines wait for its
    /// `Welcome`: only a broker that really restarted takes the session back.
    pub(super) fn reconnect_if_due(&mut self) {
        if self.closing.is_some() {
            return;
        }
        if self.broker.gave_up() {
            if self.broker.never_answered() {
                return self
                    .close(Some(notice::service_unavailable()), "the broker never answered");
            }
            return self.close(Some(notice::service_lost()), "the broker did not come back");
        }
        if self.broker.try_reconnect(self.poll.registry()) {
            self.state.reconnected();
        }
    }

    /// The broker answered `Hello`. A restarted one gets the re-registration — and so does the
    /// first broker to welcome this session when an earlier connection was lost before its
    /// `Welcome` (a nickname typed meanwhile is still asked for); the same broker as before
    /// closed the connection on purpose, and the session ends.
    fn welcomed(&mut self, sender: u64, broker: u64) {
        match self.broker.welcomed(sender, broker) {
            Welcomed::First | Welcomed::Restarted => {
                if let Some(request) = &self.state.reregistration {
                    let sent = self.broker.send(request).and_then(|()| self.broker.resend_recent());
                    self.check_sent(sent);
                }
            }
            Welcomed::SameBroker => {
                self.close(
                    Some(notice::disconnected_by_server()),
                    "the broker closed the connection without restarting",
                );
            }
        }
    }

    /// Handles every whole event read from the broker; false if the broker sent garbage.
    fn handle_events(&mut self) -> bool {
        loop {
            let Some(channel) = self.broker.channel() else { return false };
            match channel.next_message() {
                Ok(Some(event)) => self.handle_event(event),
                Ok(None) => return true,
                Err(err) => {
                    error!("session for {}: bad frame from the broker: {err}", self.peer);
                    self.close(Some(notice::service_lost()), "bad frame from the broker");
                    return false;
                }
            }
        }
    }

    /// One event: the state machine decides, this carries it out.
    fn handle_event(&mut self, event: Event) {
        self.broker.heard();
        let reaction = self.state.on_event(&event, &mut self.broker, self.terminal.bell);
        if matches!(
            event,
            Event::LoggedIn { .. }
                | Event::Resumed { .. }
                | Event::Joined { .. }
                | Event::NickChanged { .. }
                | Event::Failed(_)
        ) {
            self.update_title();
        }
        match reaction {
            Reaction::Nothing => {}
            Reaction::Show { lines, ring } => self.write_lines(&lines, ring),
            Reaction::History { room, lines } => {
                self.show_all(&render::history(&room, &lines, sys::local_hh_mm));
            }
            Reaction::Registered { admitted, restart_login_grace, notices, lines } => {
                if admitted {
                    self.report_admission();
                }
                if restart_login_grace {
                    self.started = std::time::Instant::now();
                }
                for line in notices {
                    self.show(line);
                }
                self.write_lines(&lines, false);
            }
            Reaction::Welcome { sender, broker } => self.welcomed(sender, broker),
            Reaction::Close { last_words, why } => self.close(last_words, &why),
        }
    }

    /// A request could not be queued for the broker: the session cannot go on.
    pub(super) fn check_sent(&mut self, sent: Result<(), SendError>) {
        if let Err(err) = sent {
            warn!("session for {}: cannot queue a request for the broker: {err}", self.peer);
            self.close(Some(notice::service_lost()), "broker queue full");
        }
    }

    /// Says goodbye to the broker, which then closes the connection: the last figures go
    /// first.
    pub(super) fn send_quit(&mut self, reason: Option<String>) {
        self.report_traffic();
        let sent = self.broker.send(&Request::Quit { reason });
        self.check_sent(sent);
    }

    /// Tells the broker how many bytes went to and from the client since the last report.
    pub(super) fn report_traffic(&mut self) {
        let Traffic { received, sent, .. } = std::mem::take(&mut self.traffic);
        if received > 0 || sent > 0 {
            // Best effort: figures for operators never cost the client anything.
            let _ = self.broker.send(&Request::Traffic { received, sent });
        }
    }

    /// Tells the master, once, that this client has a nickname. Best effort: a full or closed
    /// report socket only costs the master's count accuracy, never the client.
    fn report_admission(&mut self) {
        self.report_to_master(&[]);
    }

    /// The one report a session makes to the master's admission socket: its pid, then what
    /// `detail` adds (nothing for an admission).
    pub(super) fn report_to_master(&mut self, detail: &[u8]) {
        if let Some(reporter) = self.reporter.take() {
            let mut report = (std::process::id() as i32).to_le_bytes().to_vec();
            report.extend_from_slice(detail);
            let _ = reporter.send(&report);
        }
    }
}

/// The link keeps the acknowledgements and the duplicate filter the state machine reads.
impl Deliveries for BrokerLink {
    fn me(&self) -> u64 {
        self.session()
    }

    fn acknowledge(&mut self, seq: u64) {
        BrokerLink::acknowledge(self, seq);
    }

    fn first_sight(&mut self, sender: u64, seq: u64) -> bool {
        BrokerLink::first_sight(self, sender, seq)
    }
}
