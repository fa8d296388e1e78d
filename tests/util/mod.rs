//! Shared helpers for the behaviour tests: start the real `chatd` binary on an ephemeral
//! loopback port in its own runtime directory and process group, talk to it over real TCP,
//! and kill every process it started when the test ends.
//!
//! Nothing here sleeps for a fixed time: every wait is for something to happen (a log line, a
//! line from the server, a process to disappear), bounded by a timeout that fails the test
//! with what was seen instead.

#![allow(dead_code)]

pub mod postgres;
pub mod talkers;
pub mod tls_client;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Log lines the daemon wrote to stderr, shared with the thread that reads them.
#[derive(Default)]
struct LogLines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    /// Every process that shared standard error has closed it: no line is still to come.
    closed: std::sync::atomic::AtomicBool,
}

/// A process started by a test in its own process group, whose standard error is collected
/// line by line; stopped with SIGTERM, then its whole group killed, when dropped.
pub struct Spawned {
    child: Option<Child>,
    log: Arc<LogLines>,
}

impl Spawned {
    /// Spawns `command` in a new process group with standard error captured.
    pub fn spawn(command: &mut Command) -> Spawned {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(LogLines::default());
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut lines = sink.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                lines.push(line);
                sink.grew.notify_all();
            }
            let lines = sink.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            sink.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            sink.grew.notify_all();
            drop(lines);
        });
        Spawned { child: Some(child), log }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |child| child.id() as i32)
    }

    /// Every line of standard error so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines.lock().expect("log lock").clone()
    }

    /// Every line of standard error, once every process that shared it has closed it (after
    /// [`Spawned::wait_exit`]: the exit of the process does not mean its last lines were read).
    pub fn whole_log(&self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.log.lines.lock().expect("log lock");
        while !self.log.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "standard error is still open after {PATIENCE:?}; so far:\n{}",
                lines.join("\n")
            );
            lines = self.log.grew.wait_timeout(lines, left).expect("log lock").0;
        }
        lines.clone()
    }

    /// Waits for a line of standard error containing `needle` and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits until `count` lines of standard error contain `needle`; returns the last of them.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.log.lines.lock().expect("log lock");
        loop {
            let found: Vec<&String> = lines.iter().filter(|line| line.contains(needle)).collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "fewer than {count} lines containing {needle:?}; standard error was:\n{}",
                    lines.join("\n")
                );
            }
            lines = self.log.grew.wait_timeout(lines, left).expect("log lock").0;
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the process");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("process still owned");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit within {PATIENCE:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    /// Stops the process the way an operator would (SIGTERM: chatd's master reaps its
    /// children), then SIGKILLs whatever is left of its process group as a backstop.
    fn drop(&mut self) {
        let group = self.pid();
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(group), Signal::SIGTERM);
            let deadline = Instant::now() + PATIENCE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            let _ = child.wait();
        }
        // Orphans (only after a failed graceful stop) are reaped by init; wait until none is left.
        let deadline = Instant::now() + PATIENCE;
        while !processes_in_group(group).is_empty() && Instant::now() < deadline {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running chatd on a loopback port; derefs to its [`Spawned`] process (the master).
pub struct Daemon {
    process: Spawned,
    pub port: u16,
    /// Shared with a replacement daemon started on the same runtime directory.
    pub runtime: Arc<tempfile::TempDir>,
}

impl std::ops::Deref for Daemon {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.process
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Spawned {
        &mut self.process
    }
}

impl Daemon {
    /// Starts chatd with the embedded defaults (plus loopback, stderr logging, a temp runtime).
    pub fn start() -> Daemon {
        Self::start_with_config("")
    }

    /// Starts chatd with a TOML settings file holding `config`.
    pub fn start_with_config(config: &str) -> Daemon {
        let runtime = tempfile::tempdir().expect("temp runtime dir");
        // Started as root, chatd runs as an unprivileged user, which must reach broker.sock
        // (in run/, which chatd creates and hands over) and read the settings file.
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(runtime.path(), mode).expect("chmod the temp dir");
        Self::start_in(Arc::new(runtime), config, &[], &[])
    }

    /// Starts chatd through a launcher that execs it (e.g. `prlimit --nproc=4 --`).
    pub fn start_through(launcher: &[&str], config: &str) -> Daemon {
        let runtime = tempfile::tempdir().expect("temp runtime dir");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(runtime.path(), mode).expect("chmod the temp dir");
        Self::start_in(Arc::new(runtime), config, launcher, &[])
    }

    /// Starts chatd with extra environment variables (NOTIFY_SOCKET, ...).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_in(Arc::new(runtime_dir()), config, &[], env)
    }

    /// Starts another daemon (a replacement master) on this one's runtime directory.
    pub fn start_sharing(&self) -> Daemon {
        let config =
            std::fs::read_to_string(self.runtime.path().join("chatd.toml")).unwrap_or_default();
        Self::start_in(Arc::clone(&self.runtime), &config, &[], &[])
    }

    /// Starts another daemon on this one's runtime directory and port, as an operator starts
    /// chatd again after its master died (the port is free once the master is gone).
    pub fn start_sharing_port(&self) -> Daemon {
        let config =
            std::fs::read_to_string(self.runtime.path().join("chatd.toml")).unwrap_or_default();
        let listen = format!("127.0.0.1:{}", self.port);
        let process = spawn_chatd_listening(self.runtime.path(), &config, &[], &[], &listen);
        Self::listening(process, Arc::clone(&self.runtime))
    }

    /// Starts chatd on a runtime directory the test prepared (files planted in its `state/`,
    /// a file system mounted there).
    pub fn start_on(runtime: Arc<tempfile::TempDir>, config: &str) -> Daemon {
        Self::start_in(runtime, config, &[], &[])
    }

    /// Starts chatd on a runtime directory the test prepared, through a launcher that execs it
    /// (`setpriv --reuid=...`, to start it as another user than root).
    pub fn start_on_through(
        runtime: Arc<tempfile::TempDir>,
        launcher: &[&str],
        config: &str,
    ) -> Daemon {
        Self::start_in(runtime, config, launcher, &[])
    }

    /// Starts `program` (another build of chatd: an older version) on `runtime`, listening
    /// on `listen` (`127.0.0.1:0` for any port, or the address a daemon before it served).
    pub fn start_program(
        program: &std::path::Path,
        runtime: Arc<tempfile::TempDir>,
        config: &str,
        listen: &str,
    ) -> Daemon {
        let process = spawn_program(program, runtime.path(), config, &[], &[], listen);
        Self::listening(process, runtime)
    }

    fn start_in(
        runtime: Arc<tempfile::TempDir>,
        config: &str,
        launcher: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let process = spawn_chatd(runtime.path(), config, launcher, env);
        Self::listening(process, runtime)
    }

    /// The daemon `process` once it says which port it listens on.
    fn listening(process: Spawned, runtime: Arc<tempfile::TempDir>) -> Daemon {
        let line = process.wait_for_log("listening on 127.0.0.1:");
        let port = line
            .rsplit(':')
            .next()
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Daemon { process, port, runtime }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime.path().join("run")
    }

    /// Runs `chatctl --runtime-dir <this daemon's> ARGS` and returns its output.
    pub fn chatctl(&self, args: &[&str]) -> std::process::Output {
        self.chatctl_command(args).output().expect("run chatctl")
    }

    /// `chatctl --runtime-dir <this daemon's> ARGS`, to start while the test does other things.
    pub fn chatctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatctl"));
        command.arg("--runtime-dir").arg(self.runtime_dir()).args(args);
        command
    }

    /// The pid of the broker started `nth` (1 for the first).
    pub fn broker_pid(&self, nth: usize) -> i32 {
        let line = self.wait_for_log_count("broker started, pid ", nth);
        line.rsplit(' ')
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    }

    /// A raw TCP connection to the daemon.
    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// Connects, reads the greeting, logs in as `nick` and waits for the join notice.
    pub fn login(&self, nick: &str) -> Client {
        login(self.port, nick)
    }

    /// Logs in each of `nicks` in turn, each seen joining by everyone before it (see [`room`]).
    pub fn room<const N: usize>(&self, nicks: [&str; N]) -> [Client; N] {
        room(self.port, nicks)
    }

    /// Logs in `nick` and waits until each of `members` has seen it join (see
    /// [`login_seen_by`]).
    pub fn login_seen_by(&self, nick: &str, members: &mut [&mut Client]) -> Client {
        login_seen_by(self.port, nick, members)
    }

    /// Pids of every process in the daemon's process group (the master included).
    pub fn processes(&self) -> Vec<i32> {
        processes_in_group(self.pid())
    }

    /// The pid of the process that holds the server side of `client`'s connection.
    pub fn holders_of(&self, client: &Client) -> Vec<i32> {
        let local_port = client.stream.local_addr().expect("local addr").port();
        let inode = server_socket_inode(self.port, local_port)
            .unwrap_or_else(|| panic!("no server socket for client port {local_port}"));
        self.processes().into_iter().filter(|&pid| holds_socket(pid, inode)).collect()
    }
}

