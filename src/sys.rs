//! Process-level system calls: `fork`, signal dispositions, peer credentials.
//!
//! This is the one module of process-level `unsafe` (the rooms' rings map memory in `ring`,
//! descriptors travel in `fd_passing`). Everything here is a thin, documented wrapper; policy
//! (when to fork, what a child does) lives in `master`. Nothing here logs or allocates after a
//! fork on the child's side beyond what the caller asks for.
//!
//! A wrapper whose soundness rests on its caller (the process is single-threaded, nothing uses
//! a descriptor again) is an `unsafe fn` with a `# Safety` section, so that every call site
//! says in its own `// SAFETY:` why the condition holds there.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{ForkResult, Pid};

/// Which side of a [`fork_with_signals_blocked`] we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// We are the parent; the value is the child's pid.
    Parent(Pid),
    /// We are the new child process.
    Child,
}

/// Signals whose dispositions a child must not inherit from the master: the master's handlers
/// write to the master's own self-pipe, which a child shares after `fork`.
const HANDLED_BY_MASTER: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGCHLD,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR2,
];

/// Forks the calling process with every signal blocked across the `fork`.
///
/// Blocking first closes the window in which a signal could reach the child while it still runs
/// the master's handlers. In the child, the master's handlers are reset to their defaults and
/// every signal stays blocked until the child sets its own mask (`ChildSignals::new`); the
/// parent just restores its mask.
///
/// # Safety
///
/// The calling process must be single-threaded (the master is: it never starts threads; the
/// broker, which may run a thread that writes the state file, never forks). In a child of a
/// multi-threaded process, a lock held by a thread that was not copied stays held for good.
pub unsafe fn fork_with_signals_blocked() -> io::Result<Forked> {
    let mut previous = SigSet::empty();
    nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    )
    .map_err(io::Error::from)?;
    // SAFETY: the caller promises a single-threaded process (see `# Safety`), so the child is a
    // copy of all of it: no lock can be held by a thread that does not exist in the child.
    let result = unsafe { nix::unistd::fork() };
    let forked = match result {
        Ok(ForkResult::Parent { child }) => Forked::Parent(child),
        Ok(ForkResult::Child) => {
            reset_master_signal_handlers();
            // Every signal stays blocked until the child says which it reads (`ChildSignals`,
            // which sets the mask): restoring the master's mask here would let a SIGHUP or
            // SIGTERM sent to a child that is still starting kill it with the default action.
            return Ok(Forked::Child);
        }
        Err(errno) => {
            restore_mask(&previous);
            return Err(errno.into());
        }
    };
    restore_mask(&previous);
    Ok(forked)
}

fn restore_mask(mask: &SigSet) {
    // sigprocmask can only fail for an invalid `how`, which is a constant here.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

fn reset_master_signal_handlers() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in HANDLED_BY_MASTER {
        // SAFETY: installing SIG_DFL runs no Rust code in signal context.
        let _ = unsafe { sigaction(signal, &default) };
    }
}

/// Blocks exactly `signals` (and unblocks every other): a forked child, which starts with all
/// signals blocked, says which ones it reads from its `signalfd`.
pub fn set_blocked_signals(signals: &SigSet) -> io::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(signals), None)
        .map_err(io::Error::from)
}

/// The uid of the process at the other end of a connected Unix socket.
pub fn peer_uid(socket: &impl AsFd) -> io::Result<u32> {
    let creds = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
    Ok(creds.uid())
}

/// The primary group of the process at the other end of a connected Unix socket.
pub fn peer_gid(socket: &impl AsFd) -> io::Result<u32> {
    let creds = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
    Ok(creds.gid())
}

/// The pid of the process at the other end of a connected Unix socket.
pub fn peer_pid(socket: &impl AsFd) -> io::Result<i32> {
    let creds = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
    Ok(creds.pid())
}

/// Bits of a process identity that hold the pid: Linux pids stay below `PID_MAX_LIMIT`, 2^22.
const PID_BITS: u32 = 22;

