//! The deployment modes, each an entry point that puts roles together in one process:
//! standalone (the master, which forks everything), the broker alone, and one inetd-style
//! session on standard input. Owns the order of start-up steps for the split modes; the steps
//! themselves belong to `master::listen`, `master::privileges`, `broker` and `session`.
//!
//! It is the composition root: the one module that names the master and the roles it forks
//! (the roles never import each other). It hands the master their entry points ([`Roles`])
//! and turns what the master gives a child into the role's own settings.

use std::io;
use std::net::{IpAddr, SocketAddr};

use log::{error, info, warn};

use crate::broker::{self, BrokerError};
use crate::config::SessionLimits;
use crate::config::{Config, ConfigSource};
use crate::config::{SELF_SIGNED_CERT, SELF_SIGNED_KEY};
use crate::master::listen::{self, ListenError};
use crate::master::privileges::{self, PrivilegeError};
use crate::master::tls::{self, TlsError, TlsIdentity, TlsSettings};
use crate::master::{self, BrokerStart, MasterError, Roles, SessionStart};
use crate::session::tls::TlsTransport;
use crate::session::transport::{ClientTransport, PlainTransport};
use crate::session::{self, SessionSettings};
use crate::sys;

/// Why a deployment mode could not start or ended in failure, by step.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The standalone daemon.
    #[error(transparent)]
    Master(#[from] MasterError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot record the broker's pid: {0}")]
    BrokerPid(io::Error),
    /// `chatd broker` could not start or failed while serving.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// `chatd inetd` was not given a TCP connection it can serve on standard input.
    #[error("{0}")]
    Connection(io::Error),
    /// `chatd inetd --tls` has no certificate to present.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "chatd inetd --tls needs tls_cert and tls_key, or the self-signed certificate a \
         standalone chatd made in {0} ({SELF_SIGNED_CERT}, {SELF_SIGNED_KEY}); found neither"
    )]
    NoCertificate(String),
}

/// `chatd broker`: serves `<runtime-dir>/broker.sock` for sessions started by inetd or systemd,
/// in the foreground, until SIGTERM.
pub fn broker_alone(config: &Config, source: ConfigSource) -> Result<(), StartError> {
    // It holds the database and the token key.
    if let Err(err) = sys::forbid_dumps() {
        warn!("cannot make the broker undumpable: {err}");
    }
    let run_as = privileges::resolve(config.user.as_deref(), config.user_is_default)?;
    privileges::check_directories(&config.runtime_dir, &config.state_dir, run_as.as_ref())?;
    let (socket, path) = listen::bind_broker_socket(&config.runtime_dir)?;
    let listener = match socket {
        listen::BrokerSocket::Bound(listener) => listener,
        listen::BrokerSocket::Orphaned { .. } => {
            return Err(ListenError::AlreadyRunning(path).into());
        }
    };
    let control = listen::bind_control_socket(&config.runtime_dir)?;
    privileges::prepare_state_dir(&config.state_dir, run_as.as_ref());
    // Again now that both exist: a directory someone made between the first check and its
    // creation (which accepts one that exists) is theirs, not ours, and is refused.
    privileges::check_directories(&config.runtime_dir, &config.state_dir, run_as.as_ref())?;
    let service_user = run_as.is_some();
    if let Some(run_as) = run_as {
        privileges::drop_to(&run_as, &config.runtime_dir, &path)?;
    }
    listen::write_broker_pid(&config.runtime_dir, std::process::id() as i32)
        .map_err(StartError::BrokerPid)?;
    // Said here, once, for the inetd-style sessions that use this broker (each says only at
    // debug whether it could confine itself).
    crate::sandbox::check_at_start();
    info!(
        "serving {} alone; operators: chatctl --runtime-dir {}",
        path.display(),
        config.runtime_dir.display()
    );
    let listeners = broker::Listeners { sessions: listener, control, master: None, service_user };
    let result = broker::run(listeners, config, source).map_err(StartError::Broker);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(config.runtime_dir.join(listen::CONTROL_SOCKET));
    let _ = std::fs::remove_file(config.runtime_dir.join("broker.pid"));
    result
}

/// `chatd inetd`: serves the one client on standard input with the running broker (over TLS
/// with `tls`). Returns the exit status.
pub fn inetd_session(config: &Config, tls: bool) -> Result<i32, StartError> {
    // As a forked session: it will hold the TLS key and what its user types.
    if let Err(err) = sys::forbid_dumps() {
        warn!("cannot make this session undumpable: {err}");
    }
    // SAFETY: the inetd mode takes standard input once, here, and nothing else owns it.
    let connection = unsafe { sys::stdin_tcp_connection() }.map_err(StartError::Connection)?;
    connection.set_nonblocking(true).map_err(StartError::Connection)?;
    let peer = connection
        .peer_addr()
        .ok()
        .or_else(remote_addr)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Read before privileges are dropped, like the standalone master does; once per
    // connection, so the key must be readable by whoever inetd starts chatd as.
    let tls = if tls { Some(inetd_certificate(config)?.settings) } else { None };
    if let Some(run_as) = privileges::resolve(config.user.as_deref(), config.user_is_default)? {
        sys::drop_privileges(run_as.uid, run_as.gid)
            .map_err(|source| PrivilegeError::Switch { user: run_as.name, source })?;
    }
    let settings = SessionSettings {
        broker_socket: config.runtime_dir.join(listen::BROKER_SOCKET),
        limits: config.session.clone(),
        tls_notice: None,
    };
    let stream = mio::net::TcpStream::from_std(connection);
    let client = match tls {
        Some(tls) => tls_transport(stream, tls, &settings.limits).map_err(TlsError::Session)?,
        None => plain_transport(stream, &settings.limits),
    };
    Ok(session::run(client, peer, settings, None))
}

