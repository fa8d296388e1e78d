//! The client's input, from bytes to actions.
//!
//! Owns the session's input pipeline: reading the transport (into reused buffers), the
//! telnet layer's signals, the line editor or splitter, flood control's queue (what waits,
//! what is refused, and when reading pauses), decoding and cleaning a line, the error budget,
//! and carrying out what [`dispatch`](super::dispatch) decides about a command. It decides
//! nothing about what a command means (that is `dispatch`'s) and writes nothing to the client
//! but through [`output`](super::output).

use std::io;
use std::time::Instant;

use log::info;

use super::dispatch::{self, Action, Setting, View};
use super::editor::Typed;
use super::line::Line;
use super::render::{self, notice};
use super::state::Phase;
use super::{BROKER_HIGH_WATER, HttpRequest, MAX_HTTP_HEAD, Session, TRAFFIC_REPORT};
use super::{charset, command, http, telnet};
use crate::proto::Request;
use crate::proto::report::REPORT_HTTP_ANSWERED;
use crate::text;

/// How much one read takes from the client.
pub(super) const READ_CHUNK: usize = 4096;

/// What one client read is taken apart into, reused from read to read (each keeps the
/// capacity it grew to): the bytes after the telnet layer, its answers and signals, the lines
/// found, and the line editor's lines and echo.
#[derive(Debug, Default)]
pub(super) struct InputScratch {
    data: Vec<u8>,
    reply: Vec<u8>,
    signals: Vec<telnet::Signal>,
    lines: Vec<Line>,
    typed: Vec<Typed>,
    echo: String,
}

impl Session {
    /// Reads what the client sent, as far as the queues allow. Returns true when the client
    /// has gone (EOF or error): there is nobody left to talk to.
    pub(super) fn read_client(&mut self) -> bool {
        // The buffers are taken for the loop (handling a read needs the session) and put back:
        // they are allocated once per session, not once per wake-up or read.
        let mut chunk = std::mem::take(&mut self.read_buffer);
        let mut scratch = std::mem::take(&mut self.terminal.input);
        let gone = self.read_client_into(&mut chunk, &mut scratch);
        self.read_buffer = chunk;
        self.terminal.input = scratch;
        gone
    }

    fn read_client_into(&mut self, chunk: &mut Vec<u8>, scratch: &mut InputScratch) -> bool {
        chunk.resize(READ_CHUNK, 0);
        while self.client_readable && self.closing.is_none() && self.has_room_for_input() {
            let n = match self.client.read(chunk) {
                Ok(0) => {
                    self.log_end("connection closed by client");
                    return true;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.client_readable = false;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.log_end(&format!("connection error: {err}"));
                    return true;
                }
            };
            self.traffic.received += n as u64;
            self.traffic.next_report.get_or_insert_with(|| Instant::now() + TRAFFIC_REPORT);
            if let Some(request) = &mut self.http {
                let room = MAX_HTTP_HEAD.saturating_sub(request.head.len());
                request.head.extend_from_slice(&chunk[..n.min(room)]);
                if http::head_complete(&request.head) || request.head.len() >= MAX_HTTP_HEAD {
                    self.answer_http();
                }
                continue;
            }
            let InputScratch { data, reply, signals, lines, typed, echo } = scratch;
            data.clear();
            reply.clear();
            signals.clear();
            lines.clear();
            self.telnet.decode(&chunk[..n], data, reply, signals);
            self.send_raw(reply);
            for signal in signals.drain(..) {
                self.telnet_signal(signal, lines);
            }
            match &mut self.terminal.editor {
                Some(editor) => {
                    typed.clear();
                    echo.clear();
                    editor.feed(data, typed, echo);
                    lines.extend(typed.drain(..).map(Line::Typed));
                    self.send_echo(echo);
                }
                None => self.splitter.feed(data, lines),
            }
            // Several lines in one read are a paste (nobody types that fast).
            self.reading_paste = lines.len() > 1;
            for line in lines.drain(..) {
                self.queue_line(line);
                // Let the burst go at once, so that only what really waits counts against
                // the flood queue.
                self.handle_lines();
            }
            self.reading_paste = false;
            if self.splitter.unterminated() > self.settings.limits.max_unterminated_bytes {
                let limit = self.settings.limits.max_unterminated_bytes;
                self.close(Some(notice::endless_line(limit)), "too many bytes without a line end");
            }
        }
        false
    }