/// A number that names process `pid` for as long as the machine runs and no other process can
/// claim: its pid and its start time (clock ticks after boot, field 22 of `/proc/PID/stat`).
/// Pids are reused; the pair never is, since a later process with the same pid started later.
/// With a pid from SO_PEERCRED, it is what the kernel vouches for about the caller.
pub fn process_identity(pid: i32) -> io::Result<u64> {
    let pid = u64::try_from(pid)
        .ok()
        .filter(|&pid| pid > 0 && pid < 1 << PID_BITS)
        .ok_or_else(|| io::Error::other(format!("pid {pid} is not a visible process")))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let started: u64 = after_name
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat has no start time")))?;
    Ok(started << PID_BITS | pid)
}

/// Whether the process named by identity `later` started after the one named by `earlier`
/// (both from [`process_identity`]; false when either is not one).
pub fn started_after(later: u64, earlier: u64) -> bool {
    let kernel_made = |identity: u64| identity >> 63 == 0;
    kernel_made(later) && kernel_made(earlier) && later >> PID_BITS > earlier >> PID_BITS
}

/// Eight random bytes from the kernel (the clock and the pid if `/dev/urandom` cannot be read).
pub fn random_u64() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Closes every descriptor of this process except standard input, output, error and `keep`.
///
/// A forked child calls this first thing: it inherited the master's listeners, poller and
/// signal pipe, and must hold none of them (a child holding a listener would keep the port
/// open after the master is gone). The objects that owned those descriptors in the parent are
/// never used or dropped in the child, which leaves through `std::process::exit`.
///
/// Uses `close_range(2)`, which needs no `/proc` (a process that switched users from root is
/// not dumpable and cannot read its own `/proc/self/fd`).
///
/// # Safety
///
/// Nothing in the process may use, or drop, an object owning a closed descriptor afterwards
/// (its number may be reused by the next `open`): a forked child that never returns into its
/// parent's frames and leaves through `std::process::exit` satisfies this.
pub unsafe fn close_all_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: RawFd = 3;
    for &fd in keep.iter().chain(std::iter::once(&RawFd::MAX)) {
        if fd > first {
            let last = if fd == RawFd::MAX { u32::MAX } else { (fd - 1) as u32 };
            // SAFETY: close_range only closes descriptors; the caller promises that nothing in
            // this process uses the ones in the range again (see `# Safety`).
            let result = unsafe { nix::libc::close_range(first as u32, last, 0) };
            if result != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// Switches this process to `uid`/`gid` for good: supplementary groups, then the group ids,
/// then the user ids (real, effective and saved), then `no_new_privs`. Fails if getting root
/// back is still possible afterwards.
pub fn drop_privileges(uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> io::Result<()> {
    nix::unistd::setgroups(&[gid]).map_err(io::Error::from)?;
    nix::unistd::setresgid(gid, gid, gid).map_err(io::Error::from)?;
    nix::unistd::setresuid(uid, uid, uid).map_err(io::Error::from)?;
    nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
    // Changing uids made the process as dumpable as `fs.suid_dumpable` says, which an
    // operator may have set to 1: say it again.
    forbid_dumps()?;
    if !uid.is_root() && nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err(io::Error::other("could still become root after dropping privileges"));
    }
    Ok(())
}

/// Resource limits for a child: no core dumps (they would hold other users' messages), at
/// most `open_files` descriptors (never above the hard limit), and `address_space` bytes.
pub fn limit_resources(open_files: u64, address_space: Option<u64>) -> io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(io::Error::from)?;
    let (_, hard_files) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_NOFILE, open_files.min(hard_files), hard_files)
        .map_err(io::Error::from)?;
    if let Some(bytes) = address_space {
        let (_, hard) = getrlimit(Resource::RLIMIT_AS).map_err(io::Error::from)?;
        setrlimit(Resource::RLIMIT_AS, bytes.min(hard), hard).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Makes this process not dumpable (`PR_SET_DUMPABLE` 0) and forbids core files
/// (`RLIMIT_CORE` 0, soft and hard): every chatd process holds what nobody else may read (the
/// TLS key, copied from the master into each session; the database and the token key in the
/// broker; what people type). Not dumpable, its `/proc/PID/` files (`mem`, `environ`, `fd`)
/// belong to root and no process of the same user may `ptrace` it; only root can look inside.
/// Children inherit both across `fork`; a change of uid resets the first (to
/// `fs.suid_dumpable`), so [`drop_privileges`] calls this again.
pub fn forbid_dumps() -> io::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(io::Error::from)
}

/// Puts this process at the lowest CPU priority of normal scheduling (nice 19): against a
/// process at the default priority it gets about 1.5 % of a contended core (the kernel's
/// weight 15 against 1024), so fifty of them weigh less than one chat process, and yet it
/// always progresses. `SCHED_IDLE` (weight 3, and only the CPU nothing else wants) starved a
/// login for as long as the machine stayed busy: with four busy loops on two cores the
/// derivation did not finish within the test's 10 s. There is no way back for an
/// unprivileged process: it is for a process that does one expensive thing and exits (a
/// session's password derivation).
pub fn lowest_cpu_priority() -> io::Result<()> {
    // SAFETY: setpriority reads only its arguments; `who` 0 is this process.
    let result = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Has the C library read the local time zone (`TZ`, `/etc/localtime`) now rather than at the
/// first local time it formats, which a confined session could no longer open: glibc reads it
/// once per process for `localtime_r`.
pub fn load_time_zone() {
    let _ = local_time(0);
}

/// The Landlock ABI version this kernel offers, or why it offers none, as the kernel says:
/// ENOSYS (not built in), EOPNOTSUPP (built in, not enabled at boot), EPERM (a system call
/// filter refused the call, such as systemd's `SystemCallFilter=@system-service`, which does not
/// list Landlock's calls).
pub fn landlock_abi() -> Result<i64, nix::errno::Errno> {
    /// `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version, create nothing.
    const VERSION: u32 = 1;
    // SAFETY: with a null attribute, a size of 0 and the VERSION flag the kernel reads no
    // memory and creates no descriptor: it only returns the version.
    let version = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            VERSION,
        )
    };
    nix::errno::Errno::result(version)
}

