//! Creating the master's sockets: TCP listeners for clients and the broker's Unix listener.
//!
//! Owns socket options and the runtime directory. IPv6 listeners are IPV6_V6ONLY so that
//! `0.0.0.0:2323` and `[::]:2323` can both be bound, as the defaults ask. It does not accept
//! connections; that is the master loop's job.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::warn;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

/// Why a listening socket could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("no address to listen on could be bound")]
    NoListener,
    #[error("runtime directory {path}: {source}")]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("another chatd is already serving {0}")]
    AlreadyRunning(PathBuf),
    /// Taking over the sockets systemd passed failed.
    #[error("{0}")]
    Systemd(io::Error),
    #[error("a socket from systemd is not a TCP listener: {0}")]
    NotTcp(io::Error),
}

/// Name of the broker's socket inside the runtime directory.
pub const BROKER_SOCKET: &str = "broker.sock";
/// Name of the operators' socket (chatctl), served by the broker, inside the runtime directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Pending connections the kernel holds for each TCP listener.
const TCP_BACKLOG: i32 = 1024;

/// Binds one TCP listener (non-blocking, close-on-exec, SO_REUSEADDR).
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd =
        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(TCP_BACKLOG).map_err(io::Error::from)?)?;
    Ok(TcpListener::from(fd))
}

/// What a listener's clients speak from their first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenerKind {
    /// Plain TCP: telnet or netcat.
    Plain,
    /// Implicit TLS (`tls_listen`), with telnet inside.
    Tls,
    /// HTTP (`web_listen`): the page, the dashboard and the WebSocket; HTTPS when `web_tls`.
    Web,
}

/// The name (systemd's `FileDescriptorName=`) that makes a passed socket a TLS listener.
pub const SYSTEMD_TLS_NAME: &str = "tls";

/// The name (systemd's `FileDescriptorName=`) that makes a passed socket a web listener
/// (HTTP, or HTTPS when `web_tls`). A socket unit's `ListenStream=8023` binds `[::]` for both
/// families unless `BindIPv6Only=ipv6-only`: its IPv4 clients then show as IPv4-mapped IPv6
/// addresses, which admission, bans and `trusted_proxies` read as the IPv4 address.
pub const SYSTEMD_WEB_NAME: &str = "web";

/// The kind of listener a socket systemd passed under `name` is: [`SYSTEMD_TLS_NAME`] a TLS
/// one, [`SYSTEMD_WEB_NAME`] a web one, every other name (systemd's default is the socket
/// unit's name) a plain one.
pub fn kind_named(name: &str) -> ListenerKind {
    match name {
        SYSTEMD_TLS_NAME => ListenerKind::Tls,
        SYSTEMD_WEB_NAME => ListenerKind::Web,
        _ => ListenerKind::Plain,
    }
}

/// The listening sockets systemd passed (socket activation), if any, with their kind (by name:
/// [`kind_named`]). Each must be a listening TCP socket; they are made non-blocking.
///
/// # Safety
///
/// As [`crate::sys::systemd_listen_fds`]: the process is single-threaded, this is called at
/// most once, and nothing else uses the descriptors systemd passed.
pub unsafe fn from_systemd() -> Result<Option<Vec<(TcpListener, ListenerKind)>>, ListenError> {
    // SAFETY: this function's own contract is that of `systemd_listen_fds`.
    let fds = unsafe { crate::sys::systemd_listen_fds() }.map_err(ListenError::Systemd)?;
    if fds.is_empty() {
        return Ok(None);
    }
    let mut listeners = Vec::new();
    for (fd, name) in fds {
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).map_err(ListenError::Systemd)?;
        listener.local_addr().map_err(ListenError::NotTcp)?;
        listeners.push((listener, kind_named(&name)));
    }
    Ok(Some(listeners))
}

/// Binds every listen address. With the default addresses, a family the host does not have
/// (no IPv6, say) is skipped with a warning; addresses the operator named must all bind.
pub fn bind_all(addrs: &[SocketAddr], defaults: bool) -> Result<Vec<TcpListener>, ListenError> {
    let mut listeners = Vec::new();
    for &addr in addrs {
        match bind_tcp(addr) {
            Ok(listener) => listeners.push(listener),
            Err(err)
                if defaults
                    && matches!(
                        err.raw_os_error(),
                        Some(libc_errno) if libc_errno == nix::libc::EAFNOSUPPORT
                            || libc_errno == nix::libc::EADDRNOTAVAIL
                    ) =>
            {
                warn!("not listening on {addr}: {err}");
            }
            Err(source) => return Err(ListenError::Bind { addr, source }),
        }
    }
    if listeners.is_empty() {
        return Err(ListenError::NoListener);
    }
    Ok(listeners)
}

