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
use crate::proto::broadcast::Broadcast;
use crate::proto::codec;
use crate::proto::{Event, LeaveReason, Request};
use crate::ring::{RingError, RingReader};
use crate::sys;

/// How far a pass over the broker's frames got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Everything available was handled.
    Done,
    /// It stopped: the client's queue is backed up, a mark waits for the ring's next records,
    /// or the session is ending.
    Paused,
    /// A handover changed the ring: what was loaded about the old one no longer holds.
    RingChanged,
}

impl Session {
    /// Handles what the broker sent — on its socket and in the room's ring — in the broker's
    /// order (see `feed`), as far as the client's queue lets it.
    /// False if it stopped before the end (see [`Flow::Paused`]).
    pub(super) fn pump_broker(&mut self) -> bool {
        if self.feed.lapped() {
            self.fell_behind();
            return false;
        }
        loop {
            // Loaded before the socket is read: every socket frame that precedes these records
            // was written to the socket before they were published.
            let committed = self.feed.committed();
            match self.drain_socket() {
                Flow::Paused => return false,
                Flow::RingChanged => continue,
                Flow::Done => {}
            }
            return match committed {
                Some(upto) => self.drain_ring(upto) == Flow::Done,
                None => true,
            };
        }
    }

    /// Whether the client's queue is too full to take more of the broker's frames now: they
    /// wait (in the ring and the socket) until it drains.
    pub(super) fn client_backed_up(&self) -> bool {
        self.client.queued() > self.settings.limits.send_queue_bytes / 2
    }

    /// Handles every whole socket frame available, reading the socket when the poller said it
    /// has more.
    fn drain_socket(&mut self) -> Flow {
        let mut at_end = false;
        loop {
            if let Some(mark) = self.feed.pending_mark {
                if self.drain_ring(mark) == Flow::Paused {
                    return Flow::Paused;
                }
                if !self.feed.reached(mark) && !at_end {
                    // Published at the end of the broker's turn: the doorbell comes.
                    return Flow::Paused;
                }
                self.feed.pending_mark = None;
            }
            if !self.broker.is_connected() {
                return Flow::Done;
            }
            if self.client_backed_up() {
                return Flow::Paused;
            }
            let Some(channel) = self.broker.channel() else { return Flow::Done };
            match channel.next_message() {
                Ok(Some(Event::RingMark { position })) => {
                    self.feed.pending_mark = Some(position);
                    continue;
                }
                Ok(Some(Event::RingHandover { start })) => {
                    self.broker.heard();
                    self.take_ring(start);
                    return Flow::RingChanged;
                }
                Ok(Some(event)) => {
                    self.handle_event(event);
                    continue;
                }
                Ok(None) if at_end => {
                    self.broker_closed();
                    return Flow::Done;
                }
                Ok(None) => {}
                Err(err) => {
                    error!("session for {}: bad frame from the broker: {err}", self.peer);
                    self.close(Some(notice::service_lost()), "bad frame from the broker");
                    return Flow::Paused;
                }
            }
            if !self.broker_readable {
                return Flow::Done;
            }
            match channel.read_some() {
                Ok(ReadOutcome::Data { drained }) => {
                    if drained && !self.broker_read_to_the_end {
                        self.broker_readable = false;
                    }
                }
                Ok(ReadOutcome::WouldBlock) => {
                    self.broker_readable = false;
                    return Flow::Done;
                }
                // Frames that arrived with the close are still handled; then it is gone.
                Ok(ReadOutcome::Closed { .. }) => at_end = true,
                Err(err) => {
                    if self.closing.is_some() {
                        debug!("session for {}: broker connection failed: {err}", self.peer);
                    } else {
                        warn!("session for {}: broker connection failed: {err}", self.peer);
                    }
                    self.broker_closed();
                    return Flow::Done;
                }
            }
        }
    }

