//! The master process: listeners, the accept loop, one forked session child per connection,
//! the broker's life, signals and reaping.
//!
//! It owns every child's pid and nothing of what children do: it never reads or writes a
//! client's bytes after handing the connection to a child, and never sees chat. It runs one
//! mio poller over the TCP listeners and signal-hook's signal source, and it never starts a
//! thread, so that `fork` copies a single-threaded process.
//!
//! Lifecycle:
//! - start: bind listeners and `broker.sock`, fork the broker, then accept;
//! - each connection: fork; the child closes every inherited descriptor but the connection and
//!   the log socket and runs the session role ([`Roles`]); the master closes its copy of the
//!   connection;
//! - SIGCHLD: reap every child; a broker that dies is restarted with back-off;
//! - SIGTERM/SIGINT (or `Stop` from the broker, for `chatctl shutdown`): stop accepting,
//!   SIGTERM the broker then SIGUSR1 every session (sessions tell their clients; a session's
//!   SIGTERM means an operator's `kill PID`), wait up to [`SHUTDOWN_GRACE`], SIGKILL what is
//!   left, remove `broker.sock`, exit 0. A second SIGTERM/SIGINT, or SIGQUIT, kills
//!   everything at once.
//! - the link: a socket pair created before forking the broker (so that no other process can
//!   be the master to it), which starts with `MasterHello`; every second the master sends its
//!   figures over it (for `chatctl status`), it vouches for each session it forks (the child's
//!   identity and its client's address, so that the broker believes no session's own word),
//!   and it receives `Reload` and `Stop` from operators. An adopted broker, or one whose link
//!   broke, is linked through `broker.sock` instead, which a broker allows only while it has no
//!   master. Address bans are read from the state file ([`BanFile`]) at accept.
//!
//! This file holds start-up ([`run`]), the loop and its timers, accept and admission, and
//! shutdown. The rest has a file each: `children` (fork, a fresh child, reaping, what a
//! child's death changes), `supervision` (the restart, crash-loop and watchdog arithmetic,
//! pure), `repair` (re-creating a removed `broker.sock`), `settings` (reload, descriptor
//! limit), [`listen`], [`privileges`] and [`admission`]. The master names no other role: what
//! its children run comes from the composition root as [`Roles`] (filled in by `modes`).

pub mod admission;
mod children;
mod fdstore;
mod link;
pub mod listen;
pub mod privileges;
mod repair;
mod settings;
mod supervision;
pub mod tls;
mod upgrade;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::{TcpListener, TcpStream, UnixDatagram};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::channel::MasterToBroker;
use crate::clock::unix_now;
use crate::config::{Config, ConfigSource};
use crate::logging;
use crate::logging::{FailureEpisode, LogThrottle};
use crate::moderation::BanFile;
use crate::proto::control::MasterFigures;
use crate::sys;
use admission::Admission;
use children::SessionChild;
pub use children::{
    BrokerStart, BrokerStartError, Roles, SessionStart, WebStart, session_address_space,
};
use listen::{BrokerSocket, ListenError, ListenerKind};
use privileges::PrivilegeError;
use supervision::{BrokerChild, CrashLoop, Watchdog};
use tls::{TlsError, TlsIdentity};

/// How long children get to finish after SIGTERM before they are killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long to stop accepting after `accept` or `fork` fails for lack of resources.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often a refusal or resource error of one kind is logged; the rest are summarised.
const LOG_WINDOW: Duration = Duration::from_secs(5);

const SIGNALS: Token = Token(usize::MAX);
const ADMISSIONS: Token = Token(usize::MAX - 1);
const LINK: Token = Token(usize::MAX - 2);

/// How often the master looks whether a broker it is replacing has left.
const REPLACEMENT_POLL: Duration = Duration::from_millis(20);

/// How often the master sends its figures to the broker (and retries a lost link).
const FIGURES_INTERVAL: Duration = Duration::from_secs(1);

