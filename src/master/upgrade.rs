//! In-place upgrade: the master executes a new binary under its own pid, handing the new
//! image everything it needs to go on as if nothing happened; then the broker is replaced.
//!
//! The steps (`chatctl upgrade`, or SIGUSR2):
//! 1. the pre-flight: `NEW <the master's arguments> --check-upgrade` must parse the settings
//!    and print what it speaks ([`Compatibility`]); it must read this image's upgrade state,
//!    and its broker must serve every live session's protocol. Otherwise the upgrade is
//!    refused with the reason;
//! 2. the answer goes to the operator (over the link) before anything irreversible;
//! 3. the state ([`UpgradeState`]: listeners, `broker.sock`/`control.sock`, the admission
//!    socket pair, the child table, counts and penalties, figures, the TLS identity) is
//!    written as JSON to a sealed memfd; `FD_CLOEXEC` is cleared on exactly the descriptors it
//!    names, and the master `execve`s NEW with `CHATD_UPGRADE_FD` naming the memfd, every
//!    signal blocked across the call. If `execve` fails, the flags are put back and this image
//!    carries on;
//! 4. the new image ([`take_handed_state`]) reads and closes the memfd, takes the descriptors,
//!    reaps what died meanwhile, and replaces the broker: SIGUSR2 asks the old one to leave
//!    without a word to the sessions (what it holds for the store is written first), and a
//!    broker of the new code starts on the same sockets, where the sessions resume as after
//!    any broker restart. Sessions keep running the code that forked them until their clients
//!    leave.
//!
//! The pid stays, so systemd's MainPID and the sessions' parent stay right. The installed
//! path is executed, not `/proc/self/exe`, which after a package upgrade is the old, deleted
//! file. This module owns the state's shape and the exec; it must not decide what a
//! broker's replacement means to the sessions (the restart path does) nor parse settings.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::Master;
use super::admission::AdmissionSnapshot;
use super::children::SessionChild;
use super::listen::ListenerKind;
use super::tls::{self, PemPair, TlsIdentity};
use crate::proto::master::UpgradeAnswer;
use crate::release::{self, Compatibility, UPGRADE_STATE_VERSION};
use crate::sys;

/// The variable that tells a starting image it was handed a state, and where.
pub const UPGRADE_FD_VARIABLE: &str = "CHATD_UPGRADE_FD";

/// How long the pre-flight may take (the master serves nobody meanwhile; connections wait in
/// the backlog).
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the old broker has to leave after SIGUSR2 before it is killed.
pub(super) const BROKER_LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the next image takes over. Descriptors are numbers valid in the new image (the
/// same, since `execve` keeps them).
#[derive(Debug, Serialize, Deserialize)]
pub struct UpgradeState {
    /// [`UPGRADE_STATE_VERSION`] of the image that wrote it.
    pub format: u32,
    /// The image that reads this is generation `generation + 1`.
    pub generation: u32,
    /// The binary the master was first started from: what the next upgrade executes by
    /// default.
    pub binary: PathBuf,
    pub service_user: bool,
    pub listeners: Vec<(RawFd, ListenerKind)>,
    /// `broker.sock` and `control.sock`, while the master holds them.
    pub broker_sockets: Option<(RawFd, RawFd)>,
    /// The admission datagram pair: the master's end and the one sessions write to.
    pub admissions: (RawFd, RawFd),
    /// The broker running now, and whether it is adopted (not a child of this pid).
    pub broker: Option<(i32, bool)>,
    pub sessions: Vec<HandedSession>,
    pub admission: AdmissionSnapshot,
    pub started_at: u64,
    pub accepted: u64,
    pub child_crashes: u64,
    pub broker_restarts: u64,
    pub refusals: BTreeMap<String, u64>,
    pub tls: Option<(PemPair, String)>,
}

/// One live session child.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandedSession {
    pub pid: i32,
    pub peer: SocketAddr,
    /// How long it had lived when the state was written.
    pub age_ms: u64,
    pub identity: Option<u64>,
    pub connected_at: u64,
    pub generation: u32,
    pub version: String,
    pub protocol: u32,
}

