//! The protocol on `broker.sock`: who is calling, then one message enum per direction.
//!
//! Every connection opens with one [`Greeting`]: a session's [`SessionHello`] carrying
//! [`PROTOCOL_VERSION`], or the master's [`master::MasterHello`]. The broker decides by it what
//! the connection is. After it, sessions send [`Request`]s and the broker answers and broadcasts
//! [`Event`]s; the master's link speaks its own pair ([`master::MasterRequest`],
//! [`master::MasterEvent`]), so that neither side can send the other's frames (the channels are
//! typed by direction: `crate::channel`). Events are *structured* (who said what, who left and
//! why), never pre-rendered text: each session renders them for its own terminal. A change to
//! any type here that alters the wire bytes bumps [`PROTOCOL_VERSION`] (the fixed-bytes tests in
//! `codec` make such a change deliberate).
//!
//! Across versions, two things keep their bytes so that a mismatch is told, not garbled: the
//! session's greeting (variant 0, the fields of [`SessionHello`] in order) and the refusal
//! (`Event::Failed(Failure::VersionMismatch { .. })`).
//!
//! This module owns the message shapes only. Framing and bincode live in [`codec`]; what the
//! messages *do* lives in `broker::room`.

pub mod broadcast;
pub mod cluster;
pub mod codec;
pub mod control;
pub mod master;
pub mod report;
#[cfg(test)]
mod round_trip;

use serde::{Deserialize, Serialize};

pub use crate::accounts::{AccountSettings, Kdf};

/// Version of the frame set below and in [`master`]. A broker refuses sessions that speak
/// another version. 6: the master's frames left `Request`/`Event` and every connection opens
/// with a [`Greeting`]. 7: room broadcasts travel in each room's ring ([`broadcast`]); the
/// socket carries `RingMark` and `RingHandover`; a session says how far it read, or that it
/// fell behind. 8: `/history` and `/search` ask the broker's store (`History`, `Search`,
/// `HistoryPage`, `SearchResults`, `Failure::Unavailable`). 9: TLS and accounts (`tls` in
/// `Login` and `Resume`, `Challenge`/`Prove`, `Identified`, offline messages, `Replaced`).
/// 10: in-place upgrades: the master's link carries `Upgrade` and its answer, and the figures
/// say which code runs; a session's frames are those of 9, so a broker of 10 serves sessions
/// of 9 too ([`OLDEST_SESSION_PROTOCOL`]). 11: `Request::Admin` and `Event::AdminReply` (the
/// operators' commands from an account with the admin role); appended variants only, so 9's
/// and 10's frames are unchanged and a broker of 11 still serves them. 12: a cluster's
/// `Event::Cluster`, `MemberNodes` and `WhoIsOn`, appended too, sent only to sessions of 12.
/// 13: `AdminRequest::Mutes` appended (asked only by sessions of 13; the answer is an
/// `AdminReply` as before). 14: `Request::Missed` and `Event::Missed` appended (a page that
/// reconnects asks for the lines said after the last one it showed; asked only by sessions of
/// 14, answered only to the asker).
pub const PROTOCOL_VERSION: u32 = 14;

/// The oldest session protocol this broker serves. Sessions forked before an in-place upgrade
/// keep running their old code until their clients leave, and must survive the broker the
/// upgrade starts: a broker accepts every session version from this one to
/// [`PROTOCOL_VERSION`], and refuses others with `Failure::VersionMismatch`. A version that
/// changes a session's frames (`Request`, `Event`, [`SessionHello`], the ring records) must
/// either keep serving the previous one's frames or raise this, which an upgrade's pre-flight
/// then refuses while older sessions run (`chatd --check-upgrade`).
pub const OLDEST_SESSION_PROTOCOL: u32 = 9;

/// Whether a broker of this build serves a session that speaks `version`.
pub fn serves_session_protocol(version: u32) -> bool {
    (OLDEST_SESSION_PROTOCOL..=PROTOCOL_VERSION).contains(&version)
}

/// Most lines one [`Request::History`] gets (the session refuses more, the broker holds to it).
pub const MAX_HISTORY_PAGE: u16 = 200;

/// The first frame on every connection to `broker.sock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Greeting {
    /// A session is calling. Keep this variant first: its bytes are those of every earlier
    /// version's hello, so that the broker can tell an older session of the mismatch.
    Session(SessionHello),
    /// The master is calling: this connection is its link. The broker takes it only on the
    /// socket pair it inherited, or on `broker.sock` while no master is linked.
    Master(master::MasterHello),
}

