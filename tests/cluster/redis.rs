//! A throwaway Redis for the cluster tests: Debian's `redis-server` as a child of the test, in
//! its own process group, on a loopback port of its own, with a password, no persistence and
//! its files in a temporary directory. Dropping it kills it and waits until nothing of it is
//! left. It can be stopped and started again on the same port (an outage), and every client
//! connection but the test's own can be cut (`CLIENT KILL TYPE normal`).
//!
//! SPEC18 names `src/broker/cluster/test_redis.rs` (the bridge's `cfg(test)` helper) as the one
//! way to run a test Redis; until it is in main this file does the same with the same
//! command line, and talks to Redis in RESP itself rather than through `redis-cli`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{PATIENCE, Spawned, free_port, processes_in_group};

/// A running (or stopped, between [`Redis::stop`] and [`Redis::start_again`]) test Redis.
pub struct Redis {
    /// Where Redis may write (`--dir`) and its log is.
    dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
    /// The server, in a process group of its own; `None` while stopped.
    process: Option<Spawned>,
    /// Every process group the server had, for the check that nothing is left.
    groups: Vec<i32>,
}

/// A Redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, for assertions and failure messages.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(text) | Reply::Error(text) => text.clone(),
            Reply::Integer(n) => n.to_string(),
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
            Reply::Array(Some(items)) => {
                items.iter().map(Reply::text).collect::<Vec<_>>().join(" ")
            }
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

impl Redis {
    /// Starts a Redis that wants a fresh password from every client.
    pub fn start() -> Redis {
        let dir = tempfile::Builder::new().prefix("chatd-redis-").tempdir().expect("a temp dir");
        let password = format!("{:032x}", fastrand::u128(..));
        let mut redis =
            Redis { dir, port: free_port(), password, process: None, groups: Vec::new() };
        redis.start_again();
        redis
    }

    /// A port nobody listens on, with the password a Redis started there later will want:
    /// for "Redis is unreachable at start", then [`start_again`](Self::start_again).
    pub fn not_started() -> Redis {
        let dir = tempfile::Builder::new().prefix("chatd-redis-").tempdir().expect("a temp dir");
        let password = format!("{:032x}", fastrand::u128(..));
        Redis { dir, port: free_port(), password, process: None, groups: Vec::new() }
    }

    /// The URL a chat node is given: `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", self.password, self.port)
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "Redis is already running");
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", &self.password])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log);
        if Command::new("redis-server").arg("--version").output().is_err() {
            panic!(
                "this test needs redis-server: install the `redis-server` package \
                 (apt-get install redis-server; .ci/run does)"
            );
        }
        let process = Spawned::spawn(&mut command);
        self.groups.push(process.pid());
        self.process = Some(process);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(reply) = self.try_command(&["PING"])
                && reply == Reply::Status("PONG".into())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within {PATIENCE:?}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (SIGTERM: without persistence it keeps nothing) and waits until it is
    /// gone; every connection to it is lost, and what it held with it.
    pub fn stop(&mut self) {
        let process = self.process.take().expect("Redis is running");
        // Spawned's drop: SIGTERM, then its process group killed and waited for.
        drop(process);
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "port {} still answers after the stop", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cuts every client connection but this one (`CLIENT KILL TYPE normal`, which skips the
    /// caller); returns how many were cut.
    pub fn kill_clients(&self) -> i64 {
        match self.command(&["CLIENT", "KILL", "TYPE", "normal"]) {
            Reply::Integer(killed) => killed,
            other => panic!("CLIENT KILL answered {other:?}"),
        }
    }

    /// Runs one command (after AUTH) on a connection of its own; fails the test if Redis
    /// cannot be reached. An error reply is returned, not a failure.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.try_command(args).unwrap_or_else(|err| {
            panic!("Redis on port {}: {args:?}: {err}; its log:\n{}", self.port, self.log())
        })
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut connection = Connection::open(self.port)?;
        let auth = connection.call(&["AUTH", &self.password])?;
        if auth != Reply::Status("OK".into()) {
            return Err(std::io::Error::other(format!("AUTH answered {auth:?}")));
        }
        connection.call(args)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Processes of this Redis still running (none once dropped).
    pub fn processes(&self) -> Vec<i32> {
        self.groups.iter().flat_map(|&group| processes_in_group(group)).collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Spawned's drop stops the server and kills its group; nothing else is left.
        drop(self.process.take());
    }
}

/// One RESP connection to a loopback Redis.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(port: u16) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Connection { writer: stream, reader })
    }

    /// Sends `args` as one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&request)?;
        self.read_reply()
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches("\r\n").to_string())
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line()?;
        let bad = || std::io::Error::other(format!("not RESP: {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        let number = || rest.parse::<i64>().map_err(|_| bad());
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(number()?),
            "$" => match usize::try_from(number()?) {
                Ok(length) => {
                    let mut bytes = vec![0; length + 2];
                    self.reader.read_exact(&mut bytes)?;
                    bytes.truncate(length);
                    Reply::Bulk(Some(bytes))
                }
                Err(_) => Reply::Bulk(None),
            },
            "*" => match usize::try_from(number()?) {
                Ok(count) => {
                    let mut items = Vec::with_capacity(count);
                    for _ in 0..count {
                        items.push(self.read_reply()?);
                    }
                    Reply::Array(Some(items))
                }
                Err(_) => Reply::Array(None),
            },
            _ => return Err(bad()),
        })
    }
}