/// The first line of every test that needs root. Such a test also carries
/// `#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: <why>")]`: built by another
/// user (build.rs sets the cfg), it is reported as ignored, with its reason. Built as root and
/// run as someone else, it was not marked, and would fail for a reason that is not its own (or
/// pass for one): it stops here, saying so.
pub fn assert_root_as_built() {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return;
    }
    if cfg!(chatd_tests_unprivileged) {
        panic!("this test needs root: it is marked ignored, and was run anyway as uid {uid}");
    }
    panic!(
        "this test needs root, and this binary was built as root, so it was not marked \
         ignored; but it runs as uid {uid}. Run it as root, or build as this user (cargo test \
         does), so that it is reported as ignored"
    );
}

/// Starts chatd on `runtime` (settings in `chatd.toml` there, sockets in `run/`, state in
/// `state/` unless `config` says otherwise) without waiting for it to listen: [`Daemon`]
/// starts it this way, and a test of a start that must fail uses it directly.
pub fn spawn_chatd(
    runtime: &std::path::Path,
    config: &str,
    launcher: &[&str],
    env: &[(&str, &str)],
) -> Spawned {
    spawn_chatd_listening(runtime, config, launcher, env, "127.0.0.1:0")
}

/// [`spawn_chatd`] listening on `listen` rather than on an ephemeral port.
fn spawn_chatd_listening(
    runtime: &std::path::Path,
    config: &str,
    launcher: &[&str],
    env: &[(&str, &str)],
    listen: &str,
) -> Spawned {
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_chatd"));
    spawn_program(program, runtime, config, launcher, env, listen)
}

