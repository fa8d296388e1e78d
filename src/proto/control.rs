//! The operator protocol on `control.sock`: what `chatctl` asks the broker and what it answers,
//! plus the figures the master reports to the broker for `status`.
//!
//! One connection carries one [`ControlFrame`] and its one [`ControlReply`], in the frames of
//! [`super::codec`]. Every request carries [`CONTROL_VERSION`]; a change here that alters the
//! wire bytes bumps it. This module owns the shapes only: the broker's `control` module answers
//! them and `ctl` (chatctl) prints them.

use serde::{Deserialize, Serialize};

use crate::moderation::{Ban, Mute};

/// Version of the operator protocol. 2: the store (`Backup`, `History`, `Forget`, the
/// store's figures in [`Status`]). 3: accounts (`Accounts`), TLS (the certificate in
/// [`Status`], `tls` and `account` in [`UserRow`]). 4: in-place upgrades (`Upgrade`; the
/// code that runs in [`MasterFigures`]). 5: a cluster's figures ([`ClusterStatus`]) and
/// each user's node ([`UserRow::node`]). 6: the mutes in force (`Mutes`, answered
/// [`ControlReply::Mutes`]), appended.
///
/// New requests and replies are appended, never inserted: `Upgrade` and the replies `Done`,
/// `Failed`, `Denied` and `VersionMismatch` keep their bytes across versions, so that a newer
/// chatctl can ask an older broker to upgrade (see `ctl::upgrade`).
pub const CONTROL_VERSION: u32 = 6;

/// Largest request payload the broker reads on `control.sock`. Requests are a verb and a few
/// words; the largest legitimate one is `motd --file`, which chatctl holds to
/// [`MAX_MOTD_BYTES`]. The broker's own frames (`MAX_FRAME_LEN`, 1 MiB) are for replies such as
/// a `who` of ten thousand users: a caller must not make the broker hold that much per
/// connection.
pub const MAX_REQUEST_LEN: usize = 64 << 10;

/// Largest message of the day chatctl sends (the broker keeps its first 50 lines).
pub const MAX_MOTD_BYTES: usize = 32 << 10;

/// chatctl → broker: one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlFrame {
    pub version: u32,
    pub request: ControlRequest,
}

/// What an operator can ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    Status,
    /// Users, of one room or of all.
    Who {
        room: Option<String>,
    },
    Rooms,
    Kick {
        nick: String,
        reason: Option<String>,
    },
    /// `target` is an address, a network or a nickname; `seconds` limits it.
    Ban {
        target: String,
        seconds: Option<u64>,
        reason: Option<String>,
    },
    Unban {
        target: String,
    },
    Bans,
    Mute {
        nick: String,
        seconds: Option<u64>,
    },
    Unmute {
        nick: String,
    },
    Announce {
        room: Option<String>,
        text: String,
    },
    /// Show (`None`) or set the message of the day (`Some("")` clears it).
    Motd {
        text: Option<String>,
    },
    Reload,
    /// Warn everyone, wait `grace_seconds`, then stop the daemon.
    Shutdown {
        grace_seconds: u64,
        message: Option<String>,
    },
    /// A consistent copy of the live database into the empty file that comes with this
    /// frame (SCM_RIGHTS): chatctl creates it, so it may be anywhere the operator can write.
    Backup,
    /// Stored lines of `room` said at or after `since` (Unix seconds), oldest first.
    History {
        room: String,
        since: u64,
        limit: u32,
    },
    /// Delete every stored line said under `nick`, and those the rooms keep in memory.
    Forget {
        nick: String,
    },
    /// `chatctl accounts ...`
    Accounts(AccountsRequest),
    /// `chatctl upgrade [--binary PATH]`: run the new binary's pre-flight, then execute it in
    /// place of the master (same pid) and replace the broker. Answered `Done` once the master
    /// starts executing it, `Failed` if it refused; the outcome shows in `Status` (the master's
    /// `generation`, or its `upgrade_failure`).
    Upgrade {
        binary: Option<String>,
    },
    /// The mutes in force, oldest first, whether or not their nick is connected. Protocol 6.
    Mutes,
}

/// What an operator can do to accounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountsRequest {
    List,
    Show {
        nick: String,
    },
    /// Replace the password: chatctl drew a one-time password and derived its tag under
    /// `kdf` (the broker never sees the password). The user must choose a new one at login.
    ResetPassword {
        nick: String,
        kdf: crate::accounts::Kdf,
        tag: Vec<u8>,
    },
    Delete {
        nick: String,
    },
    /// Grant (`true`) or revoke the admin role.
    Admin {
        nick: String,
        admin: bool,
    },
}

/// One account, for `chatctl accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    pub nick: String,
    /// Unix seconds.
    pub created_at: u64,
    /// When its last session ended (Unix seconds); 0: never logged in since registering.
    pub last_seen: u64,
    /// Connected now.
    pub online: bool,
    pub admin: bool,
    /// Its password was reset and must be changed at the next login.
    pub must_change: bool,
    /// Private lines kept for it.
    pub kept_messages: u64,
    pub memory_kib: u32,
    pub passes: u32,
}

/// The certificate the TLS listeners present, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStatus {
    /// SHA-256 of the certificate (DER), as `AB:CD:...`.
    pub fingerprint: String,
    /// The certificate's file, or "self-signed (<file>)" for the one chatd made.
    pub source: String,
    /// Its expiry (Unix seconds).
    pub not_after: u64,
}

