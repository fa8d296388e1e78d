//! The master's children: forking a session per connection and the broker, turning a fresh
//! child into its role, reaping, and what a child's life or death changes (the admission
//! counts, the crash loop, the broker's restart).
//!
//! It owns the pids and the moment of `fork`. It must not know what a role does: the roles'
//! entry points come from the composition root ([`Roles`], filled in by `modes`), so nothing
//! here names `broker` or `session`. After `fork`, the child side runs only [`become_child`].
//! The restart and crash-loop arithmetic is in `supervision`.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::admission::is_trusted_proxy;
use super::listen::{self, BrokerSocket, ListenError, ListenerKind};
use super::supervision::{CRASH_LOOP_THRESHOLD, CrashLoop};
use super::tls::TlsSettings;
use super::{Master, Refusable, Refused};
use crate::accounts::KdfCost;
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
    /// The client came to a TLS listener: the settings its TLS session starts from (shared
    /// copy-on-write with the master, which may have replaced its own since).
    pub tls: Option<TlsSettings>,
    /// For a plain client, when TLS listeners exist: the greeting's line pointing to them.
    pub tls_notice: Option<String>,
    /// The client came to a web listener (`web_listen`): it speaks HTTP (HTTPS when `tls` is
    /// set too), and may upgrade to a WebSocket.
    pub web: Option<WebStart>,
}

/// What a web client's session is given besides a chat client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebStart {
    /// The client's TCP peer is one of `trusted_proxies`: its `X-Forwarded-For` is believed
    /// (the master decided, and believes the address the session then reports only from such a
    /// child).
    pub trusted_proxy: bool,
    /// `web_allowed_origins`: the `Origin`s a WebSocket may come from besides the page's own.
    pub allowed_origins: Vec<String>,
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
    pub(super) started: Instant,
    /// The child as the broker knows it ([`sys::process_identity`]), and when its client
    /// connected (Unix seconds): what the master vouches for over the link.
    pub(super) identity: Option<u64>,
    pub(super) connected_at: u64,
    /// The code that forked it (sessions keep it after an upgrade): the master's generation,
    /// its version string, the session protocol it speaks.
    pub(super) generation: u32,
    pub(super) version: String,
    pub(super) protocol: u32,
    /// The child sent its `Forwarded` report (believed or not): a client has one address, so
    /// a second report is ignored, and an untrusted peer's is warned about once.
    pub(super) forward_reported: bool,
}

/// Resource limits of a child process (core dumps are always off, and no child is dumpable).
struct ChildLimits {
    open_files: u64,
    address_space: Option<u64>,
}

/// How long an adopted broker whose link closed may take to show as ended before it is taken
/// for one that refused this master (a killed process closes its sockets first).
pub(super) const ADOPTED_EXIT_GRACE: Duration = Duration::from_millis(500);

/// A session needs a handful of descriptors (client, broker, poller, signals, log, report).
const SESSION_OPEN_FILES: u64 = 64;

/// The address space a session may use for itself, besides its room's ring and a password
/// derivation: an idle session measures about 18 MiB (the program, the C library, its stack
/// and heap), and its queues are bounded by their settings (`send_queue_bytes`, the broker's
/// 64 KiB high water, 512-byte lines).
const SESSION_OWN_ADDRESS_SPACE: u64 = 256 << 20;

/// The address-space limit of a session child (`RLIMIT_AS`), which contains a session gone
/// wrong: its own [`SESSION_OWN_ADDRESS_SPACE`], two rooms' rings of `ring_bytes` (on `/join`
/// the new ring is mapped before the old one is let go), and one Argon2id derivation at the
/// cost of new passwords (`password_memory_kib`, 19 MiB by default), which the session
/// allocates whole for each login, registration or change of password. An account whose stored
/// cost is above the setting (it was lowered since) needs more, which the own allowance's
/// headroom covers for a while; beyond it the derivation fails (argon2 returns
/// `OutOfMemory`; it does not abort).
pub fn session_address_space(ring_bytes: usize, password_cost: KdfCost) -> u64 {
    let ring = crate::ring::HEADER_BYTES as u64 + ring_bytes as u64;
    SESSION_OWN_ADDRESS_SPACE + 2 * ring + u64::from(password_cost.memory_kib) * 1024
}

