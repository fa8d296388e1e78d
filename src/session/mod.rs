//! One client, in its own session child process.
//!
//! The session owns everything about one connection: the telnet layer, line framing, the
//! nickname prompt and login grace, command parsing, rendering events for this terminal, and
//! the bounded output queue to the client. It keeps no room state beyond its own nick and room:
//! the broker decides, the session asks and shows. Its [`link`] to the broker survives a broker
//! restart: the session reconnects, re-registers (nick, room, the topic it set) and re-sends the
//! lines the old broker had not acknowledged; the client sees one `*** ` line.
//!
//! Data flows one way on each side: client bytes → [`transport`] → [`telnet`] → [`line`] →
//! [`command`] → [`dispatch`] → [`Request`](crate::proto::Request) → broker; broker
//! [`Event`](crate::proto::Event) (on the socket) or room
//! [`Broadcast`](crate::proto::broadcast::Broadcast) (in the ring) → [`state`] → [`render`] →
//! client. The loop is a mio poller over the client connection, the broker channel, the
//! ring's doorbell and a signalfd; it never blocks on either peer.
//!
//! Backpressure: the session stops reading from the client while lines wait for a login answer,
//! while the broker is away, while its queue to the broker is above [`BROKER_HIGH_WATER`] or
//! while [`link::MAX_UNACKED`] lines wait for acknowledgement, so a fast typist is slowed by
//! TCP rather than by unbounded memory. Towards the client, the session stops taking the
//! broker's frames (its room's ring and its socket) while half of `send_queue_bytes` waits for
//! the client; once the ring has lapped it, the client is told it was too slow and
//! disconnected (`events`). Output that overflows the queue all the same (echo, telnet
//! answers) disconnects the client.
//!
//! Flood control ([`flood`]) is paste-friendly: lines beyond the burst wait and leave at the
//! configured rate; only when `flood_queue` lines wait are further lines refused (the client is
//! told once when refusing starts, and exactly how many were refused once the queue drains).
//! Nobody is banned for typing fast. A client is disconnected after `error_budget` invalid
//! commands in a row (after login, those in a paste do not count), after
//! `max_unterminated_bytes` without a line end, or after `idle_timeout_seconds` without a line
//! (warned first; the room is told why it left).
//!
//! # Layout
//! This file is the loop: start-up, the poller, the timers (login grace, idle, quit, telnet
//! NOP, traffic figures) and the process title. Each other step has a file of its own:
//! - [`transport`]: the client connection ([`transport::ClientTransport`]: plain TCP, or
//!   [`tls`]), whose opening (a TLS handshake) comes before the greeting;
//! - `input`: reading it, telnet signals, lines, flood control, the error budget;
//! - [`dispatch`]: what a command does, as a pure function of the session's state;
//! - [`state`]: the phase machine and what each broker event does, pure;
//! - `events`: reading the broker (its socket, and its room's ring in the broker's order),
//!   reconnecting, carrying out the state machine's reactions, falling behind;
//! - `feed`: the room's ring, its doorbell and the mark socket frames wait for;
//! - `output`: rendering for the terminal, queueing, flushing, closing.

mod account;
pub mod charset;
pub mod command;
mod derivation;
pub(crate) mod dispatch;
pub mod editor;
mod error;
mod events;
mod feed;
pub mod flood;
pub(crate) mod help;
pub mod http;
mod input;
pub mod line;
pub mod link;
mod output;
pub mod password;
pub mod render;
pub(crate) mod state;
pub mod telnet;
pub mod terminal;
pub mod tls;
pub mod transport;
pub mod web;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{error, info};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;

use crate::config::SessionLimits;
use crate::signals::ChildSignals;
use crate::sys;
pub use error::SessionError;
use flood::TokenBucket;
use line::{Line, LineSplitter};
use link::BrokerLink;
use render::notice;
use state::{Phase, SessionState};
use telnet::Telnet;
use terminal::Terminal;
use transport::ClientTransport;

