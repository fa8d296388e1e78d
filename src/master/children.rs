//! The master's children: forking a session per connection and the broker, turning a fresh
//! child into its role, reaping, and what a child's life or death changes (the admission
//! counts, the crash loop, the broker's restart).
//!
//! It owns the pids and the moment of `fork`. It must not know what a role does: the roles'
//! entry points come from the composition root ([`Roles`], filled in by `modes`), so nothing
//! here names `broker` or `session`. After `fork`, the child side runs only [`become_child`].
//! The restart and crash-loop arithmetic is in `supervision`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Master;
use super::listen::{self, BrokerSocket, ListenError};
use super::supervision::{CRASH_LOOP_THRESHOLD, CrashLoop};
use crate::clock::unix_now;
use crate::config::{Config, ConfigSource, EXIT_UNUSABLE_SETTINGS, SessionLimits};
use crate::logging;
use crate::proto::report::{self, REPORT_MAX, Report};
use crate::sys::{self, Forked};

/// The entry points of the roles the master forks, handed in by the composition root so that
/// the master names no other role. Each runs in the child and returns its exit status.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    /// Serves one client until it leaves.
    pub session: fn(SessionStart) -> i32,
    /// Serves every session and operator until told to stop.
    pub broker: fn(BrokerStart) -> i32,
}

/// What a forked session child is given.
#[derive(Debug)]
pub struct SessionStart {
    /// The client's connection, non-blocking.
    pub client: TcpStream,
    pub peer: SocketAddr,
    /// Where the broker listens.
    pub broker_socket: PathBuf,
    /// The session settings in force when the client connected.
    pub limits: SessionLimits,
    /// Where to send the admission report ([`report`]).
    pub reporter: Option<StdUnixDatagram>,
}

/// What a forked broker is given: the listening sockets, which the master keeps across broker
/// restarts, and its end of the link.
#[derive(Debug)]
pub struct BrokerStart {
    /// `broker.sock`: sessions (and a later master's link).
    pub sessions: UnixListener,
    /// `control.sock`: operators.
    pub control: UnixListener,
    /// The broker's end of the master's link, a socket pair made before the fork.
    pub link: UnixStream,
    /// chatd switched from root to a service user, which is then no operator.
    pub service_user: bool,
    pub config: Config,
    /// Where the settings came from, for the broker's own reload.
    pub source: ConfigSource,
}

/// Why the broker could not be started, by step.
#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    #[error(transparent)]
    Sockets(#[from] ListenError),
    #[error("another broker took broker.sock")]
    SocketTaken,
    #[error("no broker socket")]
    NoSocket,
    #[error("cannot make the link: {0}")]
    Link(io::Error),
    #[error("cannot hand the listening sockets over: {0}")]
    HandOver(io::Error),
    #[error("cannot fork: {0}")]
    Fork(io::Error),
}

/// What the master remembers about a session child.
pub(super) struct SessionChild {
    pub(super) peer: SocketAddr,
    started: Instant,
    /// The child as the broker knows it ([`sys::process_identity`]), and when its client
    /// connected (Unix seconds): what the master vouches for over the link.
    pub(super) identity: Option<u64>,
    pub(super) connected_at: u64,
}

/// Resource limits of a child process (core dumps are always off).
struct ChildLimits {
    open_files: u64,
    address_space: Option<u64>,
}

/// A session needs a handful of descriptors (client, broker, poller, signals, log, report) and
/// little memory; the limits contain a session gone wrong.
const SESSION_LIMITS: ChildLimits = ChildLimits { open_files: 64, address_space: Some(1 << 30) };

impl Master {
    pub(super) fn spawn_session(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        // SAFETY: the master is single-threaded: `main` starts no thread before the mode runs
        // and the master never starts one.
        match unsafe { sys::fork_with_signals_blocked() } {
            Ok(Forked::Child) => {
                let reporter = self.admission_reporter.try_clone().ok();
                let mut keep = vec![sys::raw(&stream)];
                keep.extend(reporter.as_ref().map(sys::raw));
                let start = SessionStart {
                    client: stream,
                    peer,
                    broker_socket: self.broker_socket.clone(),
                    limits: self.config.session.clone(),
                    reporter,
                };
                let session = self.roles.session;
                become_child(keep, SESSION_LIMITS, move || session(start))
            }
            Ok(Forked::Parent(pid)) => {
                debug!("session pid {pid} serves {peer}");
                self.resource_recovered();
                self.figures.accepted += 1;
                self.admission.accepted(pid, peer.ip());
                // The child exists from here on, so its start time can be read.
                let identity = match sys::process_identity(pid.as_raw()) {
                    Ok(identity) => Some(identity),
                    Err(err) => {
                        warn!("cannot vouch for session pid {pid} ({peer}) to the broker: {err}");
                        None
                    }
                };
                let child = SessionChild {
                    peer,
                    started: Instant::now(),
                    identity,
                    connected_at: unix_now(),
                };
                self.vouch_for(&child);
                self.sessions.insert(pid, child);
                // Dropping `stream` closes the master's copy; the child has its own.
            }
            Err(err) => {
                let _ = stream.write(b"*** The server is busy; please try again later.\r\n");
                self.resource_trouble(&format!("cannot fork a session for {peer}: {err}"));
            }
        }
    }