/// Why the master could not start or run, by step.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("pid file {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("cannot become a daemon: {0}")]
    Daemonize(io::Error),
    #[error("cannot set up the event loop: {0}")]
    EventLoop(io::Error),
    #[error("cannot detach from the terminal: {0}")]
    Detach(io::Error),
    #[error("cannot start the broker: {0}")]
    Broker(BrokerStartError),
    #[error("cannot read a listener's address: {0}")]
    ListenerAddress(io::Error),
    #[error("waiting for events failed: {0}")]
    Wait(io::Error),
    #[error("cannot read the descriptor limit (RLIMIT_NOFILE): {0}")]
    DescriptorLimit(nix::Error),
    #[error(
        "the descriptor limit (RLIMIT_NOFILE) is {hard}, too low to serve anyone: the broker \
         needs {spare} of its own and one per client; raise it (LimitNOFILE= in the unit, \
         `ulimit -n`)"
    )]
    TooFewDescriptors { hard: u64, spare: u64 },
    #[error(
        "the broker cannot work with these settings (its error is logged above); chatd stopped"
    )]
    BrokerUnusable,
    #[error("upgrade: {0}; the broker and the sessions carry on until a new chatd adopts them")]
    HandOver(#[from] upgrade::HandOverError),
}

/// Running in the background (`--daemon`), for inits without systemd.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// Where to write the master's pid (removed at exit).
    pub pid_file: Option<PathBuf>,
}

struct Shutdown {
    /// When the remaining children get SIGKILL.
    kill_at: Instant,
    killed: bool,
}

struct Master {
    poll: Poll,
    /// chatd switched from root to a service user: the broker makes that user no operator.
    service_user: bool,
    /// Each listener with what its clients speak; a listener's index is its token.
    listeners: Vec<(TcpListener, ListenerKind)>,
    /// The certificate TLS listeners present (`None` without TLS listeners); replaced on
    /// reload, so that new connections get the new one and open ones keep theirs.
    tls: Option<TlsIdentity>,
    signals: Signals,
    /// The listening `broker.sock` and `control.sock`, kept so that a restarted broker serves
    /// the same sockets (`None` while an adopted broker owns them).
    broker_listener: Option<(UnixListener, UnixListener)>,
    broker_socket: PathBuf,
    broker: BrokerChild,
    sessions: HashMap<Pid, SessionChild>,
    admission: Admission,
    /// The link to the broker (see the module documentation); `None` while there is none.
    link: Option<MasterToBroker>,
    next_figures_at: Instant,
    /// What the master counts for operators (`connections` and `refusals` are filled in when
    /// sent), and the refusals by reason.
    figures: MasterFigures,
    refusals: BTreeMap<String, u64>,
    /// Address bans, read from the state file the broker writes.
    bans: BanFile,
    /// The settings in force, and where to read them again on SIGHUP.
    config: Config,
    source: ConfigSource,
    /// Sessions report here (their pid, once) when their client has chosen a nickname.
    admissions: UnixDatagram,
    /// The end the sessions write to; each child keeps it open.
    admission_reporter: StdUnixDatagram,
    throttle: LogThrottle,
    /// `accept`/`fork` failing for lack of resources: logged once per episode, however often
    /// the listener is ready meanwhile.
    resource_trouble: FailureEpisode,
    crash_loop: CrashLoop,
    /// Why `broker.sock` is gone and cannot be bound again (a removed runtime directory the
    /// master, no longer root, may not re-create); `None` while it is in place. Logged once
    /// per reason; new clients are refused before fork meanwhile.
    runtime_lost: Option<String>,
    accept_paused_until: Option<Instant>,
    shutdown: Option<Shutdown>,
    /// The broker exited saying its settings cannot work: the daemon stops, and fails.
    broker_unusable: bool,
    /// systemd's watchdog, when `WatchdogSec` is set.
    watchdog: Option<Watchdog>,
    /// What the children run.
    roles: Roles,
    /// How many images this pid has run (1 at start, one more per in-place upgrade).
    generation: u32,
    /// The binary an upgrade executes by default: the one the master was first started from.
    binary: PathBuf,
    /// An accepted upgrade, executed once its answer is written (`upgrade`).
    upgrade_due: Option<PathBuf>,
    /// An adopted broker's link closed: its pid, and when a broker still running is taken for
    /// one that refused this master (`children::check_adopted_link`).
    adopted_link_closed: Option<(Pid, Instant)>,
}