/// The raw descriptor of anything that has one, for [`close_all_except`] lists.
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}

/// Waits for events; an interrupted wait (EINTR) counts as a wake-up with no events, which
/// every loop in chatd tolerates (mio's "spurious events" rule).
pub fn wait(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Option<std::time::Duration>,
) -> io::Result<()> {
    match poll.poll(events, timeout) {
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        other => other,
    }
}

/// The TCP connection that inetd, xinetd or systemd (`Accept=yes`) passed as standard input.
///
/// # Safety
///
/// Call it at most once per process, and own descriptor 0 by no other means: the stream
/// returned becomes its owner and closes it when dropped.
pub unsafe fn stdin_tcp_connection() -> io::Result<std::net::TcpStream> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    use std::os::fd::FromRawFd;
    let stat = nix::sys::stat::fstat(std::io::stdin()).map_err(io::Error::from)?;
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err(io::Error::other("standard input is not a socket (run me from inetd)"));
    }
    let local: SockaddrStorage = getsockname(0).map_err(io::Error::from)?;
    if !matches!(local.family(), Some(AddressFamily::Inet | AddressFamily::Inet6)) {
        return Err(io::Error::other("standard input is not a TCP connection"));
    }
    // SAFETY: descriptor 0 is open (fstat succeeded) and is a socket; the caller promises that
    // nothing else in this process owns it, so the TcpStream becomes its only owner.
    Ok(unsafe { std::net::TcpStream::from_raw_fd(0) })
}

/// Listening sockets passed by systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`), taken
/// over by this process, each with its name (`LISTEN_FDNAMES`: the socket unit's
/// `FileDescriptorName=`, `unknown` without names); the variables are removed so that
/// children do not see them.
///
/// # Safety
///
/// The calling process must be single-threaded (nothing may read or write the environment
/// while the variables are removed), and nothing else in it may own the descriptors systemd
/// passed (3 on): the ones returned become their only owners.
pub unsafe fn systemd_listen_fds() -> io::Result<Vec<(std::os::fd::OwnedFd, String)>> {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller promises a single-threaded process (see `# Safety`), so nothing reads
    // the environment concurrently with the removal.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }?;
    // SAFETY: systemd passed these descriptors to this process (LISTEN_PID matched) and nothing
    // else in it owns them.
    Ok(fds.map(|(fd, name)| (unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }, name)).collect())
}