/// What the new image takes from [`UpgradeState`] once its loop exists.
pub(super) struct Handed {
    pub generation: u32,
    pub binary: PathBuf,
    pub sessions: Vec<HandedSession>,
    pub admission: AdmissionSnapshot,
    pub broker: Option<(i32, bool)>,
    pub started_at: u64,
    pub accepted: u64,
    pub child_crashes: u64,
    pub broker_restarts: u64,
    pub refusals: BTreeMap<String, u64>,
}

/// The parts of a handed state that become the master's sockets.
pub(super) struct HandedSockets {
    pub listeners: Vec<(std::net::TcpListener, ListenerKind)>,
    pub broker_sockets: Option<(UnixListener, UnixListener)>,
    pub admissions: (StdUnixDatagram, StdUnixDatagram),
    pub service_user: bool,
    pub tls: Option<TlsIdentity>,
}

/// Why a handed state could not be taken over: the new image then stops (its predecessor is
/// gone already), and the broker and sessions carry on without a master until one adopts them.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    #[error("{UPGRADE_FD_VARIABLE} is not a descriptor number")]
    BadVariable,
    #[error("cannot read the handed-over state: {0}")]
    Read(std::io::Error),
    #[error("the handed-over state cannot be understood: {0}")]
    Decode(serde_json::Error),
    #[error("the handed-over state is version {0}, which this chatd does not read")]
    Version(u32),
    #[error("the handed-over TLS certificate: {0}")]
    Tls(tls::TlsError),
}

/// The state an upgrading predecessor handed to this image, if any: reads and closes the
/// memfd `CHATD_UPGRADE_FD` names and removes the variable (children must not see it).
///
/// # Safety
///
/// The process is single-threaded (the environment is changed), this is called once, and the
/// descriptors the state names are owned by nothing else in this image: they become the
/// only owners.
pub(super) unsafe fn take_handed_state() -> Result<Option<(HandedSockets, Handed)>, HandOverError> {
    // SAFETY: the caller promises a single-threaded process.
    let Some(variable) = (unsafe { sys::take_env(UPGRADE_FD_VARIABLE) }) else {
        return Ok(None);
    };
    let fd: RawFd =
        variable.to_str().and_then(|text| text.parse().ok()).ok_or(HandOverError::BadVariable)?;
    // SAFETY: the predecessor handed this descriptor to this image alone.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let bytes = sys::read_sealed_memfd(memfd).map_err(HandOverError::Read)?;
    let state: UpgradeState = serde_json::from_slice(&bytes).map_err(HandOverError::Decode)?;
    if !Compatibility::running().reads_upgrade_state(state.format) {
        return Err(HandOverError::Version(state.format));
    }
    // SAFETY: the state names descriptors the predecessor kept open across `execve` for this
    // image; nothing else here owns them.
    let owned = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let listeners = state
        .listeners
        .iter()
        .map(|&(fd, kind)| (std::net::TcpListener::from(owned(fd)), kind))
        .collect();
    let broker_sockets = state.broker_sockets.map(|(sessions, control)| {
        (UnixListener::from(owned(sessions)), UnixListener::from(owned(control)))
    });
    let admissions = (
        StdUnixDatagram::from(owned(state.admissions.0)),
        StdUnixDatagram::from(owned(state.admissions.1)),
    );
    let tls = match state.tls {
        Some((pem, source)) => {
            Some(tls::from_handed_over(pem, source).map_err(HandOverError::Tls)?)
        }
        None => None,
    };
    let sockets = HandedSockets {
        listeners,
        broker_sockets,
        admissions,
        service_user: state.service_user,
        tls,
    };
    let handed = Handed {
        generation: state.generation + 1,
        binary: state.binary,
        sessions: state.sessions,
        admission: state.admission,
        broker: state.broker,
        started_at: state.started_at,
        accepted: state.accepted,
        child_crashes: state.child_crashes,
        broker_restarts: state.broker_restarts,
        refusals: state.refusals,
    };
    Ok(Some((sockets, handed)))
}