/// Runs the daemon in the foreground until it is told to stop.
///
/// With `background`, the master becomes a SysV daemon once its sockets are bound (so that
/// binding errors still reach the terminal), writes its pid file, and lets the starting process
/// exit when it is ready to serve.
pub fn run(
    config: &Config,
    source: ConfigSource,
    background: Option<Background>,
    roles: Roles,
) -> Result<(), MasterError> {
    // Before anything secret is read (the TLS key): the master is not dumpable, and nor is any
    // child it forks. Only root can then trace it or read its memory.
    if let Err(err) = sys::forbid_dumps() {
        warn!("cannot make the master undumpable: {err}");
    }
    let mut fitted = config.clone();
    settings::fit_clients_to_descriptors(&mut fitted.admission)?;
    let config = &fitted;
    // SAFETY: `run` is the master's start-up, called once, before it forks anything; the
    // master never starts a thread, and nothing else owns the descriptors a predecessor handed.
    let (start, handed) = match unsafe { upgrade::take_handed_state() }? {
        Some((sockets, handed)) => {
            let broker_socket = config.runtime_dir.join(listen::BROKER_SOCKET);
            let start = Start { sockets, adopted: None, broker_socket, ready_channel: None };
            (start, Some(handed))
        }
        None => (fresh_start(config, background.as_ref())?, None),
    };
    let Start { sockets, adopted, broker_socket, ready_channel } = start;
    let upgrade::HandedSockets {
        listeners,
        broker_sockets: broker_listener,
        admissions,
        service_user,
        tls,
    } = sockets;
    let poll = Poll::new().map_err(MasterError::EventLoop)?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGCHLD, SIGHUP, SIGQUIT, SIGUSR2])
        .map_err(MasterError::EventLoop)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(MasterError::EventLoop)?;
    if handed.is_some() {
        // The predecessor blocked every signal across `execve`; those that came meanwhile are
        // pending and are read now.
        sys::unblock_all_signals().map_err(MasterError::EventLoop)?;
    }
    let mut mio_listeners = Vec::new();
    for (index, (listener, kind)) in listeners.into_iter().enumerate() {
        listener.set_nonblocking(true).map_err(MasterError::EventLoop)?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, Token(index), Interest::READABLE)
            .map_err(MasterError::EventLoop)?;
        mio_listeners.push((listener, kind));
    }
    let (admissions, reporter) = admissions;
    admissions.set_nonblocking(true).map_err(MasterError::EventLoop)?;
    reporter.set_nonblocking(true).map_err(MasterError::EventLoop)?;
    let mut admissions = UnixDatagram::from_std(admissions);
    poll.registry()
        .register(&mut admissions, ADMISSIONS, Interest::READABLE)
        .map_err(MasterError::EventLoop)?;
    let tls_status = tls.as_ref().map(|identity| identity.status.clone());
    // Sessions name the first TLS listener's port to plain clients (greeting, passwords).
    let mut config = config.clone();
    config.session.tls_port = mio_listeners
        .iter()
        .filter(|(_, kind)| *kind == ListenerKind::Tls)
        .find_map(|(listener, _)| listener.local_addr().ok())
        .map(|addr| addr.port());
    // And a browser on the telnet port to the web client.
    config.session.web_port = mio_listeners
        .iter()
        .filter(|(_, kind)| *kind == ListenerKind::Web)
        .find_map(|(listener, _)| listener.local_addr().ok())
        .map(|addr| addr.port());
    let config = &config;
    let mut master = Master {
        poll,
        service_user,
        listeners: mio_listeners,
        tls,
        signals,
        broker_listener,
        broker_socket,
        broker: BrokerChild::new(adopted.as_ref().map(|(_, pid)| *pid), Instant::now()),
        sessions: HashMap::new(),
        admission: Admission::new(config.admission.clone()),
        link: None,
        next_figures_at: Instant::now(),
        figures: MasterFigures {
            pid: std::process::id(),
            started_at: unix_now(),
            tls: tls_status,
            ..MasterFigures::default()
        },
        refusals: BTreeMap::new(),
        bans: BanFile::new(&config.state_dir),
        config: config.clone(),
        source,
        admissions,
        admission_reporter: reporter,
        throttle: LogThrottle::new(LOG_WINDOW),
        resource_trouble: FailureEpisode::new(LOG_WINDOW),
        crash_loop: CrashLoop::default(),
        runtime_lost: None,
        accept_paused_until: None,
        shutdown: None,
        broker_unusable: false,
        watchdog: None,
        roles,
        generation: 1,
        // The installed path, resolved now: after a package upgrade replaced the file,
        // /proc/self/exe names the deleted old one.
        binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/chatd")),
        upgrade_due: None,
        adopted_link_closed: None,
    };
    master.watchdog =
        sd_notify::watchdog_enabled().map(|interval| Watchdog::new(interval, Instant::now()));
    match handed {
        Some(handed) => master.take_over(handed),
        None => master.first_start(background.is_some(), adopted, ready_channel)?,
    }
    let result = master.event_loop();
    if let Some(pid_file) = background.as_ref().and_then(|b| b.pid_file.as_ref()) {
        let _ = std::fs::remove_file(pid_file);
    }
    let _ = std::fs::remove_file(&master.broker_socket);
    let _ = std::fs::remove_file(master.config.runtime_dir.join(listen::CONTROL_SOCKET));
    let _ = std::fs::remove_file(master.config.runtime_dir.join("broker.pid"));
    result
}

