//! One client, in its own session child process.
//!
//! The session owns everything about one connection: the telnet layer, line framing, the
//! nickname prompt and login grace, command parsing, rendering events for this terminal, and
//! the bounded output queue to the client. It keeps no room state beyond its own nick and room:
//! the broker decides, the session asks and shows. Its [`link`] to the broker survives a broker
//! restart: the session reconnects, re-registers (nick, room, the topic it set) and re-sends the
//! lines the old broker had not acknowledged; the client sees one `*** ` line.
//!
//! Data flows one way on each side: client bytes → [`telnet`] → [`line`] → [`command`] →
//! [`Request`] → broker; broker [`Event`] → [`render`] → client. The loop is a mio poller over
//! the client socket, the broker channel and a signalfd; it never blocks on either peer.
//!
//! Backpressure: the session stops reading from the client while lines wait for a login answer,
//! while the broker is away, while its queue to the broker is above [`BROKER_HIGH_WATER`] or
//! while [`link::MAX_UNACKED`] lines wait for acknowledgement, so a fast typist is slowed by
//! TCP rather than by unbounded memory. A client that does not read its output is disconnected
//! once `send_queue_bytes` wait for it.
//!
//! Flood control ([`flood`]) is paste-friendly: lines beyond the burst wait and leave at the
//! configured rate; only when `flood_queue` lines wait are further lines refused (the client is
//! told once when refusing starts, and exactly how many were refused once the queue drains).
//! Nobody is banned for typing fast. A client is disconnected after `error_budget` invalid
//! commands in a row (after login, those in a paste do not count), after
//! `max_unterminated_bytes` without a line end, or after `idle_timeout_seconds` without a line
//! (warned first; the room is told why it left).

pub mod charset;
pub mod command;
pub mod editor;
pub mod flood;
pub mod http;
pub mod line;
pub mod link;
pub mod render;
pub mod telnet;
pub mod terminal;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;

use crate::channel::{ReadOutcome, SendError};
use crate::config::SessionLimits;
use crate::names::{self, DEFAULT_ROOM};
use crate::outbuf::OutBuf;
use crate::proto::report::REPORT_HTTP_ANSWERED;
use crate::proto::{Event, Failure, HistoryLine, Request};
use crate::signals::ChildSignals;
use crate::{sys, text};
use command::Command;
use editor::Typed;
use flood::TokenBucket;
use line::{Line, LineSplitter};
use link::{BrokerLink, Welcomed};
use render::{Shown, notice};
use telnet::Telnet;
use terminal::Terminal;

/// Stop reading the client while this much waits for the broker.
const BROKER_HIGH_WATER: usize = 64 * 1024;
/// How long a closing session may spend delivering its last lines.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often a session tells the broker how many bytes its client sent and received.
const TRAFFIC_REPORT: Duration = Duration::from_secs(5);
/// How long a new session waits for the client to speak first before greeting it: a browser
/// or `curl` sends its request at once, and must get an answer in HTTP, not a greeting before
/// it. Telnet clients that negotiate speak at once too; netcat users never notice 50 ms.
const HTTP_SNIFF: Duration = Duration::from_millis(50);
/// The most of an HTTP request's head read before answering it.
const MAX_HTTP_HEAD: usize = 8 * 1024;

const CLIENT: Token = Token(0);
const BROKER: Token = Token(1);
const SIGNALS: Token = Token(2);

/// What a session needs to know from the daemon's settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The broker's Unix socket.
    pub broker_socket: PathBuf,
    /// Login grace, flood control, timeouts and queue sizes.
    pub limits: SessionLimits,
}

/// Where the conversation with the client stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No nickname yet. `asked` is the nickname sent to the broker and not yet answered.
    ChoosingNick { asked: Option<String> },
    /// Re-registering as `nick` with a restarted broker; lines wait until it answers.
    Resuming { nick: String },
    /// Logged in as `nick`, in the room called `room`.
    Chatting { nick: String, room: String },
}

/// A client that sent an HTTP request: its head is read (so that closing does not reset the
/// connection under the answer), then it is answered and closed.
#[derive(Debug, Default)]
struct HttpRequest {
    head: Vec<u8>,
    /// `HEAD`: the answer has no body.
    head_only: bool,
}

/// The session is on its way out: deliver what is queued, then exit.
#[derive(Debug)]
struct Closing {
    deadline: Instant,
}