    pub(super) fn start_broker(&mut self) -> Result<(), BrokerStartError> {
        if self.broker_listener.is_none() {
            // The adopted broker owned the sockets (or broker.sock was removed); bind fresh
            // ones at the same paths, where its sessions will look for the new broker.
            let runtime_dir = &self.config.runtime_dir;
            match listen::bind_broker_socket(runtime_dir) {
                Ok((BrokerSocket::Bound(listener), _)) => {
                    let control = listen::bind_control_socket(runtime_dir)?;
                    self.broker_listener = Some((listener, control));
                }
                Ok((BrokerSocket::Orphaned { .. }, _)) => {
                    return Err(BrokerStartError::SocketTaken);
                }
                Err(err) => return Err(err.into()),
            }
        }
        // The link: created before the fork, so that the broker's master is whoever holds
        // the other end, never a connection to broker.sock.
        let (link, broker_end) = UnixStream::pair().map_err(BrokerStartError::Link)?;
        let start = match &self.broker_listener {
            Some((sessions, control)) => BrokerStart {
                sessions: sessions.try_clone().map_err(BrokerStartError::HandOver)?,
                control: control.try_clone().map_err(BrokerStartError::HandOver)?,
                link: broker_end,
                service_user: self.service_user,
                config: self.config.clone(),
                source: self.source.clone(),
            },
            None => return Err(BrokerStartError::NoSocket),
        };
        // SAFETY: the master is single-threaded: `main` starts no thread before the mode runs
        // and the master never starts one.
        match unsafe { sys::fork_with_signals_blocked() }.map_err(BrokerStartError::Fork)? {
            Forked::Child => {
                let keep = vec![
                    sys::raw(&start.sessions),
                    sys::raw(&start.control),
                    sys::raw(&start.link),
                ];
                // One descriptor per session, and room to spare.
                let limits = ChildLimits {
                    open_files: self.config.admission.max_clients as u64 + 256,
                    address_space: None,
                };
                let broker = self.roles.broker;
                become_child(keep, limits, move || broker(start))
            }
            Forked::Parent(pid) => {
                // The broker's end lives in the broker only: its closing tells the broker
                // that the master is gone.
                drop(start);
                info!("broker started, pid {pid}");
                if let Err(err) = listen::write_broker_pid(&self.config.runtime_dir, pid.as_raw()) {
                    warn!("cannot record the broker's pid: {err}");
                }
                self.broker.started(pid, Instant::now());
                self.open_link(link);
                Ok(())
            }
        }
    }

    pub(super) fn schedule_broker_restart(&mut self) {
        let delay = self.broker.schedule_restart(Instant::now());
        info!("restarting the broker in {} ms", delay.as_millis());
    }

    /// The link to the broker ended. For our own broker that is all (reaping tells more). An
    /// adopted broker is not our child: the end of the link is how its death shows. Then the
    /// master binds `broker.sock` afresh and starts its own broker, with which the orphaned
    /// sessions re-register like after any broker restart.
    pub(super) fn link_lost(&mut self) {
        self.drop_link();
        if !self.broker.adopted {
            return;
        }
        self.broker.adopted = false;
        let pid = self.broker.pid.take();
        if self.shutdown.is_none() {
            error!("adopted broker {pid:?} is gone; starting a broker of our own");
            self.figures.broker_restarts += 1;
            if let Err(err) = self.start_broker() {
                error!("cannot start the broker: {err}");
                self.schedule_broker_restart();
            }
        }
    }