/// [`spawn_chatd`] with another build of chatd (`program`) listening on `listen`.
fn spawn_program(
    program: &std::path::Path,
    runtime: &std::path::Path,
    config: &str,
    launcher: &[&str],
    env: &[(&str, &str)],
    listen: &str,
) -> Spawned {
    let config_path = runtime.join("chatd.toml");
    // Started as root, chatd becomes `chatd` if that user exists (the package creates it)
    // and `nobody` otherwise: pin it, so that tests do not depend on what is installed.
    let mut config = if config.contains("user =") {
        config.to_string()
    } else {
        format!("user = \"nobody\"\n{config}")
    };
    // Bans and mutes persist: keep each daemon's out of /var/lib/chatd.
    if !config.contains("state_dir =") {
        let state = runtime.join("state");
        config = format!("state_dir = \"{}\"\n{config}", state.display());
    }
    std::fs::write(&config_path, config).expect("write config");
    let mut command = match launcher.split_first() {
        Some((launcher, args)) => {
            let mut command = Command::new(launcher);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .envs(env.iter().copied())
        .arg("--listen")
        .arg(listen)
        .arg("--runtime-dir")
        .arg(runtime.join("run"))
        .arg("--log")
        .arg("stderr")
        .arg("--config")
        .arg(&config_path);
    Spawned::spawn(&mut command)
}

/// A temporary directory that chatd, dropping root to `nobody`, can traverse.
pub fn runtime_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(dir.path(), mode).expect("chmod the temp dir");
    dir
}

/// Connects to a chat server on `port`, logs in as `nick` and waits for the join notice.
pub fn login(port: u16, nick: &str) -> Client {
    login_on(Client::connect(port), nick)
}

/// Logs in `nick` on a connection with a tiny receive window ([`Client::connect_small_window`])
/// and waits until each of `members` has seen it join: a client that will stop reading.
pub fn login_small_window_seen_by(port: u16, nick: &str, members: &mut [&mut Client]) -> Client {
    let client = login_on(Client::connect_small_window(port), nick);
    for member in members {
        member.expect(&format!("*** {nick} has joined lobby"));
    }
    client
}

/// Logs in `nick` on `client` (connected earlier, e.g. from another source address), as
/// [`login`] does.
pub fn login_on(mut client: Client, nick: &str) -> Client {
    client.expect_prefix("*** Please choose a nickname");
    client.send(nick);
    client.expect(&format!("*** You are now known as {nick}. Type /help for commands."));
    client.expect(&format!("*** {nick} has joined lobby"));
    client
}

/// Logs in `nick` (as [`login`]) and then waits until each of `members`, already in lobby,
/// has seen `*** nick has joined lobby`.
///
/// When it returns, both sides know the other is in the room: the newcomer's own join notice
/// comes from the broker after it registered the newcomer, and every member was registered
/// before (its own login saw its join); each member has read the newcomer's join. Each member
/// reads up to that one line and no further, so a later wait finds every line after it; the
/// lines before it (such as the topic notice that follows a member's own join) are consumed.
pub fn login_seen_by(port: u16, nick: &str, members: &mut [&mut Client]) -> Client {
    let newcomer = login(port, nick);
    let joined = format!("*** {nick} has joined lobby");
    for member in members.iter_mut() {
        member.expect(&joined);
    }
    newcomer
}

/// Logs in each of `nicks` in turn, in lobby, each one seen joining by everyone before it
/// ([`login_seen_by`]): when it returns, everyone is in the room and has seen every later
/// member join. Write `let [mut alice, mut bob] = daemon.room(["alice", "bob"]);`.
pub fn room<const N: usize>(port: u16, nicks: [&str; N]) -> [Client; N] {
    let mut members: Vec<Client> = Vec::with_capacity(N);
    for nick in nicks {
        let mut earlier: Vec<&mut Client> = members.iter_mut().collect();
        let newcomer = login_seen_by(port, nick, &mut earlier);
        members.push(newcomer);
    }
    match members.try_into() {
        Ok(members) => members,
        Err(_) => unreachable!("one client per nick"),
    }
}

/// A loopback port that was free a moment ago, for programs that cannot listen on port 0 and
/// say which port they got (xinetd, systemd-socket-activate).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `condition` until it holds, failing with `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// One field of /proc/PID/stat after the command name (which may contain spaces).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The process state letter (R, S, Z, ...), or None if the process is gone.
pub fn process_state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The parent pid of a process.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

pub fn processes_in_group(group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid).and_then(|f| f.get(2).and_then(|g| g.parse::<i32>().ok()))
                == Some(group)
        })
        .collect()
}