impl Master {
    /// An operator's upgrade to `binary` (`None`: the binary the master started from): the
    /// pre-flight, and the answer. The `execve` itself comes after the answer is on its way
    /// ([`Master::execute_due_upgrade`]).
    pub(super) fn upgrade(&mut self, binary: Option<PathBuf>) -> UpgradeAnswer {
        let binary = binary.unwrap_or_else(|| self.binary.clone());
        info!("upgrade requested (binary {})", binary.display());
        if self.shutdown.is_some() {
            return self.refuse("the daemon is stopping".into());
        }
        if self.upgrade_due.is_some() || self.broker.replacing().is_some() {
            return self.refuse("another upgrade is under way".into());
        }
        let new = match preflight(&binary) {
            Ok(new) => new,
            Err(why) => return self.refuse(why),
        };
        if !new.reads_upgrade_state(UPGRADE_STATE_VERSION) {
            return self.refuse(format!(
                "{} does not read upgrade state {UPGRADE_STATE_VERSION}",
                binary.display()
            ));
        }
        let mut unserved: BTreeMap<u32, u64> = BTreeMap::new();
        for child in self.sessions.values() {
            if !new.serves_sessions_of(child.protocol) {
                *unserved.entry(child.protocol).or_default() += 1;
            }
        }
        if let Some((protocol, count)) = unserved.into_iter().next() {
            return self.refuse(format!(
                "{count} session(s) speak protocol {protocol}, which {}'s broker does not serve",
                binary.display()
            ));
        }
        let generation = self.generation + 1;
        info!(
            "upgrading to chatd {} from {} (generation {generation})",
            new.version,
            binary.display()
        );
        self.upgrade_due = Some(binary.clone());
        // Before the answer, on the same link: an operator who then reads `status` never sees
        // the failure of an earlier attempt as this one's.
        self.figures.upgrade_failure = None;
        self.send_figures();
        UpgradeAnswer::Starting {
            binary: binary.display().to_string(),
            version: new.version,
            generation,
        }
    }

    fn refuse(&mut self, why: String) -> UpgradeAnswer {
        warn!("upgrade refused: {why}");
        UpgradeAnswer::Refused(why)
    }

    /// SIGUSR2: an upgrade to the binary the master started from.
    pub(super) fn upgrade_on_signal(&mut self) {
        info!("received SIGUSR2: upgrading in place");
        let _ = self.upgrade(None);
    }

    /// Executes the binary an accepted upgrade names, once the answer has been written. Returns
    /// only if `execve` failed: this image then carries on.
    pub(super) fn execute_due_upgrade(&mut self) {
        let Some(binary) = self.upgrade_due.take() else { return };
        // The operator's answer goes out first; a link that cannot take it is no reason to stop.
        if let Some(link) = &mut self.link {
            let _ = link.flush();
        }
        let failure = match self.execute(&binary) {
            Ok(never) => match never {},
            Err(why) => why,
        };
        error!("upgrade failed: {failure}; carrying on with the running binary");
        self.figures.upgrade_failure = Some(failure);
        self.send_figures();
    }

    /// Writes the state, hands its descriptors over and executes `binary`; returns why not.
    fn execute(&mut self, binary: &Path) -> Result<std::convert::Infallible, String> {
        let now = Instant::now();
        let state = self.upgrade_state(now);
        let json =
            serde_json::to_vec(&state).map_err(|err| format!("cannot write the state: {err}"))?;
        let memfd = sys::sealed_memfd("chatd-upgrade", &json)
            .map_err(|err| format!("cannot hand the state over: {err}"))?;
        let mut handed: Vec<RawFd> = state.listeners.iter().map(|&(fd, _)| fd).collect();
        handed.extend(state.broker_sockets.iter().flat_map(|&(a, b)| [a, b]));
        handed.extend([state.admissions.0, state.admissions.1, memfd.as_raw_fd()]);
        for &fd in &handed {
            if let Err(err) = sys::set_close_on_exec(fd, false) {
                restore_close_on_exec(&handed);
                return Err(format!("cannot hand descriptor {fd} over: {err}"));
            }
        }
        let args: Vec<OsString> = std::env::args_os().collect();
        let variable = [(UPGRADE_FD_VARIABLE, memfd.as_raw_fd().to_string())];
        // SAFETY: the master is single-threaded: `main` starts no thread before the mode runs
        // and the master never starts one.
        let err = unsafe { sys::execute_in_place(binary, &args, &variable) };
        restore_close_on_exec(&handed);
        Err(format!("cannot execute {}: {err}", binary.display()))
    }

