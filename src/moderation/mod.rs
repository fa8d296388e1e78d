//! Moderation that outlives processes: bans, mutes and the message of the day, kept in one
//! state file (`<state_dir>/state.toml`).
//!
//! The broker owns the file: it is the only writer (on `chatctl ban`, `mute`, `motd`, ...), and
//! writes it atomically (temporary file, fsync, rename, fsync of the directory) so a crash
//! leaves either the old or the new file, never half of one. It writes on a thread of its own
//! ([`StateWriter`]), so that its loop never waits for the disk. The master only reads it: it
//! enforces address bans before it forks, through [`BanFile`], which re-reads the file when it
//! changed on disk. So a ban is in force for new connections as soon as the broker has renamed
//! the file into place, without any message between the two processes.
//!
//! Times are wall-clock Unix seconds, because they must survive restarts. Expired entries
//! are ignored by every reader and dropped at the next write. This module does no networking
//! and knows nothing of sessions.
//!
//! This file owns the state itself ([`Moderation`], [`Ban`], [`Mute`], [`Change`]), its file
//! format and its atomic [`Moderation::load`] and [`Moderation::save`]; it starts no thread and
//! reads no clock (callers pass `now`). The two users of the file live beside it: `writer.rs`
//! ([`StateWriter`], the broker's thread that saves off the loop) and `ban_file.rs`
//! ([`BanFile`], the master's read-only view); both are re-exported here.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::names;

mod ban_file;
mod writer;

pub use ban_file::BanFile;
pub use writer::{Saver, StateWriter};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.toml";

/// Largest state file anyone reads. The broker writes a few hundred bytes per ban; a bigger
/// file is damage (or an attack on the master, which reads it at accept), not bans.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// Whom a ban is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BanTarget {
    /// An address or a network (an address alone is a /32 or /128).
    Net(IpNet),
    /// A nickname, whatever its case.
    Nick(String),
}

impl BanTarget {
    /// Whether the ban covers `ip` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn covers_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        matches!(self, BanTarget::Net(net) if net.contains(&ip))
    }

    pub fn covers_nick(&self, nick: &str) -> bool {
        matches!(self, BanTarget::Nick(banned) if names::passes_for(banned, nick))
    }
}

impl FromStr for BanTarget {
    type Err = String;

    /// `ADDR`, `ADDR/PREFIX` or `NICK`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(BanTarget::Net(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(BanTarget::Net(IpNet::from(ip)));
        }
        if text.contains(['.', ':', '/']) {
            return Err(format!("{text:?} is neither an address, a network (CIDR) nor a nickname"));
        }
        names::check_nick(text).map_err(|why| format!("{text:?} is not a nickname: {why}"))?;
        Ok(BanTarget::Nick(text.to_string()))
    }
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A single address reads better without its /32.
            BanTarget::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            BanTarget::Net(net) => write!(f, "{net}"),
            BanTarget::Nick(nick) => f.write_str(nick),
        }
    }
}

