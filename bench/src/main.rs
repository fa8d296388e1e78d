//! `chatd-bench`: drives N chat clients from one process (one mio poller, no threads) against
//! chatd or an IRC server, and measures admissions, fan-out throughput, latency, loss, memory
//! and CPU. Part of the repository, not of the packages. See docs/PERFORMANCE.md.
//!
//! Every message is `m SENDER SEQ NANOS`: receivers compute its latency from the send time and
//! detect loss (a message not delivered to everyone by the end), duplicates and reordering.
//! chatd echoes a line to its sender (N receivers per message); IRC does not (N - 1).

mod measure;
mod tls;
mod web;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Map, Value};

use measure::put;

#[derive(Debug, Parser)]
#[command(name = "chatd-bench", about = "Load generator for chatd and IRC servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N clients connect and get admitted: rate and time to admission.
    Connect(Common),
    /// N clients in one room, S senders, W messages in flight each, for T seconds.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        senders: usize,
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Open loop: S senders send R messages per second in all, for T seconds.
    Rate {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        senders: usize,
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Reads JSON lines of earlier runs and prints the comparison table (medians).
    Report {
        files: Vec<PathBuf>,
        /// The server in the first column (the one measured).
        #[arg(long, default_value = "chatd")]
        ours: String,
        /// The server it is compared with (the ratio's denominator).
        #[arg(long, default_value = "ngircd")]
        theirs: String,
        /// The floor of ours' shape (`chatd-floor`), shown between ours and theirs, with the
        /// ratio ours/floor.
        #[arg(long)]
        floor: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Chatd,
    Irc,
    /// chatd's web listener: a WebSocket to `/ws`, one text message per line.
    Web,
}

#[derive(Debug, Args)]
struct Common {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:2323")]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value = "chatd")]
    protocol: Protocol,
    /// Clients.
    #[arg(long, short = 'n', default_value_t = 50)]
    clients: usize,
    /// The server's main pid: its whole process tree is measured (PSS, CPU).
    #[arg(long)]
    pid: Option<i32>,
    /// Name of the server in the results ("chatd", "ngircd").
    #[arg(long, default_value = "chatd")]
    server: String,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// IRC operator name and password, to set user mode +F (relaxed flood protection).
    #[arg(long, value_name = "NAME:PASSWORD")]
    oper: Option<String>,
    /// The receivers (every client after the senders) connect here instead of `--addr`: the
    /// senders on one node of a cluster, the receivers on another.
    #[arg(long, value_name = "ADDR")]
    receive_addr: Option<SocketAddr>,
    /// Clients registering at once while connecting, as a crowd arrives.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connect over TLS (to a TLS listener, e.g. --addr 127.0.0.1:2324), trusting this
    /// certificate for the name localhost (PEM: the daemon's state_dir/tls-cert.pem).
    #[arg(long, value_name = "CERT")]
    tls: Option<PathBuf>,
}

/// One client connection.
struct Client {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    nick: String,
    connected_at: Instant,
    admitted_at: Option<Instant>,
    /// Last sequence number seen from each sender (index = sender).
    last_seen: Vec<u64>,
    /// False once the server closed or reset the connection.
    alive: bool,
    /// The client's TLS connection (`--tls`); `out` and `inbuf` stay plaintext.
    tls: Option<rustls::ClientConnection>,
    /// A web client still waiting for the answer to its upgrade request.
    upgrading: bool,
    /// What the server sent before the client was admitted (its first KiB), for the error
    /// that says why a client was not.
    read_before_admission: String,
    /// When to ask for the nickname again: it was in use, most likely by the client of the
    /// same name in the run before, whose session had not yet seen its connection close.
    nick_again_at: Option<Instant>,
}

/// A message on its way: how many receivers still have to get it.
struct InFlight {
    remaining: u32,
}

struct Load {
    poll: Poll,
    clients: Vec<Client>,
    protocol: Protocol,
    oper: Option<String>,
    started: Instant,
    /// Receivers per message.
    fanout: u32,
    in_flight: HashMap<(u32, u64), InFlight>,
    /// Messages in flight per sender.
    pending: Vec<usize>,
    next_seq: Vec<u64>,
    /// Counting only while true (after the warm-up).
    measuring: bool,
    latencies_us: Vec<u64>,
    deliveries: u64,
    completed: u64,
    sent: u64,
    duplicates_or_late: u64,
    gaps: u64,
    /// Clients the server disconnected.
    disconnected: u64,
    /// Times a client's nickname was refused as in use while it registered.
    nicks_in_use: u64,
    /// Every client speaks TLS (`--tls`).
    tls: Option<tls::TlsClients>,
}

const ROOM_IRC: &str = "#bench";

/// How long a client whose nickname was in use waits before it asks for it again.
const NICK_RETRY: Duration = Duration::from_millis(50);

/// Appends the request for `nick` in `protocol` to `out`.
fn push_nick(protocol: Protocol, nick: &str, out: &mut Vec<u8>) {
    match protocol {
        Protocol::Chatd => out.extend_from_slice(format!("{nick}\r\n").as_bytes()),
        Protocol::Irc => out.extend_from_slice(format!("NICK {nick}\r\n").as_bytes()),
        Protocol::Web => web::frame(out, 1, nick.as_bytes()),
    }
}

impl Load {
    fn connect(common: &Common, senders: usize) -> io::Result<Load> {
        raise_open_files(common.clients as u64 + 64);
        let poll = Poll::new()?;
        let fanout = match common.protocol {
            Protocol::Chatd | Protocol::Web => common.clients as u32,
            Protocol::Irc => common.clients.saturating_sub(1) as u32,
        };
        Ok(Load {
            poll,
            clients: Vec::with_capacity(common.clients),
            protocol: common.protocol,
            oper: common.oper.clone(),
            started: Instant::now(),
            fanout,
            in_flight: HashMap::new(),
            pending: vec![0; senders],
            next_seq: vec![1; senders],
            measuring: false,
            latencies_us: Vec::new(),
            deliveries: 0,
            completed: 0,
            sent: 0,
            duplicates_or_late: 0,
            gaps: 0,
            disconnected: 0,
            nicks_in_use: 0,
            tls: common.tls.as_deref().map(tls::TlsClients::trusting).transpose()?,
        })
    }

    /// Opens one more client and sends its registration.
    fn open(&mut self, addr: SocketAddr, senders: usize) -> io::Result<()> {
        let id = self.clients.len();
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        self.poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let nick = format!("b{id}");
        let mut out = match self.protocol {
            Protocol::Chatd | Protocol::Irc => Vec::new(),
            Protocol::Web => web::upgrade_request(addr),
        };
        push_nick(self.protocol, &nick, &mut out);
        if self.protocol == Protocol::Irc {
            out.extend_from_slice(format!("USER {nick} 0 * :{nick}\r\n").as_bytes());
        }
        self.clients.push(Client {
            stream,
            inbuf: Vec::with_capacity(4096),
            out,
            nick,
            connected_at: Instant::now(),
            admitted_at: None,
            last_seen: vec![0; senders],
            alive: true,
            tls: self.tls.as_ref().map(tls::TlsClients::start).transpose()?,
            upgrading: self.protocol == Protocol::Web,
            read_before_admission: String::new(),
            nick_again_at: None,
        });
        Ok(())
    }

    /// Whether `line`, read by client `id` while it registers, refuses its nickname as in use.
    fn refuses_nick(&self, id: usize, line: &str) -> bool {
        match self.protocol {
            Protocol::Chatd | Protocol::Web => line
                .strip_prefix("*** The nickname ")
                .and_then(|rest| rest.strip_suffix(" is already in use"))
                .is_some_and(|nick| nick == self.clients[id].nick),
            Protocol::Irc => line.split_whitespace().nth(1) == Some("433"),
        }
    }

    /// Sends the nickname again for every client whose wait after "in use" is over.
    fn ask_nicks_again(&mut self) {
        let now = Instant::now();
        for id in 0..self.clients.len() {
            let client = &mut self.clients[id];
            if client.nick_again_at.is_some_and(|at| at <= now) {
                client.nick_again_at = None;
                push_nick(self.protocol, &client.nick, &mut client.out);
                if let Err(err) = self.flush(id) {
                    self.lose(id, &err);
                }
            }
        }
    }

    fn admitted(&self) -> usize {
        self.clients.iter().filter(|c| c.admitted_at.is_some()).count()
    }

    /// Polls once (up to `timeout`) and handles what arrived.
    fn turn(&mut self, timeout: Duration, events: &mut Events) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(err) => return Err(err),
        }
        let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for id in ready {
            if let Err(err) = self.read(id).and_then(|()| self.flush(id)) {
                self.lose(id, &err);
            }
        }
        Ok(())
    }

    /// The server closed or reset client `id`: it is counted and left alone from now on.
    fn lose(&mut self, id: usize, err: &io::Error) {
        let client = &mut self.clients[id];
        if !client.alive {
            return;
        }
        client.alive = false;
        let _ = self.poll.registry().deregister(&mut client.stream);
        if self.disconnected == 0 {
            eprintln!("chatd-bench: client {id} lost: {err}");
        }
        self.disconnected += 1;
    }

    fn read(&mut self, id: usize) -> io::Result<()> {
        if !self.clients[id].alive {
            return Ok(());
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let client = &mut self.clients[id];
            let got = match &mut client.tls {
                Some(session) => tls::read(session, &mut client.stream, &mut chunk),
                None => client.stream.read(&mut chunk),
            };
            let n = match got {
                Ok(0) => {
                    return Err(io::Error::other(format!(
                        "client {id}: the server closed the connection"
                    )));
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.clients[id].inbuf.extend_from_slice(&chunk[..n]);
            if self.protocol == Protocol::Web {
                self.messages(id)?;
                continue;
            }
            let buffer = std::mem::take(&mut self.clients[id].inbuf);
            let mut start = 0;
            while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
                let line = &buffer[start..start + end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.line(id, line);
                start += end + 1;
            }
            let mut rest = buffer;
            rest.drain(..start);
            self.clients[id].inbuf = rest;
        }
    }

    /// A web client's input: the upgrade's answer, then frames, each text message as the
    /// terminal lines it stands for; pings are answered.
    fn messages(&mut self, id: usize) -> io::Result<()> {
        let client = &mut self.clients[id];
        if client.upgrading {
            match web::take_head(&mut client.inbuf) {
                None => return Ok(()),
                Some(Ok(())) => client.upgrading = false,
                Some(Err(status)) => {
                    return Err(io::Error::other(format!(
                        "client {id}: upgrade refused: {status}"
                    )));
                }
            }
        }
        while let Some((opcode, payload)) = web::take_frame(&mut self.clients[id].inbuf) {
            match opcode {
                1 => {
                    for line in web::terminal_lines(&String::from_utf8_lossy(&payload)) {
                        self.line(id, line.as_bytes());
                    }
                }
                8 => return Err(io::Error::other(format!("client {id}: the server closed"))),
                9 => web::frame(&mut self.clients[id].out, 10, &payload),
                _ => {}
            }
        }
        Ok(())
    }

    fn line(&mut self, id: usize, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else { return };
        let message = match self.protocol {
            Protocol::Chatd | Protocol::Web => {
                line.strip_prefix('<').and_then(|rest| rest.split_once("> ")).map(|(_, m)| m)
            }
            Protocol::Irc => line
                .split_once(" PRIVMSG ")
                .and_then(|(_, rest)| rest.split_once(" :"))
                .map(|(_, m)| m),
        };
        if let Some(message) = message {
            self.delivered(id, message);
            return;
        }
        if self.clients[id].admitted_at.is_some() {
            if self.protocol == Protocol::Irc && line.starts_with("PING") {
                let reply = line.replacen("PING", "PONG", 1);
                self.clients[id].out.extend_from_slice(format!("{reply}\r\n").as_bytes());
            }
            return;
        }
        if self.refuses_nick(id, line) {
            if self.nicks_in_use == 0 {
                eprintln!(
                    "chatd-bench: the nickname {} is in use; asking again every {} ms",
                    self.clients[id].nick,
                    NICK_RETRY.as_millis()
                );
            }
            self.nicks_in_use += 1;
            self.clients[id].nick_again_at = Some(Instant::now() + NICK_RETRY);
        }
        let nick = &self.clients[id].nick;
        let admitted = match self.protocol {
            Protocol::Chatd | Protocol::Web => line == format!("*** {nick} has joined lobby"),
            Protocol::Irc => {
                let code = line.split_whitespace().nth(1);
                if code == Some("001") {
                    let mut out = String::new();
                    if let Some((name, password)) =
                        self.oper.as_ref().and_then(|o| o.split_once(':'))
                    {
                        out.push_str(&format!("OPER {name} {password}\r\nMODE {nick} +F\r\n"));
                    }
                    out.push_str(&format!("JOIN {ROOM_IRC}\r\n"));
                    self.clients[id].out.extend_from_slice(out.as_bytes());
                }
                code == Some("366")
            }
        };
        if admitted {
            let client = &mut self.clients[id];
            client.admitted_at = Some(Instant::now());
            client.read_before_admission = String::new();
        } else {
            let seen = &mut self.clients[id].read_before_admission;
            if seen.len() < 1024 {
                seen.push_str(" | ");
                seen.push_str(line);
            }
        }
    }

    /// A benchmark message reached client `id`.
    fn delivered(&mut self, id: usize, message: &str) {
        let mut words = message.split(' ');
        if words.next() != Some("m") {
            return;
        }
        let number = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok());
        let (Some(sender), Some(seq), Some(sent_ns)) =
            (number(words.next()), number(words.next()), number(words.next()))
        else {
            return;
        };
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let client = &mut self.clients[id];
        if let Some(last) = client.last_seen.get_mut(sender as usize) {
            if seq <= *last {
                self.duplicates_or_late += 1;
            } else {
                if seq > *last + 1 {
                    self.gaps += 1;
                }
                *last = seq;
            }
        }
        if self.measuring {
            self.deliveries += 1;
            self.latencies_us.push(now_ns.saturating_sub(sent_ns) / 1000);
        }
        let key = (sender as u32, seq);
        if let Some(flight) = self.in_flight.get_mut(&key) {
            flight.remaining = flight.remaining.saturating_sub(1);
            if flight.remaining == 0 {
                self.in_flight.remove(&key);
                if let Some(pending) = self.pending.get_mut(sender as usize) {
                    *pending = pending.saturating_sub(1);
                }
                if self.measuring {
                    self.completed += 1;
                }
            }
        }
    }

    /// Sends one message from sender `s` (client `s`).
    fn send(&mut self, s: usize) {
        let seq = self.next_seq[s];
        self.next_seq[s] += 1;
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let text = format!("m {s} {seq} {now_ns}");
        match self.protocol {
            Protocol::Chatd => {
                self.clients[s].out.extend_from_slice(format!("{text}\r\n").as_bytes())
            }
            Protocol::Irc => self.clients[s]
                .out
                .extend_from_slice(format!("PRIVMSG {ROOM_IRC} :{text}\r\n").as_bytes()),
            Protocol::Web => web::frame(&mut self.clients[s].out, 1, text.as_bytes()),
        }
        self.in_flight.insert((s as u32, seq), InFlight { remaining: self.fanout });
        self.pending[s] += 1;
        if self.measuring {
            self.sent += 1;
        }
    }

    fn flush(&mut self, id: usize) -> io::Result<()> {
        let client = &mut self.clients[id];
        if !client.alive {
            return Ok(());
        }
        if let Some(session) = &mut client.tls {
            return tls::write(session, &mut client.stream, &mut client.out);
        }
        while !client.out.is_empty() {
            match client.stream.write(&client.out) {
                Ok(n) => {
                    client.out.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Connects every client (`batch` at a time) and waits until all are admitted.
    fn connect_all(
        &mut self,
        common: &Common,
        senders: usize,
        deadline: Duration,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let until = Instant::now() + deadline;
        while self.admitted() < common.clients {
            if self.disconnected > 0 {
                return Err(io::Error::other(
                    "the server disconnected clients while they registered",
                ));
            }
            let registering = self.clients.len() - self.admitted();
            for _ in registering..common.concurrency {
                let id = self.clients.len();
                if id < common.clients {
                    let receiver = id >= senders;
                    let addr = common.receive_addr.filter(|_| receiver).unwrap_or(common.addr);
                    self.open(addr, senders)?;
                }
            }
            self.turn(Duration::from_millis(5), &mut events)?;
            self.ask_nicks_again();
            if Instant::now() > until {
                let waiting = self.clients.iter().find(|c| c.admitted_at.is_none());
                let last = waiting.map_or(String::new(), |c| {
                    format!("; {} read {:?}", c.nick, c.read_before_admission)
                });
                return Err(io::Error::other(format!(
                    "only {} of {} clients admitted within {deadline:?}{last}",
                    self.admitted(),
                    common.clients
                )));
            }
        }
        Ok(())
    }

    /// Reads until nothing has arrived for 300 ms (at most 30 s): the announcements of the
    /// last logins have reached everyone, and the queues they filled have drained, before
    /// memory is measured or messages are sent.
    fn settle(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let until = Instant::now() + Duration::from_secs(30);
        let mut quiet_since = Instant::now();
        while Instant::now() < until && quiet_since.elapsed() < Duration::from_millis(300) {
            self.turn(Duration::from_millis(50), &mut events)?;
            if !events.is_empty() {
                quiet_since = Instant::now();
            }
        }
        Ok(())
    }

    /// Reads until the in-flight messages are delivered or `limit` passes.
    fn drain(&mut self, limit: Duration) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let until = Instant::now() + limit;
        while !self.in_flight.is_empty() && Instant::now() < until {
            self.turn(Duration::from_millis(10), &mut events)?;
        }
        Ok(())
    }
}

/// How long connecting may take: every login is announced to everyone already in the room,
/// so N logins cost about N^2/2 deliveries.
fn connect_deadline(clients: usize) -> Duration {
    let clients = clients as u64;
    Duration::from_secs(60 + clients * clients / 400_000)
}

/// Raises the soft limit on open files as far as needed (and allowed).
fn raise_open_files(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < wanted
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard);
    }
}

/// A forked child that only blocks in `read`: the smallest process a fork can make, for the
/// memory floor. Returns its pid and the pipe end that ends it when dropped.
fn minimal_process() -> Option<(i32, std::os::fd::OwnedFd)> {
    let (reader, writer) = nix::unistd::pipe().ok()?;
    // SAFETY: the load generator is single-threaded; the child only calls read and _exit.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            drop(writer);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&reader, &mut byte);
            // SAFETY: _exit is async-signal-safe and ends the child without running anything.
            unsafe { nix::libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => Some((child.as_raw(), writer)),
    }
}

fn server_figures(result: &mut Map<String, Value>, pid: Option<i32>, clients: usize) {
    let Some(pid) = pid else { return };
    let tree = measure::process_tree(pid);
    let pss: u64 = tree.iter().map(|&p| measure::pss_kib(p)).sum();
    put(result, "server_processes", tree.len());
    put(result, "pss_total_kib", pss);
    put(result, "pss_per_client_kib", pss as f64 / clients.max(1) as f64);
    // The session children alone (neither the master nor the broker): with one client, the
    // PSS of its one session process.
    let broker = measure::broker_of(pid, &tree);
    let sessions: Vec<i32> =
        tree.iter().copied().filter(|&p| p != pid && Some(p) != broker).collect();
    if !sessions.is_empty() {
        let session_pss: u64 = sessions.iter().map(|&p| measure::pss_kib(p)).sum();
        put(result, "pss_per_session_kib", session_pss as f64 / sessions.len() as f64);
    }
}

fn milliseconds(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn run(scenario: Scenario) -> io::Result<Map<String, Value>> {
    let floor = minimal_process();
    let mut result = Map::new();
    match scenario {
        Scenario::Report { .. } => return Err(io::Error::other("report is not a load scenario")),
        Scenario::Connect(common) => {
            put(&mut result, "scenario", format!("connect n={}", common.clients));
            let mut load = Load::connect(&common, 0)?;
            let start = Instant::now();
            load.connect_all(&common, 0, connect_deadline(common.clients))?;
            let took = start.elapsed().as_secs_f64();
            let mut times: Vec<u64> = load
                .clients
                .iter()
                .filter_map(|c| {
                    Some(c.admitted_at?.duration_since(c.connected_at).as_micros() as u64)
                })
                .collect();
            times.sort_unstable();
            put(&mut result, "admissions_per_second", common.clients as f64 / took);
            put(&mut result, "admission_p50_ms", milliseconds(measure::quantile(&times, 0.5)));
            put(&mut result, "admission_p99_ms", milliseconds(measure::quantile(&times, 0.99)));
            put(&mut result, "nicks_in_use", load.nicks_in_use);
            load.settle()?;
            server_figures(&mut result, common.pid, common.clients);
            finish(&mut result, &common, floor);
        }
        Scenario::Fanout { common, senders, window, seconds } => {
            let senders = senders.min(common.clients);
            put(
                &mut result,
                "scenario",
                format!("fanout n={} s={senders} w={window}", common.clients),
            );
            let mut load = Load::connect(&common, senders)?;
            load.connect_all(&common, senders, connect_deadline(common.clients))?;
            load.settle()?;
            let tree = common.pid.map(measure::process_tree).unwrap_or_default();
            let broker = common.pid.and_then(|root| measure::broker_of(root, &tree));
            let mut broker0 = 0.0;
            let mut events = Events::with_capacity(4096);
            let warm_up = Instant::now() + Duration::from_secs(1);
            let mut window_start = None;
            let end = warm_up + Duration::from_secs_f64(seconds);
            let (mut cpu0, mut own0, mut machine0) = (0.0, 0.0, 0.0);
            while Instant::now() < end {
                if window_start.is_none() && Instant::now() >= warm_up {
                    load.measuring = true;
                    window_start = Some(Instant::now());
                    cpu0 = measure::cpu_seconds(&tree);
                    own0 = measure::own_cpu_seconds();
                    machine0 = measure::machine_busy_seconds();
                    broker0 = broker.map_or(0.0, measure::process_cpu_seconds);
                }
                for s in 0..senders {
                    while load.clients[s].alive && load.pending[s] < window {
                        load.send(s);
                    }
                    if let Err(err) = load.flush(s) {
                        load.lose(s, &err);
                    }
                }
                load.turn(Duration::from_millis(5), &mut events)?;
            }
            load.measuring = false;
            let elapsed = window_start.map_or(0.0, |start| start.elapsed().as_secs_f64());
            let server_cpu = measure::cpu_seconds(&tree) - cpu0;
            let own_cpu = measure::own_cpu_seconds() - own0;
            let machine = measure::machine_busy_seconds() - machine0;
            let broker_cpu = broker.map(|pid| measure::process_cpu_seconds(pid) - broker0);
            load.drain(Duration::from_secs(5))?;
            server_figures(&mut result, common.pid, common.clients);
            rates(&mut result, &mut load, elapsed);
            if load.deliveries > 0 {
                let others = (machine - own_cpu).max(0.0);
                put(
                    &mut result,
                    "machine_cpu_per_delivery_us",
                    others / load.deliveries as f64 * 1e6,
                );
                put(&mut result, "machine_cpu_percent", machine / elapsed.max(1e-9) * 100.0);
            }
            if load.deliveries > 0 && !tree.is_empty() {
                put(
                    &mut result,
                    "server_cpu_per_delivery_us",
                    server_cpu / load.deliveries as f64 * 1e6,
                );
            }
            // The broker's work per line, whatever the room's size: flat if each line is
            // published once, growing with N if the broker writes to every member.
            if let Some(broker_cpu) = broker_cpu
                && load.sent > 0
            {
                put(&mut result, "broker_cpu_per_message_us", broker_cpu / load.sent as f64 * 1e6);
            }
            put(&mut result, "server_cpu_percent", server_cpu / elapsed.max(1e-9) * 100.0);
            put(&mut result, "generator_cpu_percent", own_cpu / elapsed.max(1e-9) * 100.0);
            finish(&mut result, &common, floor);
        }
        Scenario::Rate { common, senders, rate, seconds } => {
            let senders = senders.min(common.clients).max(1);
            put(&mut result, "scenario", format!("rate n={} r={rate}", common.clients));
            let mut load = Load::connect(&common, senders)?;
            load.connect_all(&common, senders, connect_deadline(common.clients))?;
            let mut events = Events::with_capacity(4096);
            load.measuring = true;
            let own0 = measure::own_cpu_seconds();
            let start = Instant::now();
            let mut due = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                let should = (start.elapsed().as_secs_f64() * rate) as u64;
                while due < should {
                    let s = (due % senders as u64) as usize;
                    due += 1;
                    if !load.clients[s].alive {
                        continue;
                    }
                    load.send(s);
                    if let Err(err) = load.flush(s) {
                        load.lose(s, &err);
                    }
                }
                load.turn(Duration::from_millis(1), &mut events)?;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let own_cpu = measure::own_cpu_seconds() - own0;
            load.drain(Duration::from_secs(5))?;
            load.measuring = false;
            rates(&mut result, &mut load, elapsed);
            put(&mut result, "generator_cpu_percent", own_cpu / elapsed.max(1e-9) * 100.0);
            finish(&mut result, &common, floor);
        }
    }
    Ok(result)
}

fn rates(result: &mut Map<String, Value>, load: &mut Load, elapsed: f64) {
    load.latencies_us.sort_unstable();
    let lat = &load.latencies_us;
    put(result, "seconds", elapsed);
    put(result, "messages_sent", load.sent);
    put(result, "messages_per_second", load.completed as f64 / elapsed.max(1e-9));
    put(result, "deliveries_per_second", load.deliveries as f64 / elapsed.max(1e-9));
    put(result, "latency_p50_ms", milliseconds(measure::quantile(lat, 0.5)));
    put(result, "latency_p90_ms", milliseconds(measure::quantile(lat, 0.9)));
    put(result, "latency_p99_ms", milliseconds(measure::quantile(lat, 0.99)));
    put(result, "latency_max_ms", milliseconds(lat.last().copied().unwrap_or(0)));
    let lost: u64 = load.in_flight.values().map(|f| u64::from(f.remaining)).sum();
    put(result, "lost", lost);
    put(result, "duplicates_or_late", load.duplicates_or_late);
    put(result, "gaps", load.gaps);
    put(result, "disconnected", load.disconnected);
    put(result, "nicks_in_use", load.nicks_in_use);
}

fn finish(
    result: &mut Map<String, Value>,
    common: &Common,
    floor: Option<(i32, std::os::fd::OwnedFd)>,
) {
    put(result, "server", common.server.clone());
    put(result, "clients", common.clients);
    if let Some((pid, _end)) = &floor {
        put(result, "floor_pss_kib", measure::pss_kib(*pid));
    }
    if let Some((pid, end)) = floor {
        drop(end);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Scenario::Report { files, ours, theirs, floor } = &cli.scenario {
        let mut lines = Vec::new();
        for file in files {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(err) => {
                    eprintln!("chatd-bench: {}: {err}", file.display());
                    return std::process::ExitCode::from(2);
                }
            };
            lines.extend(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()));
        }
        let compared: Vec<&str> = floor.iter().chain([theirs]).map(String::as_str).collect();
        print!("{}", measure::report(&lines, ours, &compared));
        return std::process::ExitCode::SUCCESS;
    }
    let json_file = match &cli.scenario {
        Scenario::Connect(c)
        | Scenario::Fanout { common: c, .. }
        | Scenario::Rate { common: c, .. } => c.json.clone(),
        Scenario::Report { .. } => None,
    };
    match run(cli.scenario) {
        Ok(result) => {
            let line = Value::Object(result).to_string();
            println!("{line}");
            if let Some(path) = json_file {
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "{line}"));
                if let Err(err) = appended {
                    eprintln!("chatd-bench: {}: {err}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("chatd-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
