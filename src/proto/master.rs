//! The master's link to the broker: its own pair of message enums, apart from the sessions'.
//!
//! The link is a socket pair the master creates before it forks the broker (or, for a broker
//! whose master died, a connection to `broker.sock`, which the broker accepts only while no
//! master is linked). Its first frame is [`super::Greeting::Master`] carrying a [`MasterHello`];
//! after that the master sends [`MasterRequest`]s and receives [`MasterEvent`]s. No session
//! can send or receive these: a session's channel is typed `Request`/`Event`.
//!
//! This module owns the message shapes only; framing is `codec`'s, the broker's side of the link
//! is `broker::link` and the master's `master::link`.

use serde::{Deserialize, Serialize};

use super::control::MasterFigures;

/// What the master says first on its link: that it is the master, and which one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterHello {
    pub version: u32,
    pub pid: u32,
    /// When the master started (Unix seconds), for `chatctl status`.
    pub started_at: u64,
}

/// Master → broker, after its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterRequest {
    /// The master's figures, sent every second.
    Figures(MasterFigures),
    /// The answer to [`MasterEvent::Reload`]: `None` if the settings were reloaded.
    Reloaded { error: Option<String> },
    /// The master forked the session child with this `identity` (see `Event::Welcome`) for the
    /// client at `peer`, accepted at `connected_at` (Unix seconds). Sent at every fork and, for
    /// every live session, whenever a link opens.
    Vouch { identity: u64, peer: String, connected_at: u64 },
    /// The answer to [`MasterEvent::Upgrade`], sent before the master executes the new binary
    /// (or instead of it).
    Upgrade(UpgradeAnswer),
}

/// What the master says to an operator's upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpgradeAnswer {
    /// Not attempted: the pre-flight failed, another upgrade is under way, the daemon is
    /// stopping. The sentence says why.
    Refused(String),
    /// The pre-flight passed; the master executes `binary` now, which becomes `generation`.
    Starting { binary: String, version: String, generation: u32 },
}

/// Broker → master: what operators ask of the daemon as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterEvent {
    /// Read the settings again and answer [`MasterRequest::Reloaded`].
    Reload,
    /// Stop the daemon as on SIGTERM.
    Stop,
    /// Replace the master's code in place with `binary` (`None`: the path the master was
    /// started from), then the broker's; answer [`MasterRequest::Upgrade`].
    Upgrade { binary: Option<String> },
}
