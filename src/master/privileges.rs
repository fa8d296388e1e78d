//! Who chatd runs as. Started as root, the master binds its sockets, hands the runtime
//! directory and `broker.sock` to the configured user, and becomes that user before it forks
//! anything, so no process that talks to a client ever has uid 0 or capabilities.
//!
//! Owns the policy (which user, the fallback, refusing root without a user); the system calls
//! are in `sys`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use log::{info, warn};
use nix::unistd::{Gid, Uid, User, chown};

use crate::sys;

/// Why chatd will not run as the user it would become, or cannot become it: one sentence that
/// says what is wrong and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrivilegeError(String);

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
        return Err(PrivilegeError(
            "refusing to run as root without a user to switch to (set user = \"chatd\")".into(),
        ));
    };
    let lookup = |name: &str| {
        User::from_name(name)
            .map_err(|err| PrivilegeError(format!("cannot look up user {name}: {err}")))
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
            lookup(FALLBACK_USER)?.ok_or_else(|| {
                PrivilegeError(format!("neither {DEFAULT_USER} nor {FALLBACK_USER} exists"))
            })?
        }
        None => {
            return Err(PrivilegeError(format!(
                "user {name} does not exist{}",
                if name == DEFAULT_USER {
                    " (the package creates it; `systemd-sysusers packaging/sysusers.d/chatd.conf` \
                     does the same)"
                } else {
                    ""
                }
            )));
        }
    };
    if user.uid.is_root() {
        return Err(PrivilegeError(format!(
            "user {} is root; choose an unprivileged user",
            user.name
        )));
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
fn check_private_dir(what: &str, dir: &Path, uid: Uid, name: &str) -> Result<(), PrivilegeError> {
    let refuse =
        |why: String| PrivilegeError(format!("refusing the {what} {}: {why}", dir.display()));
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
            return Err(PrivilegeError(format!(
                "the runtime directory {} is inside {} (owner {}, mode {:04o}), which user {name} \
                 cannot enter once chatd drops root, so nobody could reach its sockets; nothing \
                 was created: choose another runtime_dir or let {name} through (e.g. \
                 `chmod o+x {}`)",
                dir.display(),
                ancestor.display(),
                user_name(meta.uid()),
                mode & 0o7777,
                ancestor.display()
            )));
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
    let privileges =
        |what: &str, err: &dyn std::fmt::Display| PrivilegeError(format!("{what}: {err}"));
    for path in [runtime_dir, broker_socket] {
        chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|err| {
            privileges(&format!("cannot hand {} to {}", path.display(), run_as.name), &err)
        })?;
    }
    if let Some(weaker) = &run_as.weaker {
        warn!("{weaker}");
    }
    sys::drop_privileges(run_as.uid, run_as.gid)
        .map_err(|err| privileges(&format!("cannot switch to user {}", run_as.name), &err))?;
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
