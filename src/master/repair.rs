//! Repairing the runtime directory: noticing that `broker.sock` was removed or replaced (an
//! operator's `rm -rf`, a tmpfiles cleaner), binding `broker.sock` and `control.sock` afresh,
//! and restarting the broker on them.
//!
//! It owns that one repair and the sentence that says what is wrong. It must not kill the
//! running broker before new sockets are bound, nor refuse clients itself: `runtime_lost`
//! tells `accept` to.

use std::os::unix::net::UnixListener;
use std::time::Instant;

use log::{error, info};
use nix::sys::signal::{Signal, kill};

use super::listen::{self, BrokerSocket};
use super::{Master, privileges};

impl Master {
    /// Re-creates `broker.sock` and `control.sock` if they were removed or replaced (an
    /// operator's `rm -rf` of the runtime directory, a tmpfiles cleaner), then restarts the
    /// broker on them: sessions re-register as after any broker restart, nobody is
    /// disconnected. The running broker is never killed before new sockets are bound: until
    /// then its established sessions keep chatting on the connections they have, new clients
    /// are told the service is unavailable, what is wrong is logged once, and the repair is
    /// retried every second (it succeeds once the operator re-creates the directory).
    pub(super) fn check_broker_socket(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some((listener, _)) = &self.broker_listener else { return };
        let ours = nix::sys::stat::fstat(listener).map(|stat| stat.st_ino).ok();
        let on_disk = std::fs::metadata(&self.broker_socket).map(|meta| meta.ino()).ok();
        if ours.is_some() && ours == on_disk {
            return;
        }
        if self.runtime_lost.is_none() {
            error!("{} was removed or replaced; re-creating it", self.broker_socket.display());
        }
        match self.bind_runtime_sockets() {
            Ok(sockets) => {
                self.broker_listener = Some(sockets);
                if self.runtime_lost.take().is_some() {
                    info!(
                        "{} is back: serving new clients again",
                        self.config.runtime_dir.display()
                    );
                    // New clients were refused before fork meanwhile: end any pause at once
                    // (its end takes what waited in the backlog).
                    self.accept_paused_until = Some(Instant::now());
                }
                match self.broker.pid {
                    Some(pid) => {
                        info!(
                            "restarting the broker on the new {} (its sessions re-register)",
                            self.broker_socket.display()
                        );
                        // Reaped as a broker death, which restarts it on the new sockets.
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    None => {
                        if let Err(err) = self.start_broker() {
                            error!("cannot start the broker: {err}");
                        }
                    }
                }
            }
            Err(why) => {
                if self.runtime_lost.as_deref() != Some(why.as_str()) {
                    error!("{why}");
                }
                self.runtime_lost = Some(why);
            }
        }
    }

    /// Binds `broker.sock` and `control.sock` afresh in the runtime directory, creating it if
    /// the master may. The error says what is wrong and what to do, in one sentence.
    fn bind_runtime_sockets(&self) -> Result<(UnixListener, UnixListener), String> {
        let dir = &self.config.runtime_dir;
        let user = privileges::current_user_name();
        let consequence = "established sessions keep chatting; new clients are told the \
                           service is unavailable until it is repaired";
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            if let Err(err) = std::fs::DirBuilder::new().mode(0o755).create(dir) {
                return Err(format!(
                    "the runtime directory {} is gone and chatd (user {user}) cannot re-create \
                     it: {err}; {consequence} (e.g. `install -d -o {user} -m 0755 {}`, or \
                     `systemd-tmpfiles --create` with the package's chatd.conf)",
                    dir.display(),
                    dir.display()
                ));
            }
            info!("re-created the runtime directory {}", dir.display());
        }
        // A file that replaced ours is not a broker of ours: bind over it.
        let _ = std::fs::remove_file(&self.broker_socket);
        let cannot = |err: &dyn std::fmt::Display| {
            format!(
                "cannot re-create the sockets in {} as user {user}: {err}; {consequence} (the \
                 directory must be writable by {user})",
                dir.display()
            )
        };
        let broker = match listen::bind_broker_socket(dir) {
            Ok((BrokerSocket::Bound(listener), _)) => listener,
            Ok((BrokerSocket::Orphaned { .. }, _)) => {
                return Err(cannot(&"another broker took broker.sock"));
            }
            Err(err) => return Err(cannot(&err)),
        };
        let control = listen::bind_control_socket(dir).map_err(|err| cannot(&err))?;
        Ok((broker, control))
    }
}
