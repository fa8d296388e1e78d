//! Deployment modes driven by the real programs that run them: `chatd broker` with inetd-style
//! sessions (systemd-socket-activate --inetd, xinetd), socket activation of the standalone
//! daemon (LISTEN_FDS), and readiness notification (NOTIFY_SOCKET).

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use crate::util::{
    self, Client, Daemon, PATIENCE, Spawned, free_port, login, login_seen_by, room, runtime_dir,
};

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// A settings file in `dir` that keeps the moderation state there too, not in /var/lib/chatd.
fn state_in(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("state.toml.conf");
    let state = dir.join("state");
    std::fs::write(&config, format!("state_dir = \"{}\"\n", state.display())).expect("config");
    config
}

/// `chatd broker` on `run` (a directory inside `dir`), ready to serve, its moderation state in
/// `dir` too.
fn broker(dir: &std::path::Path) -> Spawned {
    let run = dir.join("run");
    let config = state_in(dir);
    let broker = Spawned::spawn(
        Command::new(CHATD)
            .arg("broker")
            .arg("--runtime-dir")
            .arg(&run)
            .args(["--log", "stderr", "--config"])
            .arg(&config),
    );
    broker.wait_for_log("broker ready");
    broker
}

/// systemd-socket-activate on `port`, starting `chatd inetd` for each connection (as
/// `chatd-inetd.socket` does), listening.
fn inetd_activator(port: u16, run: &std::path::Path) -> Spawned {
    let activator = Spawned::spawn(
        Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{port}"), "--inetd", "-a", CHATD, "inetd"])
            .args(["--log", "stderr", "--runtime-dir"])
            .arg(run),
    );
    activator.wait_for_log("Listening on");
    activator
}

#[test]
fn inetd_sessions_from_systemd_socket_activate_chat_through_the_broker() {
    let dir = runtime_dir();
    let _broker = broker(dir.path());
    let port = free_port();
    let activator = inetd_activator(port, &dir.path().join("run"));
    let [mut alice, mut bob] = room(port, ["alice", "bob"]);
    bob.send("hello through inetd");
    alice.expect("<bob> hello through inetd");
    activator.wait_for_log("logged in as alice");
}

#[test]
fn chatctl_reaches_a_broker_that_runs_alone() {
    let dir = runtime_dir();
    let mut broker = broker(dir.path());
    let chatctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chatctl"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .args(args)
            .output()
            .expect("run chatctl")
    };
    let status = chatctl(&["--json", "status"]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["master"], serde_json::Value::Null, "no master: {status}");
    assert_eq!(status["broker_pid"], broker.pid());
    let reload = chatctl(&["reload"]);
    assert_eq!(reload.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&reload.stderr).contains("send SIGHUP"), "{reload:?}");
    assert!(chatctl(&["shutdown"]).status.success());
    broker.wait_for_log("no master is linked; the broker stops alone");
    assert!(broker.wait_exit().success());
    assert!(!dir.path().join("run/control.sock").exists(), "control.sock is removed");
}

#[test]
fn an_inetd_session_without_a_broker_says_so_and_logs_an_error() {
    let dir = runtime_dir();
    let port = free_port();
    let activator = inetd_activator(port, &dir.path().join("nothing-here"));
    let mut client = Client::connect(port);
    assert_eq!(
        client.expect_closed(),
        vec!["*** The chat service is unavailable; please try again later.".to_string()]
    );
    let line = activator.wait_for_log("cannot reach the broker");
    assert!(line.contains("error"), "{line}");
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: the packaged xinetd entry runs chatd as root"
)]
fn xinetd_runs_inetd_sessions_from_the_packaged_entry() {
    crate::util::assert_root_as_built();
    let dir = runtime_dir();
    let _broker = broker(dir.path());
    let port = free_port();
    let entry =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/xinetd.d/chatd"))
            .expect("packaging/xinetd.d/chatd");
    let run = dir.path().join("run");
    let entry: String = entry
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            match key {
                "port" => format!("\tport = {port}"),
                "bind" => "\tbind = 127.0.0.1".to_string(),
                "server" => format!("\tserver = {CHATD}"),
                "server_args" => format!("\tserver_args = inetd --runtime-dir {}", run.display()),
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = dir.path().join("xinetd.conf");
    std::fs::write(&config, format!("defaults\n{{\n}}\n{entry}\n")).expect("write xinetd.conf");
    let xinetd = Spawned::spawn(
        Command::new("xinetd")
            .args(["-dontfork", "-f"])
            .arg(&config)
            .arg("-pidfile")
            .arg(dir.path().join("xinetd.pid"))
            .arg("-filelog")
            .arg(dir.path().join("xinetd.log")),
    );
    let log = dir.path().join("xinetd.log");
    util::wait_until("xinetd is listening", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("Started working"))
    });
    assert!(xinetd.pid() > 0);
    let [mut alice, mut bob] = room(port, ["alice", "bob"]);
    alice.send("hello through xinetd");
    bob.expect("<alice> hello through xinetd");
    // Under xinetd standard error is the client's socket too: no log line may reach it.
    for line in alice.seen.iter().chain(&bob.seen) {
        assert!(!line.starts_with("chatd["), "a log line reached a client: {line}");
    }
}