/// What the master starts with: its sockets (bound now, or handed over by an upgrading
/// predecessor), an orphaned broker to adopt, and the `--daemon` readiness channel.
struct Start {
    sockets: upgrade::HandedSockets,
    adopted: Option<(std::os::unix::net::UnixStream, Pid)>,
    broker_socket: PathBuf,
    ready_channel: Option<std::os::unix::net::UnixStream>,
}

/// A first start (not an upgrade): binds the listeners (or takes systemd's) and
/// `broker.sock`, becomes a daemon if asked, reads the TLS key and drops privileges.
fn fresh_start(config: &Config, background: Option<&Background>) -> Result<Start, MasterError> {
    let run_as = privileges::resolve(config.user.as_deref(), config.user_is_default)?;
    privileges::check_directories(&config.runtime_dir, &config.state_dir, run_as.as_ref())?;
    // SAFETY: called once from `run`, before the master forks anything; the master never
    // starts a thread, and nothing else reads LISTEN_FDS or owns those descriptors.
    let listeners = match unsafe { listen::from_systemd() }? {
        Some(listeners) => {
            info!("using {} listening socket(s) from systemd", listeners.len());
            listeners
        }
        None => {
            let plain = listen::bind_all(&config.listen, config.listen_is_default)?;
            let mut listeners: Vec<_> =
                plain.into_iter().map(|listener| (listener, ListenerKind::Plain)).collect();
            if !config.tls_listen.is_empty() {
                let tls = listen::bind_all(&config.tls_listen, config.tls_listen_is_default)?;
                listeners.extend(tls.into_iter().map(|listener| (listener, ListenerKind::Tls)));
            }
            if !config.web_listen.is_empty() {
                let web = listen::bind_all(&config.web_listen, config.web_listen_is_default)?;
                listeners.extend(web.into_iter().map(|listener| (listener, ListenerKind::Web)));
            }
            fdstore::store(&listeners);
            listeners
        }
    };
    let (broker_socket_state, broker_socket) = listen::bind_broker_socket(&config.runtime_dir)?;
    let mut ready_channel = None;
    if let Some(background) = background {
        // SAFETY: the master is single-threaded: `main` starts no thread before the mode runs
        // and the master never starts one.
        ready_channel = Some(unsafe { sys::daemonize() }.map_err(MasterError::Daemonize)?);
        logging::reopen_after_fork();
        if let Some(pid_file) = &background.pid_file {
            std::fs::write(pid_file, format!("{}\n", std::process::id()))
                .map_err(|source| MasterError::PidFile { path: pid_file.clone(), source })?;
        }
    }
    privileges::prepare_state_dir(&config.state_dir, run_as.as_ref());
    // Again now that both exist: a directory someone made between the first check and its
    // creation (which accepts one that exists) is theirs, not ours, and is refused.
    privileges::check_directories(&config.runtime_dir, &config.state_dir, run_as.as_ref())?;
    // The key is read (or made) while the master may still read what only root may.
    let speaks_tls = |kind: ListenerKind| match kind {
        ListenerKind::Tls => true,
        ListenerKind::Web => config.web_tls,
        ListenerKind::Plain => false,
    };
    let tls = match listeners.iter().any(|(_, kind)| speaks_tls(*kind)) {
        true => Some(tls::load(config, run_as.as_ref())?),
        false => None,
    };
    let service_user = run_as.is_some();
    if let Some(run_as) = run_as {
        privileges::drop_to(&run_as, &config.runtime_dir, &broker_socket)?;
    }
    let (broker_sockets, adopted) = match broker_socket_state {
        BrokerSocket::Bound(listener) => {
            (Some((listener, listen::bind_control_socket(&config.runtime_dir)?)), None)
        }
        BrokerSocket::Orphaned { watch, pid } => {
            info!("adopting broker pid {pid}, whose master is gone; its sessions keep chatting");
            (None, Some((watch, Pid::from_raw(pid))))
        }
    };
    let admissions = StdUnixDatagram::pair().map_err(MasterError::EventLoop)?;
    let (reporter, receiver) = admissions;
    let sockets = upgrade::HandedSockets {
        listeners,
        broker_sockets,
        admissions: (receiver, reporter),
        service_user,
        tls,
    };
    Ok(Start { sockets, adopted, broker_socket, ready_channel })
}