struct Session {
    poll: Poll,
    client: TcpStream,
    client_out: OutBuf,
    /// The client socket had data last time we looked and has not reported WouldBlock since.
    client_readable: bool,
    broker: BrokerLink,
    signals: ChildSignals,
    telnet: Telnet,
    splitter: LineSplitter,
    lines: VecDeque<Line>,
    phase: Phase,
    /// Flood control over every line the client sends.
    flood: TokenBucket,
    /// When flood control will let the next waiting line go.
    flood_wait_until: Option<Instant>,
    /// Lines refused since the queue last drained: the client is told when the first is, and
    /// how many when the queue drains.
    refused_lines: usize,
    /// The lines being handled came in one read with others: a paste.
    reading_paste: bool,
    /// Invalid commands in a row.
    errors_in_a_row: u32,
    /// When the client last sent a line, and whether it was warned about idling since.
    last_line_at: Instant,
    idle_warned: bool,
    /// When to send the next telnet NOP (to clients that speak telnet).
    next_nop_at: Instant,
    /// The topic this user set in its current room, restored after a broker restart.
    topic_set: Option<String>,
    /// How to re-register once the broker that answers a reconnection proves to be a new one;
    /// kept until the broker answers it.
    reregistration: Option<Request>,
    peer: SocketAddr,
    started: Instant,
    settings: SessionSettings,
    /// When `/quit` was sent. The broker answers a quit by closing the connection after
    /// everything it owed this session, so the goodbye waits for that close.
    quit_sent: Option<Instant>,
    closing: Option<Closing>,
    /// Where to report admission to the master; taken when used (it is reported once).
    reporter: Option<StdUnixDatagram>,
    /// The phase the process title was last set for. Events that could rename the session
    /// (every join in its room, say) compare against it rather than format a title each time.
    titled: Option<Phase>,
    /// Client bytes not yet reported to the broker, and when to report next.
    traffic: Traffic,
    /// Character set, colour, width and line editing of the client's terminal.
    terminal: Terminal,
    /// Who last sent this user a private line, for `/reply`.
    last_private_from: Option<String>,
    /// The client is a web browser or `curl` (it sent an HTTP request).
    http: Option<HttpRequest>,
    /// No line has been handled yet: an HTTP request line is recognised only as the first.
    first_line: bool,
    /// Nicks whose lines this user does not want to see (`/ignore`), as shown.
    ignored: Vec<String>,
}

/// Bytes to and from the client, reported to the broker for operators' figures.
#[derive(Debug, Default)]
struct Traffic {
    received: u64,
    sent: u64,
    next_report: Option<Instant>,
}

/// Serves one client until it leaves; returns the process exit status.
///
/// `reporter`, when given, is told this process's pid once the client has chosen a nickname:
/// the master counts clients that have not (sshd's MaxStartups) and sources whose clients
/// leave before doing so.
pub fn run(
    client: TcpStream,
    peer: SocketAddr,
    settings: SessionSettings,
    reporter: Option<StdUnixDatagram>,
) -> i32 {
    match Session::start(client, peer, settings, reporter) {
        Ok(mut session) => match session.event_loop() {
            Ok(()) => 0,
            Err(err) => {
                error!("session for {peer}: {err}");
                1
            }
        },
        Err(err) => {
            error!("cannot start a session for {peer}: {err}");
            1
        }
    }
}