    fn upgrade_state(&self, now: Instant) -> UpgradeState {
        let sessions = self
            .sessions
            .iter()
            .map(|(pid, child)| HandedSession {
                pid: pid.as_raw(),
                peer: child.peer,
                age_ms: u64::try_from(now.saturating_duration_since(child.started).as_millis())
                    .unwrap_or(u64::MAX),
                identity: child.identity,
                connected_at: child.connected_at,
                generation: child.generation,
                version: child.version.clone(),
                protocol: child.protocol,
            })
            .collect();
        UpgradeState {
            format: UPGRADE_STATE_VERSION,
            generation: self.generation,
            binary: self.binary.clone(),
            service_user: self.service_user,
            listeners: self
                .listeners
                .iter()
                .map(|(listener, kind)| (listener.as_raw_fd(), *kind))
                .collect(),
            broker_sockets: self
                .broker_listener
                .as_ref()
                .map(|(sessions, control)| (sessions.as_raw_fd(), control.as_raw_fd())),
            admissions: (self.admissions.as_raw_fd(), self.admission_reporter.as_raw_fd()),
            broker: self.broker.pid.map(|pid| (pid.as_raw(), self.broker.adopted)),
            sessions,
            admission: self.admission.snapshot(now),
            started_at: self.figures.started_at,
            accepted: self.figures.accepted,
            child_crashes: self.figures.child_crashes,
            broker_restarts: self.figures.broker_restarts,
            refusals: self.refusals.clone(),
            tls: self
                .tls
                .as_ref()
                .map(|identity| ((*identity.pem).clone(), identity.status.source.clone())),
        }
    }

    /// The new image's first steps with what its predecessor handed over: the child table, the
    /// counts, then the broker's replacement.
    pub(super) fn take_over(&mut self, handed: Handed) {
        let now = Instant::now();
        self.generation = handed.generation;
        self.binary = handed.binary;
        self.admission = super::admission::Admission::restore(
            self.config.admission.clone(),
            &handed.admission,
            now,
        );
        self.figures.started_at = handed.started_at;
        self.figures.accepted = handed.accepted;
        self.figures.child_crashes = handed.child_crashes;
        self.figures.broker_restarts = handed.broker_restarts;
        self.figures.upgraded_at = crate::clock::unix_now();
        self.refusals = handed.refusals;
        for session in handed.sessions {
            let child = SessionChild {
                peer: session.peer,
                started: now.checked_sub(Duration::from_millis(session.age_ms)).unwrap_or(now),
                identity: session.identity,
                connected_at: session.connected_at,
                generation: session.generation,
                version: session.version,
                protocol: session.protocol,
                // Not handed over: a report that comes after the upgrade is taken once more.
                forward_reported: false,
            };
            self.sessions.insert(Pid::from_raw(session.pid), child);
        }
        let older =
            self.sessions.values().filter(|child| child.generation < self.generation).count();
        info!(
            "upgraded to chatd {} (generation {}), master pid {}; {older} session(s) run older code",
            release::version(),
            self.generation,
            std::process::id()
        );
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!(
                "upgraded to chatd {} (generation {})",
                release::version(),
                self.generation
            )),
        ]);
        // Children that ended while no image watched.
        self.reap();
        match handed.broker {
            Some((pid, adopted)) => {
                self.broker.pid = Some(Pid::from_raw(pid));
                self.broker.adopted = adopted;
                self.replace_broker(Pid::from_raw(pid), now);
            }
            None => self.schedule_broker_restart(),
        }
    }

    /// Asks the broker `pid` to leave for one of this image's code (SIGUSR2: it writes what it
    /// holds and exits without telling the sessions anything); the new one starts once it is
    /// gone ([`Master::check_replacement`]), or after [`BROKER_LEAVE_TIMEOUT`] it is killed.
    pub(super) fn replace_broker(&mut self, pid: Pid, now: Instant) {
        info!("replacing the broker (pid {pid}) with this version's");
        self.broker.replacing_started(pid, now + BROKER_LEAVE_TIMEOUT);
        if kill(pid, Signal::SIGUSR2).is_err() {
            // Already gone.
            self.check_replacement(now);
        }
    }

    /// Starts the new broker once the one being replaced is gone; kills it if it is late.
    pub(super) fn check_replacement(&mut self, now: Instant) {
        let Some((pid, kill_at)) = self.broker.replacing() else { return };
        if super::listen::process_is_running(pid) {
            if now >= kill_at {
                warn!(
                    "the old broker (pid {pid}) did not leave within {} s; killing it",
                    BROKER_LEAVE_TIMEOUT.as_secs()
                );
                let _ = kill(pid, Signal::SIGKILL);
                self.broker.replacing_started(pid, now + BROKER_LEAVE_TIMEOUT);
            }
            return;
        }
        self.broker.replaced();
        if self.broker.pid == Some(pid) {
            self.broker.pid = None;
        }
        self.broker.adopted = false;
        self.drop_link();
        if self.shutdown.is_some() {
            return;
        }
        if let Err(err) = self.start_broker() {
            error!("cannot start the broker: {err}");
            self.schedule_broker_restart();
        }
    }
}

