//! The test Redis of the cluster tests: the bridge's own (`src/broker/cluster/test_redis.rs`,
//! Debian's `redis-server` as a child of the test in its own process group, on a loopback port
//! of its own, with a password and no persistence), which can here also be stopped and started
//! again on the same port (an outage), or not be started yet, and have every client connection
//! but the test's own cut (`CLIENT KILL TYPE normal`). Commands go in RESP on a connection of
//! their own, so that a test sees Redis's replies, errors included, as Redis said them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::PATIENCE;

#[path = "../../src/broker/cluster/test_redis.rs"]
#[allow(dead_code, reason = "the bridge's unit tests use the rest (TLS, its own connections)")]
mod test_redis;

use test_redis::TestRedis;
pub use test_redis::free_port;

/// A running (or stopped, between [`Redis::stop`] and [`Redis::start_again`]) test Redis.
pub struct Redis {
    /// The server; `None` while stopped.
    server: Option<TestRedis>,
    pub port: u16,
    pub password: String,
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
    /// Starts a Redis that wants a password of its own from every client.
    pub fn start() -> Redis {
        let server = TestRedis::start();
        let (port, password) = (server.port(), server.password().to_string());
        Redis { server: Some(server), port, password }
    }

    /// A port nobody listens on, with the password a Redis started there later will want:
    /// for "Redis is unreachable at start", then [`start_again`](Self::start_again).
    pub fn not_started() -> Redis {
        Redis { server: None, port: free_port(), password: format!("{:032x}", fastrand::u128(..)) }
    }

    /// The URL a chat node is given: `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", self.password, self.port)
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "Redis is already running");
        self.server = Some(TestRedis::start_on(self.port, &self.password));
    }

    /// Stops the server (killed: without persistence it keeps nothing) and waits until it is
    /// gone; every connection to it is lost, and everything it held.
    pub fn stop(&mut self) {
        drop(self.server.take().expect("Redis is running"));
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
        let mut connection = Connection::open(self.port)
            .unwrap_or_else(|err| panic!("Redis on port {}: {err}; {}", self.port, self.log()));
        let auth = connection.call(&["AUTH", &self.password]).expect("AUTH");
        assert_eq!(auth, Reply::Status("OK".into()), "AUTH");
        connection.call(args).unwrap_or_else(|err| panic!("{args:?}: {err}; {}", self.log()))
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.as_ref().map(TestRedis::log).unwrap_or_else(|| "(stopped)".into())
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