impl TryFrom<String> for BanTarget {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<BanTarget> for String {
    fn from(target: BanTarget) -> String {
        target.to_string()
    }
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub target: BanTarget,
    /// When it was set (Unix seconds).
    pub since: u64,
    /// When it ends (Unix seconds); `None`: until lifted. (No `skip_serializing_if` here or
    /// in [`Mute`]: bans also travel in bincode frames, which must carry every field; TOML
    /// leaves out `None` by itself.)
    #[serde(default)]
    pub until: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Ban {
    pub fn in_force(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// One mute: the nick's lines reach only its own screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub nick: String,
    pub since: u64,
    #[serde(default)]
    pub until: Option<u64>,
}

impl Mute {
    pub fn in_force(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Everything in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moderation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motd: Option<String>,
    #[serde(default, rename = "ban", skip_serializing_if = "Vec::is_empty")]
    pub bans: Vec<Ban>,
    #[serde(default, rename = "mute", skip_serializing_if = "Vec::is_empty")]
    pub mutes: Vec<Mute>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is damaged: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{path} has {size} bytes, more than the {MAX_STATE_BYTES} a state file may have: not reading it"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl Moderation {
    /// Reads the state file; a missing file is an empty state, one over [`MAX_STATE_BYTES`]
    /// an error (read no further than that).
    pub fn load(path: &Path) -> Result<Moderation, StateError> {
        use std::io::Read;
        let read_error = |source| StateError::Read { path: path.to_path_buf(), source };
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Moderation::default()),
            Err(source) => return Err(read_error(source)),
        };
        let size = file.metadata().map_err(read_error)?.len();
        if size > MAX_STATE_BYTES {
            return Err(StateError::TooLarge { path: path.to_path_buf(), size });
        }
        let mut text = String::new();
        let read = file.take(MAX_STATE_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
        if read as u64 > MAX_STATE_BYTES {
            return Err(StateError::TooLarge { path: path.to_path_buf(), size: read as u64 });
        }
        toml::from_str(&text).map_err(|err| StateError::Parse {
            path: path.to_path_buf(),
            message: err.message().trim().replace('\n', " "),
        })
    }

    /// Writes the state file atomically, without what has expired.
    pub fn save(&mut self, path: &Path, now: u64) -> Result<(), StateError> {
        self.prune(now);
        let write_error = |source| StateError::Write { path: path.to_path_buf(), source };
        let text = toml::to_string(self).map_err(|err| write_error(io::Error::other(err)))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        let header = "# chatd moderation state, written by the broker (chatctl ban, mute, motd).\n";
        let written = (|| {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(header.as_bytes())?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, path)?;
            if let Some(dir) = path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        written.map_err(|err| {
            let _ = fs::remove_file(&temporary);
            write_error(err)
        })
    }

    /// Drops expired bans and mutes.
    pub fn prune(&mut self, now: u64) {
        self.bans.retain(|ban| ban.in_force(now));
        self.mutes.retain(|mute| mute.in_force(now));
    }

    /// Adds a ban, replacing one on the same target.
    pub fn ban(&mut self, ban: Ban) {
        self.bans.retain(|old| old.target != ban.target);
        self.bans.push(ban);
    }

    /// Lifts the ban on `target`; false if there was none.
    pub fn unban(&mut self, target: &BanTarget) -> bool {
        let before = self.bans.len();
        self.bans.retain(|ban| &ban.target != target);
        self.bans.len() != before
    }

    pub fn address_ban(&self, ip: IpAddr, now: u64) -> Option<&Ban> {
        self.bans.iter().find(|ban| ban.in_force(now) && ban.target.covers_ip(ip))
    }

    pub fn nick_ban(&self, nick: &str, now: u64) -> Option<&Ban> {
        self.bans.iter().find(|ban| ban.in_force(now) && ban.target.covers_nick(nick))
    }

    /// Mutes `nick`, replacing an earlier mute of it.
    pub fn mute(&mut self, nick: &str, since: u64, until: Option<u64>) {
        self.unmute(nick);
        self.mutes.push(Mute { nick: nick.to_string(), since, until });
    }

    /// Lifts the mute of `nick`; false if there was none.
    pub fn unmute(&mut self, nick: &str) -> bool {
        let before = self.mutes.len();
        self.mutes.retain(|mute| !names::passes_for(&mute.nick, nick));
        self.mutes.len() != before
    }

    /// Asked for every chat line: nothing to compute while no mute is in force, and the
    /// speaker's [`names::lookalike_key`] once, not once per mute.
    pub fn is_muted(&self, nick: &str, now: u64) -> bool {
        let mut in_force = self.mutes.iter().filter(|mute| mute.in_force(now)).peekable();
        if in_force.peek().is_none() {
            return false;
        }
        let key = names::lookalike_key(nick);
        in_force
            .any(|mute| names::same(&mute.nick, nick) || names::lookalike_key(&mute.nick) == key)
    }

    /// A muted nick was renamed: the mute follows the person.
    pub fn rename_mute(&mut self, old: &str, new: &str) {
        for mute in &mut self.mutes {
            if names::passes_for(&mute.nick, old) {
                mute.nick = new.to_string();
            }
        }
    }
}

/// One operator change to the moderation state, to be applied once it is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Ban(Ban),
    Unban(BanTarget),
    Mute(Mute),
    Unmute(String),
    /// Set (`Some`) or clear the message of the day.
    Motd(Option<String>),
}

impl Moderation {
    /// Applies one operator change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Ban(ban) => self.ban(ban.clone()),
            Change::Unban(target) => {
                self.unban(target);
            }
            Change::Mute(mute) => self.mute(&mute.nick, mute.since, mute.until),
            Change::Unmute(nick) => {
                self.unmute(nick);
            }
            Change::Motd(motd) => self.motd.clone_from(motd),
        }
    }
}

/// Whether the daemon can write the state file into `dir` (it replaces the file by renaming a
/// new one into the directory, so the directory is what must be writable).
pub fn check_writable(dir: &Path) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    if !dir.is_dir() {
        return Err("it does not exist".into());
    }
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|errno| errno.desc().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(target: &str, until: Option<u64>) -> Ban {
        Ban { target: target.parse().expect("valid target"), since: 100, until, reason: None }
    }

