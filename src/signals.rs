//! Signals in the broker and session children, read from a `signalfd`.
//!
//! The master uses signal-hook's mio source. Its children cannot: after `fork` they share the
//! master's self-pipe and signal-hook's global registry, which believes its handlers are still
//! installed even after `sys::fork_with_signals_blocked` reset them to the defaults. So a child
//! blocks the signals it cares about and reads them from a `signalfd` registered with its own
//! poller. This module owns that descriptor and nothing else.

use std::io;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::sys;

/// Signals a child handles: termination requests and reload.
pub struct ChildSignals {
    fd: SignalFd,
}

impl ChildSignals {
    /// Blocks `signals` (and only them) in this process and opens a non-blocking descriptor
    /// that reports them. A child forked by `sys::fork_with_signals_blocked` calls this once,
    /// early: until then every signal is blocked.
    pub fn new(signals: &[Signal]) -> io::Result<Self> {
        let mut mask = SigSet::empty();
        for &signal in signals {
            mask.add(signal);
        }
        sys::set_blocked_signals(&mask)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(ChildSignals { fd })
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut SourceFd(&self.fd.as_raw_fd()), token, Interest::READABLE)
    }

    /// The next pending signal, if any.
    pub fn take_pending(&mut self) -> io::Result<Option<Signal>> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                        return Ok(Some(signal));
                    }
                }
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}
