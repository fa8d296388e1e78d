//! Who chatd runs as. Started as root, the master binds its sockets, hands the runtime
//! directory and `broker.sock` to the configured user, and becomes that user before it forks
//! anything, so no process that talks to a client ever has uid 0 or capabilities.
//!
//! Owns the policy (which user, the fallback, refusing root without a user); the system calls
//! are in `sys`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::{info, warn};
use nix::unistd::{Gid, Uid, User, chown};

use crate::sys;

/// Why chatd will not run as the user it would become, or cannot become it. Each says what
/// is wrong and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("refusing to run as root without a user to switch to (set user = \"chatd\")")]
    RootWithoutUser,
    #[error("cannot look up user {name}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("neither {DEFAULT_USER} nor {FALLBACK_USER} exists")]
    NoDefaultUser,
    /// `hint`: how to create it, for the package's user.
    #[error("user {name} does not exist{hint}")]
    UnknownUser { name: String, hint: &'static str },
    #[error("user {0} is root; choose an unprivileged user")]
    UserIsRoot(String),
    /// A directory chatd would trust that someone else could have made or can write.
    #[error("refusing the {what} {}: {why}", .dir.display())]
    UntrustedDir { what: &'static str, dir: PathBuf, why: String },
    #[error(
        "the runtime directory {} is inside {} (owner {owner}, mode {mode:04o}), which user \
         {user} cannot enter once chatd drops root, so nobody could reach its sockets; nothing \
         was created: choose another runtime_dir or let {user} through (e.g. `chmod o+x {}`)",
        .dir.display(),
        .ancestor.display(),
        .ancestor.display()
    )]
    Unreachable { dir: PathBuf, ancestor: PathBuf, owner: String, mode: u32, user: String },
    #[error("cannot hand {} to {user}: {source}", .path.display())]
    HandOver { path: PathBuf, user: String, source: nix::Error },
    #[error("cannot switch to user {user}: {source}")]
    Switch { user: String, source: std::io::Error },
}

/// The user the package creates. If it does not exist and `user` is not set (chatd run from a
/// source tree), chatd falls back to `nobody` and says loudly why that is weaker; a `user`
/// the file names must exist.
pub const DEFAULT_USER: &str = "chatd";
const FALLBACK_USER: &str = "nobody";

/// Why running as `nobody` is weaker, and what to do, in one log line.
fn nobody_is_weaker(why: &str) -> String {
    format!(
        "running as {FALLBACK_USER}{why}: weaker than a user of its own, for every other service \
         that runs as {FALLBACK_USER} could then connect to broker.sock as if it were chatd, pass \
         for its sessions, and signal or trace its processes (and read what people type); create \
         the {DEFAULT_USER} user (the package does; or `systemd-sysusers \
         packaging/sysusers.d/chatd.conf`, or `useradd --system --no-create-home --shell \
         /usr/sbin/nologin {DEFAULT_USER}`), and set user = \"{DEFAULT_USER}\" to refuse to start \
         without it"
    )
}

/// The account to switch to.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Why this user is weaker than one of chatd's own (`nobody`), for the start-up log. Each
    /// long-lived process says it once; inetd sessions, one per connection, do not.
    pub weaker: Option<String>,
}

/// Decides whom to run as. Not root: nobody to switch to (`None`). Root: the configured user,
/// or an error if there is none — chatd does not serve clients as root. `is_default`: the user
/// is the built-in default, which falls back to `nobody` (loudly) if it does not exist.
pub fn resolve(
    configured: Option<&str>,
    is_default: bool,
) -> Result<Option<RunAs>, PrivilegeError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let Some(name) = configured else {
        return Err(PrivilegeError::RootWithoutUser);
    };
    let lookup = |name: &str| {
        User::from_name(name)
            .map_err(|source| PrivilegeError::Lookup { name: name.to_string(), source })
    };
    let mut weaker = None;
    let user = match lookup(name)? {
        Some(user) => {
            if user.name == FALLBACK_USER {
                weaker = Some(nobody_is_weaker(" as configured"));
            }
            user
        }
        None if is_default && name == DEFAULT_USER => {
            weaker =
                Some(nobody_is_weaker(&format!(" because user {DEFAULT_USER} does not exist")));
            lookup(FALLBACK_USER)?.ok_or(PrivilegeError::NoDefaultUser)?
        }
        None => {
            let hint = if name == DEFAULT_USER {
                " (the package creates it; `systemd-sysusers packaging/sysusers.d/chatd.conf` \
                 does the same)"
            } else {
                ""
            };
            return Err(PrivilegeError::UnknownUser { name: name.to_string(), hint });
        }
    };
    if user.uid.is_root() {
        return Err(PrivilegeError::UserIsRoot(user.name));
    }
    Ok(Some(RunAs { name: user.name, uid: user.uid, gid: user.gid, weaker }))
}

/// Checks, before anything is created, the directories chatd will trust: the runtime
/// directory (its sockets) and the state directory (bans, mutes). Either is refused if it
/// exists and belongs to someone other than the daemon's user (or root, who alone could have
/// made it), or if others may write to it: whoever could have made or can write it could swap
/// `broker.sock` for a socket of their own (the checks ssh-agent and tmux make). As root, every
/// directory above the runtime directory must also let the daemon's user through, or its
/// sockets would be unreachable once root is dropped.
pub fn check_directories(
    runtime_dir: &Path,
    state_dir: &Path,
    run_as: Option<&RunAs>,
) -> Result<(), PrivilegeError> {
    let (uid, gid, name) = match run_as {
        Some(run_as) => (run_as.uid, run_as.gid, run_as.name.clone()),
        None => (nix::unistd::geteuid(), nix::unistd::getegid(), current_user_name()),
    };
    check_private_dir("runtime directory", runtime_dir, uid, &name)?;
    check_private_dir("state directory", state_dir, uid, &name)?;
    if run_as.is_some() {
        check_reachable(runtime_dir, uid, gid, &name)?;
    }
    Ok(())
}

