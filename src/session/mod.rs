//! One client, in its own session child process.
//!
//! The session owns everything about one connection: the telnet layer, line framing, the
//! nickname prompt and login grace, command parsing, rendering events for this terminal, and
//! the two bounded output queues (to the client, to the broker). It keeps no room state: the
//! broker decides, the session asks and shows.
//!
//! Data flows one way on each side: client bytes → [`telnet`] → [`line`] → [`command`] →
//! [`Request`] → broker; broker [`Event`] → [`render`] → client. The loop is a mio poller over
//! the client socket, the broker channel and a signalfd; it never blocks on either peer.
//!
//! Backpressure: the session stops reading from the client while lines wait for a login answer
//! or while its queue to the broker is above [`BROKER_HIGH_WATER`], so a fast typist is slowed
//! by TCP rather than by unbounded memory. A client that does not read its output is
//! disconnected once [`MAX_CLIENT_QUEUE`] bytes wait for it.

pub mod command;
pub mod line;
pub mod render;
pub mod telnet;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;

use crate::channel::{Channel, ReadOutcome};
use crate::names;
use crate::outbuf::OutBuf;
use crate::proto::{Event, Failure, PROTOCOL_VERSION, Request};
use crate::signals::ChildSignals;
use crate::{sys, text};
use command::Command;
use line::{Line, LineSplitter};
use render::notice;
use telnet::Telnet;

/// Most bytes waiting for a client that does not read before it is disconnected.
pub const MAX_CLIENT_QUEUE: usize = 64 * 1024;
/// Stop reading the client while this much waits for the broker.
const BROKER_HIGH_WATER: usize = 64 * 1024;
/// Most bytes queued towards the broker.
const MAX_BROKER_QUEUE: usize = 1 << 20;
/// Stop reading the client while this many lines wait to be handled.
const MAX_PENDING_LINES: usize = 64;
/// How long a closing session may spend delivering its last lines.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

const CLIENT: Token = Token(0);
const BROKER: Token = Token(1);
const SIGNALS: Token = Token(2);

/// What a session needs to know from the daemon's settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The broker's Unix socket.
    pub broker_socket: PathBuf,
    /// How long the client has to choose a nickname.
    pub login_grace: Duration,
}

/// Where the conversation with the client stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No nickname yet. `asked` is the nickname sent to the broker and not yet answered.
    ChoosingNick { asked: Option<String> },
    /// Logged in as `nick`.
    Chatting { nick: String },
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
    broker: Channel,
    signals: ChildSignals,
    telnet: Telnet,
    splitter: LineSplitter,
    lines: VecDeque<Line>,
    phase: Phase,
    peer: SocketAddr,
    started: Instant,
    settings: SessionSettings,
    /// Sequence number of this session's next chat line.
    next_seq: u64,
    /// When `/quit` was sent. The broker answers a quit by closing the connection after
    /// everything it owed this session, so the goodbye waits for that close.
    quit_sent: Option<Instant>,
    closing: Option<Closing>,
}