    #[test]
    fn targets_parse_as_address_network_or_nick() {
        assert_eq!("10.1.2.3".parse::<BanTarget>().map(|t| t.to_string()), Ok("10.1.2.3".into()));
        assert_eq!(
            "10.1.2.3/8".parse::<BanTarget>().map(|t| t.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            "2001:db8::1/32".parse::<BanTarget>().map(|t| t.to_string()),
            Ok("2001:db8::/32".into())
        );
        assert_eq!("Alice".parse::<BanTarget>(), Ok(BanTarget::Nick("Alice".into())));
        assert!("10.0.0.300".parse::<BanTarget>().is_err());
        assert!("no way".parse::<BanTarget>().is_err());
    }

    #[test]
    fn address_bans_cover_networks_and_mapped_addresses() {
        let mut state = Moderation::default();
        state.ban(ban("192.0.2.0/24", None));
        let inside: IpAddr = "192.0.2.77".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.77".parse().expect("ip");
        let outside: IpAddr = "192.0.3.1".parse().expect("ip");
        assert!(state.address_ban(inside, 200).is_some());
        assert!(state.address_ban(mapped, 200).is_some());
        assert!(state.address_ban(outside, 200).is_none());
    }

    #[test]
    fn bans_and_mutes_expire() {
        let mut state = Moderation::default();
        state.ban(ban("alice", Some(150)));
        state.mute("bob", 100, Some(150));
        assert!(state.nick_ban("ALICE", 149).is_some());
        assert!(state.is_muted("Bob", 149));
        assert!(state.nick_ban("alice", 150).is_none());
        assert!(!state.is_muted("bob", 150));
        state.prune(150);
        assert_eq!(state, Moderation::default());
    }

    #[test]
    fn a_new_ban_on_the_same_target_replaces_the_old_and_unban_lifts_it() {
        let mut state = Moderation::default();
        state.ban(ban("10.0.0.1", None));
        state.ban(ban("10.0.0.1", Some(500)));
        assert_eq!(state.bans.len(), 1);
        assert!(state.unban(&"10.0.0.1".parse().expect("target")));
        assert!(!state.unban(&"10.0.0.1".parse().expect("target")));
    }

    #[test]
    fn bans_and_mutes_of_a_nick_hold_for_the_names_that_pass_for_it() {
        let mut state = Moderation::default();
        state.ban(ban("alice", None));
        state.mute("bob", 100, None);
        for lookalike in ["𝚊𝚕𝚒𝚌𝚎", "ａｌｉｃｅ", "\u{430}lice", "aIice", "ᴀlice"]
        {
            assert!(state.nick_ban(lookalike, 200).is_some(), "{lookalike}");
        }
        assert!(state.nick_ban("alicia", 200).is_none());
        assert!(state.is_muted("b0b", 200));
        assert!(!state.is_muted("bobby", 200));
        assert!(state.unmute("𝖻𝗈𝖻"));
        assert!(!state.is_muted("bob", 200));
    }

    #[test]
    fn mutes_follow_renames() {
        let mut state = Moderation::default();
        state.mute("bob", 100, None);
        state.rename_mute("BOB", "robert");
        assert!(state.is_muted("Robert", 200));
        assert!(!state.is_muted("bob", 200));
    }

    #[test]
    fn save_and_load_round_trip_atomically_without_expired_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(STATE_FILE);
        let mut state =
            Moderation { motd: Some("Be nice.\nNo spam.".into()), ..Default::default() };
        state.ban(Ban { reason: Some("spam \"bot\"".into()), ..ban("2001:db8::/48", None) });
        state.ban(ban("carol", Some(120)));
        state.mute("dave", 100, Some(1000));
        state.save(&path, 130).expect("saved");
        let loaded = Moderation::load(&path).expect("loaded");
        assert_eq!(loaded.bans.len(), 1, "the expired ban is not written");
        assert_eq!(loaded, state);
        assert!(!dir.path().join("state.toml.new").exists());
    }

    #[test]
    fn bans_survive_a_trip_through_the_control_protocol() {
        use crate::proto::codec::{decode_frame, frame};
        use crate::proto::control::ControlReply;
        let reply = ControlReply::Bans(vec![ban("10.0.0.0/8", None), ban("eve", Some(9))]);
        let bytes = frame(&reply).expect("encodes");
        let decoded = decode_frame::<ControlReply>(&bytes).expect("decodes").map(|(r, _)| r);
        assert_eq!(decoded, Some(reply));
    }

    #[test]
    fn a_missing_file_is_empty_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(STATE_FILE);
        assert_eq!(Moderation::load(&path).expect("missing is fine"), Moderation::default());
        fs::write(&path, "[[ban]]\ntarget = \"not a target!\"\nsince = 1\n").expect("write");
        let err = Moderation::load(&path).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