/// Bytes `client` sent that the process serving it has not read yet: what waits in the
/// client's send queue plus what waits in the server side's receive queue (/proc/net/tcp).
pub fn unread_bytes(server_port: u16, client: &Client) -> u64 {
    let client_port = client.stream.local_addr().expect("local addr").port();
    let queues = |local, remote| {
        tcp_queues(local, remote)
            .unwrap_or_else(|| panic!("no socket {local} -> {remote} in /proc/net/tcp"))
    };
    queues(client_port, server_port).0 + queues(server_port, client_port).1
}

/// The send and receive queues (bytes) of the loopback TCP socket from `local` to `remote`.
fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let fields = tcp_row(local, remote)?;
    let (send, receive) = fields[4].split_once(':')?;
    Some((u64::from_str_radix(send, 16).ok()?, u64::from_str_radix(receive, 16).ok()?))
}

/// The inode of the server-side socket of a loopback TCP connection.
fn server_socket_inode(server_port: u16, client_port: u16) -> Option<u64> {
    tcp_row(server_port, client_port)?[9].parse().ok()
}

/// The row of /proc/net/tcp or tcp6 for the socket from `local` to `remote` (port numbers),
/// split into its fields (at least 10).
fn tcp_row(local: u16, remote: u16) -> Option<Vec<String>> {
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|text| {
            text.lines().skip(1).find_map(|row| {
                let fields: Vec<String> = row.split_whitespace().map(str::to_string).collect();
                let wanted = fields.len() > 9
                    && port(&fields[1]) == Some(local)
                    && port(&fields[2]) == Some(remote);
                wanted.then_some(fields)
            })
        })
}