impl Master {
    /// The rest of a first start, once the loop exists: the broker (started, or the orphan
    /// adopted), the start-up lines, and readiness.
    fn first_start(
        &mut self,
        background: bool,
        adopted: Option<(std::os::unix::net::UnixStream, Pid)>,
        ready_channel: Option<std::os::unix::net::UnixStream>,
    ) -> Result<(), MasterError> {
        if background {
            // Nothing below reports to the terminal any more; children must not hold it either
            // (the starting process's caller waits for it to close).
            sys::detach_stderr().map_err(MasterError::Detach)?;
        }
        // Once, as the user sessions run as, before the first is forked.
        crate::sandbox::check_at_start();
        match adopted {
            None => self.start_broker().map_err(MasterError::Broker)?,
            // The connection that found the orphaned broker becomes the link.
            Some((watch, _)) => self.open_link(watch),
        }
        if let Some(identity) = &self.tls {
            identity.log();
        }
        for (listener, kind) in &self.listeners {
            let addr = listener.local_addr().map_err(MasterError::ListenerAddress)?;
            match kind {
                ListenerKind::Plain => info!("listening on {addr}"),
                ListenerKind::Tls => info!("listening for TLS on {addr}"),
                ListenerKind::Web => info!("listening for web browsers on {addr}"),
            }
        }
        log_control_socket(&self.config.runtime_dir);
        // Under systemd (Type=notify): started, and, if a watchdog is set, alive.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        // Started with --daemon: the starting process may exit now.
        if let Some(mut ready) = ready_channel {
            let _ = ready.write_all(b"!");
        }
        Ok(())
    }