impl Session {
    fn start(
        mut client: TcpStream,
        peer: SocketAddr,
        settings: SessionSettings,
        reporter: Option<StdUnixDatagram>,
    ) -> io::Result<Session> {
        // Small lines must leave at once; batching is done here, per loop turn.
        let _ = client.set_nodelay(true);
        let poll = Poll::new()?;
        let broker = match BrokerLink::connect(
            settings.broker_socket.clone(),
            peer,
            poll.registry(),
            BROKER,
        ) {
            Ok(broker) => broker,
            Err(err) => {
                error!(
                    "session for {peer}: cannot reach the broker at {}: {err}",
                    settings.broker_socket.display()
                );
                let _ = client
                    .write_all(format!("{}\r\n", notice::service_unavailable().plain()).as_bytes());
                return Err(err);
            }
        };
        // SIGTERM is an operator's `kill PID`; the master says the daemon stops with SIGUSR1.
        let signals = ChildSignals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1])?;
        set_keepalive(&client, settings.limits.keepalive);
        cap_send_buffer(&client, settings.limits.send_queue_bytes);
        let now = Instant::now();
        let mut session = Session {
            poll,
            client,
            client_out: OutBuf::new(settings.limits.send_queue_bytes),
            client_readable: false,
            broker,
            signals,
            telnet: Telnet::new(),
            splitter: LineSplitter::new(),
            lines: VecDeque::new(),
            phase: Phase::ChoosingNick { asked: None },
            flood: TokenBucket::new(
                settings.limits.flood_burst,
                settings.limits.flood_lines_per_second,
                now,
            ),
            flood_wait_until: None,
            refused_lines: 0,
            reading_paste: false,
            errors_in_a_row: 0,
            last_line_at: now,
            idle_warned: false,
            next_nop_at: now + settings.limits.keepalive,
            topic_set: None,
            reregistration: None,
            peer,
            started: now,
            settings,
            quit_sent: None,
            closing: None,
            reporter,
            titled: None,
            traffic: Traffic::default(),
            terminal: Terminal::default(),
            last_private_from: None,
            ignored: Vec::new(),
            http: None,
            first_line: true,
        };
        session.update_title();
        session.poll.registry().register(
            &mut session.client,
            CLIENT,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        session.signals.register(session.poll.registry(), SIGNALS)?;
        info!("connection from {peer}");
        if let Some(request) = sniff_http(&session.client) {
            session.http = Some(request);
            return Ok(session);
        }
        if session.settings.limits.telnet {
            let offer = session.telnet.start();
            session.send_raw(&offer);
        }
        session.show_all(&notice::greeting(env!("CARGO_PKG_VERSION")));
        Ok(session)
    }

    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(16);
        loop {
            let timeout =
                self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            sys::wait(&mut self.poll, &mut events, timeout)?;
            // The signalfd is read only when it has something: one system call less on every
            // wake-up, and a session wakes up once per batch of broadcasts.
            if events.iter().any(|event| event.token() == SIGNALS) {
                self.handle_signals()?;
            }
            for event in events.iter() {
                match event.token() {
                    CLIENT if event.is_readable() || event.is_read_closed() || event.is_error() => {
                        self.client_readable = true;
                    }
                    BROKER if event.is_readable() || event.is_read_closed() || event.is_error() => {
                        self.read_broker(event.is_read_closed() || event.is_error());
                    }
                    _ => {}
                }
            }
            self.reconnect_if_due();
            if self.client_gone() {
                self.report_traffic();
                if let Some(channel) = self.broker.channel() {
                    let _ = channel.flush();
                }
                return Ok(());
            }
            self.handle_lines();
            self.check_timers();
            self.flush();
            if let Some(closing) = &self.closing {
                let drained = self.client_out.is_empty() && self.broker.queued() == 0;
                if drained || Instant::now() >= closing.deadline {
                    let _ = self.client.shutdown(std::net::Shutdown::Write);
                    if self.http.is_some() {
                        // Closing with unread bytes would reset the connection under the
                        // answer: read until the client closes (it does, after the answer).
                        drain_until_closed(&mut self.client, Instant::now() + CLOSE_GRACE);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// SIGUSR1 is the daemon stopping; SIGTERM/SIGINT on one session is an operator's kick.
    fn handle_signals(&mut self) -> io::Result<()> {
        while let Some(signal) = self.signals.take_pending()? {
            match signal {
                _ if self.closing.is_some() => {}
                Signal::SIGUSR1 => {
                    self.close(Some(notice::shutting_down()), "server shutting down")
                }
                _ => {
                    // `kill PID` on a session is a kick: the room is told why.
                    self.send_quit(Some("disconnected by an operator".to_string()));
                    self.close(Some(notice::killed()), &format!("{signal}"));
                }
            }
        }
        Ok(())
    }

    /// The next moment the loop must wake without I/O: the end of the close grace or of the
    /// login grace, or the next attempt to reach a restarted broker.
    fn next_deadline(&self) -> Option<Instant> {
        if let Some(closing) = &self.closing {
            return Some(closing.deadline);
        }
        let limits = &self.settings.limits;
        let (login, idle) = match self.phase {
            Phase::ChoosingNick { .. } => (Some(self.started + limits.login_grace), None),
            Phase::Resuming { .. } => (None, None),
            Phase::Chatting { .. } => (None, self.idle_deadline()),
        };
        let quit = self.quit_sent.map(|sent| sent + CLOSE_GRACE);
        let nop = self.telnet.spoke_telnet().then_some(self.next_nop_at);
        [
            login,
            idle,
            quit,
            nop,
            self.flood_wait_until,
            self.broker.retry_at(),
            self.traffic.next_report,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the idle client is next due a warning or its disconnection.
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.settings.limits.idle_timeout?;
        let disconnect_at = self.last_line_at + timeout;
        if self.idle_warned {
            Some(disconnect_at)
        } else {
            Some(disconnect_at - idle_warning(timeout))
        }
    }

    /// Reads what the client sent, as far as the queues allow. Returns true when the client
    /// has gone (EOF or error): there is nobody left to talk to.
    fn client_gone(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        while self.client_readable && self.closing.is_none() && self.has_room_for_input() {
            let n = match self.client.read(&mut chunk) {
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
            let mut data = Vec::with_capacity(n);
            let mut reply = Vec::new();
            let mut signals = Vec::new();
            self.telnet.decode(&chunk[..n], &mut data, &mut reply, &mut signals);
            self.send_raw(&reply);
            let mut lines = Vec::new();
            for signal in signals {
                self.telnet_signal(signal, &mut lines);
            }
            match &mut self.terminal.editor {
                Some(editor) => {
                    let mut typed = Vec::new();
                    let mut echo = String::new();
                    editor.feed(&data, &mut typed, &mut echo);
                    lines.extend(typed.into_iter().map(Line::Typed));
                    self.send_echo(&echo);
                }
                None => self.splitter.feed(&data, &mut lines),
            }
            // Several lines in one read are a paste (nobody types that fast).
            self.reading_paste = lines.len() > 1;
            for line in lines {
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
            Signal::ServerEcho(on) => self.terminal.set_echo(on),
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
        if blank {
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
            && matches!(self.phase, Phase::ChoosingNick { asked: None } | Phase::Chatting { .. })
    }

    /// Handles waiting lines, unless an answer they depend on is outstanding: a login answer
    /// (lines typed after a nickname must not be taken as another nickname), a re-registration,
    /// or the broker itself.
    fn handle_lines(&mut self) {
        while self.closing.is_none() && self.quit_sent.is_none() && self.broker.has_room() {
            match self.phase {
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

    fn handle_text(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let command = command::parse(line);
        let invalid = matches!(command, Command::Unknown(_) | Command::Usage(_))
            || matches!(&command, Command::Nick(nick) if names::check_nick(&names::normalize_nick(nick)).is_err());
        // A logged-in person who pastes is never disconnected for it: an invalid command that
        // came in one read with other lines, or with lines waiting behind it, is part of a
        // paste and does not count. Before login every one counts: that budget is for bots.
        let pasted = matches!(self.phase, Phase::Chatting { .. })
            && (self.reading_paste || !self.lines.is_empty());
        if !invalid {
            self.errors_in_a_row = 0;
        } else if !pasted {
            self.errors_in_a_row += 1;
            if self.errors_in_a_row >= self.settings.limits.error_budget {
                let budget = self.settings.limits.error_budget;
                return self
                    .close(Some(notice::too_many_errors(budget)), "too many invalid commands");
            }
        }
        match &self.phase {
            Phase::Chatting { .. } => self.handle_chatting(command),
            Phase::ChoosingNick { .. } | Phase::Resuming { .. } => {
                self.handle_before_login(command)
            }
        }
    }

    fn handle_before_login(&mut self, command: Command) {
        match command {
            Command::Say(nick) | Command::Nick(nick) => {
                self.try_login(&names::normalize_nick(&nick))
            }
            Command::Quit(_) => self.close(Some(notice::goodbye()), "quit before login"),
            Command::Help => {
                self.show_all(&render::help());
                self.show(notice::prompt());
            }
            command @ (Command::Charset(_)
            | Command::Colour(_)
            | Command::Timestamps(_)
            | Command::Bell(_)) => self.terminal_command(command),
            _ => {
                self.show(notice::nick_first());
                self.show(notice::prompt());
            }
        }
    }

    fn try_login(&mut self, nick: &str) {
        if let Err(why) = names::check_nick(nick) {
            let failure = Failure::InvalidNick { nick: nick.to_string(), why };
            self.show(render::system(&render::failure(&failure)));
            self.show(notice::prompt());
            return;
        }
        self.phase = Phase::ChoosingNick { asked: Some(nick.to_string()) };
        let login = Request::Login { nick: nick.to_string() };
        let sent = self.broker.send(&login);
        self.check_sent(sent);
    }

    fn handle_chatting(&mut self, command: Command) {
        let request = match command {
            Command::Say(text) => {
                let sent = self.broker.send_numbered(|seq| Request::Say { seq, text });
                return self.check_sent(sent);
            }
            Command::Me(text) => {
                let sent = self.broker.send_numbered(|seq| Request::Act { seq, text });
                return self.check_sent(sent);
            }
            Command::Msg { to, text } => {
                let sent = self.broker.send_numbered(|seq| Request::Private { seq, to, text });
                return self.check_sent(sent);
            }
            Command::Nick(nick) => {
                let nick = names::normalize_nick(&nick);
                if let Err(why) = names::check_nick(&nick) {
                    let failure = Failure::InvalidNick { nick, why };
                    return self.show(render::system(&render::failure(&failure)));
                }
                Request::ChangeNick { nick }
            }
            Command::Join(room) => Request::Join { room },
            Command::Who => Request::Who,
            Command::Rooms => Request::Rooms,
            Command::Topic(text) => Request::Topic { text },
            Command::Quit(reason) => {
                self.quit_sent = Some(Instant::now());
                return self.send_quit(reason);
            }
            Command::Away(reason) => {
                Request::Away { reason: reason.unwrap_or_else(|| "away".to_string()) }
            }
            Command::Back => Request::Back,
            Command::Whois(nick) => Request::Whois { nick },
            Command::Reply(text) => {
                let Some(to) = self.last_private_from.clone() else {
                    return self.show(render::system("Nobody has sent you a private message yet."));
                };
                let sent = self.broker.send_numbered(|seq| Request::Private { seq, to, text });
                return self.check_sent(sent);
            }
            Command::Ignore(None) if self.ignored.is_empty() => {
                return self.show(render::system("You are ignoring nobody."));
            }
            Command::Ignore(None) => {
                let list = self.ignored.join(", ");
                return self.show(render::system(&format!("You are ignoring: {list}")));
            }
            Command::Ignore(Some(nick)) => {
                let nick = names::normalize_nick(&nick);
                if !self.is_ignored(&nick) {
                    self.ignored.push(nick.clone());
                }
                return self.show(render::system(&format!(
                    "You will not see lines or messages from {nick} in this session. /unignore {nick} to undo."
                )));
            }
            Command::Unignore(nick) => {
                let before = self.ignored.len();
                let unignored = names::normalize_nick(&nick);
                self.ignored.retain(|ignored| !names::same(ignored, &unignored));
                let line = if self.ignored.len() < before {
                    format!("You see {nick} again.")
                } else {
                    format!("You were not ignoring {nick}.")
                };
                return self.show(render::system(&text::sanitize(&line)));
            }
            command @ (Command::Charset(_)
            | Command::Colour(_)
            | Command::Timestamps(_)
            | Command::Bell(_)) => return self.terminal_command(command),
            Command::Help => return self.show_all(&render::help()),
            Command::Unknown(word) => return self.show(notice::unknown(&word)),
            Command::Usage(usage) => return self.show(notice::usage(usage)),
        };
        let sent = self.broker.send(&request);
        self.check_sent(sent);
    }

    /// Commands that change only how this client's terminal is served; allowed before login.
    fn terminal_command(&mut self, command: Command) {
        let on_off = |on: bool| if on { "on" } else { "off" };
        let line = match command {
            Command::Charset(None) => format!(
                "Your character set is {}. /charset NAME switches ({}).",
                self.terminal.charset.name(),
                charset::NAMES
            ),
            Command::Charset(Some(name)) => match charset::Charset::by_name(&name) {
                Some(charset) => {
                    self.terminal.set_charset(charset);
                    self.terminal.charset_hinted = false;
                    info!("{}: charset {}", self.peer, charset.name());
                    format!("Your character set is now {}.", charset.name())
                }
                None => format!(
                    "Unknown character set {}; choose one of {}.",
                    text::sanitize(&name),
                    charset::NAMES
                ),
            },
            Command::Colour(on) => {
                self.terminal.colour = on;
                self.terminal.colour_chosen = true;
                format!("Colour is {}.", on_off(on))
            }
            Command::Timestamps(on) => {
                self.terminal.timestamps = on;
                format!("Timestamps are {}.", on_off(on))
            }
            Command::Bell(on) => {
                self.terminal.bell = on;
                format!("The bell is {}.", on_off(on))
            }
            _ => return,
        };
        self.show(render::system(&line));
    }

    /// Whether this user asked not to see `nick`'s lines.
    fn is_ignored(&self, nick: &str) -> bool {
        self.ignored.iter().any(|ignored| names::same(ignored, nick))
    }

    fn check_sent(&mut self, sent: Result<(), SendError>) {
        if let Err(err) = sent {
            warn!("session for {}: cannot queue a request for the broker: {err}", self.peer);
            self.close(Some(notice::service_lost()), "broker queue full");
        }
    }

    /// Reads the broker's events. `to_the_end`: the poller saw the connection close or fail,
    /// so read until the socket says so even after a short read.
    fn read_broker(&mut self, to_the_end: bool) {
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
    fn broker_closed(&mut self) {
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
    fn reconnect_if_due(&mut self) {
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
        if !self.broker.try_reconnect(self.poll.registry()) {
            return;
        }
        if self.reregistration.is_some() {
            // The broker went away again before this session was back: the same request (with
            // the room it was in) goes to the next one.
            return;
        }
        let request = match &self.phase {
            Phase::ChoosingNick { asked: None } => return,
            Phase::ChoosingNick { asked: Some(nick) } => Request::Login { nick: nick.clone() },
            Phase::Resuming { nick } | Phase::Chatting { nick, .. } => {
                let room = match &self.phase {
                    Phase::Chatting { room, .. } => room.clone(),
                    _ => DEFAULT_ROOM.to_string(),
                };
                let nick = nick.clone();
                self.phase = Phase::Resuming { nick: nick.clone() };
                Request::Resume { nick, room, topic: self.topic_set.clone() }
            }
        };
        self.reregistration = Some(request);
    }

    /// The broker answered `Hello`. A restarted one gets the re-registration — and so does the
    /// first broker to welcome this session when an earlier connection was lost before its
    /// `Welcome` (a nickname typed meanwhile is still asked for); the same broker as before
    /// closed the connection on purpose, and the session ends.
    fn welcomed(&mut self, sender: u64, broker: u64) {
        match self.broker.welcomed(sender, broker) {
            Welcomed::First | Welcomed::Restarted => {
                if let Some(request) = &self.reregistration {
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
            match channel.next_message::<Event>() {
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

    fn handle_event(&mut self, event: Event) {
        self.broker.heard();
        let shown = self.track(&event);
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
        if !shown {
            return;
        }
        let from = match &event {
            Event::Chat { from, .. } | Event::Action { from, .. } | Event::Private { from, .. } => {
                Some(from.as_str())
            }
            _ => None,
        };
        if from.is_some_and(|from| self.is_ignored(from)) {
            return;
        }
        if let Event::Private { from, .. } = &event {
            self.last_private_from = Some(from.clone());
        }
        if let Event::History { room, lines } = &event {
            let lines: Vec<HistoryLine> =
                lines.iter().filter(|line| !self.is_ignored(&line.from)).cloned().collect();
            if !lines.is_empty() {
                self.show_all(&render::history(room, &lines, sys::local_hh_mm));
            }
            return;
        }
        let ring = self.rings_the_bell(&event);
        let lines = render::event(&event);
        self.write_lines(&lines, ring);
    }

    /// A private line, or a room line naming this user (by someone else), rings the bell.
    fn rings_the_bell(&self, event: &Event) -> bool {
        let Phase::Chatting { nick: mine, .. } = &self.phase else { return false };
        if !self.terminal.bell {
            return false;
        }
        match event {
            Event::Private { .. } => true,
            Event::Chat { from, text, .. } | Event::Action { from, text, .. } => {
                !names::same(from, mine) && names::mentions(text, mine)
            }
            _ => false,
        }
    }

    /// Updates the session's own state from an event; false if the event must not be shown
    /// (a duplicate, or one the session answers in its own words).
    fn track(&mut self, event: &Event) -> bool {
        let me = self.broker.session();
        match event {
            Event::Chat { sender, seq, .. } | Event::Action { sender, seq, .. } => {
                if *sender == me {
                    self.broker.acknowledge(*seq);
                }
                return self.broker.first_sight(*sender, *seq);
            }
            Event::Private { sender, seq, .. } => return self.broker.first_sight(*sender, *seq),
            Event::PrivateSent { seq, .. } | Event::Rejected { seq, .. } => {
                // Re-sent after a broker restart, these come twice: show them once.
                self.broker.acknowledge(*seq);
                return self.broker.first_sight(me, *seq);
            }
            Event::LoggedIn { nick } => {
                self.reregistration = None;
                info!("{} logged in as {nick}", self.peer);
                self.report_admission();
                self.phase = Phase::Chatting { nick: nick.clone(), room: DEFAULT_ROOM.to_string() };
            }
            Event::Failed(_) if matches!(self.phase, Phase::ChoosingNick { asked: Some(_) }) => {
                self.reregistration = None;
                self.phase = Phase::ChoosingNick { asked: None };
                for line in render::event(event) {
                    self.show(line);
                }
                self.show(notice::prompt());
                return false;
            }
            Event::Failed(failure) if matches!(self.phase, Phase::Resuming { .. }) => {
                warn!("{}: could not re-register after a broker restart: {failure:?}", self.peer);
                self.reregistration = None;
                self.phase = Phase::ChoosingNick { asked: None };
                self.started = Instant::now();
                self.show(render::system(&render::failure(failure)));
                self.show(notice::prompt());
                return false;
            }
            Event::Resumed { nick, room } => {
                self.reregistration = None;
                let asked = match &self.phase {
                    Phase::Resuming { nick } => nick.clone(),
                    _ => nick.clone(),
                };
                info!("{} re-registered as {nick} in {room} after a broker restart", self.peer);
                self.report_admission();
                let line = if names::same(&asked, nick) {
                    notice::resumed(room)
                } else {
                    notice::resumed_renamed(&asked, nick)
                };
                self.phase = Phase::Chatting { nick: nick.clone(), room: room.clone() };
                self.show(line);
            }
            Event::Joined { nick, room } => {
                if let Phase::Chatting { nick: mine, room: current } = &mut self.phase
                    && names::same(mine, nick)
                {
                    *current = room.clone();
                    self.topic_set = None;
                }
            }
            Event::TopicChanged { by, text, .. } => {
                let mine =
                    matches!(&self.phase, Phase::Chatting { nick, .. } if names::same(nick, by));
                self.topic_set = mine.then(|| text.clone());
            }
            Event::NickChanged { old, new } => {
                if let Phase::Chatting { nick, .. } = &mut self.phase
                    && names::same(nick, old)
                {
                    info!("{} ({old}) is now known as {new}", self.peer);
                    *nick = new.clone();
                }
                // Ignoring and replying follow the person, not the name.
                for ignored in &mut self.ignored {
                    if names::same(ignored, old) {
                        ignored.clone_from(new);
                    }
                }
                if self.last_private_from.as_deref().is_some_and(|from| names::same(from, old)) {
                    self.last_private_from = Some(new.clone());
                }
            }
            Event::Welcome { sender, broker, .. } => self.welcomed(*sender, *broker),
            Event::Dropped { reason } => {
                let lines = render::event(event);
                self.close(
                    lines.into_iter().next(),
                    &format!("dropped by the broker ({reason:?})"),
                );
                return false;
            }
            Event::Shutdown => {
                self.close(Some(notice::shutting_down()), "server shutting down");
                return false;
            }
            Event::Kicked { reason } => {
                let lines = render::event(event);
                let why = format!(
                    "removed by an operator ({})",
                    reason.as_deref().unwrap_or("no reason")
                );
                self.close(lines.into_iter().next(), &why);
                return false;
            }
            Event::Failed(Failure::VersionMismatch { broker, session }) => {
                error!("broker speaks protocol {broker}, this session {session}");
                let failure = Failure::VersionMismatch { broker: *broker, session: *session };
                self.close(
                    Some(render::system(&render::failure(&failure))),
                    "protocol version mismatch",
                );
                return false;
            }
            _ => {}
        }
        true
    }

    /// Tells the master, once, that this client has a nickname. Best effort: a full or closed
    /// report socket only costs the master's count accuracy, never the client.
    fn report_admission(&mut self) {
        self.report_to_master(&[]);
    }

    /// The one report a session makes to the master's admission socket: its pid, then what
    /// `detail` adds (nothing for an admission).
    fn report_to_master(&mut self, detail: &[u8]) {
        if let Some(reporter) = self.reporter.take() {
            let mut report = (std::process::id() as i32).to_le_bytes().to_vec();
            report.extend_from_slice(detail);
            let _ = reporter.send(&report);
        }
    }

    /// Answers an HTTP request (a browser or `curl` on the chat port) and closes, telling the
    /// master it was not a client that gave up logging in.
    fn answer_http(&mut self) {
        let head_only = self.http.as_ref().is_some_and(|request| request.head_only);
        let port = self.client.local_addr().map_or(0, |addr| addr.port());
        self.send_raw(&http::response(head_only, port));
        self.report_to_master(&[REPORT_HTTP_ANSWERED]);
        self.close(None, "an HTTP request on the chat port, answered");
    }

    /// Says goodbye to the broker, which then closes the connection: the last figures go
    /// first.
    fn send_quit(&mut self, reason: Option<String>) {
        self.report_traffic();
        let sent = self.broker.send(&Request::Quit { reason });
        self.check_sent(sent);
    }

    /// Tells the broker how many bytes went to and from the client since the last report.
    fn report_traffic(&mut self) {
        let Traffic { received, sent, .. } = std::mem::take(&mut self.traffic);
        if received > 0 || sent > 0 {
            // Best effort: figures for operators never cost the client anything.
            let _ = self.broker.send(&Request::Traffic { received, sent });
        }
    }

    /// Sets the process title to who this session serves: `chatd: alice@lobby [addr]`, so
    /// that `ps` and `top` name users and `kill PID` works as a kick.
    fn update_title(&mut self) {
        if self.titled.as_ref() == Some(&self.phase) {
            return;
        }
        let who = match &self.phase {
            Phase::Chatting { nick, room } => format!("{nick}@{room}"),
            Phase::Resuming { nick } => format!("{nick}@(resuming)"),
            Phase::ChoosingNick { .. } => "(login)".to_string(),
        };
        // SAFETY: a session starts no thread, and it began as the copy of the thread-less
        // master or as a process of its own (inetd): it is single-threaded.
        unsafe { sys::set_process_title(&format!("chatd: {who} [{}]", self.peer)) };
        self.titled = Some(self.phase.clone());
    }

    fn check_timers(&mut self) {
        // Closing: the last figures go out before the final flush.
        if self.traffic.next_report.is_some_and(|at| self.closing.is_some() || Instant::now() >= at)
        {
            self.report_traffic();
        }
        if self.closing.is_none()
            && self.quit_sent.is_some_and(|sent| sent.elapsed() >= CLOSE_GRACE)
        {
            self.close(Some(notice::goodbye()), "quit (the broker did not confirm)");
        }
        let limits = &self.settings.limits;
        if self.closing.is_none()
            && matches!(self.phase, Phase::ChoosingNick { .. })
            && self.started.elapsed() >= limits.login_grace
        {
            let seconds = limits.login_grace.as_secs();
            self.close(
                Some(notice::login_timeout(seconds)),
                "no nickname within the login grace time",
            );
        }
        let now = Instant::now();
        if let (Some(timeout), Phase::Chatting { .. }) =
            (self.settings.limits.idle_timeout, &self.phase)
            && self.closing.is_none()
            && self.quit_sent.is_none()
        {
            let idle = now.saturating_duration_since(self.last_line_at);
            if idle >= timeout {
                let reason = format!("idle for {} s", timeout.as_secs());
                self.send_quit(Some(reason.clone()));
                self.close(Some(notice::idle_disconnect(timeout.as_secs())), &reason);
            } else if !self.idle_warned && idle >= timeout - idle_warning(timeout) {
                self.idle_warned = true;
                self.show(notice::idle_warning((timeout - idle).as_secs().max(1)));
            }
        }
        if self.telnet.spoke_telnet() && now >= self.next_nop_at {
            // A dead peer turns this write into an error, which ends the session.
            self.next_nop_at = now + self.settings.limits.keepalive;
            if self.client_out.push(&[telnet::IAC, telnet::NOP]).is_err() {
                self.close(None, "client does not read its output");
            }
        }
    }

    /// Queues one line for the client.
    fn show(&mut self, line: Shown) {
        self.write_lines(std::slice::from_ref(&line), false);
    }

    fn show_all(&mut self, lines: &[Shown]) {
        self.write_lines(lines, false);
    }

    /// Queues lines for the client, rendered for its terminal, with the bell if `ring`.
    fn write_lines(&mut self, lines: &[Shown], ring: bool) {
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
    fn send_echo(&mut self, echo: &str) {
        let mut bytes = Vec::new();
        self.terminal.charset.encode(echo, &mut bytes);
        self.send_raw(&bytes);
    }

    /// Queues bytes for the client as they are (telnet answers, echo, rendered lines).
    fn send_raw(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() && self.client_out.push(bytes).is_err() && self.closing.is_none() {
            self.close(None, "client does not read its output");
        }
    }

    /// Starts closing: the client gets `last_words` (if any), queues drain, and the loop ends.
    fn close(&mut self, last_words: Option<Shown>, why: &str) {
        if self.closing.is_some() {
            return;
        }
        if let Some(line) = last_words {
            self.show(line);
        }
        self.closing = Some(Closing { deadline: Instant::now() + CLOSE_GRACE });
        self.log_end(why);
    }

    fn log_end(&self, why: &str) {
        let who = match &self.phase {
            Phase::Chatting { nick, .. } | Phase::Resuming { nick } => {
                format!("{nick} ({})", self.peer)
            }
            Phase::ChoosingNick { .. } => self.peer.to_string(),
        };
        info!("{who} disconnected after {}s: {why}", self.started.elapsed().as_secs());
    }

    fn flush(&mut self) {
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
        let queued = self.client_out.len();
        let written = self.client_out.write_to(&mut self.client);
        let sent = queued.saturating_sub(self.client_out.len()) as u64;
        if sent > 0 {
            self.traffic.sent += sent;
            self.traffic.next_report.get_or_insert_with(|| Instant::now() + TRAFFIC_REPORT);
        }
        if let Err(err) = written {
            // The client is gone; nothing more can be delivered.
            if self.closing.is_none() {
                self.log_end(&format!("write error: {err}"));
            }
            self.closing = Some(Closing { deadline: Instant::now() });
            self.client_out = OutBuf::new(0);
        }
    }
}

/// Waits up to [`HTTP_SNIFF`] for the client to speak first; an HTTP request if it did with
/// one. Looks without reading (the bytes stay for the session's loop) and uses `poll(2)` on
/// the socket, which leaves the session's edge-triggered registration as it was.
fn sniff_http(client: &TcpStream) -> Option<HttpRequest> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(client.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(HTTP_SNIFF).unwrap_or(PollTimeout::ZERO);
    if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
        return None;
    }
    let mut first = [0u8; 8];
    let n = client.peek(&mut first).ok()?;
    http::starts_request(&first[..n])
        .then(|| HttpRequest { head: Vec::new(), head_only: first[..n].starts_with(b"HEAD ") })
}

/// Reads and discards what the client still sends until it closes or `deadline` passes.
fn drain_until_closed(client: &mut TcpStream, deadline: Instant) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut chunk = [0u8; 4096];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [PollFd::new(client.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, timeout).is_err() {
            return;
        }
    }
}

/// How long before an idle disconnection the client is warned: a quarter of the timeout, at
/// most a minute.
fn idle_warning(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(60))
}

/// Turns on TCP keepalive so that a peer that vanished without a FIN (a crashed machine, a cut
/// cable) is noticed and its nickname freed: probes start after `idle` and give up after three.
fn set_keepalive(client: &TcpStream, idle: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let idle_secs = u32::try_from(idle.as_secs()).unwrap_or(u32::MAX).max(1);
    let _ = setsockopt(client, sockopt::KeepAlive, &true);
    let _ = setsockopt(client, sockopt::TcpKeepIdle, &idle_secs);
    let _ = setsockopt(client, sockopt::TcpKeepInterval, &(idle_secs / 6).max(1));
    let _ = setsockopt(client, sockopt::TcpKeepCount, &3);
}

/// Caps the kernel's send buffer for a client at the session's own queue size. Without it, a
/// client that stops reading can pin megabytes of kernel memory (loopback and fast links grow
/// the buffer to 4 MiB) before the session notices; with it, `send_queue_bytes` means what it
/// says.
fn cap_send_buffer(client: &TcpStream, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(client, sockopt::SndBuf, &bytes);
}