fn holds_socket(pid: i32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target.to_str() == Some(wanted.as_str()))
}

/// A TCP client that reads the server's output line by line.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Every line received, for failure messages.
    pub seen: Vec<String>,
    /// Bells (BEL at the end of a line) received; the lines are kept without them.
    pub bells: usize,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Self::connect_to(([127, 0, 0, 1], port).into())
    }

    /// Connects to chatd at `address` (a listener on an address other than loopback).
    pub fn connect_to(address: std::net::SocketAddr) -> Client {
        Self::over(TcpStream::connect(address).expect("connect to chatd"))
    }

    /// A client on a connection made elsewhere (the plain side of a TLS bridge, ...).
    pub fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone stream"));
        Client { stream, reader, seen: Vec::new(), bells: 0 }
    }

    /// Connects with a tiny receive buffer, so that a client that stops reading fills the
    /// server's queue after kilobytes rather than megabytes.
    pub fn connect_small_window(port: u16) -> Client {
        Self::connect_with(port, [127, 0, 0, 1], Some(2048))
    }

    /// Connects from another loopback address (127.0.0.2, ...), a second "source" for limits.
    pub fn connect_from(port: u16, source: [u8; 4]) -> Client {
        Self::connect_with(port, source, None)
    }

    fn connect_with(port: u16, source: [u8; 4], receive_buffer: Option<usize>) -> Client {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket,
            sockopt,
        };
        use std::os::fd::AsRawFd;
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
            .expect("socket");
        if let Some(bytes) = receive_buffer {
            setsockopt(&fd, sockopt::RcvBuf, &bytes).expect("SO_RCVBUF");
        }
        let [a, b, c, d] = source;
        bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).expect("bind the source address");
        connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).expect("connect to chatd");
        Self::over(TcpStream::from(fd))
    }

    /// Sends one line with a CR LF line end.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to chatd");
    }

    /// The next line, without its line end; None at end of stream.
    pub fn next_line(&mut self) -> Option<String> {
        let mut raw = Vec::new();
        match self.reader.read_until(b'\n', &mut raw) {
            Ok(0) => None,
            Ok(_) => {
                assert!(raw.ends_with(b"\r\n"), "line without CR LF: {raw:?}");
                raw.truncate(raw.len() - 2);
                // A listener with `telnet = true` opens with negotiation (IAC verb option);
                // this client, like a line-mode telnet client, just does not answer it.
                while let Some(at) = raw.windows(2).position(|w| w[0] == 255 && w[1] >= 251) {
                    raw.drain(at..(at + 3).min(raw.len()));
                }
                if raw.last() == Some(&0x07) {
                    raw.pop();
                    self.bells += 1;
                }
                let line = String::from_utf8(raw).expect("server sent UTF-8");
                self.seen.push(line.clone());
                Some(line)
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no line from chatd within {PATIENCE:?}; seen so far:\n{}",
                    self.seen.join("\n")
                )
            }
            Err(err) if err.kind() == ErrorKind::ConnectionReset => None,
            Err(err) => panic!("read from chatd: {err}"),
        }
    }

    /// Reads raw bytes (telnet commands included) until they end with `needle`; returns them.
    pub fn read_raw_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(needle) {
            match self.reader.read(&mut byte) {
                Ok(1) => raw.push(byte[0]),
                Ok(_) => {
                    panic!("closed before {needle:?}; got {:?}", String::from_utf8_lossy(&raw))
                }
                Err(err) => panic!("no {needle:?} within {PATIENCE:?} ({err}); got {raw:?}"),
            }
        }
        raw
    }

    /// Reads lines until one equals `expected`; returns the lines before it.
    pub fn expect(&mut self, expected: &str) -> Vec<String> {
        self.read_until(|line| line == expected, expected)
    }

    /// Reads lines until every one of `expected` has come, in any order (as two sessions'
    /// requests reach the broker in either order); returns the other lines read on the way.
    pub fn expect_all(&mut self, expected: &[&str]) -> Vec<String> {
        let mut missing: Vec<&str> = expected.to_vec();
        let mut others = Vec::new();
        while !missing.is_empty() {
            match self.next_line() {
                Some(line) => match missing.iter().position(|wanted| *wanted == line) {
                    Some(at) => {
                        missing.swap_remove(at);
                    }
                    None => others.push(line),
                },
                None => {
                    panic!("connection closed before {missing:?}; seen:\n{}", self.seen.join("\n"))
                }
            }
        }
        others
    }

    /// Reads lines until one starts with `prefix`; returns that line.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        self.read_until(|line| line.starts_with(prefix), prefix);
        self.seen.last().cloned().unwrap_or_default()
    }

    fn read_until(&mut self, matches: impl Fn(&str) -> bool, what: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            match self.next_line() {
                Some(line) if matches(&line) => return before,
                Some(line) => before.push(line),
                None => {
                    panic!("connection closed before {what:?}; seen:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// Reads until the server closes the connection; returns the remaining lines.
    pub fn expect_closed(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = self.next_line() {
            rest.push(line);
        }
        rest
    }

    /// True if the server closed the connection (reads what is left first).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(err) => return err.kind() == ErrorKind::ConnectionReset,
            }
        }
    }
}

