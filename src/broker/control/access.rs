//! Who may use `control.sock`, and how many connections they may hold: decided at accept from
//! the caller's credentials (SO_PEERCRED, SO_PEERGROUPS), before a byte is read.
//!
//! Allowed: root, the daemon's own user (unless it is a service user chatd switched to from
//! root, which every session runs as), and members of the admin group. The decisions are pure
//! functions of the credentials; only [`Access::new`] (user and group names, NSS) and
//! [`Access::allows`] (the peer's groups) ask the system. It must not read from or write to a
//! connection.

use log::{info, warn};
use mio::net::UnixStream;

use crate::sys;

/// Most connections one operator uid may hold at once (chatctl uses one at a time).
pub(super) const CONNECTIONS_PER_UID: usize = 8;

/// Most connections all operators but root may hold at once; root has its own
/// [`CONNECTIONS_PER_UID`] beyond it.
pub(super) const CONNECTIONS_TOTAL: usize = 32;

/// Who may use the control socket.
#[derive(Debug)]
pub struct Access {
    uid: u32,
    user: String,
    /// `uid` is a service user chatd switched to from root: its own processes (every session
    /// child) are no operators, so a compromised session cannot act as one.
    service_user: bool,
    group: Option<(String, u32)>,
}

impl Access {
    /// Access for the daemon running as `uid`, with the admin group named `group` (looked up
    /// now: a group that does not exist admits nobody, said once).
    pub fn new(uid: u32, service_user: bool, group: Option<&str>) -> Access {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name);
        let group = group.and_then(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some((name.to_string(), group.gid.as_raw())),
            Ok(None) => {
                let who =
                    if service_user { "root".to_string() } else { format!("root and {user}") };
                info!("admin group {name} does not exist; only {who} may use chatctl");
                None
            }
            Err(err) => {
                warn!("cannot look up admin group {name}: {err}");
                None
            }
        });
        Access { uid, user, service_user, group }
    }

    pub fn service_user(&self) -> bool {
        self.service_user
    }

    /// Whether the process behind `stream`, running as `uid`, may use the control socket.
    pub(super) fn allows(&self, stream: &UnixStream, uid: u32) -> bool {
        self.allows_caller(
            uid,
            || sys::peer_gid(stream).ok(),
            || sys::peer_groups(stream).unwrap_or_default(),
        )
    }

    /// Whether a caller running as `uid` may use the control socket. Its primary group `gid`
    /// and its supplementary `groups` are asked for only when they decide.
    fn allows_caller(
        &self,
        uid: u32,
        gid: impl FnOnce() -> Option<u32>,
        groups: impl FnOnce() -> Vec<u32>,
    ) -> bool {
        if uid == 0 || (uid == self.uid && !self.service_user) {
            return true;
        }
        let Some((_, admin)) = &self.group else { return false };
        gid() == Some(*admin) || groups().contains(admin)
    }

    /// What a refused caller is told.
    pub(super) fn denial(&self) -> String {
        let group = match &self.group {
            Some((name, _)) => format!(", or members of group {name}"),
            None => String::new(),
        };
        if self.service_user {
            // Not the daemon's own user: that is what every session runs as.
            return format!("permission denied: only root{group} may control chatd");
        }
        format!("permission denied: only root, user {}{group} may control chatd", self.user)
    }
}

/// Connections already open when one more is refused: the caller's own, and all but root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Busy {
    pub(super) of_uid: usize,
    pub(super) others: usize,
}

