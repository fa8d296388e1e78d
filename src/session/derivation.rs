//! A password derivation in a child of the session, at idle CPU priority.
//!
//! Argon2id takes a core and 19 MiB for about 20 ms. In the session's own process it would
//! compete with every other process for the CPU at normal priority, so that fifty people
//! logging in at once would slow down the chat of everyone else on the machine; and the
//! session would serve nothing meanwhile. So the session forks a child for it: the child sets
//! itself to nice 19 (a small share of a contended core, but always some: see
//! [`sys::lowest_cpu_priority`]), derives, writes the proof to a pipe as one frame, and exits; the session's loop reads the pipe like its other sources.
//! An unprivileged process may lower its priority but not raise it again, which is why the
//! derivation has a process of its own rather than lowering the session's.
//!
//! Owns the child, its pipe and the reading of its answer. It does not decide what is derived
//! (that is [`password`](super::password)'s) nor what the proof is used for.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::password::Entries;
use crate::proto::Request;
use crate::proto::codec::{decode_frame, frame};
use crate::sys::{self, Forked};

/// The most a proof's frame takes (two 32-byte tags and a nonce, framed): anything longer is
/// not one.
const MAX_PROOF_FRAME: usize = 4096;

/// A derivation under way.
pub struct Derivation {
    child: Pid,
    answer: File,
    read: Vec<u8>,
}

/// What a finished derivation gave.
#[derive(Debug)]
pub enum Derived {
    Proof(Request),
    /// The child could not derive (unusable parameters, no memory) or died.
    Failed(String),
}

impl Derivation {
    /// Forks the child that derives `entries`' proof.
    ///
    /// # Safety
    ///
    /// The calling process must be single-threaded (a session is: it never starts threads),
    /// as for [`sys::fork_with_signals_blocked`].
    pub unsafe fn start(entries: Entries) -> io::Result<Derivation> {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        // SAFETY: the caller promises a single-threaded process.
        match unsafe { sys::fork_with_signals_blocked() }? {
            Forked::Child => {
                drop(read_end);
                derive_and_exit(entries, write_end)
            }
            Forked::Parent(child) => {
                drop(write_end);
                nix::fcntl::fcntl(
                    &read_end,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(io::Error::from)?;
                Ok(Derivation { child, answer: File::from(read_end), read: Vec::new() })
            }
        }
    }

    /// The pipe, for the session's poller (readable when the answer is in, or the child died).
    pub fn source(&self) -> std::os::fd::RawFd {
        self.answer.as_raw_fd()
    }

    /// Reads what the child wrote: `None` while it is still at work.
    pub fn poll(&mut self) -> Option<Derived> {
        let mut chunk = [0u8; 512];
        loop {
            match self.answer.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) if self.read.len() + n <= MAX_PROOF_FRAME => {
                    self.read.extend_from_slice(&chunk[..n])
                }
                Ok(_) => return Some(self.end(Derived::Failed("an oversized answer".into()))),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Some(self.end(Derived::Failed(err.to_string()))),
            }
        }
        let derived = match decode_frame::<Request>(&self.read) {
            Ok(Some((proof @ Request::Prove { .. }, _))) => Derived::Proof(proof),
            Ok(_) if self.read.is_empty() => Derived::Failed("the derivation failed".into()),
            Ok(_) | Err(_) => Derived::Failed("an answer that is no proof".into()),
        };
        Some(self.end(derived))
    }

    /// The child is done (it closed its end): collected, so that it leaves no zombie.
    fn end(&mut self, derived: Derived) -> Derived {
        let _ = waitpid(self.child, None::<WaitPidFlag>);
        derived
    }
}

/// The child's whole life: the lowest priority, the derivation, one frame, exit. It never returns
/// into the session's code (whose objects own descriptors and a connection to the broker).
fn derive_and_exit(entries: Entries, answer: OwnedFd) -> ! {
    let _ = sys::lowest_cpu_priority();
    let status = match entries.prove().ok().and_then(|proof| frame(&proof).ok()) {
        Some(bytes) => match File::from(answer).write_all(&bytes) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        // Nothing written: the session reads an empty answer as a failure.
        None => 1,
    };
    // SAFETY: `_exit` ends this process at once, without running the session's destructors
    // or atexit handlers, which belong to the parent.
    unsafe { nix::libc::_exit(status) }
}