    fn event_loop(&mut self) -> Result<(), MasterError> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout =
                self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            sys::wait(&mut self.poll, &mut events, timeout).map_err(MasterError::Wait)?;
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.handle_signals(),
                    ADMISSIONS => self.read_admissions(),
                    LINK => self.serve_link(),
                    Token(index) => self.accept_from(index),
                }
            }
            self.reap();
            self.run_timers();
            self.execute_due_upgrade();
            if let Some(shutdown) = &self.shutdown {
                if self.sessions.is_empty() && self.broker.pid.is_none() {
                    info!("all children gone; exiting");
                    if self.broker_unusable {
                        return Err(MasterError::BrokerUnusable);
                    }
                    return Ok(());
                }
                if shutdown.killed && Instant::now() >= shutdown.kill_at + SHUTDOWN_GRACE {
                    error!("children survived SIGKILL; exiting anyway");
                    return Ok(());
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let shutdown = self
            .shutdown
            .as_ref()
            .map(|s| if s.killed { s.kill_at + SHUTDOWN_GRACE } else { s.kill_at });
        let watchdog = self.watchdog.as_ref().map(Watchdog::next);
        [
            shutdown,
            self.accept_paused_until,
            self.broker.restart_at(),
            // An adopted broker being replaced is not our child: nothing wakes us when it ends.
            self.broker.replacing().map(|_| Instant::now() + REPLACEMENT_POLL),
            self.adopted_link_closed.map(|_| Instant::now() + REPLACEMENT_POLL),
            Some(self.next_figures_at),
            self.throttle.next_due(),
            self.resource_trouble.due(),
            watchdog,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT if self.shutdown.is_none() => self.shutdown_on_signal(signal),
                SIGTERM | SIGINT | SIGQUIT => self.kill_everything("told again to stop"),
                SIGHUP => {
                    let _ = self.reload();
                }
                SIGUSR2 => self.upgrade_on_signal(),
                _ => {} // SIGCHLD: reaping happens after every wake-up.
            }
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        if now >= self.next_figures_at {
            self.next_figures_at = now + FIGURES_INTERVAL;
            self.send_figures();
            // A runtime directory that could not be repaired is tried again at this pace
            // (noticing one is the crash loop's job: sessions fail on it first).
            if self.shutdown.is_none() && self.runtime_lost.is_some() {
                self.check_broker_socket();
            }
        }
        if self.watchdog.as_mut().is_some_and(|watchdog| watchdog.due(now)) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        for (kind, count) in self.throttle.summaries(now) {
            info!(
                target: logging::NOTICE,
                "{count} more refused connections ({kind}) in the last {} s",
                self.throttle.window().as_secs()
            );
        }
        if let Some(failures) = self.resource_trouble.ended(now) {
            info!("accepting again after {failures} failed attempts");
        }
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_paused_until = None;
            // Edge-triggered listeners do not report connections that waited during the pause.
            for index in 0..self.listeners.len() {
                self.accept_from(index);
            }
        }
        self.check_replacement(now);
        self.check_adopted_link(now);
        if self.shutdown.is_none()
            && self.broker.take_due_restart(now)
            && let Err(err) = self.start_broker()
        {
            error!("cannot restart the broker: {err}");
            self.schedule_broker_restart();
        }
        if let Some(shutdown) = &self.shutdown
            && !shutdown.killed
            && now >= shutdown.kill_at
        {
            self.kill_everything("shutdown grace time is over");
        }
    }

    fn accept_from(&mut self, index: usize) {
        while self.shutdown.is_none() && self.accept_paused_until.is_none() {
            let Some((listener, kind)) = self.listeners.get(index) else {
                return;
            };
            let kind = *kind;
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, kind),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(err) => self.resource_trouble(&format!("accept failed: {err}")),
            }
        }
    }

    /// Out of descriptors or processes: log the first failure of the episode only, and stop
    /// accepting for a moment so that established sessions keep the machine's attention.
    fn resource_trouble(&mut self, what: &str) {
        if self.resource_trouble.failed(Instant::now()) {
            error!(
                "{what}; pausing accept for {} ms at a time until it recovers",
                ACCEPT_PAUSE.as_millis()
            );
        }
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
    }

    /// A session was forked. The trouble is over (and logged so) once none came back for a
    /// while: a descriptor freed for a moment does not make a line of its own.
    fn resource_recovered(&mut self) {
        if let Some(failures) = self.resource_trouble.succeeded(Instant::now()) {
            info!("accepting again after {failures} failed attempts");
        }
    }

    /// Applies the admission limits to a new connection: a refused client gets one line and
    /// the connection closes, before any fork.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, kind: ListenerKind) {
        let mut stream = Refusable { stream, speaks: Refusable::speech(kind, self.config.web_tls) };
        // Admissions reported before this connection arrived must count.
        self.read_admissions();
        let now = Instant::now();
        let (ban, trouble) = self.bans.check(peer.ip());
        if let Some(err) = trouble
            && self.throttle.allow("state file", now)
        {
            error!("{err}; enforcing the bans read before");
        }
        if let Some(ban) = ban {
            let reason = ban.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            stream
                .refuse(Refused::Banned, &format!("*** You are banned from this server{reason}."));
            *self.refusals.entry("banned".into()).or_default() += 1;
            if self.throttle.allow("banned", now) {
                info!(target: logging::NOTICE, "refused {peer}: banned ({})", ban.target);
            }
            return;
        }
        if self.runtime_lost.is_some() {
            // A session could not reach the broker: say so now rather than fork one to fail.
            stream.refuse(
                Refused::Unavailable,
                "*** The chat service is unavailable; please try again later.",
            );
            *self.refusals.entry("unavailable".into()).or_default() += 1;
            if self.throttle.allow("unavailable", now) {
                info!(target: logging::NOTICE, "refused {peer}: broker.sock is missing");
            }
            return;
        }
        // A trusted proxy's web connections are counted by their clients' own addresses once
        // the session reports them (`children::forwarded`): at accept, only the totals apply.
        let proxied = kind == ListenerKind::Web
            && admission::is_trusted_proxy(&self.config.trusted_proxies, peer.ip());
        let decision = match proxied {
            true => self.admission.check_proxied(now),
            false => self.admission.check(peer.ip(), now),
        };
        match decision {
            Ok(()) => self.spawn_session(stream.stream, peer, kind),
            Err(refusal) => {
                stream.refuse(Refused::Unavailable, &refusal.message());
                *self.refusals.entry(refusal.key().into()).or_default() += 1;
                if self.throttle.allow(refusal.reason(), now) {
                    info!(target: logging::NOTICE, "refused {peer}: {}", refusal.reason());
                }
                self.log_sentence(peer, now);
            }
        }
    }

    pub(super) fn log_sentence(&self, peer: SocketAddr, now: Instant) {
        if let Some(sentence) = self.admission.sentence(peer.ip(), now) {
            info!(
                target: logging::NOTICE,
                "source {} refused for {} s after repeated trips",
                admission::Source::of(peer.ip()),
                sentence.as_secs()
            );
        }
    }

    pub(super) fn shutdown_on_signal(&mut self, signal: i32) {
        let name = Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.to_string());
        info!("received {name}; shutting down");
        self.begin_shutdown();
    }

    /// Stops accepting and asks every child to end; the loop ends once they have.
    pub(super) fn begin_shutdown(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        for (mut listener, _) in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // The broker first, so that it does not announce the departures the shutdown causes.
        self.signal_children(Signal::SIGTERM);
        self.shutdown = Some(Shutdown { kill_at: Instant::now() + SHUTDOWN_GRACE, killed: false });
    }

    fn kill_everything(&mut self, why: &str) {
        warn!(
            "{why}: killing {} remaining children",
            self.sessions.len() + usize::from(self.broker.pid.is_some())
        );
        self.listeners.clear();
        self.signal_children(Signal::SIGKILL);
        self.shutdown = Some(Shutdown { kill_at: Instant::now(), killed: true });
    }

    /// Signals the broker, then every session. For a shutdown (SIGTERM), sessions get
    /// SIGUSR1 instead: their SIGTERM means an operator removed that one client.
    fn signal_children(&self, signal: Signal) {
        if let Some(pid) = self.broker.pid {
            let _ = kill(pid, signal);
        }
        let for_sessions = if signal == Signal::SIGTERM { Signal::SIGUSR1 } else { signal };
        for &pid in self.sessions.keys() {
            let _ = kill(pid, for_sessions);
        }
    }
}