/// Whether one more connection from `uid` fits next to those open (`open`: their uids).
/// Each uid may hold [`CONNECTIONS_PER_UID`]; all but root together [`CONNECTIONS_TOTAL`], so
/// root keeps a way in whatever others hold.
pub(super) fn room_for(uid: u32, open: impl Iterator<Item = u32> + Clone) -> Result<(), Busy> {
    let of_uid = open.clone().filter(|&open| open == uid).count();
    let others = open.filter(|&open| open != 0).count();
    if of_uid >= CONNECTIONS_PER_UID || (uid != 0 && others >= CONNECTIONS_TOTAL) {
        return Err(Busy { of_uid, others });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const DAEMON: u32 = 1000;
    const ADMINS: u32 = 50;

    fn access(service_user: bool, group: Option<u32>) -> Access {
        Access {
            uid: DAEMON,
            user: "chatd".into(),
            service_user,
            group: group.map(|gid| ("chatadm".to_string(), gid)),
        }
    }

    fn allows(access: &Access, uid: u32, gid: Option<u32>, groups: &[u32]) -> bool {
        access.allows_caller(uid, || gid, || groups.to_vec())
    }

    #[test]
    fn root_is_always_allowed() {
        assert!(allows(&access(false, None), 0, None, &[]));
        assert!(allows(&access(true, None), 0, None, &[]));
    }

    #[test]
    fn the_daemons_own_user_is_allowed_unless_it_is_a_service_user() {
        assert!(allows(&access(false, None), DAEMON, None, &[]));
        assert!(!allows(&access(true, None), DAEMON, None, &[]));
        // A service user in the admin group is still in the admin group.
        assert!(allows(&access(true, Some(ADMINS)), DAEMON, Some(ADMINS), &[]));
    }

    #[test]
    fn a_stranger_needs_the_admin_group_as_primary_or_supplementary_group() {
        let without = access(false, None);
        assert!(!allows(&without, 1234, Some(ADMINS), &[ADMINS]));
        let with = access(false, Some(ADMINS));
        assert!(!allows(&with, 1234, Some(7), &[8, 9]));
        assert!(allows(&with, 1234, Some(ADMINS), &[]));
        assert!(allows(&with, 1234, Some(7), &[8, ADMINS]));
    }

    #[test]
    fn groups_are_asked_for_only_when_they_decide() {
        let asked = Cell::new(0);
        let with = access(false, Some(ADMINS));
        let ask_gid = || {
            asked.set(asked.get() + 1);
            Some(ADMINS)
        };
        let ask_groups = || {
            asked.set(asked.get() + 10);
            Vec::new()
        };
        assert!(with.allows_caller(0, ask_gid, ask_groups));
        assert_eq!(asked.get(), 0);
        assert!(with.allows_caller(1234, ask_gid, ask_groups));
        assert_eq!(asked.get(), 1, "a matching primary group spares the supplementary ones");
        assert!(!access(false, None).allows_caller(1234, ask_gid, ask_groups));
        assert_eq!(asked.get(), 1, "without an admin group nothing is asked");
    }

    #[test]
    fn the_denial_names_who_is_allowed() {
        assert_eq!(
            access(false, None).denial(),
            "permission denied: only root, user chatd may control chatd"
        );
        assert_eq!(
            access(false, Some(ADMINS)).denial(),
            "permission denied: only root, user chatd, or members of group chatadm may control chatd"
        );
        assert_eq!(
            access(true, Some(ADMINS)).denial(),
            "permission denied: only root, or members of group chatadm may control chatd"
        );
        assert_eq!(access(true, None).denial(), "permission denied: only root may control chatd");
    }

    #[test]
    fn each_uid_may_hold_its_share() {
        let open = [7; CONNECTIONS_PER_UID - 1];
        assert_eq!(room_for(7, open.iter().copied()), Ok(()));
        let open = [7; CONNECTIONS_PER_UID];
        assert_eq!(
            room_for(7, open.iter().copied()),
            Err(Busy { of_uid: CONNECTIONS_PER_UID, others: CONNECTIONS_PER_UID })
        );
        // Someone else's full share does not count against another uid.
        assert_eq!(room_for(8, open.iter().copied()), Ok(()));
    }

    #[test]
    fn all_but_root_share_a_total_and_root_keeps_its_own_share_beyond_it() {
        let open: Vec<u32> = (0..CONNECTIONS_TOTAL as u32).map(|i| 100 + i).collect();
        assert_eq!(
            room_for(999, open.iter().copied()),
            Err(Busy { of_uid: 0, others: CONNECTIONS_TOTAL })
        );
        assert_eq!(room_for(0, open.iter().copied()), Ok(()));
        let mut with_root = open.clone();
        with_root.extend(std::iter::repeat_n(0, CONNECTIONS_PER_UID));
        assert_eq!(
            room_for(0, with_root.iter().copied()),
            Err(Busy { of_uid: CONNECTIONS_PER_UID, others: CONNECTIONS_TOTAL })
        );
        // Root's connections do not count towards the others' total.
        let roots = [0; CONNECTIONS_PER_UID - 1];
        assert_eq!(room_for(999, roots.iter().copied()), Ok(()));
    }
}