/// What a session says first. It claims nothing the broker must believe: the broker takes
/// the caller's pid and sender id from the kernel (SO_PEERCRED) and the client's address from
/// the master (`MasterRequest::Vouch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHello {
    pub version: u32,
    /// The client's address as the session sees it. Shown to operators only when no master
    /// can vouch for sessions (`chatd broker` serving inetd-style sessions).
    pub peer: String,
    /// When the client connected (Unix seconds), as the session says; it survives broker
    /// restarts.
    pub connected_at: u64,
}

/// Session → broker, after its [`Greeting`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Claim a nickname and enter the default room. `tls`: the client's connection is TLS.
    /// A registered nick is not taken: the broker answers [`Event::Challenge`] (purpose
    /// [`Purpose::Login`]) when the throttles allow, and the login completes with
    /// [`Request::Prove`].
    Login { nick: String, tls: bool },
    /// Re-register with a restarted broker: take back `nick` (or the nearest free variant),
    /// enter `room` without announcing it, and restore `topic` if the room has none. The broker
    /// answers [`Event::Resumed`] and then replays the room's recent lines. The nick meets the
    /// rules of a login (valid, not banned, not a lookalike of someone online); a resumer that
    /// could not keep its name, or that comes long after the broker started, is announced.
    /// `token`: the [`Event::Identified`] token of a logged-in session, without which a
    /// registered nick is not given back.
    Resume { nick: String, room: String, topic: Option<String>, tls: bool, token: Option<Vec<u8>> },
    /// A line of chat to the current room. `seq` counts the sender's lines so that receivers can
    /// detect loss and duplicates.
    Say { seq: u64, text: String },
    /// `/me`: an action line to the current room.
    Act { seq: u64, text: String },
    /// `/nick`
    ChangeNick { nick: String },
    /// `/join`
    Join { room: String },
    /// `/who`: members of the current room.
    Who,
    /// `/rooms`: every room with its member count.
    Rooms,
    /// `/topic`: show (`None`) or set the current room's topic.
    Topic { text: Option<String> },
    /// `/msg`: a private line to one user; `seq` shares the counter of `Say`.
    Private { seq: u64, to: String, text: String },
    /// `/quit`: leave with an optional reason; the connection closes after this frame.
    Quit { reason: Option<String> },
    /// Bytes a session received from and sent to its client since its last report.
    Traffic { received: u64, sent: u64 },
    /// `/away REASON`
    Away { reason: String },
    /// `/back`
    Back,
    /// `/whois NICK`
    Whois { nick: String },
    /// The room's ring lapped this session (its client does not read fast enough): it leaves,
    /// and its room is told it was too slow. The connection closes after this frame.
    FellBehind,
    /// How far this session has read its room's ring, sent every quarter of the ring: the
    /// broker drops a member that stays more than a ring behind (a session that stopped, or
    /// one that does not read its ring at all) as too slow.
    RingRead { position: u64 },
    /// `/history [N]`: `count` lines of the current room said before the line `before` (a
    /// cursor from the previous [`Event::HistoryPage`]; `None`: the newest).
    History { before: Option<i64>, count: u16 },
    /// `/search WORDS`: lines of the current room that have every word.
    Search { words: String },
    /// Asks to prove a password: `/login NICK` (or a registered nick chosen at the prompt,
    /// which `Login` turns into this), `/register`, `/password`, `/unregister`. The broker
    /// answers [`Event::Challenge`] within its throttles, or `Failed`.
    Challenge { nick: String, purpose: Purpose },
    /// The tags derived for the challenge `nonce`: `current` from the account's [`Kdf`],
    /// `fresh` from the challenge's new one (registration, a new password, a rehash).
    Prove { nonce: u64, current: Option<Vec<u8>>, fresh: Option<Vec<u8>> },
    /// `/logout`: this session is a guest again (under a guest name, for the nick stays
    /// reserved).
    Logout,
    /// A logged-in user changed a preference the account keeps.
    SaveSettings(AccountSettings),
    /// `/admin ...`, or the web dashboard: one of the operators' commands, carried out only for
    /// a logged-in account with the admin role, on TLS or from loopback; answered with
    /// [`Event::AdminReply`]. Protocol 11.
    Admin(AdminRequest),
    /// The lines of the current room said after line `seq` of `sender` (the last one a page
    /// showed before its connection dropped), at most [`MAX_HISTORY_PAGE`]; answered with
    /// [`Event::Missed`]. Protocol 14.
    Missed { sender: u64, seq: u64 },
}

