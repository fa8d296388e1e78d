//! `chatctl upgrade`: asks the master to execute a new binary in place, then follows the
//! outcome in `status`, since the broker that took the request is itself replaced.
//!
//! It owns the waiting and the sentences the operator reads. It must not decide anything about
//! the upgrade: the master's pre-flight does, and its answer or its figures say how it went.
//!
//! A package's postinst runs the new chatctl against the daemon still running the old code,
//! which speaks an older control protocol whenever the version moved. The protocol keeps
//! `Upgrade` and the replies `Done`, `Failed`, `Denied` and `VersionMismatch` at their places
//! (requests and replies are only appended, and a unit test pins their bytes), so chatctl asks
//! an older (or newer) broker in that broker's version, and knows the upgrade came into force
//! when a broker answers `status` in its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, exchange, exchange_in};
use crate::proto::control::{CONTROL_VERSION, ControlReply, ControlRequest, MasterFigures};

/// How long chatctl follows an upgrade before it gives up saying so.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it reads `status` meanwhile.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// No master linked for this long after the exec: the new image did not start.
const MASTER_GONE_AFTER: Duration = Duration::from_secs(5);
/// The control protocol that brought `Upgrade`: an older broker cannot be asked.
const FIRST_WITH_UPGRADE: u32 = 4;

/// What `status` says of the master.
enum Master {
    Linked(Box<MasterFigures>),
    /// A broker answers, and no master is linked to it.
    Unlinked,
    /// The broker speaks control protocol `broker`, not this chatctl's.
    OtherProtocol {
        broker: u32,
    },
}

/// Runs `chatctl upgrade [--binary PATH]` against the control socket at `path`.
pub fn run(path: &Path, binary: Option<PathBuf>) -> u8 {
    let (version, before) = match master(path) {
        Ok(Master::Linked(master)) => (CONTROL_VERSION, Some(master)),
        Ok(Master::OtherProtocol { broker }) if broker >= FIRST_WITH_UPGRADE => (broker, None),
        Ok(Master::OtherProtocol { broker }) => {
            eprintln!(
                "chatctl: upgrade refused: the running chatd speaks control protocol {broker}, \
                 which has no in-place upgrade; restart it to run the new version"
            );
            return EXIT_FAILED;
        }
        Ok(Master::Unlinked) => {
            eprintln!(
                "chatctl: upgrade refused: no master is linked to the broker (start chatd again \
                 to adopt it, then upgrade)"
            );
            return EXIT_FAILED;
        }
        Err(why) => {
            eprintln!("chatctl: {why}");
            return EXIT_UNREACHABLE;
        }
    };
    let binary = binary.map(|path| absolute(&path).display().to_string());
    match exchange_in(path, version, ControlRequest::Upgrade { binary }, None) {
        Ok(ControlReply::Failed(why)) => {
            eprintln!("chatctl: upgrade refused: {why}");
            return EXIT_FAILED;
        }
        Ok(ControlReply::Done(_)) => {}
        Ok(ControlReply::Denied(why)) => {
            eprintln!("chatctl: {why}");
            return EXIT_UNREACHABLE;
        }
        Ok(other) => {
            eprintln!("chatctl: unexpected answer to upgrade: {other:?}");
            return EXIT_FAILED;
        }
        // The broker can be replaced before its answer is written: follow the status.
        Err(_) => {}
    }
    follow(path, before.as_deref())
}

/// Reads `status` until the master's generation moves past `before`'s (or, from a broker of
/// another protocol, `before` being `None`, until a broker answers in this chatctl's), its
/// upgrade failed, or it has been gone for [`MASTER_GONE_AFTER`].
fn follow(path: &Path, before: Option<&MasterFigures>) -> u8 {
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    let mut unlinked_since: Option<Instant> = None;
    let mut old_protocol = None;
    while Instant::now() < deadline {
        match master(path) {
            Ok(Master::Linked(now))
                if before.is_none_or(|before| now.generation > before.generation) =>
            {
                let older: u64 = now
                    .sessions_by_code
                    .iter()
                    .filter(|code| code.generation < now.generation)
                    .map(|code| code.sessions)
                    .sum();
                let same = match before {
                    Some(before) if now.pid != before.pid => " (changed)",
                    Some(_) => " (unchanged)",
                    None => "",
                };
                println!(
                    "upgraded: chatd {}, generation {}, master pid {}{same}; {older} \
                     session(s) run older code until their clients leave",
                    now.version, now.generation, now.pid
                );
                return EXIT_OK;
            }
            Ok(Master::Linked(now)) => {
                unlinked_since = None;
                if let Some(failure) = now.upgrade_failure {
                    eprintln!("chatctl: upgrade failed: {failure}; the running chatd carries on");
                    return EXIT_FAILED;
                }
            }
            // The old broker of another protocol, which tells no failure this chatctl can
            // read: the time-out below says where to look.
            Ok(Master::OtherProtocol { broker }) => {
                unlinked_since = None;
                old_protocol = Some(broker);
            }
            // Between the old broker and the new one, or the master is gone.
            Ok(Master::Unlinked) | Err(_) => {
                let since = *unlinked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= MASTER_GONE_AFTER && master_gone(path) {
                    eprintln!(
                        "chatctl: upgrade failed: the master is gone (the new binary did not \
                         start); the broker and the sessions carry on: start chatd again to \
                         adopt them"
                    );
                    return EXIT_FAILED;
                }
            }
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    match old_protocol {
        Some(broker) => eprintln!(
            "chatctl: the upgrade did not come into force within {} s: the running chatd still \
             speaks control protocol {broker}; see the daemon's log",
            FOLLOW_TIMEOUT.as_secs()
        ),
        None => eprintln!(
            "chatctl: the upgrade did not finish within {} s; see the daemon's log and `chatctl \
             status`",
            FOLLOW_TIMEOUT.as_secs()
        ),
    }
    EXIT_FAILED
}

/// A broker answers and says no master is linked.
fn master_gone(path: &Path) -> bool {
    matches!(master(path), Ok(Master::Unlinked))
}

/// The master as `status` shows it.
fn master(path: &Path) -> Result<Master, String> {
    match exchange(path, ControlRequest::Status, None) {
        Ok(ControlReply::Status(status)) => {
            Ok(status.master.map_or(Master::Unlinked, |master| Master::Linked(Box::new(master))))
        }
        Ok(ControlReply::Denied(why)) => Err(why),
        Ok(ControlReply::VersionMismatch { broker }) => Ok(Master::OtherProtocol { broker }),
        Ok(other) => Err(format!("unexpected answer to status: {other:?}")),
        Err(err) => Err(err.to_string()),
    }
}

/// `path` as the master will find it (it runs elsewhere, from `/`).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