/// Puts `FD_CLOEXEC` back on descriptors a failed exec was to hand over.
fn restore_close_on_exec(fds: &[RawFd]) {
    for &fd in fds {
        let _ = sys::set_close_on_exec(fd, true);
    }
}

/// Runs `binary <the master's arguments> --check-upgrade`: what it speaks, or why not.
fn preflight(binary: &Path) -> Result<Compatibility, String> {
    let shown = binary.display();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut child = Command::new(binary)
        .args(&args)
        .arg("--check-upgrade")
        .env_remove(UPGRADE_FD_VARIABLE)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {shown}: {err}"))?;
    let deadline = Instant::now() + PREFLIGHT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} --check-upgrade did not answer within {} s",
                    PREFLIGHT_TIMEOUT.as_secs()
                ));
            }
            // Bounded: the pre-flight parses a file and prints a line.
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(err) => return Err(format!("cannot wait for {shown} --check-upgrade: {err}")),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if !status.success() {
        let said =
            stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no message");
        return Err(format!("{shown} --check-upgrade failed ({status}): {}", said.trim()));
    }
    stdout
        .lines()
        .find_map(Compatibility::parse)
        .ok_or_else(|| format!("{shown} --check-upgrade printed no compatibility line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reads_back_as_it_was_written() {
        let state = UpgradeState {
            format: UPGRADE_STATE_VERSION,
            generation: 3,
            binary: "/usr/sbin/chatd".into(),
            service_user: true,
            listeners: vec![
                (5, ListenerKind::Plain),
                (6, ListenerKind::Tls),
                (7, ListenerKind::Web),
            ],
            broker_sockets: Some((7, 8)),
            admissions: (9, 10),
            broker: Some((1234, false)),
            sessions: vec![HandedSession {
                pid: 99,
                peer: "127.0.0.1:4000".parse().expect("address"),
                age_ms: 1500,
                identity: Some(42),
                connected_at: 1_700_000_000,
                generation: 2,
                version: "0.1.0".into(),
                protocol: 9,
            }],
            admission: AdmissionSnapshot {
                clients: vec![(99, std::net::IpAddr::from([127, 0, 0, 1]), true)],
                records: Vec::new(),
            },
            started_at: 1_700_000_000,
            accepted: 12,
            child_crashes: 1,
            broker_restarts: 2,
            refusals: BTreeMap::from([("full".to_string(), 3)]),
            tls: None,
        };
        let json = serde_json::to_vec(&state).expect("encodes");
        let back: UpgradeState = serde_json::from_slice(&json).expect("decodes");
        assert_eq!(serde_json::to_vec(&back).expect("encodes"), json);
    }

    #[test]
    fn a_missing_binary_is_refused_by_the_preflight_with_the_reason() {
        let why = preflight(Path::new("/nonexistent/chatd")).expect_err("refused");
        assert!(why.starts_with("cannot run /nonexistent/chatd: "), "{why}");
    }
}
