//! The session's sandbox: once a session child has connected to the broker, and before it reads
//! a byte from its client, it gives up the file system with Landlock, so that a session taken
//! over through its client cannot open what its user (the daemon's) may read: the state
//! directory (the database with every account's verifier and the token key, `state.toml`, the
//! self-signed TLS key), the configured TLS key, the settings file, `/proc`.
//!
//! # What a confined session may still do
//! - Read `/etc/localtime` and everything under `/usr/share/zoneinfo` ([`SESSION_READABLE`]),
//!   public files: the C library formats local times from them. glibc reads the zone once per
//!   process, and [`confine_session`] has it do so before restricting ([`sys::load_time_zone`]);
//!   the rule is for C libraries that read it later.
//! - Connect to `broker.sock` again after a broker restart: connecting to a pathname Unix
//!   socket needs no Landlock right up to ABI 8 (Linux 7.0; `MakeSock` is for `bind`). ABI 9
//!   (Linux 7.1) adds `ResolveUnix`, which would scope that connect too; it is left unhandled
//!   on purpose ([`FILE_SYSTEM_ABI`]): the socket a session must reach can be a new inode in a
//!   new runtime directory (`rm -rf /run/chatd` recovery), where no rule made at start holds,
//!   and chatd has not been tested on such a kernel.
//! - Use whatever it holds already: the client connection, the broker's socket, its room's
//!   ring (a memfd), the log's socket or standard error, the master's report socket.
//!
//! # What it cannot do (each where the kernel has that ABI, best effort below it)
//! - Open, create, remove, rename, link, truncate or execute any other file, list any other
//!   directory, or ioctl a device it opens (every file system right of ABI 8).
//! - Bind or connect a TCP socket (ABI 4): a session never does, and the PostgreSQL server the
//!   broker uses may listen on loopback.
//! - Signal, or connect to an abstract Unix socket of, a process outside its own sandbox
//!   (ABI 6): other sessions, the broker and the master run as the same user.
//!
//! `no_new_privs` is set first, as Landlock requires of an unprivileged process (it is already
//! set where chatd dropped root).
//!
//! # Where the kernel has no Landlock
//! A session goes on unconfined and says so only at debug: the daemon says it once, at warn,
//! when it starts, with the reason (no Landlock in the kernel, not enabled at boot, or a system
//! call filter that refuses it: systemd's `@system-service` does not list Landlock's calls, so
//! the shipped units add them) ([`check_at_start`], called by the master and by `chatd broker`,
//! which inetd-style sessions use). That check builds the very ruleset a session applies, so that a
//! kernel without Landlock, one that has it disabled, or a system call filter that refuses it
//! shows there; only the last step, `landlock_restrict_self`, is a session's own, and its
//! failure (which the check cannot foresee and should never happen) is logged by the session.
//!
//! This module owns the ruleset and its application. It must not start threads (Landlock
//! restricts the calling thread, and sessions have one), open or read anything beyond the
//! rules' paths, or decide when a role confines itself: the session does, at start.

use std::io;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, PathFd, RestrictSelf,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope,
};
use log::{debug, info, warn};

use crate::sys;

/// What a confined session may still read: the local time zone.
pub const SESSION_READABLE: [&str; 2] = ["/etc/localtime", "/usr/share/zoneinfo"];

/// The file system rights handled, as of this ABI (Linux 7.0), which adds nothing to ABI 5's
/// (`IoctlDev`). ABI 9's `ResolveUnix` is left out on purpose (see the module's doc).
const FILE_SYSTEM_ABI: ABI = ABI::V8;
/// TCP bind and connect.
const NETWORK_ABI: ABI = ABI::V4;
/// Signals and abstract Unix sockets.
const SCOPE_ABI: ABI = ABI::V6;

/// How confined a session is (or would be, for [`check_at_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Everything the module's doc lists.
    Full,
    /// The kernel's Landlock is older than some of it (files are always covered).
    Partial,
    /// The kernel has no Landlock, or has it disabled.
    None,
}

/// Why a session could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(io::Error),
    #[error("{0}")]
    Landlock(#[from] RulesetError),
}

/// Confines the calling process as a session (the module's doc says to what). Call it in the
/// session child once it holds every descriptor it needs, before it reads from its client.
/// Needs no single-threaded caller, but restricts only the calling thread (a session has one).
pub fn confine_session() -> Result<Confinement, SandboxError> {
    nix::sys::prctl::set_no_new_privs().map_err(|errno| SandboxError::NoNewPrivs(errno.into()))?;
    sys::load_time_zone();
    let status = session_ruleset()?.restrict_self()?;
    Ok(confinement_of(&status))
}