/// What `broker.sock` held when the master started.
pub enum BrokerSocket {
    /// A fresh listener this master bound.
    Bound(UnixListener),
    /// A broker whose master died still serves the socket: adopt it. `watch` is a connection to
    /// it that reports its end; `pid` is its process.
    Orphaned { watch: UnixStream, pid: i32 },
}

/// Creates the runtime directory (mode 0755 when chatd creates it, so that operators in the
/// admin group reach `control.sock`; `broker.sock` itself is 0600) and binds `broker.sock`
/// (mode 0600) in it. A socket left by a crashed daemon is replaced. One that still answers is
/// a running broker: if its master is alive, another chatd uses this directory, which is an
/// error; if its master died, the broker is adopted (its sessions keep chatting).
pub fn bind_broker_socket(runtime_dir: &Path) -> Result<(BrokerSocket, PathBuf), ListenError> {
    let dir_error = |source| ListenError::RuntimeDir { path: runtime_dir.to_path_buf(), source };
    fs::DirBuilder::new().recursive(true).mode(0o755).create(runtime_dir).map_err(dir_error)?;
    let path = runtime_dir.join(BROKER_SOCKET);
    if path.exists() {
        if let Ok(watch) = UnixStream::connect(&path) {
            // The credentials of a listening socket are those of the process that bound it:
            // the master that started this broker.
            let master = crate::sys::peer_pid(&watch).map_err(dir_error)?;
            if is_chatd(master) {
                return Err(ListenError::AlreadyRunning(path));
            }
            let pid = read_broker_pid(runtime_dir)
                .filter(|&pid| is_chatd(pid))
                .ok_or_else(|| ListenError::AlreadyRunning(path.clone()))?;
            return Ok((BrokerSocket::Orphaned { watch, pid }, path));
        }
        fs::remove_file(&path).map_err(dir_error)?;
    }
    let listener = UnixListener::bind(&path).map_err(dir_error)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(dir_error)?;
    listener.set_nonblocking(true).map_err(dir_error)?;
    Ok((BrokerSocket::Bound(listener), path))
}

/// Whether `pid` is a live chatd process (not a zombie).
fn is_chatd(pid: i32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() == "chatd" && process_is_running(nix::unistd::Pid::from_raw(pid))
}

/// Whether `pid` is a process that has not ended (a zombie has).
pub(super) fn process_is_running(pid: nix::unistd::Pid) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Name of the file in the runtime directory that holds the broker's pid.
const BROKER_PID: &str = "broker.pid";

fn read_broker_pid(runtime_dir: &Path) -> Option<i32> {
    fs::read_to_string(runtime_dir.join(BROKER_PID)).ok()?.trim().parse().ok()
}

/// Records the broker's pid for a master that may have to adopt it (written whole, then
/// renamed into place, so a reader never sees half a number).
pub fn write_broker_pid(runtime_dir: &Path, pid: i32) -> std::io::Result<()> {
    let temporary = runtime_dir.join(format!("{BROKER_PID}.tmp"));
    fs::write(&temporary, format!("{pid}\n"))?;
    fs::rename(temporary, runtime_dir.join(BROKER_PID))
}

/// Binds `control.sock` in the runtime directory (replacing a stale one), mode 0666: the
/// broker decides who may use it from the caller's credentials, so that a refused caller gets
/// an answer and the refusal is logged. Bound next to `broker.sock`, before the broker runs,
/// so that chatctl can connect as soon as the daemon listens.
pub fn bind_control_socket(runtime_dir: &Path) -> Result<UnixListener, ListenError> {
    let path = runtime_dir.join(CONTROL_SOCKET);
    let error = |source| ListenError::RuntimeDir { path: path.clone(), source };
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(error(err)),
    }
    let listener = UnixListener::bind(&path).map_err(error)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    Ok(listener)
}