/// What an account with the admin role may ask from a chat connection: the moderation and the
/// figures of `chatctl`, never what stops, reloads or copies the daemon (those stay with the
/// control socket's Unix permissions). Each is the [`ControlRequest`](control::ControlRequest)
/// of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Status,
    Who,
    Rooms,
    Kick {
        nick: String,
        reason: Option<String>,
    },
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
    /// Show (`None`) or set (`Some("")` clears) the message of the day.
    Motd {
        text: Option<String>,
    },
    /// The mutes in force. Protocol 13.
    Mutes,
}

/// What a password is proved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// Log in as a registered nick (at the prompt, or `/login` while a guest).
    Login,
    /// Register the session's current nick (`fresh` only).
    Register,
    /// Change the logged-in account's password (`current` and `fresh`).
    ChangePassword,
    /// Delete the logged-in account (`current`).
    Unregister,
}

/// What the session must derive before it can [`Request::Prove`] `purpose` for `nick`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub nick: String,
    pub purpose: Purpose,
    /// Names this challenge in the answer; good once, for this session only.
    pub nonce: u64,
    /// The account's parameters (login, a new password, unregistering).
    pub current: Option<Kdf>,
    /// Parameters for a new tag (registration, a new password, or a login whose account is
    /// rehashed at the configured cost).
    pub fresh: Option<Kdf>,
}

/// A private line kept for a registered user who was not connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptMessage {
    /// Unix seconds.
    pub at: u64,
    pub from: String,
    pub text: String,
}

/// What happened to an account, for the session that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountNews {
    Registered {
        nick: String,
    },
    PasswordChanged,
    Unregistered {
        nick: String,
    },
    /// `/logout` done; the session goes on as `guest`.
    LoggedOut {
        guest: String,
    },
}