/// `dir`, if it exists, is a directory owned by `uid` or root that nobody else can write.
fn check_private_dir(
    what: &'static str,
    dir: &Path,
    uid: Uid,
    name: &str,
) -> Result<(), PrivilegeError> {
    let refuse = |why: String| PrivilegeError::UntrustedDir { what, dir: dir.to_path_buf(), why };
    let trusted = |owner: u32| owner == uid.as_raw() || owner == 0;
    let link = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(refuse(err.to_string())),
    };
    if link.file_type().is_symlink() && !trusted(link.uid()) {
        return Err(refuse(format!(
            "it is a symbolic link made by {}, not by {name}; remove it",
            user_name(link.uid())
        )));
    }
    let meta = std::fs::metadata(dir).map_err(|err| refuse(err.to_string()))?;
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    if !trusted(meta.uid()) {
        return Err(refuse(format!(
            "it belongs to {}, not to {name} who runs chatd; someone else may have made it to \
             take over chatd's files: remove it (or `chown {name} {}` if it is yours)",
            user_name(meta.uid()),
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "others may write to it (mode {mode:04o}) and could replace what chatd keeps there; \
             `chmod go-w {}`",
            dir.display()
        )));
    }
    Ok(())
}

/// Every existing directory above `dir` lets `uid` (group `gid`) through.
fn check_reachable(dir: &Path, uid: Uid, gid: Gid, name: &str) -> Result<(), PrivilegeError> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else { continue };
        let mode = meta.permissions().mode();
        let search = if meta.uid() == uid.as_raw() {
            mode & 0o100
        } else if meta.gid() == gid.as_raw() {
            mode & 0o010
        } else {
            mode & 0o001
        };
        if search == 0 {
            return Err(PrivilegeError::Unreachable {
                dir: dir.to_path_buf(),
                ancestor: ancestor.to_path_buf(),
                owner: user_name(meta.uid()),
                mode: mode & 0o7777,
                user: name.to_string(),
            });
        }
    }
    Ok(())
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("user {}", user.name),
        _ => format!("uid {uid}"),
    }
}

/// The name of the user this process runs as (its uid if it has no name), for messages.
pub fn current_user_name() -> String {
    let uid = nix::unistd::geteuid();
    match User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// Gives the runtime directory and the broker socket to `run_as`, then becomes `run_as`.
pub fn drop_to(
    run_as: &RunAs,
    runtime_dir: &Path,
    broker_socket: &Path,
) -> Result<(), PrivilegeError> {
    for path in [runtime_dir, broker_socket] {
        chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|source| {
            PrivilegeError::HandOver { path: path.to_path_buf(), user: run_as.name.clone(), source }
        })?;
    }
    if let Some(weaker) = &run_as.weaker {
        warn!("{weaker}");
    }
    sys::drop_privileges(run_as.uid, run_as.gid)
        .map_err(|source| PrivilegeError::Switch { user: run_as.name.clone(), source })?;
    info!("running as user {} (uid {}, gid {})", run_as.name, run_as.uid, run_as.gid);
    Ok(())
}

/// Creates the state directory (bans, mutes, message of the day) if it is missing, mode 0750,
/// owned by `run_as` when chatd switches users. A failure is logged, not fatal: chatd serves
/// without it, and `chatctl ban` says why it cannot save.
pub fn prepare_state_dir(state_dir: &Path, run_as: Option<&RunAs>) {
    use std::os::unix::fs::DirBuilderExt;
    if state_dir.is_dir() {
        return;
    }
    let created = std::fs::DirBuilder::new().recursive(true).mode(0o750).create(state_dir);
    let owned = created.and_then(|()| match run_as {
        Some(run_as) => chown(state_dir, Some(run_as.uid), Some(run_as.gid)).map_err(Into::into),
        None => Ok(()),
    });
    if let Err(err) = owned {
        warn!("cannot create the state directory {}: {err}", state_dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_reads_as_one_sentence_with_what_to_do() {
        assert_eq!(PrivilegeError::NoDefaultUser.to_string(), "neither chatd nor nobody exists");
        let unknown = PrivilegeError::UnknownUser { name: "alice".into(), hint: "" };
        assert_eq!(unknown.to_string(), "user alice does not exist");
        let untrusted = PrivilegeError::UntrustedDir {
            what: "state directory",
            dir: "/var/lib/chatd".into(),
            why: "it is not a directory".into(),
        };
        assert_eq!(
            untrusted.to_string(),
            "refusing the state directory /var/lib/chatd: it is not a directory"
        );
        let unreachable = PrivilegeError::Unreachable {
            dir: "/home/a/run".into(),
            ancestor: "/home/a".into(),
            owner: "user a".into(),
            mode: 0o700,
            user: "chatd".into(),
        };
        assert_eq!(
            unreachable.to_string(),
            "the runtime directory /home/a/run is inside /home/a (owner user a, mode 0700), which \
             user chatd cannot enter once chatd drops root, so nobody could reach its sockets; \
             nothing was created: choose another runtime_dir or let chatd through (e.g. `chmod \
             o+x /home/a`)"
        );
    }
}
