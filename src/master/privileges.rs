//! Who chatd runs as. Started as root, the master binds its sockets, hands the runtime
//! directory and `broker.sock` to the configured user, and becomes that user before it forks
//! anything, so no process that talks to a client ever has uid 0 or capabilities.
//!
//! Owns the policy (which user, the fallback, refusing root without a user); the system calls
//! are in `sys`.

use std::path::Path;

use log::{info, warn};
use nix::unistd::{Gid, Uid, User, chown};

use super::MasterError;
use crate::sys;

/// The user the package creates; if it does not exist (chatd run from a source tree), chatd
/// falls back to `nobody` rather than refusing to start.
pub const DEFAULT_USER: &str = "chatd";
const FALLBACK_USER: &str = "nobody";

/// The account to switch to.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Decides whom to run as. Not root: nobody to switch to (`None`). Root: the configured user,
/// or an error if there is none — chatd does not serve clients as root.
pub fn resolve(configured: Option<&str>) -> Result<Option<RunAs>, MasterError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let Some(name) = configured else {
        return Err(MasterError::Privileges(
            "refusing to run as root without a user to switch to (set user = \"chatd\")".into(),
        ));
    };
    let lookup = |name: &str| {
        User::from_name(name)
            .map_err(|err| MasterError::Privileges(format!("cannot look up user {name}: {err}")))
    };
    let user = match lookup(name)? {
        Some(user) => user,
        None if name == DEFAULT_USER => {
            warn!("user {DEFAULT_USER} does not exist; running as {FALLBACK_USER} instead");
            lookup(FALLBACK_USER)?.ok_or_else(|| {
                MasterError::Privileges(format!(
                    "neither {DEFAULT_USER} nor {FALLBACK_USER} exists"
                ))
            })?
        }
        None => return Err(MasterError::Privileges(format!("user {name} does not exist"))),
    };
    if user.uid.is_root() {
        return Err(MasterError::Privileges(format!(
            "user {} is root; choose an unprivileged user",
            user.name
        )));
    }
    Ok(Some(RunAs { name: user.name, uid: user.uid, gid: user.gid }))
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
) -> Result<(), MasterError> {
    let privileges =
        |what: &str, err: &dyn std::fmt::Display| MasterError::Privileges(format!("{what}: {err}"));
    for path in [runtime_dir, broker_socket] {
        chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|err| {
            privileges(&format!("cannot hand {} to {}", path.display(), run_as.name), &err)
        })?;
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