/// Stop reading the client while this much waits for the broker.
const BROKER_HIGH_WATER: usize = 64 * 1024;
/// How long a closing session may spend delivering its last lines.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often a session tells the broker how many bytes its client sent and received.
const TRAFFIC_REPORT: Duration = Duration::from_secs(5);
/// The most of an HTTP request's head read before answering it.
const MAX_HTTP_HEAD: usize = 8 * 1024;

const CLIENT: Token = Token(0);
const BROKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// The pipe of a password derivation under way (`derivation`).
const DERIVATION: Token = Token(3);

/// What a session needs to know from the daemon's settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The broker's Unix socket.
    pub broker_socket: PathBuf,
    /// Login grace, flood control, timeouts and queue sizes.
    pub limits: SessionLimits,
    /// The greeting's line pointing a plain client to the TLS listeners (`None` without).
    pub tls_notice: Option<String>,
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
    /// The client's connection. A trait object rather than a type parameter: which transport
    /// a client has (plain TCP, TLS, WebSocket) is decided at run time by its listener, one
    /// indirect call per read or flush costs nothing next to the system call behind it, and
    /// the session's code is compiled once instead of once per transport.
    client: Box<dyn ClientTransport>,
    /// Where client reads land; allocated once, reused by every read.
    read_buffer: Vec<u8>,
    /// The client socket had data last time we looked and has not reported WouldBlock since.
    client_readable: bool,
    broker: BrokerLink,
    /// The broker's socket had data last time we looked and has not reported WouldBlock since;
    /// `broker_read_to_the_end`: the poller saw it close, so it is read until it says so.
    broker_readable: bool,
    broker_read_to_the_end: bool,
    /// The ring of the session's room.
    feed: feed::Feed,
    signals: ChildSignals,
    telnet: Telnet,
    splitter: LineSplitter,
    lines: VecDeque<Line>,
    /// The phase, the re-registration, the topic set, whom the user ignores and replies to.
    state: SessionState,
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
    peer: SocketAddr,
    started: Instant,
    settings: SessionSettings,
    /// When `/quit` was sent. The broker answers a quit by closing the connection after
    /// everything it owed this session, so the goodbye waits for that close.
    quit_sent: Option<Instant>,
    closing: Option<Closing>,
    /// A password derivation under way, in a child at the lowest priority (nice 19).
    derivation: Option<derivation::Derivation>,
    /// Where to report admission (once) and wrong passwords to the master.
    reporter: Option<StdUnixDatagram>,
    admission_reported: bool,
    /// The phase the process title was last set for. Events that could rename the session
    /// (every join in its room, say) compare against it rather than format a title each time.
    titled: Option<Phase>,
    /// Client bytes not yet reported to the broker, and when to report next.
    traffic: Traffic,
    /// Character set, colour, width and line editing of the client's terminal.
    terminal: Terminal,
    /// The client is a web browser or `curl` (it sent an HTTP request).
    http: Option<HttpRequest>,
    /// No line has been handled yet: an HTTP request line is recognised only as the first.
    first_line: bool,
    /// The connection is open (a TLS handshake done) and the client greeted: its bytes are
    /// read from now on.
    greeted: bool,
    /// The client is a web browser on a WebSocket: it gets JSON, not rendered lines.
    browser: Option<web::view::BrowserView>,
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
/// `client` is the client's transport (today a [`transport::PlainTransport`] over a listener's connection
/// or inetd's standard input, which the composition root, `modes`, wraps); nothing in the
/// session knows which kind it has.
/// `reporter`, when given, is told this process's pid once the client has chosen a nickname:
/// the master counts clients that have not (sshd's MaxStartups) and sources whose clients
/// leave before doing so.
pub fn run(
    client: Box<dyn ClientTransport>,
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
        mut client: Box<dyn ClientTransport>,
        peer: SocketAddr,
        settings: SessionSettings,
        reporter: Option<StdUnixDatagram>,
    ) -> Result<Session, SessionError> {
        let poll = Poll::new().map_err(SessionError::Poll)?;
        let broker = match BrokerLink::connect(
            settings.broker_socket.clone(),
            peer,
            poll.registry(),
            BROKER,
        ) {
            Ok(broker) => broker,
            Err(err) => {
                // Logged once, by `run`, from the error returned below.
                let sorry = format!("{}\r\n", notice::service_unavailable().plain());
                if client.queue(sorry.as_bytes()).is_ok() {
                    let _ = client.flush();
                }
                return Err(SessionError::Broker { socket: settings.broker_socket, source: err });
            }
        };
        // SIGTERM is an operator's `kill PID`; the master says the daemon stops with SIGUSR1.
        // SIGUSR2 asks the master to upgrade: a session that gets it too (`systemctl kill`
        // signals the whole unit) ignores it rather than die by its default action.
        let signals =
            ChildSignals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1, Signal::SIGUSR2])
                .map_err(SessionError::Signals)?;
        let now = Instant::now();
        let mut state = SessionState::new(peer);
        state.tls = client.is_tls();
        state.passwords_allowed =
            state.tls || peer.ip().is_loopback() || !settings.limits.passwords_need_tls;
        state.tls_port = settings.limits.tls_port;
        let browser = client.is_web().then(web::view::BrowserView::default);
        let mut session = Session {
            poll,
            client,
            read_buffer: Vec::new(),
            client_readable: false,
            broker,
            broker_readable: false,
            broker_read_to_the_end: false,
            feed: feed::Feed::default(),
            signals,
            telnet: Telnet::new(),
            splitter: LineSplitter::new(),
            lines: VecDeque::new(),
            state,
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
            peer,
            started: now,
            settings,
            quit_sent: None,
            closing: None,
            reporter,
            admission_reported: false,
            derivation: None,
            titled: None,
            traffic: Traffic::default(),
            terminal: Terminal::default(),
            http: None,
            // A browser's first line is its nickname, never an HTTP request on the chat port.
            first_line: browser.is_none(),
            greeted: false,
            browser,
        };
        // The title's area is found (reading /proc/self/stat, once) and the broker connected:
        // from here on, before the first byte from the client, no file can be opened.
        session.update_title();
        crate::sandbox::confine_session_or_log();
        session
            .poll
            .registry()
            .register(session.client.source(), CLIENT, Interest::READABLE | Interest::WRITABLE)
            .map_err(SessionError::Register)?;
        session
            .signals
            .register(session.poll.registry(), SIGNALS)
            .map_err(SessionError::Signals)?;
        info!("connection from {peer}");
        if let Some(sniffed) = session.client.sniff_http() {
            session.http = Some(HttpRequest { head: Vec::new(), head_only: sniffed.head_only });
            return Ok(session);
        }
        if !session.open_client() {
            session.closing = Some(Closing { deadline: now });
        }
        Ok(session)
    }

    /// Greets the client once its connection is open: at once on a plain one, after the
    /// handshake on a TLS one (the login grace covers it). Returns false if the opening
    /// failed (logged here); the session then ends.
    fn open_client(&mut self) -> bool {
        if self.greeted {
            return true;
        }
        match self.client.handshake() {
            Ok(true) => {}
            Ok(false) => return true,
            Err(err) => {
                info!("TLS handshake with {} failed: {err}", self.peer);
                return false;
            }
        }
        self.greeted = true;
        // What came with the handshake's last record is read now: the socket will not say so
        // again.
        self.client_readable = true;
        if self.http.is_some() {
            // A browser or curl: it gets an HTTP answer, never the chat's greeting.
            return true;
        }
        if self.client.is_telnet() {
            let offer = self.telnet.start();
            self.send_raw(&offer);
        }
        let mut greeting = notice::greeting(crate::release::version());
        if let Some(line) = &self.settings.tls_notice
            && !self.client.is_tls()
        {
            // Before the nickname prompt, which ends the greeting.
            greeting.insert(greeting.len().saturating_sub(1), render::system(line));
        }
        self.show_all(&greeting);
        true
    }

    fn event_loop(&mut self) -> Result<(), SessionError> {
        let mut events = Events::with_capacity(16);
        loop {
            let timeout =
                self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            sys::wait(&mut self.poll, &mut events, timeout).map_err(SessionError::Wait)?;
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
                        self.broker_readable = true;
                        if event.is_read_closed() || event.is_error() {
                            self.broker_read_to_the_end = true;
                        }
                    }
                    // The ring's doorbell: its records are read below, with the socket's.
                    _ => {}
                }
            }
            let pumped = self.pump_broker();
            self.finish_derivation();
            self.reconnect_if_due();
            if self.closing.is_none() && !self.open_client() {
                return Ok(());
            }
            if self.greeted && self.read_client() {
                self.report_traffic();
                if let Some(channel) = self.broker.channel() {
                    let _ = channel.flush();
                }
                return Ok(());
            }
            self.handle_lines();
            self.check_timers();
            self.flush();
            if !pumped && !self.client_backed_up() {
                // The client took what was queued: what waited for it goes now.
                self.pump_broker();
                self.flush();
            }
            if let Some(closing) = &self.closing {
                let drained = self.client.queued() == 0 && self.broker.queued() == 0;
                if drained || Instant::now() >= closing.deadline {
                    // Closing with unread bytes would reset the connection under an HTTP
                    // answer: read until the client closes (it does, after the answer).
                    let drain_until = self.http.is_some().then(|| Instant::now() + CLOSE_GRACE);
                    self.client.close(drain_until);
                    return Ok(());
                }
            }
        }
    }

    /// SIGUSR1 is the daemon stopping; SIGTERM/SIGINT on one session is an operator's kick.
    fn handle_signals(&mut self) -> Result<(), SessionError> {
        while let Some(signal) = self.signals.take_pending().map_err(SessionError::ReadSignals)? {
            match signal {
                _ if self.closing.is_some() => {}
                Signal::SIGUSR2 => {
                    log::debug!("session for {}: ignoring SIGUSR2 (for the master)", self.peer)
                }
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
        let (login, idle) = match self.state.phase {
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

    /// Sets the process title to who this session serves: `chatd: alice@lobby [addr]`, so
    /// that `ps` and `top` name users and `kill PID` works as a kick.
    fn update_title(&mut self) {
        if self.titled.as_ref() == Some(&self.state.phase) {
            return;
        }
        let who = match &self.state.phase {
            Phase::Chatting { nick, room } => format!("{nick}@{room}"),
            Phase::Resuming { nick } => format!("{nick}@(resuming)"),
            Phase::ChoosingNick { .. } => "(login)".to_string(),
        };
        // SAFETY: a session starts no thread, and it began as the copy of the thread-less
        // master or as a process of its own (inetd): it is single-threaded.
        unsafe { sys::set_process_title(&format!("chatd: {who} [{}]", self.peer)) };
        self.titled = Some(self.state.phase.clone());
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
            && matches!(self.state.phase, Phase::ChoosingNick { .. })
            && self.state.password.is_some()
            && self.started.elapsed() >= limits.login_grace
        {
            self.enter_as_guest();
        } else if self.closing.is_none()
            && matches!(self.state.phase, Phase::ChoosingNick { .. })
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
            (self.settings.limits.idle_timeout, &self.state.phase)
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
            if self.client.queue(&[telnet::IAC, telnet::NOP]).is_err() {
                self.close(None, "client does not read its output");
            }
        }
    }
}

/// How long before an idle disconnection the client is warned: a quarter of the timeout, at
/// most a minute.
fn idle_warning(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(60))
}