/// Broker → session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Answer to a session's [`Greeting`]: the broker accepted this session. `sender` is the id the broker
    /// stamps on this session's lines (derived from what the kernel says about the caller, so
    /// the same after a broker restart and nobody else's to claim); `broker` names this broker
    /// process, so that a session that reconnects can tell a restarted broker from one that
    /// closed its connection on purpose.
    Welcome { version: u32, sender: u64, broker: u64 },
    /// The login succeeded; `nick` is the name as registered.
    LoggedIn { nick: String },
    /// A line of chat from `from`; `sender` and `seq` identify it for acknowledgement and
    /// duplicate detection.
    Chat { from: String, sender: u64, seq: u64, text: String },
    /// An action (`/me`) from `from`.
    Action { from: String, sender: u64, seq: u64, text: String },
    /// `nick` entered `room`.
    Joined { nick: String, room: String },
    /// `nick` left `room`.
    Left { nick: String, room: String, reason: LeaveReason },
    /// `old` is now known as `new`.
    NickChanged { old: String, new: String },
    /// `by` set the topic of `room`.
    TopicChanged { room: String, by: String, text: String },
    /// The current topic of `room` (on join and on `/topic`).
    Topic { room: String, text: Option<String> },
    /// A private line to this session.
    Private { from: String, sender: u64, seq: u64, text: String },
    /// Confirmation to the sender of a private line (and its acknowledgement).
    PrivateSent { seq: u64, to: String, text: String },
    /// Answer to `Resume`: registered as `nick` (which differs from the one asked for if that
    /// was taken meanwhile) in `room`.
    Resumed { nick: String, room: String },
    /// A numbered request (`Say`, `Act`, `Private`) failed; this also acknowledges it.
    Rejected { seq: u64, failure: Failure },
    /// Members of a room, sorted; `away` lists those of them who are away, `idle` has each
    /// member's seconds since its last line (in the order of `nicks`); `tls` those connected
    /// over TLS, `registered` those logged in to an account.
    Members {
        room: String,
        nicks: Vec<String>,
        away: Vec<String>,
        idle: Vec<u64>,
        tls: Vec<String>,
        registered: Vec<String>,
    },
    /// Every room with its member count, sorted by name.
    RoomList { rooms: Vec<RoomInfo> },
    /// A request failed; only the requester receives this.
    Failed(Failure),
    /// The daemon is stopping; the broker closes every connection after this.
    Shutdown,
    /// An operator removed this session (`chatctl kick`, or a ban): show the reason and close;
    /// do not re-register.
    Kicked { reason: Option<String> },
    /// A system message from an operator (`chatctl announce`, shutdown notices).
    Announcement { text: String },
    /// The message of the day, sent after login (one entry per line).
    Motd { lines: Vec<String> },
    /// Answer to `Away` (`Some(reason)`) and `Back` (`None`).
    Away { reason: Option<String> },
    /// To the sender of a private line: its target is away.
    IsAway { nick: String, reason: String },
    /// The last lines said in `room` before this session entered it, oldest first.
    History { room: String, lines: Vec<HistoryLine> },
    /// Answer to `/whois`.
    WhoIs(WhoIs),
    /// Answer to the greeting of a session this broker dropped (its queue overflowed): it must end
    /// and tell its client why, not re-register.
    Dropped { reason: LeaveReason },
    /// What follows on this socket comes after the records of the session's ring before
    /// `position`: the session shows those first. Sent before a socket frame whenever the
    /// ring's head moved since the last mark.
    RingMark { position: u64 },
    /// The session now reads the ring of the room it entered, from `start` (a record
    /// boundary): the frame carries the ring's memfd and its doorbell (an eventfd), in that
    /// order, as SCM_RIGHTS. Records of the old ring up to the last mark still come first.
    RingHandover { start: u64 },
    /// Answer to `History`: lines of `room`, oldest first; `before` is the cursor of the page
    /// before this one (`None`: there is nothing earlier).
    HistoryPage { room: String, lines: Vec<HistoryLine>, before: Option<i64> },
    /// Answer to `Search`: the lines of `room` that match `words`, newest first.
    SearchResults { room: String, words: String, lines: Vec<HistoryLine> },
    /// Prove a password to go on (answer to `Challenge`, or to `Login` of a registered nick).
    Challenge(Challenge),
    /// This session is logged in to the account `nick` (after a proof, a registration, or a
    /// resume with a good token). `token` lets it resume with a restarted broker; `settings`
    /// are the account's; `must_change`: an operator reset the password, and the user must
    /// choose a new one. Sent before the `LoggedIn`/`NickChanged` that a login brings.
    Identified {
        nick: String,
        token: Vec<u8>,
        settings: AccountSettings,
        admin: bool,
        must_change: bool,
    },
    /// Registration, a password change, unregistering or logging out done.
    Account(AccountNews),
    /// After a login: the private lines kept while the user was away (oldest first), and how
    /// many lines of their room mentioned them since `since` (Unix seconds; their last
    /// session's end).
    WhileAway { messages: Vec<KeptMessage>, mentions: u64, since: u64 },
    /// A private line to a registered user who is not connected: kept for their next login
    /// (this also acknowledges `seq`).
    PrivateKept { seq: u64, to: String, text: String },
    /// The account logged in from another connection, which now has the nick: show it and
    /// close; do not re-register.
    Replaced,
    /// The answer to [`Request::Admin`]: what chatctl would have been answered (`Denied` for
    /// a session that may not ask). Protocol 11; sent only to a session that asked.
    AdminReply(Box<control::ControlReply>),
    /// What this node's contact with the rest of a cluster became, told to each of its
    /// members. Protocol 12; a session of an older one is sent an `Announcement` instead.
    Cluster(ClusterNews),
    /// After `Members`, for a session of protocol 12: which of those members are on other
    /// nodes of a cluster, and on which (`nodes[i]` is the node of `nicks[i]`).
    MemberNodes { room: String, nicks: Vec<String>, nodes: Vec<String> },
    /// `/whois` of a member of another node (protocol 12; older sessions get `WhoIs`).
    WhoIsOn { who: WhoIs, node: String },
    /// The answer to [`Request::Missed`]. `found`: the room has the line asked after, and
    /// `lines` are those said after it, oldest first (`more`: and there are more after
    /// these: ask again after the last). Not found (too old, forgotten, no store): `lines` are
    /// what the room shows a newcomer, and what was said between is not known. Protocol 14.
    Missed { room: String, lines: Vec<IdentifiedLine>, found: bool, more: bool },
}

/// [`Event::Cluster`]: this node and the other servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterNews {
    /// Redis is out of reach: chat in this node's rooms goes on; what is said here reaches
    /// the other servers when contact is back.
    Lost,
    /// Contact is back; `undelivered` lines said here meanwhile did not fit the queue and
    /// never reached the other servers.
    Back { undelivered: u64 },
    /// The stream moved on past what this node had read: lines from other servers were
    /// missed.
    Missed,
}