/// Confines the calling session and says how, at debug (the daemon said at start whether
/// sessions can be confined); a failure the start-up check could not foresee is logged at warn.
/// The session goes on either way.
pub fn confine_session_or_log() {
    match confine_session() {
        Ok(Confinement::None) => debug!("not confined: the kernel has no Landlock"),
        Ok(confinement) => debug!("confined by Landlock ({confinement:?})"),
        Err(err) => {
            warn!("cannot confine this session with Landlock: {err}; it goes on unconfined")
        }
    }
}

/// Checks, once at the daemon's start, whether sessions will be confined, and says so: at info
/// if they will, at warn (once for the daemon, not per session) if they will not. Builds the
/// ruleset a session applies, without restricting the caller.
pub fn check_at_start() -> Confinement {
    let expected = match expected_confinement() {
        Ok(expected) => expected,
        Err(err) => {
            warn!(
                "sessions cannot be confined with Landlock ({err}): a session taken over through \
                 its client could read what the daemon's user may read, such as the state \
                 directory with the database"
            );
            return Confinement::None;
        }
    };
    match expected {
        Confinement::Full => info!("sessions are confined by Landlock"),
        Confinement::Partial => info!(
            "sessions are confined by Landlock, partly (this kernel's Landlock is older than \
             ABI {}: files are covered, not all of TCP, signals and abstract sockets)",
            SCOPE_ABI as i32
        ),
        Confinement::None => warn!(
            "{}: sessions are not confined, and one taken over through its client could read \
             what the daemon's user may read, such as the state directory with the database",
            why_no_landlock(sys::landlock_abi().err())
        ),
    }
    expected
}

/// Why Landlock cannot be used, from the error the kernel gave for its version (`None`: it
/// gave a version, which the crate did not take).
fn why_no_landlock(error: Option<nix::errno::Errno>) -> String {
    use nix::errno::Errno;
    match error {
        Some(Errno::EPERM) => "a system call filter refuses Landlock's calls (under systemd, add \
             `SystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self` \
             after `SystemCallFilter=@system-service`, as the shipped units do)"
            .to_string(),
        Some(Errno::EOPNOTSUPP) => "the kernel has Landlock but it is not enabled (add \
             `landlock` to the `lsm=` boot parameter)"
            .to_string(),
        Some(Errno::ENOSYS) => {
            "the kernel has no Landlock (Linux 5.13 and later, CONFIG_SECURITY_LANDLOCK)".into()
        }
        Some(errno) => format!("Landlock is not available ({errno})"),
        None => "Landlock is not available".to_string(),
    }
}

/// What [`confine_session`] would achieve here, without restricting the caller.
fn expected_confinement() -> Result<Confinement, SandboxError> {
    // Without flags, `apply` only asks the kernel for its Landlock ABI.
    let probe = RestrictSelf::default().no_new_privs(false).apply()?;
    let LandlockStatus::Available { effective_abi, .. } = probe.landlock else {
        return Ok(Confinement::None);
    };
    // Creating the ruleset and adding its rules is every step but the last.
    drop(session_ruleset()?);
    Ok(if effective_abi >= SCOPE_ABI { Confinement::Full } else { Confinement::Partial })
}

/// The session's ruleset, created and filled, ready to restrict a process.
fn session_ruleset() -> Result<RulesetCreated, RulesetError> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(FILE_SYSTEM_ABI))?
        .handle_access(AccessNet::from_all(NETWORK_ABI))?
        .scope(Scope::from_all(SCOPE_ABI))?
        .create()?;
    for path in SESSION_READABLE {
        if let Some(rule) = read_rule(Path::new(path)) {
            ruleset = ruleset.add_rule(rule)?;
        }
    }
    Ok(ruleset)
}

/// A rule to read `path` (a file) or everything beneath it (a directory); none if it does not
/// exist (a system without time zone files formats UTC).
fn read_rule(path: &Path) -> Option<PathBeneath<PathFd>> {
    let is_dir = std::fs::metadata(path).ok()?.is_dir();
    let access = match is_dir {
        true => AccessFs::ReadFile | AccessFs::ReadDir,
        false => AccessFs::ReadFile.into(),
    };
    Some(PathBeneath::new(PathFd::new(path).ok()?, access))
}

fn confinement_of(status: &RestrictionStatus) -> Confinement {
    match status.ruleset {
        RulesetStatus::FullyEnforced => Confinement::Full,
        RulesetStatus::PartiallyEnforced => Confinement::Partial,
        RulesetStatus::NotEnforced => Confinement::None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
