//! Why a session could not start or had to stop: one error type, with the step that failed.
//!
//! Owns [`SessionError`] only. A session's ordinary ends (the client left, was kicked, timed
//! out) are no errors: they are logged where they happen and the process exits 0.

use std::io;
use std::path::PathBuf;

/// A session that could not be set up, or whose loop failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot create the poller: {0}")]
    Poll(#[source] io::Error),
    #[error("cannot reach the broker at {}: {source}", socket.display())]
    Broker {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] io::Error),
    #[error("cannot register the client connection: {0}")]
    Register(#[source] io::Error),
    #[error("cannot wait for events: {0}")]
    Wait(#[source] io::Error),
    #[error("cannot read pending signals: {0}")]
    ReadSignals(#[source] io::Error),
}