/// broker → chatctl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlReply {
    Status(Box<Status>),
    Users(Vec<UserRow>),
    Rooms(Vec<RoomRow>),
    Bans(Vec<Ban>),
    Motd(Option<String>),
    /// The request was carried out; a sentence for the operator.
    Done(String),
    /// The request was understood but could not be carried out (no such nick, ...).
    Failed(String),
    /// The caller may not use the control socket.
    Denied(String),
    /// The caller speaks another version of this protocol.
    VersionMismatch {
        broker: u32,
    },
    /// Answer to `History`.
    Stored(Vec<StoredRow>),
    /// Answer to `Backup`: the copy is written and this long.
    BackedUp {
        bytes: u64,
    },
    /// Answer to `Accounts(List)` and `Accounts(Show)` (one row).
    Accounts(Vec<AccountRow>),
    /// Answer to `Mutes`. Protocol 6.
    Mutes(Vec<Mute>),
}

/// A stored line, for `chatctl history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRow {
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    pub from: String,
    pub action: bool,
    pub text: String,
}

/// The store's figures (`None` in [`Status`] when `history_days` is 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// "sqlite" or "postgres".
    pub kind: String,
    /// The file, or the server's address without its password.
    pub location: String,
    pub bytes: u64,
    /// Lines said and not yet written.
    pub waiting_lines: u64,
    pub written_lines: u64,
    /// Lines not stored because too many waited.
    pub dropped_lines: u64,
    /// Why the store does not work now, while it does not.
    pub failing: Option<String>,
    /// Writes done, and the seconds they took in all.
    pub writes: u64,
    pub write_seconds: f64,
    pub write_ms_last: f64,
    pub write_ms_max: f64,
    /// Changes to accounts not stored because too many waited.
    pub dropped_account_changes: u64,
}

/// One user, for `chatctl who`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub nick: String,
    pub room: String,
    pub peer: String,
    pub pid: u32,
    /// Seconds since the client connected.
    pub connected_seconds: u64,
    /// Seconds since the user last said something.
    pub idle_seconds: u64,
    /// The `/away` reason, while away.
    pub away: Option<String>,
    pub muted: bool,
    /// Connected over TLS.
    pub tls: bool,
    /// Logged in to its registered account.
    pub registered: bool,
    /// In a cluster, the node the user is on (`None`: one host on its own). A user of
    /// another node has no address or pid here.
    pub node: Option<String>,
}

/// One room, for `chatctl rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRow {
    pub name: String,
    pub members: u32,
    pub topic: Option<String>,
}

/// A count with a label: refusals or drops by reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub reason: String,
    pub count: u64,
}

/// What the master knows and the broker does not: connections and what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterFigures {
    pub pid: u32,
    pub started_at: u64,
    /// Session children alive.
    pub connections: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    pub refusals: Vec<Counted>,
    /// Session children that ended by a signal or an error exit.
    pub child_crashes: u64,
    pub broker_restarts: u64,
    /// The TLS listeners' certificate; `None` without TLS listeners.
    pub tls: Option<TlsStatus>,
    /// The master's code: its version string, and how many images this master pid has run
    /// (1 at start, one more per in-place upgrade).
    pub version: String,
    pub generation: u32,
    /// The binary an upgrade executes by default (the path the master was started from).
    pub binary: String,
    /// When the last upgrade came into force (Unix seconds); 0: never.
    pub upgraded_at: u64,
    /// Why the last upgrade attempt failed after its pre-flight passed (the new binary could
    /// not be executed); `None` after a successful one.
    pub upgrade_failure: Option<String>,
    /// Live sessions by the code that forked them, oldest generation first.
    pub sessions_by_code: Vec<CodeCount>,
}

/// Sessions forked by one generation of the master's code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCount {
    pub generation: u32,
    pub version: String,
    /// The session protocol that code speaks.
    pub protocol: u32,
    pub sessions: u64,
}

/// The fan-out latency histogram: from reading a line to having written it (or queued it, for a
/// peer whose socket is full) for every member. `bounds` are the upper bounds in seconds;
/// `counts` are per bucket (not cumulative), with one more entry for "above the last bound".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

/// Everything `chatctl status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub protocol: u32,
    /// `None` while the master is not linked to the broker (it died, or is starting).
    pub master: Option<MasterFigures>,
    pub broker_pid: u32,
    pub broker_started_at: u64,
    pub now: u64,
    /// Sessions connected to the broker.
    pub sessions: u64,
    /// Sessions with a nickname.
    pub users: u64,
    pub rooms: u64,
    pub messages: u64,
    pub deliveries: u64,
    pub messages_per_second: f64,
    pub deliveries_per_second: f64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub drops: Vec<Counted>,
    pub bans: u64,
    pub mutes: u64,
    pub fanout_latency: Histogram,
    pub store: Option<StoreStatus>,
    /// Registered accounts (`None`: accounts are off, or the store is not loaded).
    pub accounts: Option<u64>,
    /// `[cluster]`: this node and the others (`None`: one host on its own).
    pub cluster: Option<ClusterStatus>,
}

/// A cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    /// Both Redis connections (the stream's reader and writer) work.
    pub connected: bool,
    /// Why not, while not.
    pub lost: Option<String>,
    /// Every node seen in Redis (this one too): its name, the age of its last heartbeat
    /// (ms, by Redis's clock) and how many of its members this node knows.
    pub nodes: Vec<NodeRow>,
    /// The last stream ID read.
    pub last_id: String,
    /// The time from publishing this node's last broadcast to reading it back (ms), the
    /// stream's lag as this node's members feel it.
    pub round_trip_ms_last: f64,
    pub round_trip_ms_max: f64,
    /// Entries waiting for Redis now, and dropped because too many waited.
    pub queued: u64,
    pub dropped: u64,
    pub published: u64,
    pub read: u64,
    pub skipped: u64,
    /// Times contact with Redis was lost since the broker started.
    pub lost_episodes: u64,
}

/// One node of [`ClusterStatus::nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub heartbeat_age_ms: u64,
    pub members: u64,
}