    /// Acts on what the client said in telnet. Interrupt and erase keys that arrive as telnet
    /// commands edit the line being typed, or end the session like `/quit`.
    fn telnet_signal(&mut self, signal: telnet::Signal, lines: &mut Vec<Line>) {
        use telnet::Signal;
        match signal {
            Signal::TerminalType(name) => {
                info!("{}: terminal type {name}", self.peer);
                self.terminal.set_type(&name);
            }
            Signal::WindowSize { width, .. } => self.terminal.set_width(width),
            Signal::Charset(name) => match charset::Charset::by_name(&name) {
                Some(charset) => self.terminal.set_charset(charset),
                None => info!("{}: telnet CHARSET {name} is not supported", self.peer),
            },
            Signal::ServerEcho(on) => {
                self.terminal.set_echo(on);
                self.keep_password_secret();
            }
            Signal::AreYouThere => self.show(render::system("Yes, chatd is here.")),
            Signal::Interrupt => lines.push(Line::Typed(Typed::EndOfInput)),
            Signal::EraseCharacter | Signal::EraseLine => {
                let mut echo = String::new();
                if let Some(editor) = &mut self.terminal.editor {
                    if signal == Signal::EraseLine {
                        editor.erase_line(&mut echo);
                    } else {
                        editor.erase_character(&mut echo);
                    }
                }
                self.send_echo(&echo);
            }
        }
    }

    /// Queues a line from the client, or refuses it if flood control already holds a full
    /// queue. The client is told once each time the queue fills.
    fn queue_line(&mut self, line: Line) {
        let blank = match &line {
            Line::Bytes(bytes) => bytes.iter().all(u8::is_ascii_whitespace),
            Line::Typed(Typed::Line(Ok(text) | Err(text))) => text.trim().is_empty(),
            Line::TooLong | Line::Typed(Typed::EndOfInput) => false,
        };
        // A blank line at a password prompt cancels it.
        if blank && self.state.password.is_none() {
            return;
        }
        let limit = self.settings.limits.flood_queue.max(1);
        if self.lines.len() >= limit {
            // Lines may be waiting for a reason that just ended (a login answer, a restarted
            // broker): let them go before deciding that flood control is what holds them.
            self.handle_lines();
        }
        // Lines that wait for anything but flood control are held back by TCP instead (reading
        // pauses), so the queue is bounded by one read's worth past `flood_queue` here.
        let held_by_flood_control =
            self.flood_wait_until.is_some() && self.waiting_only_for_flood_control();
        if self.lines.len() < limit || !held_by_flood_control {
            self.lines.push_back(line);
            return;
        }
        self.refused_lines += 1;
        if self.refused_lines == 1 {
            self.show(notice::flooding());
            info!("{}: flood control refuses lines", self.peer);
        }
    }

    /// Once the queue has drained after a flood: exactly how many lines were not sent, and how
    /// to send them.
    fn report_refused_lines(&mut self) {
        let refused = std::mem::take(&mut self.refused_lines);
        if refused == 0 {
            return;
        }
        let limits = &self.settings.limits;
        let queue = limits.flood_queue.max(1);
        let at_once = queue + limits.flood_burst as usize;
        let lines = if refused == 1 { "line was" } else { "lines were" };
        let line = format!(
            "{refused} of your {lines} not sent: you sent faster than {} lines/s and at most \
             {queue} can wait. Send them again, at most {at_once} at a time.",
            limits.flood_lines_per_second
        );
        info!("{}: flood control refused {refused} lines", self.peer);
        self.show(render::system(&line));
    }

    /// Whether to read more from the client now. While lines wait only for flood control, the
    /// session keeps reading (to refuse what overflows the queue); while they wait for anything
    /// else (a login answer, the broker), TCP holds the client back instead.
    fn has_room_for_input(&self) -> bool {
        if self.broker.queued() >= BROKER_HIGH_WATER {
            return false;
        }
        self.lines.len() < self.settings.limits.flood_queue.max(1)
            || self.waiting_only_for_flood_control()
    }

