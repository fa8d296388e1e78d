//! The settings in force in the master: fitting `max_clients` to the descriptor limit, and
//! reading the settings again on SIGHUP (or an operator's `chatctl reload`).
//!
//! It owns which settings a reload may change and which wait for a restart. It must not
//! disconnect anyone: new limits apply to new connections; the broker reloads its own. The
//! TLS certificate is read again too: new connections get the new one, open ones keep theirs,
//! and a broken or mismatched pair leaves the old one in force.

use log::{error, info, warn};
use nix::sys::signal::{Signal, kill};

use super::{Master, MasterError, admission, tls};
use crate::config;

impl Master {
    /// Reads the settings again. Limits apply to new connections at once (the master's
    /// admission limits, and each new session's); the broker reloads its own. A broken file is
    /// refused and the old settings stay. Nobody is disconnected.
    pub(super) fn reload(&mut self) -> Result<(), String> {
        let mut new = match self.source.load() {
            Ok(new) => new,
            Err(err) => {
                error!("reload failed, keeping the old configuration: {err}");
                return Err(err.to_string());
            }
        };
        for key in self.config.needs_restart_to_change(&new) {
            warn!("reload: {key} changed, which takes effect only after a restart");
        }
        new.listen.clone_from(&self.config.listen);
        new.tls_listen.clone_from(&self.config.tls_listen);
        new.session.tls_port = self.config.session.tls_port;
        new.web_listen.clone_from(&self.config.web_listen);
        new.web_tls = self.config.web_tls;
        new.session.web_port = self.config.session.web_port;
        new.session.web_tls = self.config.session.web_tls;
        new.runtime_dir.clone_from(&self.config.runtime_dir);
        new.log = self.config.log;
        new.user.clone_from(&self.config.user);
        new.user_is_default = self.config.user_is_default;
        if let Err(err) = fit_clients_to_descriptors(&mut new.admission) {
            error!("reload failed, keeping the old configuration: {err}");
            return Err(err.to_string());
        }
        self.admission.set_limits(new.admission.clone());
        new.state_dir.clone_from(&self.config.state_dir);
        if let Some(pid) = self.broker.pid {
            let _ = kill(pid, Signal::SIGHUP);
        }
        self.config = new;
        info!("configuration reloaded");
        self.reload_tls()
    }

    /// Reads the certificate and key again (TLS listeners only). The master may no longer be
    /// root: a key it cannot read now is refused like a broken one.
    fn reload_tls(&mut self) -> Result<(), String> {
        if self.tls.is_none() {
            return Ok(());
        }
        match tls::load(&self.config, None) {
            Ok(identity) => {
                identity.log();
                self.figures.tls = Some(identity.status.clone());
                self.tls = Some(identity);
                Ok(())
            }
            Err(err) => {
                error!("TLS certificate not changed: {err}");
                Err(format!("TLS certificate not changed: {err}"))
            }
        }
    }
}

/// Lowers `max_clients` to what the descriptor limit (RLIMIT_NOFILE, hard: the broker raises its
/// soft limit to it) leaves room for, and says so: otherwise clients past the limit would wait
/// unanswered in the broker's backlog. A limit that leaves room for nobody is refused.
pub(super) fn fit_clients_to_descriptors(
    limits: &mut config::AdmissionLimits,
) -> Result<(), MasterError> {
    use nix::sys::resource::{Resource, getrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(MasterError::DescriptorLimit)?;
    let fits = admission::clients_within(hard, limits.max_clients);
    if fits == 0 {
        return Err(MasterError::TooFewDescriptors { hard, spare: admission::BROKER_SPARE_FILES });
    }
    if fits < limits.max_clients {
        warn!(
            "the descriptor limit (RLIMIT_NOFILE) is {hard}: room for {fits} clients, not \
             max_clients = {}; serving at most {fits} (raise LimitNOFILE= in the unit or \
             `ulimit -n` to serve more)",
            limits.max_clients
        );
        limits.max_clients = fits;
    }
    Ok(())
}