impl ClusterNews {
    /// The words a terminal shows (after `*** `), and an older session's announcement.
    pub fn words(&self) -> String {
        match self {
            ClusterNews::Lost => "Lost contact with the other servers; local chat goes on".into(),
            ClusterNews::Back { undelivered: 0 } => "Contact with the other servers is back".into(),
            ClusterNews::Back { undelivered } => format!(
                "Contact with the other servers is back; {undelivered} line(s) said here meanwhile did not reach them"
            ),
            ClusterNews::Missed => "Some lines from other servers were missed".into(),
        }
    }
}

/// A line of a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// When it was said (Unix seconds).
    pub at: u64,
    pub from: String,
    /// A `/me` action rather than a line.
    pub action: bool,
    pub text: String,
}

/// A line of a room's history with its name: line `seq` of `sender`, as its [`Event::Chat`]
/// or [`Event::Action`] carried them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifiedLine {
    pub sender: u64,
    pub seq: u64,
    pub line: HistoryLine,
}

/// What `/whois` tells about a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoIs {
    pub nick: String,
    pub room: String,
    pub connected_seconds: u64,
    pub idle_seconds: u64,
    pub away: Option<String>,
    /// Connected over TLS.
    pub tls: bool,
    /// Logged in to its registered account.
    pub registered: bool,
}

/// One row of [`Event::RoomList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub members: u32,
}

/// Why somebody left a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveReason {
    /// `/quit` with an optional reason.
    Quit(Option<String>),
    /// The session vanished without saying goodbye (client gone, child killed).
    ConnectionLost,
    /// Moved to another room with `/join`.
    JoinedOther(String),
    /// The broker dropped the session because it could not keep up with its output.
    TooSlow,
    /// Removed by an operator, with the reason given.
    Kicked(Option<String>),
    /// The account logged in again from another connection (`*** alice reconnected`).
    Replaced,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    NickInUse(String),
    InvalidNick {
        nick: String,
        why: String,
    },
    InvalidRoom {
        room: String,
        why: String,
    },
    AlreadyInRoom(String),
    NoSuchNick(String),
    /// A request that needs a nickname came before `Login`.
    NotLoggedIn,
    /// `Login` on a session that already has a nickname.
    AlreadyLoggedIn,
    /// The session spoke another protocol version.
    VersionMismatch {
        broker: u32,
        session: u32,
    },
    /// The text was empty after cleaning, or otherwise unusable.
    InvalidText(String),
    /// The nickname is banned by an operator.
    NickBanned(String),
    /// The nickname would pass for `existing`'s on screen (mixed or different scripts).
    NickLookalike {
        nick: String,
        existing: String,
    },
    /// A numbered request whose number does not follow the connection's previous one (or
    /// jumps far beyond anything a session could have kept for re-sending): refused.
    OutOfSequence {
        seq: u64,
    },
    /// What was asked needs the store, which cannot answer now, or this server keeps none;
    /// the text says which.
    Unavailable(String),
    /// The nick is registered: only its owner may use it, after `/login`.
    NickRegistered(String),
    /// The password proved for `nick` was wrong.
    WrongPassword(String),
    /// Too many failures (of this account, or from this address): try again in `seconds`.
    Throttled {
        seconds: u64,
    },
    /// An account request that cannot be done; the text says why (already registered, a
    /// lookalike of a registered nick, accounts off, a password on a plain connection, ...).
    AccountRefused(String),
    /// This server requires an account for that: `/register` or `/login` first.
    AccountRequired,
}

/// A message set that a caller sends to the broker after its [`Greeting`]: which hello opens
/// a connection that carries it. `crate::channel` uses it so that a session's channel can
/// only open with a session's hello, and the master's with the master's.
pub trait AfterGreeting {
    type Hello;
    fn greeting(hello: &Self::Hello) -> Greeting;
}

impl AfterGreeting for Request {
    type Hello = SessionHello;
    fn greeting(hello: &SessionHello) -> Greeting {
        Greeting::Session(hello.clone())
    }
}

impl AfterGreeting for master::MasterRequest {
    type Hello = master::MasterHello;
    fn greeting(hello: &master::MasterHello) -> Greeting {
        Greeting::Master(hello.clone())
    }
}