    /// True when nothing but flood control keeps waiting lines from being handled.
    fn waiting_only_for_flood_control(&self) -> bool {
        self.broker.has_room()
            && self.quit_sent.is_none()
            && matches!(
                self.state.phase,
                Phase::ChoosingNick { asked: None } | Phase::Chatting { .. }
            )
    }

    /// Handles waiting lines, unless an answer they depend on is outstanding: a login answer
    /// (lines typed after a nickname must not be taken as another nickname), a re-registration,
    /// or the broker itself.
    pub(super) fn handle_lines(&mut self) {
        while self.closing.is_none() && self.quit_sent.is_none() && self.broker.has_room() {
            match self.state.phase {
                // A login's password is asked for while its nickname waits for an answer.
                Phase::ChoosingNick { asked: Some(_) } if self.state.password.is_some() => {}
                Phase::ChoosingNick { asked: Some(_) } | Phase::Resuming { .. } => return,
                Phase::ChoosingNick { asked: None } | Phase::Chatting { .. } => {}
            }
            if self.lines.is_empty() {
                self.report_refused_lines();
                return;
            }
            let now = Instant::now();
            if !self.flood.try_take(now) {
                self.flood_wait_until = Some(self.flood.next_token_at(now));
                return;
            }
            self.flood_wait_until = None;
            let Some(line) = self.lines.pop_front() else { return };
            if std::mem::take(&mut self.first_line)
                && let Line::Bytes(bytes) = &line
                && http::is_request_line(bytes)
            {
                // A request that came after the greeting (a slow client): answered all the same.
                let head_only = bytes.starts_with(b"HEAD ");
                self.http = Some(HttpRequest { head: Vec::new(), head_only });
                return self.answer_http();
            }
            self.last_line_at = now;
            self.idle_warned = false;
            let (decoded, raw) = match line {
                Line::TooLong => {
                    self.show(notice::too_long());
                    continue;
                }
                Line::Typed(Typed::EndOfInput) => {
                    self.handle_text("/quit");
                    continue;
                }
                Line::Bytes(bytes) => (self.terminal.charset.decode(&bytes), Some(bytes)),
                Line::Typed(Typed::Line(decoded)) => (decoded, None),
            };
            match decoded {
                Ok(text) => self.handle_text(&text::sanitize(&text)),
                // Told once; after that the line goes as it decodes, so nothing typed is lost
                // and the user sees what the others see.
                Err(lossy) if self.terminal.charset_hinted => {
                    self.handle_text(&text::sanitize(&lossy))
                }
                Err(_) => {
                    self.terminal.charset_hinted = true;
                    if self.telnet_mangled(raw.as_deref()) {
                        self.telnet_mangled_line();
                    } else {
                        info!("{}: input is not valid {}", self.peer, self.terminal.charset.name());
                        self.show(notice::not_in_charset(self.terminal.charset.name()));
                    }
                }
            }
        }
    }

    /// Whether a line that is not valid UTF-8 shows a line-mode telnet client's mangling
    /// rather than another character set: the telnet layer saw it, or the client ends lines
    /// with CR LF (as Linux telnet does, netcat does not) and its UTF-8 was cut short.
    fn telnet_mangled(&self, raw: Option<&[u8]>) -> bool {
        self.terminal.charset.is_utf8()
            && (self.telnet.mangles_input()
                || raw
                    .is_some_and(|raw| self.splitter.sends_crlf() && charset::cut_short_utf8(raw)))
    }

    /// Tells the user that their telnet client damaged the line, and switches a client that
    /// has not spoken telnet yet to character mode and 8-bit input (Linux telnet, whose line
    /// had only bytes it drops, never one it turns into a command).
    fn telnet_mangled_line(&mut self) {
        info!("{}: input mangled by a line-mode telnet client", self.peer);
        if !self.telnet.spoke_telnet() {
            let offer = self.telnet.start();
            self.send_raw(&offer);
        }
        self.show(render::system(
            "Your line was not sent: your telnet client changed bytes of its UTF-8 text (it \
             takes some of them for its own control keys). chatd has asked it to send 8-bit \
             text; please type the line again. If a character such as 李 ever brings up a \
             telnet> prompt, reconnect with telnet -E.",
        ));
    }