/// Turns the process into a classic SysV daemon: fork (the original process waits for the
/// daemon to say it is ready, then exits 0 — or 1 if the daemon fails first), `setsid`, fork
/// again (so the daemon can never acquire a controlling terminal), `chdir /`, and standard
/// input and output to /dev/null. Standard error stays until [`detach_stderr`], so that start-up
/// errors still reach the terminal. Returns the daemon's end of the readiness channel: write a
/// byte to it when ready.
///
/// # Safety
///
/// The calling process must be single-threaded, as for [`fork_with_signals_blocked`].
pub unsafe fn daemonize() -> io::Result<std::os::unix::net::UnixStream> {
    use std::io::Read;
    let (mut waiting, ready) = std::os::unix::net::UnixStream::pair()?;
    // SAFETY: the caller promises a single-threaded process (see `# Safety`).
    if let Forked::Parent(_) = unsafe { fork_with_signals_blocked() }? {
        drop(ready);
        let mut byte = [0u8; 1];
        let started = matches!(waiting.read(&mut byte), Ok(1));
        std::process::exit(if started { 0 } else { 1 });
    }
    drop(waiting);
    nix::unistd::setsid().map_err(io::Error::from)?;
    // SAFETY: this child of a single-threaded process is single-threaded too.
    if let Forked::Parent(_) = unsafe { fork_with_signals_blocked() }? {
        std::process::exit(0);
    }
    // The daemon goes on as the master, whose signals signal-hook handles: none stays blocked.
    set_blocked_signals(&SigSet::empty())?;
    nix::unistd::chdir("/").map_err(io::Error::from)?;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    nix::unistd::dup2_stdin(&null).map_err(io::Error::from)?;
    nix::unistd::dup2_stdout(&null).map_err(io::Error::from)?;
    Ok(ready)
}

/// Points standard error at /dev/null (a daemon that is up has no terminal to write to).
pub fn detach_stderr() -> io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2_stderr(&null).map_err(io::Error::from)
}

