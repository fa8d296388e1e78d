//! What both Redis threads share: how a connection is made, how an error is put in plain
//! words, the back-off between attempts, and telling the loop (a send, then a wake).
//!
//! It owns no connection: each thread keeps its own and drops it after any error.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use redis::{Client, Connection, ErrorKind, IntoConnectionInfo, RedisError};

use super::{BridgeError, BridgeSettings, Incoming, READ_TIMEOUT, RECONNECT_FIRST, RECONNECT_MAX};

/// How long making a connection may take (TCP, TLS and the `AUTH` together).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for the settings' URL, with the password from the file when there is one. The
/// error never shows the password (the crate's URL errors do not quote the URL).
pub fn client(settings: &BridgeSettings) -> Result<Client, BridgeError> {
    let unusable = |err: RedisError| BridgeError::Url(err.to_string());
    let mut info = settings.url.as_str().into_connection_info().map_err(unusable)?;
    if let Some(password) = &settings.password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    Client::open(info).map_err(unusable)
}

/// Where the client connects, for messages (`host:port`: no password).
pub fn address(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// A new connection with the timeouts set, that has answered a `PING` (so a password Redis
/// wants and was not given shows here, not at the first job).
pub fn connect(client: &Client) -> Result<Connection, String> {
    let said = |err: RedisError| describe(&err, client);
    let mut connection = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(said)?;
    connection.set_read_timeout(Some(READ_TIMEOUT)).map_err(said)?;
    connection.set_write_timeout(Some(READ_TIMEOUT)).map_err(said)?;
    redis::cmd("PING").query::<String>(&mut connection).map_err(said)?;
    Ok(connection)
}

/// An error in plain words, naming where Redis is (never the password).
pub fn describe(err: &RedisError, client: &Client) -> String {
    let at = address(client);
    if err.kind() == ErrorKind::AuthenticationFailed || err.code() == Some("WRONGPASS") {
        format!("Redis at {at} refused the password (WRONGPASS)")
    } else if err.code() == Some("NOAUTH") {
        format!("Redis at {at} wants a password and none was given (NOAUTH)")
    } else if err.is_timeout() {
        format!("Redis at {at} did not answer within {} s", READ_TIMEOUT.as_secs())
    } else if err.is_connection_refusal() {
        format!("nothing accepts connections at {at} (is Redis running?)")
    } else if err.is_connection_dropped() {
        format!("the connection to Redis at {at} was lost ({err})")
    } else {
        format!("Redis at {at}: {err}")
    }
}

/// The thread's way to the loop: every message is followed by a wake.
pub struct Tell {
    to_loop: Sender<Incoming>,
    waker: Arc<mio::Waker>,
    /// A failed wake is logged once (the loop is ending, or its poll is gone).
    wake_failed: bool,
}

impl Tell {
    pub fn new(to_loop: Sender<Incoming>, waker: Arc<mio::Waker>) -> Tell {
        Tell { to_loop, waker, wake_failed: false }
    }

    /// Sends and wakes; `false` when the loop is gone (the thread should end).
    pub fn tell(&mut self, incoming: Incoming) -> bool {
        if self.to_loop.send(incoming).is_err() {
            return false;
        }
        if let Err(err) = self.waker.wake()
            && !self.wake_failed
        {
            log::debug!("cluster: cannot wake the broker's loop: {err}");
            self.wake_failed = true;
        }
        true
    }
}

/// Whether a thread has Redis, so that losing it is reported once per episode.
pub struct Health {
    /// `true` for the reader (as in [`Incoming::Lost`]).
    pub reader: bool,
    /// Lost was told and no connection has worked since.
    lost: bool,
}

impl Health {
    pub fn new(reader: bool) -> Health {
        Health { reader, lost: false }
    }

    fn name(&self) -> &'static str {
        if self.reader { "reader" } else { "writer" }
    }

    /// Reports a loss, unless this episode's was reported already; `false` when the loop is
    /// gone.
    pub fn lost(&mut self, why: String, tell: &mut Tell) -> bool {
        if self.lost {
            log::debug!("cluster: still no Redis for the {}: {why}", self.name());
            return true;
        }
        log::warn!("cluster: lost Redis: {why} (the {}'s connection)", self.name());
        self.lost = true;
        tell.tell(Incoming::Lost { reader: self.reader, why })
    }

    /// A connection works: the end of an episode, if there was one.
    pub fn up(&mut self) {
        if self.lost {
            log::info!("cluster: Redis is back for the {}", self.name());
            self.lost = false;
        }
    }
}

/// The wait before the next connection attempt: [`RECONNECT_FIRST`], doubling to
/// [`RECONNECT_MAX`], and back to the first once a connection has served.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: RECONNECT_FIRST }
    }

    /// The wait now; the one after is twice as long.
    pub fn failed(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(RECONNECT_MAX);
        now
    }

    pub fn served(&mut self) {
        self.next = RECONNECT_FIRST;
    }
}
