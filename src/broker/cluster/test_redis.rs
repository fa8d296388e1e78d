//! A throwaway Redis server for tests: Debian's `redis-server` (7.0), a child of the test in
//! its own process group, on a port of its own on 127.0.0.1, with a random password, no
//! persistence, and its working directory in a temporary directory.
//!
//! Two kinds of test use it: the bridge's unit tests (`broker::cluster::bridge`), and the
//! behaviour tests, which cannot see the library's `cfg(test)` code and include this file by
//! path (`#[path = "../../src/broker/cluster/test_redis.rs"]`). So it uses nothing but std,
//! nix, tempfile and the `redis` client, and names nothing of chatd.
//!
//! What it must not do: wait a fixed time (it waits until the server answers `PING`), skip a
//! test because Redis is missing (it fails the test instead, saying what to install), or
//! outlive its test: dropping it kills the server's process group and reaps the server.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Where Debian installs the server.
const SERVER: &str = "/usr/bin/redis-server";
/// How long the server may take to answer its first `PING`.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running Redis server of a test's own.
pub struct TestRedis {
    /// The server: its pid is its process group's.
    child: Child,
    port: u16,
    /// Where it also takes TLS connections (`rediss://`), when asked to.
    tls_port: Option<u16>,
    password: String,
    /// The server's working directory (and its log); removed after the server is gone.
    dir: tempfile::TempDir,
}

impl TestRedis {
    /// Starts a server on a free port.
    pub fn start() -> TestRedis {
        let password = random_password();
        // A free port can be taken by someone else before the server binds it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(free_port(), &password, None) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}")
    }

    /// Starts a server on this port (one a test knows is free, or that a server it dropped
    /// had), wanting this password.
    pub fn start_on(port: u16, password: &str) -> TestRedis {
        Self::try_start(port, password, None)
            .unwrap_or_else(|why| panic!("redis-server did not start on port {port}: {why}"))
    }

    /// Starts a server that also takes TLS connections on [`tls_port`](Self::tls_port), with
    /// this certificate and key (PEM files); it does not ask clients for certificates.
    pub fn start_with_tls(cert: &Path, key: &Path) -> TestRedis {
        let password = random_password();
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(free_port(), &password, Some((free_port(), cert, key))) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server with TLS did not start: {last}")
    }

    fn try_start(
        port: u16,
        password: &str,
        tls: Option<(u16, &Path, &Path)>,
    ) -> Result<TestRedis, String> {
        if !Path::new(SERVER).is_file() {
            panic!(
                "this test needs Redis, and there is no {SERVER}: install the `redis-server` \
                 package (apt-get install redis-server; .ci/run does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("chatd-redis-")
            .tempdir()
            .unwrap_or_else(|err| panic!("a temporary directory for Redis: {err}"));
        let log = dir.path().join("server.log");
        let mut command = Command::new(SERVER);
        if let Some((tls_port, cert, key)) = tls {
            command.args(["--tls-port", &tls_port.to_string(), "--tls-auth-clients", "no"]);
            command.arg("--tls-cert-file").arg(cert).arg("--tls-key-file").arg(key);
            command.arg("--tls-ca-cert-file").arg(cert);
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", password])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|err| format!("cannot run {SERVER}: {err}"))?;
        let tls_port = tls.map(|(tls_port, _, _)| tls_port);
        let mut server = TestRedis { child, port, tls_port, password: password.to_string(), dir };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("it exited ({status}):\n{}", server.log()));
            }
            if server.answers() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG within {PATIENCE:?}:\n{}", server.log()));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[allow(dead_code, reason = "the behaviour tests (tests/cluster) use it")]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://:PASSWORD@localhost:TLS_PORT/0`, for a server started with TLS.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.unwrap_or_else(|| panic!("this Redis was started without TLS"));
        format!("rediss://:{}@localhost:{port}/0", self.password)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", self.password, self.port)
    }

    /// The same server without the password in the URL.
    pub fn url_without_password(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain client connection, for a test to look or meddle (`CLIENT KILL`, `XADD`, ...).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(PATIENCE))
            .unwrap_or_else(|err| panic!("a test connection to Redis on {}: {err}", self.port))
    }

    /// Waits until `done` holds, asking it again every few milliseconds on one connection;
    /// fails the test after a while, naming `what`.
    pub fn wait_until(&self, what: &str, mut done: impl FnMut(&mut redis::Connection) -> bool) {
        let mut connection = self.connection();
        let deadline = Instant::now() + PATIENCE;
        while !done(&mut connection) {
            if Instant::now() > deadline {
                panic!("waited {PATIENCE:?} for {what} in Redis on port {}", self.port);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's log, for a failing test to show.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("server.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut connection).is_ok_and(|pong| pong == "PONG")
    }
}

impl Drop for TestRedis {
    /// Kills the server's group and reaps the server; the directory goes after.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on just now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|err| panic!("a free port on 127.0.0.1: {err}"))
}

/// 32 hex digits from the kernel's random source.
fn random_password() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .unwrap_or_else(|err| panic!("/dev/urandom: {err}"));
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
