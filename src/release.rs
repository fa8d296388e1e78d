//! Which build of chatd this process runs, and what it can take over from another build.
//!
//! Owns the version string operators see (`chatd --version`, `chatctl status`, the greeting)
//! and the versions an in-place upgrade checks ([`Compatibility`], printed by
//! `chatd --check-upgrade` and read back by the master that runs it). The program's entry point
//! sets the version once, before anything else runs; nothing here does I/O.

use std::sync::OnceLock;

use crate::proto::control::CONTROL_VERSION;
use crate::proto::{OLDEST_SESSION_PROTOCOL, PROTOCOL_VERSION};

/// Version of the state an upgrading master hands to the image it executes
/// (`master::upgrade`). A new image reads states from [`OLDEST_UPGRADE_STATE`] to this one.
pub const UPGRADE_STATE_VERSION: u32 = 1;
pub const OLDEST_UPGRADE_STATE: u32 = 1;

static VERSION: OnceLock<&'static str> = OnceLock::new();

/// Sets the version string this process reports (the entry point, once; later calls are
/// ignored). Without it, the crate's version.
pub fn set_version(version: &'static str) {
    let _ = VERSION.set(version);
}

/// The version string of the running build.
pub fn version() -> &'static str {
    VERSION.get().copied().unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// What a build speaks, as `chatd --check-upgrade` prints it on one line and an upgrading
/// master parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    pub version: String,
    /// The session and link protocol it speaks, and the oldest session protocol its broker
    /// serves.
    pub protocol: u32,
    pub oldest_session_protocol: u32,
    pub control: u32,
    /// The upgrade states its master reads.
    pub oldest_upgrade_state: u32,
    pub upgrade_state: u32,
}

impl Compatibility {
    /// This build's.
    pub fn running() -> Compatibility {
        Compatibility {
            version: version().to_string(),
            protocol: PROTOCOL_VERSION,
            oldest_session_protocol: OLDEST_SESSION_PROTOCOL,
            control: CONTROL_VERSION,
            oldest_upgrade_state: OLDEST_UPGRADE_STATE,
            upgrade_state: UPGRADE_STATE_VERSION,
        }
    }

    /// The line `chatd --check-upgrade` prints: words an operator reads, with `key=value`
    /// fields a master parses (the version last: it may hold anything but spaces).
    pub fn line(&self) -> String {
        format!(
            "settings ok; protocol={} sessions={}-{} control={} upgrade-state={}-{} version={}",
            self.protocol,
            self.oldest_session_protocol,
            self.protocol,
            self.control,
            self.oldest_upgrade_state,
            self.upgrade_state,
            self.version
        )
    }

    /// Reads [`Compatibility::line`] back; `None` if a field is missing or not a number.
    pub fn parse(line: &str) -> Option<Compatibility> {
        let field = |key: &str| {
            line.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        };
        let range = |key: &str| -> Option<(u32, u32)> {
            let (low, high) = field(key)?.split_once('-')?;
            Some((low.parse().ok()?, high.parse().ok()?))
        };
        let (oldest_session_protocol, protocol) = range("sessions")?;
        let (oldest_upgrade_state, upgrade_state) = range("upgrade-state")?;
        Some(Compatibility {
            version: field("version")?.to_string(),
            protocol: field("protocol")?.parse().ok().filter(|&p| p == protocol)?,
            oldest_session_protocol,
            control: field("control")?.parse().ok()?,
            oldest_upgrade_state,
            upgrade_state,
        })
    }

    /// Whether this build's broker serves sessions that speak `protocol`.
    pub fn serves_sessions_of(&self, protocol: u32) -> bool {
        (self.oldest_session_protocol..=self.protocol).contains(&protocol)
    }

    /// Whether this build's master reads an upgrade state of `version`.
    pub fn reads_upgrade_state(&self, version: u32) -> bool {
        (self.oldest_upgrade_state..=self.upgrade_state).contains(&version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_upgrade_line_reads_back_as_it_was_written() {
        let running = Compatibility::running();
        assert_eq!(Compatibility::parse(&running.line()), Some(running.clone()));
        let next = Compatibility { version: "0.2.0+next".into(), ..running };
        assert_eq!(Compatibility::parse(&next.line()), Some(next));
    }

    #[test]
    fn a_line_without_every_field_is_not_understood() {
        assert_eq!(Compatibility::parse("settings ok"), None);
        assert_eq!(Compatibility::parse("protocol=10 sessions=9-10 control=4 version=x"), None);
        // The protocol must be the top of the session range.
        let line = "protocol=9 sessions=9-10 control=4 upgrade-state=1-1 version=x";
        assert_eq!(Compatibility::parse(line), None);
    }

    #[test]
    fn ranges_answer_for_older_sessions_and_states() {
        let running = Compatibility::running();
        assert!(running.serves_sessions_of(PROTOCOL_VERSION));
        assert!(running.serves_sessions_of(OLDEST_SESSION_PROTOCOL));
        assert!(!running.serves_sessions_of(OLDEST_SESSION_PROTOCOL - 1));
        assert!(!running.serves_sessions_of(PROTOCOL_VERSION + 1));
        assert!(running.reads_upgrade_state(UPGRADE_STATE_VERSION));
        assert!(!running.reads_upgrade_state(UPGRADE_STATE_VERSION + 1));
    }
}