    /// Reads the pids of sessions whose clients chose a nickname.
    pub(super) fn read_admissions(&mut self) {
        let mut message = [0u8; REPORT_MAX];
        loop {
            match self.admissions.recv(&mut message) {
                Ok(len) => match report::decode(&message[..len]) {
                    Some(Report::Admitted(pid)) => {
                        self.admission.admitted(Pid::from_raw(pid));
                        self.sessions_work();
                    }
                    Some(Report::AnsweredHttp(pid)) => {
                        self.admission.answered_http(Pid::from_raw(pid));
                    }
                    Some(Report::AuthFailed(pid)) => {
                        self.admission.failed_authentication(Pid::from_raw(pid), Instant::now());
                    }
                    None => {}
                },
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Collects every child that has exited.
    pub(super) fn reap(&mut self) {
        // A session's report is sent before it exits: count it before counting the exit.
        self.read_admissions();
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => {
                    error!("waitpid failed: {errno}");
                    return;
                }
                Ok(status) => status,
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, 0) => (pid, None),
                WaitStatus::Exited(pid, code) => (pid, Some(format!("exit status {code}"))),
                WaitStatus::Signaled(pid, signal, _) => (pid, Some(format!("killed by {signal}"))),
                _ => continue,
            };
            if Some(pid) == self.broker.pid {
                self.broker.pid = None;
                self.drop_link();
                if self.shutdown.is_none()
                    && matches!(status, WaitStatus::Exited(_, code) if code == EXIT_UNUSABLE_SETTINGS)
                {
                    error!(
                        "the broker cannot work with these settings (see its error); chatd stops"
                    );
                    self.broker_unusable = true;
                    self.begin_shutdown();
                } else if self.shutdown.is_none() {
                    error!("broker pid {pid} died ({})", how.as_deref().unwrap_or("exit status 0"));
                    self.figures.broker_restarts += 1;
                    self.schedule_broker_restart();
                }
            } else if let Some(child) = self.sessions.remove(&pid) {
                self.session_ended(pid, child, how);
            }
        }
    }

    /// Counts and logs a session child that exited (`how`: why, if it failed).
    fn session_ended(&mut self, pid: Pid, child: SessionChild, how: Option<String>) {
        let now = Instant::now();
        let admitted = self.admission.exited(pid, now).unwrap_or(false);
        self.log_sentence(child.peer, now);
        let lived = now.saturating_duration_since(child.started);
        let failed_early = CrashLoop::died_early(admitted, how.is_some(), lived);
        if how.is_some() && self.shutdown.is_none() {
            self.figures.child_crashes += 1;
        }
        match how {
            Some(how) if self.shutdown.is_none() && !self.crash_loop.throttling() => {
                error!(
                    "session pid {pid} for {} ended after {}s: {how}",
                    child.peer,
                    lived.as_secs()
                )
            }
            _ => debug!("session pid {pid} for {} ended after {}s", child.peer, lived.as_secs()),
        }
        if failed_early && self.shutdown.is_none() {
            self.session_failed_early();
        } else if admitted {
            self.sessions_work();
        }
    }

    /// A session died before serving its client. A few in a row mean something every session
    /// needs is broken (the broker socket is gone, descriptors are exhausted): say so once,
    /// stop forking sessions that would die too, and retry after a back-off of 2 s doubling to
    /// 60 s. A missing or replaced `broker.sock` is re-created on the way.
    fn session_failed_early(&mut self) {
        let Some(pause) = self.crash_loop.failed() else { return };
        if self.crash_loop.first_pause() {
            error!(
                "{CRASH_LOOP_THRESHOLD} sessions in a row died before serving anyone; \
                 pausing new connections, first for {} s",
                pause.as_secs()
            );
        }
        self.accept_paused_until = Some(Instant::now() + pause);
        self.check_broker_socket();
    }

    /// A session served its client: whatever made sessions fail is over.
    fn sessions_work(&mut self) {
        if self.crash_loop.recovered() {
            info!("sessions are being served again; accepting as usual");
        }
    }
}

/// Turns a freshly forked child into a role: reopens the log with the child's pid, closes
/// every inherited descriptor except `keep` and the log's, applies `limits`, runs `role`, and
/// exits with its status. A panic in the role ends the child; it never unwinds into the
/// master's frames.
fn become_child(mut keep: Vec<i32>, limits: ChildLimits, role: impl FnOnce() -> i32) -> ! {
    logging::reopen_after_fork();
    keep.extend(logging::descriptor());
    // SAFETY: this child never returns into the master's frames (it leaves through
    // `process::exit` below), so no object owning a closed descriptor is used or dropped.
    if let Err(err) = unsafe { sys::close_all_except(&keep) } {
        error!("cannot close inherited descriptors: {err}");
    }
    if let Err(err) = sys::limit_resources(limits.open_files, limits.address_space) {
        error!("cannot set resource limits: {err}");
    }
    let status = panic::catch_unwind(AssertUnwindSafe(role)).unwrap_or(101);
    std::process::exit(status)
}