/// The supplementary groups of the process at the other end of a connected Unix socket
/// (`SO_PEERGROUPS`, Linux 4.13), as they were when it connected.
pub fn peer_groups(socket: &impl AsRawFd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 64];
    loop {
        let mut len =
            (groups.len() * std::mem::size_of::<nix::libc::gid_t>()) as nix::libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes and the kernel writes at most that many,
        // updating `len` to the size used (or needed, with ERANGE).
        let result = unsafe {
            nix::libc::getsockopt(
                socket.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / std::mem::size_of::<nix::libc::gid_t>();
        if result == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(nix::libc::ERANGE) && needed > groups.len() {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

/// The memory `ps` reads a process's command line from: the argument strings, followed by the
/// environment strings when they are adjacent (they are, as the kernel lays out a new
/// process's stack).
static TITLE_AREA: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();

/// Finds the title area and moves the environment out of it, once per process.
///
/// # Safety
///
/// As [`set_process_title`]: the process must be single-threaded.
unsafe fn title_area() -> Option<(usize, usize)> {
    *TITLE_AREA.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may contain anything.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // arg_start, arg_end, env_start, env_end are fields 48 to 51; `fields` starts at 3.
        let number = |field: usize| fields.get(field - 3)?.parse::<usize>().ok();
        let (arg_start, arg_end) = (number(48)?, number(49)?);
        let (env_start, env_end) = (number(50)?, number(51)?);
        if arg_start == 0 || arg_end <= arg_start {
            return None;
        }
        if env_start != arg_end || env_end <= env_start {
            return Some((arg_start, arg_end - arg_start));
        }
        // Copy the environment to the heap so that the strings in the area can be reused.
        let saved: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
        // SAFETY: the caller promises a single-threaded process (see `# Safety`), so nothing
        // reads the environment concurrently; setenv copies each string to the heap.
        unsafe {
            if nix::libc::clearenv() != 0 {
                return Some((arg_start, arg_end - arg_start));
            }
            for (key, value) in saved {
                std::env::set_var(key, value);
            }
        }
        Some((arg_start, env_end - arg_start))
    })
}

/// Sets what `ps` and `top` show for this process: the command line (as BSD's
/// `setproctitle`, overwriting the argument and environment strings in place) and the
/// 15-character thread name. The title is cut to fit.
///
/// # Safety
///
/// The calling process must be single-threaded: the first call replaces the environment
/// (`clearenv`, then `setenv` for each variable), which another thread could be reading, and
/// every call rewrites the argument strings in place.
pub unsafe fn set_process_title(title: &str) {
    let comm: Vec<u8> = title.bytes().filter(|&b| b != 0).take(15).collect();
    if let Ok(comm) = std::ffi::CString::new(comm) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
    // SAFETY: the caller promises a single-threaded process, which is all `title_area` asks.
    let Some((start, len)) = (unsafe { title_area() }) else { return };
    let bytes = title.as_bytes();
    let used = bytes.len().min(len - 1);
    // SAFETY: [start, start + len) is this process's own argument and environment block on
    // its stack, mapped writable for the life of the process; the environment was moved out
    // of it by `title_area` and nothing else reads it but the kernel (for /proc/PID/cmdline).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area[..used].copy_from_slice(&bytes[..used]);
        area[used..].fill(0);
    }
}

/// Gives the C library's free heap memory back to the kernel (`malloc_trim`): after a crowd
/// left, the freed buffers sit in the middle of the heap, where `free` alone never returns
/// them, and a process would keep its high-water mark for good.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists under their locks (glibc
    // documents it MT-Safe); it takes no pointer and is safe to call at any time, from any
    // thread.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The local time of day of a Unix time, as `HH:MM` (the system's time zone, as `TZ` or
/// /etc/localtime say); `--:--` if the C library cannot tell.
pub fn local_hh_mm(unix_seconds: u64) -> String {
    match local_time(unix_seconds) {
        Some(tm) => format!("{:02}:{:02}", tm.tm_hour, tm.tm_min),
        None => "--:--".into(),
    }
}

/// The local date and time of a Unix time, as `YYYY-MM-DD HH:MM`; `---------- --:--` if
/// the C library cannot tell.
pub fn local_date_time(unix_seconds: u64) -> String {
    match local_time(unix_seconds) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        ),
        None => "---------- --:--".into(),
    }
}

/// The broken-down local time of a Unix time.
fn local_time(unix_seconds: u64) -> Option<nix::libc::tm> {
    let Ok(time) = nix::libc::time_t::try_from(unix_seconds) else { return None };
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the
    // call, and localtime_r (unlike localtime) keeps no shared state across threads.
    unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        (!nix::libc::localtime_r(&time, &mut tm).is_null()).then_some(tm)
    }
}

