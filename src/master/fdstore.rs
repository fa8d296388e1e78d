//! Handing the listeners the master bound itself to systemd's file-descriptor store
//! (`FDSTORE=1`, sd_notify(3)), so that a master that crashes and is restarted
//! (`Restart=on-failure`) gets the very same sockets back through `LISTEN_FDS`: no bind gap, no
//! `EADDRINUSE`, and connections made meanwhile wait in the backlog.
//!
//! It owns only the names the stored sockets carry, which must round-trip through
//! [`listen::from_systemd`]: a TLS listener is stored as [`listen::SYSTEMD_TLS_NAME`], a web
//! one as [`listen::SYSTEMD_WEB_NAME`], a plain one as [`PLAIN_NAME`]. It must not store sockets the master got from systemd (systemd holds
//! them already: a socket unit's, or the store's own after a restart), must not fail the
//! start (a store that refuses is logged once, and the daemon runs as without one), and does
//! nothing without `NOTIFY_SOCKET` (sd-notify returns at once). The store needs
//! `FileDescriptorStoreMax=` in the unit; systemd drops it on a real stop.

use std::net::TcpListener;
use std::os::fd::AsFd;

use log::warn;
use sd_notify::NotifyState;

use super::listen::{self, ListenerKind};

/// The name a plain listener is stored under (any name but the TLS and web ones means plain).
pub const PLAIN_NAME: &str = "plain";

/// The store name for a listener of `kind`.
pub fn name_of(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Plain => PLAIN_NAME,
        ListenerKind::Tls => listen::SYSTEMD_TLS_NAME,
        ListenerKind::Web => listen::SYSTEMD_WEB_NAME,
    }
}

/// Pushes `listeners` to systemd's store, one message per kind (systemd gives every
/// descriptor of a message that message's `FDNAME`). A failure is logged once, at warning.
pub fn store(listeners: &[(TcpListener, ListenerKind)]) {
    for kind in [ListenerKind::Plain, ListenerKind::Tls, ListenerKind::Web] {
        let fds: Vec<_> = listeners
            .iter()
            .filter(|(_, listener_kind)| *listener_kind == kind)
            .map(|(listener, _)| listener.as_fd())
            .collect();
        if fds.is_empty() {
            continue;
        }
        let state = [NotifyState::FdStore, NotifyState::FdName(name_of(kind))];
        if let Err(err) = sd_notify::notify_with_fds(&state, &fds) {
            warn!(
                "cannot keep the listening sockets in systemd's store ({err}); a restarted \
                 chatd binds them again"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_systemd() {
        for kind in [ListenerKind::Plain, ListenerKind::Tls, ListenerKind::Web] {
            assert_eq!(listen::kind_named(name_of(kind)), kind, "{kind:?}");
        }
        // A socket unit's own name (systemd's default FileDescriptorName) is a plain listener.
        assert_eq!(listen::kind_named("chatd.socket"), ListenerKind::Plain);
    }
}