impl Master {
    pub(super) fn spawn_session(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        kind: ListenerKind,
    ) {
        let (tls, tls_notice) = match kind {
            ListenerKind::Tls => match &self.tls {
                Some(identity) => (Some(identity.settings.clone()), None),
                // Not reached: TLS listeners exist only with an identity.
                None => return,
            },
            ListenerKind::Plain => (None, self.tls_notice()),
            ListenerKind::Web if self.config.web_tls => match &self.tls {
                Some(identity) => (Some(identity.settings.clone()), None),
                // Not reached: with `web_tls`, web listeners exist only with an identity.
                None => return,
            },
            ListenerKind::Web => (None, None),
        };
        let web = (kind == ListenerKind::Web).then(|| WebStart {
            trusted_proxy: is_trusted_proxy(&self.config.trusted_proxies, peer.ip()),
            allowed_origins: self.config.web_allowed_origins.clone(),
        });
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
                    tls,
                    tls_notice,
                    web,
                };
                let limits = ChildLimits {
                    open_files: SESSION_OPEN_FILES,
                    address_space: Some(session_address_space(
                        self.config.ring_bytes,
                        self.config.password_cost,
                    )),
                };
                let session = self.roles.session;
                become_child(keep, limits, move || session(start))
            }
            Ok(Forked::Parent(pid)) => {
                debug!("session pid {pid} serves {peer}");
                self.resource_recovered();
                self.figures.accepted += 1;
                match web.as_ref().is_some_and(|web| web.trusted_proxy) {
                    true => self.admission.accepted_from_proxy(pid, peer.ip()),
                    false => self.admission.accepted(pid, peer.ip()),
                }
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
                    generation: self.generation,
                    version: crate::release::version().to_string(),
                    protocol: crate::proto::PROTOCOL_VERSION,
                    forward_reported: false,
                };
                self.vouch_for(&child);
                self.sessions.insert(pid, child);
                // Dropping `stream` closes the master's copy; the child has its own.
            }
            Err(err) => {
                let speaks = Refusable::speech(kind, self.config.web_tls);
                Refusable { stream, speaks }.refuse(
                    Refused::Unavailable,
                    "*** The server is busy; please try again later.",
                );
                self.resource_trouble(&format!("cannot fork a session for {peer}: {err}"));
            }
        }
    }

    /// The plain greeting's line about TLS: the first TLS listener's port and the certificate
    /// in force; `None` without TLS listeners.
    fn tls_notice(&self) -> Option<String> {
        let identity = self.tls.as_ref()?;
        Some(identity.plain_greeting_notice(self.config.session.tls_port?))
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
        if !self.broker.adopted || self.broker.replacing().is_some() {
            return;
        }
        // A broker that was killed closes its sockets a moment before it shows as ended: look
        // again shortly ([`Master::check_adopted_link`]) before taking it for one that refused.
        // In a shutdown too: nothing else tells this master that a broker it did not fork ended.
        if let Some(pid) = self.broker.pid {
            self.adopted_link_closed = Some((pid, Instant::now() + ADOPTED_EXIT_GRACE));
            self.check_adopted_link(Instant::now());
        }
    }

    /// After an adopted broker's link closed: once it has ended, a broker of our own starts;
    /// if it is still running after [`ADOPTED_EXIT_GRACE`], it closed the link on purpose —
    /// it refused this master's hello, for it speaks another protocol (a chatd of an older
    /// release, whose master died) — and it is replaced like the broker of an upgrade. In a
    /// shutdown it is only watched until it has ended (the shutdown's timers kill it if need be).
    pub(super) fn check_adopted_link(&mut self, now: Instant) {
        let Some((pid, decide_at)) = self.adopted_link_closed else { return };
        if super::listen::process_is_running(pid) {
            if now >= decide_at && self.shutdown.is_none() {
                self.adopted_link_closed = None;
                info!(
                    "the adopted broker (pid {pid}) speaks another protocol; replacing it with \
                     this version's"
                );
                self.replace_broker(pid, now);
            }
            return;
        }
        self.adopted_link_closed = None;
        self.broker.adopted = false;
        self.broker.pid = None;
        if self.shutdown.is_none() {
            error!("adopted broker {pid} is gone; starting a broker of our own");
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
                    Some(Report::Forwarded(pid, addr)) => {
                        self.forwarded(Pid::from_raw(pid), addr);
                    }
                    None => {}
                },
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// The session `pid` says its client is `addr`, as the reverse proxy it came through said
    /// (`X-Forwarded-For`). Believed only when the child's TCP peer is one of
    /// `trusted_proxies` (anyone can send the header; only the master knows the peer), and once
    /// per child. Then the real address is what counts: it is the child's peer from now on
    /// (logs, `chatctl who`, an upgrade's hand-over), admission counts the client under it, and
    /// the broker is vouched to again, so that its bans, throttles and loopback checks see it.
    /// An address that is banned, penalised or over its per-address limits is refused as at
    /// accept, except that the child exists already: it is ended with SIGTERM (its client is
    /// simply disconnected) and the refusal is counted.
    fn forwarded(&mut self, pid: Pid, addr: std::net::IpAddr) {
        let now = Instant::now();
        let Some(child) = self.sessions.get_mut(&pid) else { return };
        let proxy = child.peer;
        if std::mem::replace(&mut child.forward_reported, true) {
            debug!("session pid {pid}: a second forwarded address ({addr}) ignored");
            return;
        }
        if !is_trusted_proxy(&self.config.trusted_proxies, proxy.ip()) {
            warn!(
                "session pid {pid}: client {proxy} sent a forwarded address ({addr}) but is                  not one of trusted_proxies; ignored"
            );
            return;
        }
        // The proxy tells no port: 0 keeps the "IP:port" form the broker reads addresses in.
        let real = SocketAddr::new(addr.to_canonical(), 0);
        // The proxy as it is written in trusted_proxies (not `::ffff:127.0.0.1`).
        let proxy_ip = proxy.ip().to_canonical();
        info!("session {pid}: client {} forwarded by proxy {proxy_ip}", real.ip());
        child.peer = real;
        // Counted under the real address first, so that the end of a refused child below trips
        // that address and not the proxy's.
        let admitted = self.admission.forwarded(pid, real.ip(), now);
        let (ban, trouble) = self.bans.check(real.ip());
        if let Some(err) = trouble
            && self.throttle.allow("state file", now)
        {
            error!("{err}; enforcing the bans read before");
        }
        let refusal = match (ban, admitted) {
            (Some(ban), _) => Some(("banned", format!("banned ({})", ban.target))),
            (None, Err(refusal)) => Some((refusal.key(), refusal.reason().to_string())),
            (None, Ok(())) => None,
        };
        if let Some((key, reason)) = refusal {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            *self.refusals.entry(key.to_string()).or_default() += 1;
            if self.throttle.allow(key, now) {
                info!(
                    target: logging::NOTICE,
                    "refused {real} (forwarded by proxy {proxy_ip}): {reason}"
                );
            }
            self.log_sentence(real, now);
            return;
        }
        // A second vouch for the same identity replaces the first in the broker, whether the
        // session has said Hello yet or not.
        if let Some(child) = self.sessions.remove(&pid) {
            self.vouch_for(&child);
            self.sessions.insert(pid, child);
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
            if self.broker.replacing().is_some_and(|(replaced, _)| replaced == pid) {
                info!("the old broker (pid {pid}) left; starting this version's");
                self.check_replacement(Instant::now());
            } else if Some(pid) == self.broker.pid {
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

/// Turns a freshly forked child into a role: makes it not dumpable, reopens the log with the
/// child's pid, closes every inherited descriptor except `keep` and the log's, applies
/// `limits`, runs `role`, and exits with its status. A panic in the role ends the child; it
/// never unwinds into the master's frames.
fn become_child(mut keep: Vec<i32>, limits: ChildLimits, role: impl FnOnce() -> i32) -> ! {
    // First: a session holds the TLS key (copied from the master), the broker the database and
    // the token key. Inherited from the master already; said again, for it costs nothing.
    let undumpable = sys::forbid_dumps();
    logging::reopen_after_fork();
    if let Err(err) = undumpable {
        error!("cannot make this process undumpable: {err}");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::tests::in_child;

    /// This process's address space now (`VmSize`), in bytes.
    fn address_space_in_use() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = status.lines().find_map(|line| line.strip_prefix("VmSize:"))?;
        kib.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|kib| kib * 1024)
    }

    /// Derives a tag at `cost` in a forked child whose address space may grow by `room` beyond
    /// what it uses when it starts; the name of the step that failed, if one did. The
    /// derivation's memory is mapped here rather than by the allocator: in a child forked from a
    /// test thread, glibc would take it from that thread's arena, whose address space is
    /// reserved already, where a session (one thread, the main arena) needs new address space.
    fn derive_with_room(room: u64, cost: KdfCost) -> Option<String> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
        let names = ["measure", "limit", "allocate", "derive"];
        in_child(&names, move || {
            let Some(in_use) = address_space_in_use() else { return Some("measure") };
            if sys::limit_resources(SESSION_OPEN_FILES, Some(in_use + room)).is_err() {
                return Some("limit");
            }
            let blocks = cost.memory_kib as usize;
            let Some(length) = std::num::NonZeroUsize::new(blocks * argon2::Block::SIZE) else {
                return Some("allocate");
            };
            let protection = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
            // SAFETY: a new private anonymous mapping, which nothing else refers to.
            let Ok(memory) =
                (unsafe { mmap_anonymous(None, length, protection, MapFlags::MAP_PRIVATE) })
            else {
                return Some("allocate");
            };
            // SAFETY: the mapping holds `blocks` blocks of Block::SIZE bytes, is page-aligned
            // (more than a Block asks), zero-filled (a valid Block: it is plain u64s), and
            // used through this slice only, until the child exits.
            let memory = unsafe {
                std::slice::from_raw_parts_mut(memory.as_ptr().cast::<argon2::Block>(), blocks)
            };
            let Ok(params) = argon2::Params::new(cost.memory_kib, cost.passes, 1, Some(32)) else {
                return Some("derive");
            };
            let argon2 =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut tag = [0u8; 32];
            let derived = argon2.hash_password_into_with_memory(
                b"correct horse",
                &[7u8; 16],
                &mut tag,
                memory,
            );
            derived.err().map(|_| "derive")
        })
    }

    /// The limit leaves a session, beyond its own allowance, room for a derivation at the
    /// default cost (19 MiB): a child allowed to grow by exactly that room derives a tag.
    #[test]
    fn a_session_at_the_default_cost_has_room_for_a_password_derivation() {
        let cost = KdfCost::DEFAULT;
        let limit = session_address_space(crate::ring::DEFAULT_RING_BYTES, cost);
        let room = limit - SESSION_OWN_ADDRESS_SPACE;
        assert!(room >= u64::from(cost.memory_kib) * 1024, "{room} bytes");
        assert_eq!(derive_with_room(room, cost), None);
        // And the test measures something: with half the derivation's memory, it fails.
        let half = u64::from(cost.memory_kib) * 1024 / 2;
        assert_eq!(derive_with_room(half, cost).as_deref(), Some("allocate"));
    }

    #[test]
    fn the_limit_grows_with_the_cost_of_new_passwords_and_the_ring() {
        let cheap = session_address_space(1 << 20, KdfCost { memory_kib: 8, passes: 1 });
        let dear = session_address_space(1 << 20, KdfCost { memory_kib: 256 * 1024, passes: 1 });
        assert_eq!(dear - cheap, (256 * 1024 - 8) * 1024);
        let bigger_ring = session_address_space(64 << 20, KdfCost { memory_kib: 8, passes: 1 });
        assert_eq!(bigger_ring - cheap, 2 * (63 << 20));
    }
}