/// Serves one client until it leaves; returns the process exit status.
pub fn run(client: TcpStream, peer: SocketAddr, settings: SessionSettings) -> i32 {
    match Session::start(client, peer, settings) {
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

/// Connects to the broker and says hello.
fn connect_broker(settings: &SessionSettings, peer: SocketAddr) -> io::Result<Channel> {
    let stream = StdUnixStream::connect(&settings.broker_socket)?;
    stream.set_nonblocking(true)?;
    let mut channel = Channel::new(UnixStream::from_std(stream), MAX_BROKER_QUEUE);
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        peer: peer.to_string(),
    };
    channel.send(&hello).map_err(io::Error::other)?;
    Ok(channel)
}

impl Session {
    fn start(
        mut client: TcpStream,
        peer: SocketAddr,
        settings: SessionSettings,
    ) -> io::Result<Session> {
        // Small lines must leave at once; batching is done here, per loop turn.
        let _ = client.set_nodelay(true);
        let broker = match connect_broker(&settings, peer) {
            Ok(broker) => broker,
            Err(err) => {
                error!(
                    "session for {peer}: cannot reach the broker at {}: {err}",
                    settings.broker_socket.display()
                );
                let _ =
                    client.write_all(format!("{}\r\n", notice::service_unavailable()).as_bytes());
                return Err(err);
            }
        };
        let poll = Poll::new()?;
        let signals = ChildSignals::new(&[Signal::SIGTERM, Signal::SIGINT])?;
        let mut session = Session {
            poll,
            client,
            client_out: OutBuf::new(MAX_CLIENT_QUEUE),
            client_readable: false,
            broker,
            signals,
            telnet: Telnet::new(),
            splitter: LineSplitter::new(),
            lines: VecDeque::new(),
            phase: Phase::ChoosingNick { asked: None },
            peer,
            started: Instant::now(),
            settings,
            next_seq: 1,
            quit_sent: None,
            closing: None,
        };
        let registry = session.poll.registry();
        registry.register(&mut session.client, CLIENT, Interest::READABLE | Interest::WRITABLE)?;
        registry.register(
            session.broker.stream_mut(),
            BROKER,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        session.signals.register(session.poll.registry(), SIGNALS)?;
        info!("connection from {peer}");
        for line in notice::greeting(env!("CARGO_PKG_VERSION")) {
            session.show(&line);
        }
        Ok(session)
    }

    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(16);
        loop {
            let timeout =
                self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            sys::wait(&mut self.poll, &mut events, timeout)?;
            while let Some(signal) = self.signals.take_pending()? {
                if matches!(signal, Signal::SIGTERM | Signal::SIGINT) && self.closing.is_none() {
                    self.close(Some(notice::shutting_down()), "server shutting down");
                }
            }
            for event in events.iter() {
                match event.token() {
                    CLIENT if event.is_readable() || event.is_read_closed() || event.is_error() => {
                        self.client_readable = true;
                    }
                    BROKER if event.is_readable() || event.is_read_closed() || event.is_error() => {
                        self.read_broker();
                    }
                    _ => {}
                }
            }
            if self.client_gone()? {
                return Ok(());
            }
            self.handle_lines();
            self.check_timers();
            self.flush()?;
            if let Some(closing) = &self.closing {
                let drained = self.client_out.is_empty() && self.broker.queued() == 0;
                if drained || Instant::now() >= closing.deadline {
                    let _ = self.client.shutdown(std::net::Shutdown::Write);
                    return Ok(());
                }
            }
        }
    }

    /// The next moment the loop must wake without I/O: the end of the close grace, or of the
    /// login grace.
    fn next_deadline(&self) -> Option<Instant> {
        if let Some(closing) = &self.closing {
            return Some(closing.deadline);
        }
        if let Some(sent) = self.quit_sent {
            return Some(sent + CLOSE_GRACE);
        }
        match self.phase {
            Phase::ChoosingNick { .. } => Some(self.started + self.settings.login_grace),
            Phase::Chatting { .. } => None,
        }
    }

    /// Reads what the client sent, as far as the queues allow. Returns true when the client
    /// has gone (EOF or error): there is nobody left to talk to.
    fn client_gone(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        while self.client_readable && self.closing.is_none() && self.has_room_for_input() {
            let n = match self.client.read(&mut chunk) {
                Ok(0) => {
                    self.log_end("connection closed by client");
                    return Ok(true);
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.client_readable = false;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.log_end(&format!("connection error: {err}"));
                    return Ok(true);
                }
            };
            let mut data = Vec::with_capacity(n);
            let mut reply = Vec::new();
            self.telnet.decode(&chunk[..n], &mut data, &mut reply);
            if !reply.is_empty() && self.client_out.push(&reply).is_err() {
                self.close(None, "client does not read its output");
            }
            let mut lines = Vec::new();
            self.splitter.feed(&data, &mut lines);
            self.lines.extend(lines);
        }
        Ok(false)
    }

    fn has_room_for_input(&self) -> bool {
        self.lines.len() < MAX_PENDING_LINES && self.broker.queued() < BROKER_HIGH_WATER
    }

    /// Handles waiting lines, unless a login answer is outstanding (lines typed after a
    /// nickname must not be taken as another nickname).
    fn handle_lines(&mut self) {
        while self.closing.is_none() && self.quit_sent.is_none() {
            if matches!(self.phase, Phase::ChoosingNick { asked: Some(_) }) {
                return;
            }
            let Some(line) = self.lines.pop_front() else {
                return;
            };
            match line {
                Line::TooLong => self.show(&notice::too_long()),
                Line::Bytes(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => self.handle_text(&text::sanitize(&text)),
                    Err(_) => self.show(&notice::not_utf8()),
                },
            }
        }
    }

    fn handle_text(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let command = command::parse(line);
        match &self.phase {
            Phase::ChoosingNick { .. } => self.handle_before_login(command),
            Phase::Chatting { .. } => self.handle_chatting(command),
        }
    }

    fn handle_before_login(&mut self, command: Command) {
        match command {
            Command::Say(nick) | Command::Nick(nick) => self.try_login(nick.trim()),
            Command::Quit(_) => self.close(Some(notice::goodbye()), "quit before login"),
            Command::Help => {
                for line in render::help() {
                    self.show(&line);
                }
                self.show(&notice::prompt());
            }
            _ => {
                self.show(&notice::nick_first());
                self.show(&notice::prompt());
            }
        }
    }

    fn try_login(&mut self, nick: &str) {
        if let Err(why) = names::check_nick(nick) {
            let failure = Failure::InvalidNick { nick: nick.to_string(), why };
            self.show(&render::system(&render::failure(&failure)));
            self.show(&notice::prompt());
            return;
        }
        self.phase = Phase::ChoosingNick { asked: Some(nick.to_string()) };
        self.send(Request::Login { nick: nick.to_string() });
    }

    fn handle_chatting(&mut self, command: Command) {
        let request = match command {
            Command::Say(text) => Request::Say { seq: self.take_seq(), text },
            Command::Me(text) => Request::Act { seq: self.take_seq(), text },
            Command::Nick(nick) => {
                if let Err(why) = names::check_nick(&nick) {
                    self.show(&render::system(&render::failure(&Failure::InvalidNick {
                        nick,
                        why,
                    })));
                    return;
                }
                Request::ChangeNick { nick }
            }
            Command::Join(room) => Request::Join { room },
            Command::Who => Request::Who,
            Command::Rooms => Request::Rooms,
            Command::Topic(text) => Request::Topic { text },
            Command::Msg { to, text } => Request::Private { to, text },
            Command::Quit(reason) => {
                self.send(Request::Quit { reason });
                self.quit_sent = Some(Instant::now());
                return;
            }
            Command::Help => {
                for line in render::help() {
                    self.show(&line);
                }
                return;
            }
            Command::Unknown(word) => return self.show(&notice::unknown(&word)),
            Command::Usage(usage) => return self.show(&notice::usage(usage)),
        };
        self.send(request);
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn send(&mut self, request: Request) {
        if let Err(err) = self.broker.send(&request) {
            warn!("session for {}: cannot queue a request for the broker: {err}", self.peer);
            self.close(Some(notice::service_lost()), "broker queue full");
        }
    }

    fn read_broker(&mut self) {
        loop {
            match self.broker.read_some() {
                Ok(ReadOutcome::Data) => {}
                Ok(ReadOutcome::WouldBlock) => return,
                Ok(ReadOutcome::Closed { .. }) => {
                    // Events that arrived with the close are still shown.
                    self.handle_events();
                    if self.quit_sent.is_some() {
                        self.close(Some(notice::goodbye()), "quit");
                    } else if self.closing.is_none() {
                        warn!("session for {}: the broker closed the connection", self.peer);
                        self.close(Some(notice::service_lost()), "lost the broker");
                    }
                    return;
                }
                Err(err) => {
                    warn!("session for {}: broker connection failed: {err}", self.peer);
                    self.close(Some(notice::service_lost()), "lost the broker");
                    return;
                }
            }
            if !self.handle_events() {
                return;
            }
        }
    }

    /// Handles every whole event read from the broker; false if the broker sent garbage.
    fn handle_events(&mut self) -> bool {
        loop {
            match self.broker.next_message::<Event>() {
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
        match (&self.phase, &event) {
            (Phase::ChoosingNick { .. }, Event::LoggedIn { nick }) => {
                info!("{} logged in as {nick}", self.peer);
                self.phase = Phase::Chatting { nick: nick.clone() };
            }
            (Phase::ChoosingNick { asked: Some(_) }, Event::Failed(_)) => {
                self.phase = Phase::ChoosingNick { asked: None };
                for line in render::event(&event) {
                    self.show(&line);
                }
                self.show(&notice::prompt());
                return;
            }
            (Phase::Chatting { nick }, Event::NickChanged { old, new })
                if names::fold(nick) == names::fold(old) =>
            {
                info!("{} ({old}) is now known as {new}", self.peer);
                self.phase = Phase::Chatting { nick: new.clone() };
            }
            (_, Event::Shutdown) => {
                self.close(Some(notice::shutting_down()), "server shutting down");
                return;
            }
            (_, Event::Failed(Failure::VersionMismatch { broker, session })) => {
                error!("broker speaks protocol {broker}, this session {session}");
                self.close(
                    Some(render::system(&render::failure(&Failure::VersionMismatch {
                        broker: *broker,
                        session: *session,
                    }))),
                    "protocol version mismatch",
                );
                return;
            }
            _ => {}
        }
        for line in render::event(&event) {
            self.show(&line);
        }
    }

    fn check_timers(&mut self) {
        if self.closing.is_none()
            && self.quit_sent.is_some_and(|sent| sent.elapsed() >= CLOSE_GRACE)
        {
            self.close(Some(notice::goodbye()), "quit (the broker did not confirm)");
        }
        if self.closing.is_none()
            && matches!(self.phase, Phase::ChoosingNick { .. })
            && self.started.elapsed() >= self.settings.login_grace
        {
            let seconds = self.settings.login_grace.as_secs();
            self.close(
                Some(notice::login_timeout(seconds)),
                "no nickname within the login grace time",
            );
        }
    }

    /// Queues one line for the client.
    fn show(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        if self.client_out.push(&bytes).is_err() && self.closing.is_none() {
            self.close(None, "client does not read its output");
        }
    }

    /// Starts closing: the client gets `last_words` (if any), queues drain, and the loop ends.
    fn close(&mut self, last_words: Option<String>, why: &str) {
        if self.closing.is_some() {
            return;
        }
        if let Some(line) = last_words {
            self.show(&line);
        }
        self.closing = Some(Closing { deadline: Instant::now() + CLOSE_GRACE });
        self.log_end(why);
    }

    fn log_end(&self, why: &str) {
        let who = match &self.phase {
            Phase::Chatting { nick } => format!("{nick} ({})", self.peer),
            Phase::ChoosingNick { .. } => self.peer.to_string(),
        };
        info!("{who} disconnected after {}s: {why}", self.started.elapsed().as_secs());
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Err(err) = self.broker.flush()
            && self.closing.is_none()
        {
            warn!("session for {}: cannot write to the broker: {err}", self.peer);
            self.close(Some(notice::service_lost()), "lost the broker");
        }
        match self.client_out.write_to(&mut self.client) {
            Ok(_) => Ok(()),
            Err(err) => {
                // The client is gone; nothing more can be delivered.
                if self.closing.is_none() {
                    self.log_end(&format!("write error: {err}"));
                }
                self.closing = Some(Closing { deadline: Instant::now() });
                self.client_out = OutBuf::new(0);
                Ok(())
            }
        }
    }
}