/// A connection refused before fork, told why in its own protocol: a telnet line to a plain
/// client, a minimal HTTP answer to a web one. A TLS client (a TLS listener, or a web one with
/// `web_tls`) would take clear text for a broken handshake: its connection is just closed.
pub(super) struct Refusable {
    pub(super) stream: TcpStream,
    pub(super) speaks: Speech,
}

/// How a refused client is told (see [`Refusable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Speech {
    Telnet,
    Http,
    Nothing,
}

/// What kind of refusal, for the HTTP status a web client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// An address ban: `403 Forbidden`.
    Banned,
    /// A limit, a penalty, a missing broker, a failed fork: `503 Service Unavailable` (the
    /// client may try again later).
    Unavailable,
}

/// The most a refused client's request is read before the answer (see [`Refusable::refuse`]).
const REFUSED_REQUEST_DRAIN: usize = 8192;

impl Refusable {
    /// How a client of a `kind` listener is told of a refusal.
    pub(super) fn speech(kind: ListenerKind, web_tls: bool) -> Speech {
        match kind {
            ListenerKind::Plain => Speech::Telnet,
            ListenerKind::Web if !web_tls => Speech::Http,
            ListenerKind::Web | ListenerKind::Tls => Speech::Nothing,
        }
    }

    /// Tells the client `line` (a telnet `*** ...` line) in its protocol, in one non-blocking
    /// write that a fresh socket's buffer takes whole. An HTTP client's request, as far as it
    /// has arrived, is read first: a socket closed with unread bytes sends a reset, after which
    /// a browser shows a network error instead of the answer.
    pub(super) fn refuse(&mut self, refused: Refused, line: &str) {
        let answer = match self.speaks {
            Speech::Telnet => format!("{line}\r\n").into_bytes(),
            Speech::Http => {
                let mut scratch = [0u8; 1024];
                let mut drained = 0;
                while drained < REFUSED_REQUEST_DRAIN {
                    match io::Read::read(&mut self.stream, &mut scratch) {
                        Ok(0) | Err(_) => break,
                        Ok(len) => drained += len,
                    }
                }
                http_refusal(refused, line)
            }
            Speech::Nothing => return,
        };
        let _ = self.stream.write(&answer);
        // FIN after the answer, so that the client reads it to its end.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The whole HTTP answer a refused web client gets: the status, then the telnet line without
/// its `*** ` as a short text body.
pub(super) fn http_refusal(refused: Refused, line: &str) -> Vec<u8> {
    let status = match refused {
        Refused::Banned => "403 Forbidden",
        Refused::Unavailable => "503 Service Unavailable",
    };
    let body = format!("{}\n", line.strip_prefix("*** ").unwrap_or(line));
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Says where operators reach the daemon, and how, when it is not the system's default place.
fn log_control_socket(runtime_dir: &std::path::Path) {
    let socket = runtime_dir.join(listen::CONTROL_SOCKET);
    if runtime_dir == std::path::Path::new("/run/chatd") {
        info!("operators: chatctl, through {}", socket.display());
    } else {
        info!(
            "operators: chatctl --runtime-dir {}, through {}",
            runtime_dir.display(),
            socket.display()
        );
    }
}