    /// Handles the ring's records up to `upto` (and what is published). Paused when the
    /// client's queue is backed up or the session is ending.
    fn drain_ring(&mut self, upto: u64) -> Flow {
        loop {
            // A closing session delivers what it has; the room goes on without it.
            if self.client_backed_up() || self.closing.is_some() {
                return Flow::Paused;
            }
            match self.feed.next(upto) {
                Ok(true) => {
                    let record = self.feed.take_record();
                    self.handle_record(&record);
                    self.feed.give_back(record);
                    if let Some(position) = self.feed.progress_to_report() {
                        // Best effort: a session that cannot tell is dropped, as it would be.
                        let _ = self.broker.send(&Request::RingRead { position });
                    }
                }
                Ok(false) => return Flow::Done,
                Err(RingError::Lapped { position, committed }) => {
                    warn!(
                        "session for {}: the room's ring lapped it (at {position}, published {committed})",
                        self.peer
                    );
                    self.fell_behind();
                    return Flow::Paused;
                }
                Err(err) => {
                    error!("session for {}: bad ring from the broker: {err}", self.peer);
                    self.close(Some(notice::service_lost()), "bad ring from the broker");
                    return Flow::Paused;
                }
            }
        }
    }

    /// One record of the ring: a line, or someone else's arrival or departure, goes the
    /// allocation-free way, anything else as an event.
    fn handle_record(&mut self, record: &[u8]) {
        match codec::decode_payload::<Broadcast<'_>>(record) {
            Ok(Broadcast::Chat(said)) => {
                self.broker.heard();
                self.show_said(&said, false);
            }
            Ok(Broadcast::Action(said)) => {
                self.broker.heard();
                self.show_said(&said, true);
            }
            // Someone else's arrival or departure changes nothing but the screen: shown without
            // allocating. (A page gets its structure too; its own arrival moves this session.)
            Ok(Broadcast::Joined { nick, room })
                if !self.is_browser() && self.state.is_someone_else(nick) =>
            {
                self.broker.heard();
                self.show_room_news(|text| render::arrival_text(nick, room, text));
            }
            Ok(Broadcast::Left { nick, room, reason })
                if !self.is_browser() && self.state.is_someone_else(nick) =>
            {
                self.broker.heard();
                self.show_room_news(|text| render::departure_text(nick, room, &reason, text));
            }
            Ok(broadcast) => self.handle_event(broadcast.to_event()),
            Err(err) => {
                error!("session for {}: bad record in the room's ring: {err}", self.peer);
                self.close(Some(notice::service_lost()), "bad record in the room's ring");
            }
        }
    }

    /// The broker handed over the ring of the room this session entered: it is read from
    /// `start` on.
    fn take_ring(&mut self, start: u64) {
        let Some(channel) = self.broker.channel() else { return };
        let (Some(memfd), Some(doorbell)) = (channel.take_fd(), channel.take_fd()) else {
            error!("session for {}: a ring handover without its descriptors", self.peer);
            return self.close(Some(notice::service_lost()), "ring handover without descriptors");
        };
        let installed = RingReader::open(memfd, doorbell, start)
            .map_err(|err| err.to_string())
            .and_then(|reader| {
                self.feed.install(reader, self.poll.registry()).map_err(|err| err.to_string())
            });
        if let Err(err) = installed {
            error!("session for {}: cannot read the room's ring: {err}", self.peer);
            self.close(Some(notice::service_lost()), "cannot read the room's ring");
        }
    }

    /// The room's ring lapped this session: its client is told, the broker too (the room
    /// hears it was too slow), and the session ends.
    fn fell_behind(&mut self) {
        if self.closing.is_some() {
            return;
        }
        let sent = self.broker.send(&Request::FellBehind);
        self.check_sent(sent);
        // What waits for the client goes: it is behind anyway, and the news must fit. A line
        // the client got part of is ended first.
        let told = render::event(&Event::Dropped { reason: LeaveReason::TooSlow });
        // (A browser's messages are whole: there is no line to end.)
        let cut = self.client.queued() > 0 && !self.is_browser();
        self.client.drop_backlog();
        if cut {
            self.send_raw(b"\r\n");
        }
        self.show_all(&told);
        self.close(None, "fell behind its room (the ring lapped it)");
    }

    /// The broker closed the connection: the answer to `/quit`, or a broker that died.
    pub(super) fn broker_closed(&mut self) {
        if self.quit_sent.is_some() {
            self.close(Some(notice::goodbye()), "quit");
        } else if self.closing.is_none() {
            warn!("session for {}: lost the broker; reconnecting", self.peer);
        }
        // What is queued for this connection can never be written now; a closing session must
        // not wait for it. A mark of the old connection can no longer be reached: the ring's
        // records are read as far as they were published.
        self.broker.lost();
        self.feed.pending_mark = None;
        self.broker_readable = false;
        self.broker_read_to_the_end = false;
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

    /// One event: the state machine decides, this carries it out.
    fn handle_event(&mut self, event: Event) {
        self.broker.heard();
        if let Event::Failed(crate::proto::Failure::WrongPassword(_)) = &event {
            self.report_auth_failure();
        }
        // A browser gets the event's structure first; some answers only update its lists.
        let shown = !self.is_browser() || self.event_to_browser(&event);
        // A list only the page's own lists show is not rendered as lines to be dropped: for a
        // full room that is hundreds of strings, whose pages the session would keep dirty.
        let listed_only = matches!(
            event,
            Event::Members { .. } | Event::MemberNodes { .. } | Event::RoomList { .. }
        );
        let reaction = if !shown && listed_only {
            Reaction::Nothing
        } else {
            self.state.on_event(&event, &mut self.broker, self.terminal.bell)
        };
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
            Reaction::Show { lines, ring } if shown => self.write_lines(&lines, ring),
            Reaction::Show { .. } => {}
            Reaction::History { lines, .. } if self.is_browser() => {
                self.send_history_to_browser(None, &lines, None);
            }
            Reaction::History { room, lines } => {
                self.show_all(&render::history(&room, &lines, sys::local_hh_mm));
            }
            Reaction::Missed { room, lines, found, more } if self.is_browser() => {
                self.send_missed_to_browser(&room, &lines, found, more);
            }
            // Only the page asks; a terminal would be shown them as the room's history.
            Reaction::Missed { room, lines, .. } => {
                let lines: Vec<_> = lines.into_iter().map(|said| said.line).collect();
                self.show_all(&render::history(&room, &lines, sys::local_hh_mm));
            }
            Reaction::Stored { heading, lines, footer } if self.is_browser() => {
                self.send_history_to_browser(Some(&heading), &lines, Some(&footer));
            }
            Reaction::Stored { heading, lines, footer } => {
                self.show_all(&render::stored(&heading, &lines, &footer, sys::local_date_time));
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
            Reaction::AskPassword { prompt } => self.ask_password(prompt),
            Reaction::Identified { nick, settings, lines, must_change } => {
                self.apply_account_settings(&settings);
                self.show_all(&lines);
                if must_change {
                    self.ask_for_a_new_password(nick);
                }
            }
            Reaction::WhileAway { messages, mentions, room } => {
                let lines = render::while_away(&messages, mentions, &room, sys::local_date_time);
                self.show_all(&lines);
            }
        }
        if self.is_browser() {
            self.update_browser();
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

    /// The report a session makes once to the master's admission socket, when its client
    /// stops waiting to log in: its pid, then what `detail` adds (nothing for an admission).
    pub(super) fn report_to_master(&mut self, detail: &[u8]) {
        if !std::mem::replace(&mut self.admission_reported, true) {
            self.report(detail);
        }
    }

    /// A wrong password: reported every time.
    fn report_auth_failure(&mut self) {
        self.report(&[crate::proto::report::REPORT_AUTH_FAILED]);
    }

    fn report(&self, detail: &[u8]) {
        if let Some(reporter) = &self.reporter {
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