/// Runs `fail2ban-regex` with the shipped filter over `log` (a file, or one line of text);
/// returns the address the filter took from each line it matched, in order.
pub fn fail2ban_regex(log: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    // fail2ban resolves the filter's `before = common.conf` next to it, as in /etc/fail2ban.
    let filters = dir.path().join("filter.d");
    std::fs::create_dir_all(&filters).expect("mkdir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/fail2ban/filter.d/chatd.conf"),
        filters.join("chatd.conf"),
    )
    .expect("copy the filter");
    std::fs::copy("/etc/fail2ban/filter.d/common.conf", filters.join("common.conf"))
        .expect("fail2ban's common.conf (apt-get install fail2ban)");
    let output = Command::new("fail2ban-regex")
        .args(["--out", "ip"])
        .arg(log)
        .arg(filters.join("chatd.conf"))
        .output()
        .expect("run fail2ban-regex (apt-get install fail2ban)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
    report.lines().map(str::to_string).collect()
}

/// Distinct values, for asserting that pids differ.
pub fn distinct(values: &[i32]) -> usize {
    values.iter().collect::<HashSet<_>>().len()
}

/// Resident memory of a process in KiB (VmRSS), 0 if it is gone.
pub fn rss_kib(pid: i32) -> u64 {
    memory_kib(pid, "VmRSS:")
}

/// The most resident memory a process ever had, in KiB (VmHWM), 0 if it is gone.
pub fn peak_rss_kib(pid: i32) -> u64 {
    memory_kib(pid, "VmHWM:")
}

fn memory_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The path, under `/proc/PID/fd`, of the descriptor by which the broker `broker` holds the
/// ring of room `room` (a memfd named `chatd room ROOM`).
pub fn broker_ring(broker: i32, room: &str) -> PathBuf {
    let name = format!("memfd:chatd room {room}");
    std::fs::read_dir(format!("/proc/{broker}/fd"))
        .expect("the broker's descriptors")
        .filter_map(|fd| fd.ok().map(|fd| fd.path()))
        .find(|fd| std::fs::read_link(fd).is_ok_and(|to| to.to_string_lossy().contains(&name)))
        .unwrap_or_else(|| panic!("no ring of {room} among the broker's descriptors"))
}