#[test]
fn the_standalone_daemon_takes_its_listener_from_systemd() {
    let dir = runtime_dir();
    let port = free_port();
    // systemd-socket-activate starts chatd on the first connection, with LISTEN_FDS=1.
    let daemon = Spawned::spawn(
        Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{port}"), CHATD, "--log", "stderr"])
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .arg("--config")
            .arg(state_in(dir.path())),
    );
    daemon.wait_for_log("Listening on");
    let mut alice = login(port, "alice");
    daemon.wait_for_log("using 1 listening socket(s) from systemd");
    daemon.wait_for_log(&format!("listening on 127.0.0.1:{port}"));
    let mut bob = login_seen_by(port, "bob", &mut [&mut alice]);
    bob.send("socket activated");
    alice.expect("<bob> socket activated");
}

#[test]
fn readiness_watchdog_and_stopping_are_reported_to_systemd() {
    let dir = runtime_dir();
    let path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).expect("bind a notify socket");
    // chatd reports after it dropped root.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    notify.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let notify_socket = path.display().to_string();
    let mut daemon = Daemon::start_with_env(
        "web_listen = [\"127.0.0.1:0\"]\n",
        &[("NOTIFY_SOCKET", &notify_socket), ("WATCHDOG_USEC", "200000")],
    );
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification from chatd");
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    // First the listeners it bound, for systemd's fd store (their descriptors, passed along,
    // are dropped by `recv`), one message per kind, each named as `from_systemd` reads it back;
    // then readiness.
    assert_eq!(next(), "FDSTORE=1\nFDNAME=plain");
    assert_eq!(next(), "FDSTORE=1\nFDNAME=web");
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1", "the watchdog is fed again within the interval");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("STOPPING=1") {
        seen.push(next());
        assert!(seen.len() < 50, "{seen:?}");
    }
    assert!(daemon.wait_exit().success());
}

/// Kills a daemon that left the test's process group (it called setsid), by its group.
struct DetachedGuard(i32);

impl Drop for DetachedGuard {
    fn drop(&mut self) {
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(self.0)));
        if let Ok(group) = group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn daemon_mode_detaches_writes_its_pid_and_stops_cleanly() {
    let dir = runtime_dir();
    let run = dir.path().join("run");
    let pid_file = run.join("chatd.pid");
    let port = free_port();
    let started = Command::new(CHATD)
        .args(["--daemon", "--log", "stderr", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--runtime-dir")
        .arg(&run)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--config")
        .arg(state_in(dir.path()))
        .output()
        .expect("run chatd --daemon");
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    // The command returned only once the daemon was ready: the pid file is there and clients
    // are served at once.
    let pid: i32 =
        std::fs::read_to_string(&pid_file).expect("pid file").trim().parse().expect("a pid");
    let _guard = DetachedGuard(pid);
    let mut alice = login(port, "alice");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let (group, session) = (fields[2], fields[3]);
    assert_ne!(session, pid.to_string(), "not a session leader: it can never get a terminal");
    assert_eq!(session, group, "in a new session of its own");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
        std::path::PathBuf::from("/")
    );
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd");
        assert_eq!(target, std::path::PathBuf::from("/dev/null"), "fd {fd}");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .expect("stop");
    alice.expect("*** The server is shutting down. Goodbye.");
    util::wait_until("the daemon is gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn daemon_mode_reports_a_start_up_failure_to_the_terminal() {
    let dir = runtime_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let output = Command::new(CHATD)
        .args(["--daemon", "--log", "stderr", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .output()
        .expect("run chatd --daemon");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"));
}

/// The value of `GLIBC_TUNABLES` in `pid`'s environment, if any.
fn malloc_tunables_of(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|&byte| byte == 0)
        .find_map(|entry| entry.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

#[test]
fn the_daemon_runs_with_the_smaller_malloc_settings_as_the_same_process() {
    let daemon = Daemon::start();
    let alice = daemon.login("alice");
    let session = daemon.holders_of(&alice)[0];
    // Re-executed once, in place: the pid the launcher knows is the master's.
    assert_eq!(util::parent_of(session), Some(daemon.pid()), "the session is the master's child");
    // glibc rewrites the variable in place as it parses it (only its start is sure to show),
    // and a session's title is written over its environment: the master's tells.
    let tunables = malloc_tunables_of(daemon.pid());
    assert!(
        tunables.as_deref().is_some_and(|value| value.starts_with("glibc.malloc.tcache_count=0")),
        "the master's environment: {tunables:?}"
    );
    // An operator's own choice stands, and is not appended to.
    let mine = "glibc.malloc.tcache_count=7";
    let other = Daemon::start_with_env("", &[("GLIBC_TUNABLES", mine)]);
    assert_eq!(malloc_tunables_of(other.pid()).as_deref(), Some(mine));
}