/// The certificate `chatd inetd --tls` presents: the operator's, or the self-signed one a
/// standalone chatd made (an inetd session never makes one: each connection would get its own).
fn inetd_certificate(config: &Config) -> Result<TlsIdentity, StartError> {
    if config.tls_cert.is_some() {
        return Ok(tls::load(config, None)?);
    }
    match tls::kept_self_signed(&config.state_dir) {
        Some(kept) => Ok(kept?),
        None => Err(StartError::NoCertificate(config.state_dir.display().to_string())),
    }
}

/// The peer as inetd-style launchers describe it when `getpeername` cannot (`REMOTE_ADDR`).
fn remote_addr() -> Option<SocketAddr> {
    let ip: IpAddr = std::env::var("REMOTE_ADDR").ok()?.parse().ok()?;
    let port = std::env::var("REMOTE_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(SocketAddr::new(ip, port))
}

/// Standalone: the master, which forks the broker and every session; in the background
/// with `background` (`--daemon`).
pub fn standalone(
    config: &Config,
    source: ConfigSource,
    background: Option<master::Background>,
) -> Result<(), StartError> {
    Ok(master::run(config, source, background, ROLES)?)
}

/// The C library's malloc settings the standalone daemon runs with (docs/PERFORMANCE.md,
/// "Memory"): without glibc's per-thread cache and fast bins, a session child reuses fewer of
/// the chunks its master freed all over the heap, and so copies fewer of the master's pages
/// after `fork` (measured at N=1000: 120 KiB of PSS per client against 147).
pub const MALLOC_TUNABLES: &str = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0";

/// Runs this program again, once, with [`MALLOC_TUNABLES`] in `GLIBC_TUNABLES`: glibc reads
/// them only when a process starts. Called first thing by the standalone daemon, before it
/// opens anything; the pid, the arguments and inherited descriptors (systemd's sockets) stay.
/// Returns only when there is nothing to do — `GLIBC_TUNABLES` already sets the cache, as
/// after the re-execution or when an operator chose other values — or if the re-execution
/// failed (the daemon then goes on with the C library's defaults).
pub fn reexec_with_malloc_tunables() -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.tcache_count") {
        return Ok(());
    }
    let tunables = match current.is_empty() {
        true => MALLOC_TUNABLES.to_string(),
        false => format!("{current}:{MALLOC_TUNABLES}"),
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "chatd".into());
    // The program's own path, not /proc/self/exe: the kernel names a process after the file
    // it executed, and a replacement master recognises its predecessor's broker by that name.
    let program = std::env::current_exe()?;
    // `exec` only returns on failure.
    Err(std::process::Command::new(program)
        .arg0(argv0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .exec())
}

/// What the master's children run: the composition root is the one place that knows both
/// the master and the roles it forks.
const ROLES: Roles = Roles { session: forked_session, broker: forked_broker };

/// A session child of the master.
fn forked_session(start: SessionStart) -> i32 {
    let SessionStart { client, peer, broker_socket, limits, reporter, tls, tls_notice, web } =
        start;
    let client = match tls {
        Some(tls) => match tls_transport(client, tls, &limits) {
            Ok(client) => client,
            Err(err) => {
                error!("cannot start TLS for {peer}: {err}");
                return 1;
            }
        },
        None => plain_transport(client, &limits),
    };
    let settings = SessionSettings { broker_socket, limits, tls_notice };
    match web {
        Some(web) => session::web::run(client, peer, settings, reporter, web),
        None => session::run(client, peer, settings, reporter),
    }
}

/// A client on a plain TCP connection (a listener's, or inetd's standard input).
fn plain_transport(
    stream: mio::net::TcpStream,
    limits: &SessionLimits,
) -> Box<dyn ClientTransport> {
    Box::new(PlainTransport::new(stream, limits.send_queue_bytes, limits.keepalive, limits.telnet))
}

/// A client on a TLS connection (a TLS listener's, or `chatd inetd --tls`).
fn tls_transport(
    stream: mio::net::TcpStream,
    tls: TlsSettings,
    limits: &SessionLimits,
) -> Result<Box<dyn ClientTransport>, rustls::Error> {
    let (queue, keepalive, telnet) = (limits.send_queue_bytes, limits.keepalive, limits.telnet);
    Ok(Box::new(TlsTransport::new(stream, tls, queue, keepalive, telnet)?))
}

/// The broker child of the master.
fn forked_broker(start: BrokerStart) -> i32 {
    let BrokerStart { sessions, control, link, service_user, config, source } = start;
    let listeners = broker::Listeners { sessions, control, master: Some(link), service_user };
    match broker::run(listeners, &config, source) {
        Ok(()) => 0,
        Err(err) => {
            error!("broker failed: {err}");
            err.exit_status()
        }
    }
}