/// Sets or clears `FD_CLOEXEC` on `fd`: an in-place upgrade hands exactly the descriptors it
/// names to the image it executes, and takes them back if the `execve` fails.
pub fn set_close_on_exec(fd: RawFd, close: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: `fd` is open for the duration of this call (the caller holds it); F_GETFD and
    // F_SETFD do not take ownership.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    let flags = if close { flags | FdFlag::FD_CLOEXEC } else { flags - FdFlag::FD_CLOEXEC };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// The seals a handed-over state carries: nobody can change it once written.
fn handover_seals() -> nix::fcntl::SealFlag {
    use nix::fcntl::SealFlag;
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

/// A memfd holding `bytes`, sealed against any change, its offset at the start: what an
/// upgrading master hands to the image it executes.
pub fn sealed_memfd(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let memfd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = std::fs::File::from(memfd);
    std::io::Write::write_all(&mut file, bytes)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    fcntl(&file, FcntlArg::F_ADD_SEALS(handover_seals()))?;
    Ok(OwnedFd::from(file))
}

/// Reads a memfd made by [`sealed_memfd`] from its start; refuses one that is not sealed so
/// (someone else's descriptor, which could change under the reader).
pub fn read_sealed_memfd(memfd: OwnedFd) -> io::Result<Vec<u8>> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    let seals = SealFlag::from_bits_truncate(fcntl(&memfd, FcntlArg::F_GET_SEALS)?);
    if !seals.contains(handover_seals()) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the memfd is not sealed"));
    }
    let mut file = std::fs::File::from(memfd);
    let mut bytes = Vec::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// Executes `program` in place of this process (same pid, same children) with `args` and the
/// current environment plus `extra_env`, every signal blocked across the `execve`: signals that
/// arrive meanwhile stay pending for the new image, which unblocks them once it reads them.
/// Returns only if `execve` failed, with the signal mask as it was.
///
/// # Safety
///
/// The calling process must be single-threaded (the master): `execve` ends every thread at
/// once, and the environment is read while the call is prepared.
pub unsafe fn execute_in_place(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
    extra_env: &[(&str, String)],
) -> io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_string = |bytes: &[u8]| CString::new(bytes).map_err(io::Error::from);
    let prepared = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = c_string(program.as_os_str().as_bytes())?;
        let argv = args.iter().map(|arg| c_string(arg.as_bytes())).collect::<Result<_, _>>()?;
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            if extra_env.iter().any(|(extra, _)| key.as_bytes() == extra.as_bytes()) {
                continue;
            }
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            env.push(c_string(&pair)?);
        }
        for (key, value) in extra_env {
            env.push(c_string(format!("{key}={value}").as_bytes())?);
        }
        Ok((path, argv, env))
    })();
    let (path, argv, env) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return err,
    };
    let mut previous = SigSet::empty();
    if let Err(errno) = nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    ) {
        return errno.into();
    }
    // `execve` returns only on failure.
    let err = match nix::unistd::execve(&path, &argv, &env) {
        Err(errno) => io::Error::from(errno),
        Ok(never) => match never {},
    };
    restore_mask(&previous);
    err
}

/// Removes `name` from the environment and returns its value, if it was set.
///
/// # Safety
///
/// The calling process must be single-threaded: nothing may read or write the environment
/// meanwhile.
pub unsafe fn take_env(name: &str) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(name)?;
    // SAFETY: the caller promises a single-threaded process.
    unsafe { std::env::remove_var(name) };
    Some(value)
}

/// Unblocks every signal: the first image after an in-place upgrade, once it reads its signals.
pub fn unblock_all_signals() -> io::Result<()> {
    set_blocked_signals(&SigSet::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_identity_is_stable_and_names_one_process() {
        let pid = std::process::id() as i32;
        let me = process_identity(pid).expect("own identity");
        assert_eq!(process_identity(pid).ok(), Some(me));
        assert_eq!(me & ((1 << PID_BITS) - 1), pid as u64);
        let mut child = std::process::Command::new("sleep").arg("10").spawn().expect("spawn sleep");
        let theirs = process_identity(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        let theirs = theirs.expect("child identity");
        assert_ne!(theirs, me);
        // A parent never starts after its child (they may share a clock tick).
        assert!(!started_after(me, theirs));
        assert!(process_identity(0).is_err());
        assert!(!started_after(theirs | 1 << 63, me), "a random id says nothing about time");
    }

    #[test]
    fn a_sealed_memfd_reads_back_and_an_unsealed_one_is_refused() {
        let memfd = super::sealed_memfd("test", b"state").expect("memfd");
        // Nobody can write it any more, not even its maker.
        let mut file = std::fs::File::from(memfd.try_clone().expect("clone"));
        assert!(std::io::Write::write_all(&mut file, b"x").is_err());
        assert_eq!(super::read_sealed_memfd(memfd).expect("reads"), b"state");
        let plain = nix::sys::memfd::memfd_create("plain", nix::sys::memfd::MFdFlags::empty())
            .expect("memfd");
        let err = super::read_sealed_memfd(plain).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