    /// One decoded, cleaned line: counted against the error budget, dispatched, done.
    fn handle_text(&mut self, line: &str) {
        if self.state.password.is_some() {
            return self.password_entry(line);
        }
        if line.trim().is_empty() {
            return;
        }
        let command = command::parse(line);
        // A logged-in person who pastes is never disconnected for it: an invalid command that
        // came in one read with other lines, or with lines waiting behind it, is part of a
        // paste and does not count. Before login every one counts: that budget is for bots.
        let pasted = matches!(self.state.phase, Phase::Chatting { .. })
            && (self.reading_paste || !self.lines.is_empty());
        if !dispatch::counts_as_error(&command) {
            self.errors_in_a_row = 0;
        } else if !pasted {
            self.errors_in_a_row += 1;
            if self.errors_in_a_row >= self.settings.limits.error_budget {
                let budget = self.settings.limits.error_budget;
                return self
                    .close(Some(notice::too_many_errors(budget)), "too many invalid commands");
            }
        }
        let browser = self.is_browser();
        let view = View { state: &self.state, charset: self.terminal.charset, browser };
        let action = dispatch::dispatch(command, &view);
        self.act(action);
    }

    /// Carries out what dispatching a command decided.
    fn act(&mut self, action: Action) {
        match action {
            Action::Login(nick) => {
                let login = Request::Login { nick: nick.clone(), tls: self.state.tls };
                self.state.phase = Phase::ChoosingNick { asked: Some(nick) };
                let sent = self.broker.send(&login);
                self.check_sent(sent);
            }
            Action::Send(request) => {
                let sent = self.broker.send(&request);
                self.check_sent(sent);
            }
            Action::SendNumbered(line) => {
                let sent = self.broker.send_numbered(|seq| line.into_request(seq));
                self.check_sent(sent);
            }
            Action::Quit(reason) => {
                self.quit_sent = Some(Instant::now());
                self.send_quit(reason);
            }
            Action::Close { last_words, why } => self.close(Some(last_words), why),
            Action::Show(lines) => self.show_all(&lines),
            Action::Prompted(lines) => {
                self.show_all(&lines);
                self.show(notice::prompt());
            }
            Action::Ignore { nick, shown } => {
                self.state.ignore(nick);
                self.show(shown);
                self.save_account_settings();
            }
            Action::Unignore { nick, shown } => {
                self.state.unignore(&nick);
                self.show(shown);
                self.save_account_settings();
            }
            Action::Terminal { setting, shown } => {
                match setting {
                    Setting::Charset(charset) => {
                        self.terminal.set_charset(charset);
                        self.terminal.charset_hinted = false;
                        info!("{}: charset {}", self.peer, charset.name());
                    }
                    Setting::Colour(on) => {
                        self.terminal.colour = on;
                        self.terminal.colour_chosen = true;
                    }
                    Setting::Timestamps(on) => self.terminal.timestamps = on,
                    Setting::Bell(on) => self.terminal.bell = on,
                }
                self.show(shown);
                self.save_account_settings();
            }
        }
    }

    /// Answers an HTTP request (a browser or `curl` on the chat port) and closes, telling the
    /// master it was not a client that gave up logging in.
    pub(super) fn answer_http(&mut self) {
        let head_only = self.http.as_ref().is_some_and(|request| request.head_only);
        let port = self.client.local_port();
        let head = self.http.as_ref().map(|request| request.head.as_slice()).unwrap_or_default();
        let web = self.settings.limits.web_port.map(|web_port| http::WebClient {
            host: http::host_header(head),
            port: web_port,
            tls: self.settings.limits.web_tls,
        });
        let answer = http::response(head_only, port, web);
        self.send_raw(&answer);
        self.report_to_master(&[REPORT_HTTP_ANSWERED]);
        self.close(None, "an HTTP request on the chat port, answered");
    }
}
