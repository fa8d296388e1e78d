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

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::names;

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

/// Writes the state file on a thread of its own, so that the broker's loop never waits for the
/// disk: a muted user renaming in a loop, or a slow or stuck disk, must not hold up anyone's
/// lines.
///
/// The hand-off holds one state: a newer one submitted before the older was written replaces
/// it (the newer contains every change of the older), so saves coalesce and the memory held is
/// one copy. Each submission gets a generation number; the outcome of the newest write that
/// finished is kept for [`StateWriter::take_outcome`], and `notify` (a `mio::Waker` in the
/// broker) is called after each write. A state whose write finished with generation `g` is on
/// disk (or not) together with every submission up to `g`.
///
/// The thread runs only while there is something to write: it starts with a submission and
/// ends after [`IDLE_EXIT`] without one, so an idle daemon holds no thread (under a tight
/// `RLIMIT_NPROC` a thread takes the place of a session). It inherits the signal mask of the
/// thread that starts it: the broker's, which blocks the signals it reads from its signalfd.
/// If no thread can be started, [`StateWriter::submit`] writes itself (correct, but on the
/// loop), and says so once.
pub struct StateWriter {
    shared: Arc<Shared>,
    saver: Arc<Mutex<Saver>>,
    notify: Arc<dyn Fn() + Send + Sync>,
    submitted: u64,
    /// The last attempt to start the thread failed (logged once until one succeeds).
    cannot_start: bool,
    /// How long the thread waits for more work before it ends ([`IDLE_EXIT`]).
    idle_exit: Duration,
}

/// Writes one state; the thread's only work.
pub type Saver = Box<dyn FnMut(&mut Moderation) -> Result<(), String> + Send>;

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

#[derive(Default)]
struct Slot {
    /// The newest state not yet taken by the thread.
    pending: Option<(u64, Moderation)>,
    /// The thread is writing a state.
    writing: bool,
    /// The newest write that finished, and how; taken by the broker.
    outcome: Option<(u64, Result<(), String>)>,
    /// The thread is running (it clears this itself, under the lock, when it ends).
    running: bool,
    stop: bool,
}

/// How long the writer thread waits for more work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// How long dropping a [`StateWriter`] waits for the last state to be written.
const FINAL_WRITE: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateWriter {
    /// A writer of the state file at `path`.
    pub fn new(path: PathBuf, notify: impl Fn() + Send + Sync + 'static) -> StateWriter {
        Self::with_saver(
            Box::new(move |state: &mut Moderation| {
                state.save(&path, unix_now()).map_err(|err| err.to_string())
            }),
            notify,
        )
    }

    /// A writer that writes with `saver` (tests give one that can be held up).
    pub fn with_saver(saver: Saver, notify: impl Fn() + Send + Sync + 'static) -> StateWriter {
        StateWriter {
            shared: Arc::new(Shared::default()),
            saver: Arc::new(Mutex::new(saver)),
            notify: Arc::new(notify),
            submitted: 0,
            cannot_start: false,
            idle_exit: IDLE_EXIT,
        }
    }

    /// Hands over `state` to be written (replacing one not yet taken); returns its generation.
    pub fn submit(&mut self, state: Moderation) -> u64 {
        self.submitted += 1;
        let generation = self.submitted;
        let mut slot = lock(&self.shared.slot);
        slot.pending = Some((generation, state));
        if slot.running {
            self.shared.changed.notify_all();
            return generation;
        }
        let (shared, saver, notify) =
            (Arc::clone(&self.shared), Arc::clone(&self.saver), Arc::clone(&self.notify));
        let idle_exit = self.idle_exit;
        let spawned = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_until_idle(&shared, &saver, &*notify, idle_exit));
        match spawned {
            Ok(_) => {
                slot.running = true;
                self.cannot_start = false;
            }
            Err(err) => {
                if !self.cannot_start {
                    log::warn!(
                        "cannot start the thread that writes the state file ({err}); the broker writes it itself"
                    );
                    self.cannot_start = true;
                }
                if let Some((generation, mut state)) = slot.pending.take() {
                    let result = (*lock(&self.saver))(&mut state);
                    slot.outcome = Some((generation, result));
                    drop(slot);
                    (self.notify)();
                }
            }
        }
        generation
    }

    /// The newest write that finished since the last call: its generation and outcome.
    pub fn take_outcome(&mut self) -> Option<(u64, Result<(), String>)> {
        lock(&self.shared.slot).outcome.take()
    }

    /// Nothing is waiting to be written or being written.
    pub fn idle(&self) -> bool {
        let slot = lock(&self.shared.slot);
        slot.pending.is_none() && !slot.writing
    }
}

/// The writer thread: takes the newest state, writes it, reports; ends when told to stop
/// (after writing what is pending) or after `idle_exit` with nothing to write.
fn write_until_idle(
    shared: &Shared,
    saver: &Mutex<Saver>,
    notify: &(dyn Fn() + Send + Sync),
    idle_exit: Duration,
) {
    let mut slot = lock(&shared.slot);
    loop {
        if let Some((generation, mut state)) = slot.pending.take() {
            slot.writing = true;
            drop(slot);
            let result = (*lock(saver))(&mut state);
            slot = lock(&shared.slot);
            slot.writing = false;
            slot.outcome = Some((generation, result));
            shared.changed.notify_all();
            notify();
            continue;
        }
        if slot.stop {
            slot.running = false;
            return;
        }
        let (next, waited) = shared
            .changed
            .wait_timeout(slot, idle_exit)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot = next;
        if waited.timed_out() && slot.pending.is_none() {
            slot.running = false;
            return;
        }
    }
}

impl Drop for StateWriter {
    /// Lets the thread write what is pending (for at most [`FINAL_WRITE`]: a stuck disk must
    /// not keep the broker from stopping), then leaves it to end with the process.
    fn drop(&mut self) {
        let mut slot = lock(&self.shared.slot);
        slot.stop = true;
        self.shared.changed.notify_all();
        let deadline = std::time::Instant::now() + FINAL_WRITE;
        while slot.running && (slot.pending.is_some() || slot.writing) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            slot = self
                .shared
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// The master's read-only view of the bans: re-read whenever the file changed on disk (one
/// `stat` per check), so bans set through the broker apply to the very next connection. A
/// version of the file that cannot be used (damaged, too big) is read once and reported once:
/// the master checks at every accept, and must not parse the same bad file each time.
#[derive(Debug)]
pub struct BanFile {
    path: PathBuf,
    /// Identity of the file version last read, whether or not it could be used: device,
    /// inode, modification time, size.
    seen: Option<FileIdentity>,
    state: Moderation,
}

/// What tells one version of a file from another without reading it.
type FileIdentity = (u64, u64, i64, i64, u64);

impl BanFile {
    pub fn new(state_dir: &Path) -> BanFile {
        BanFile { path: state_dir.join(STATE_FILE), seen: None, state: Moderation::default() }
    }

    /// The ban that refuses `ip` now, if any. A file that cannot be used keeps the bans read
    /// last; the error is returned once per version of the file (and each time it cannot even
    /// be `stat`ed), so that the caller can log it.
    pub fn check(&mut self, ip: IpAddr) -> (Option<Ban>, Option<StateError>) {
        let error = self.refresh().err();
        (self.state.address_ban(ip, unix_now()).cloned(), error)
    }

    fn refresh(&mut self) -> Result<(), StateError> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(StateError::Read { path: self.path.clone(), source }),
        };
        let identity = meta
            .as_ref()
            .map(|meta| (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len()));
        if identity == self.seen {
            return Ok(());
        }
        // Remembered before reading: a bad version is not read again until it changes.
        self.seen = identity;
        // `load` refuses a file over MAX_STATE_BYTES unread.
        self.state = Moderation::load(&self.path)?;
        Ok(())
    }
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

    #[test]
    fn a_bad_state_file_is_read_and_reported_once_per_version_and_the_old_bans_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(STATE_FILE);
        let mut file = BanFile::new(dir.path());
        let ip: IpAddr = "198.51.100.9".parse().expect("ip");
        let mut state = Moderation::default();
        state.ban(ban("198.51.100.0/24", None));
        state.save(&path, unix_now()).expect("saved");
        assert!(file.check(ip).0.is_some());

        fs::write(&path, "[[ban]]\ntarget = \"not a target!\"\n").expect("damage");
        let (banned, error) = file.check(ip);
        assert!(error.is_some_and(|err| err.to_string().contains("damaged")));
        assert!(banned.is_some(), "the bans read before stay in force");
        let (banned, error) = file.check(ip);
        assert!(error.is_none(), "the same damaged version is not read again: {error:?}");
        assert!(banned.is_some());

        let huge = "x".repeat(MAX_STATE_BYTES as usize + 1);
        fs::write(&path, huge).expect("enlarge");
        let error = file.check(ip).1.map(|err| err.to_string()).unwrap_or_default();
        assert!(error.contains("more than the 1048576"), "{error}");
        assert!(file.check(ip).1.is_none());
        assert!(matches!(Moderation::load(&path), Err(StateError::TooLarge { .. })));

        state.unban(&"198.51.100.0/24".parse().expect("target"));
        state.save(&path, unix_now()).expect("saved");
        let (banned, error) = file.check(ip);
        assert!(banned.is_none() && error.is_none(), "{error:?}");
    }

    #[test]
    fn the_state_writer_coalesces_what_arrives_while_it_writes_and_reports_the_newest() {
        use std::sync::mpsc;
        let (entered, writing) = mpsc::channel::<Option<String>>();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let saver: Saver = Box::new(move |state: &mut Moderation| {
            let _ = entered.send(state.motd.clone());
            let _ = lock(&released).recv();
            if state.motd.as_deref() == Some("first") { Err("disk stuck".into()) } else { Ok(()) }
        });
        let (woken, wakes) = mpsc::channel::<()>();
        let woken = Mutex::new(woken);
        let mut writer = StateWriter::with_saver(saver, move || {
            let _ = lock(&woken).send(());
        });
        let with = |motd: &str| Moderation { motd: Some(motd.into()), ..Default::default() };
        assert_eq!(writer.submit(with("first")), 1);
        assert_eq!(writing.recv().expect("writing"), Some("first".into()));
        assert!(!writer.idle());
        // Held up on the first write: the next two coalesce, the newest wins.
        assert_eq!(writer.submit(with("second")), 2);
        assert_eq!(writer.submit(with("third")), 3);
        release.send(()).expect("release");
        wakes.recv().expect("woken after the first write");
        assert_eq!(writing.recv().expect("writing"), Some("third".into()), "second is skipped");
        release.send(()).expect("release");
        wakes.recv().expect("woken after the second write");
        assert_eq!(writer.take_outcome(), Some((3, Ok(()))));
        assert_eq!(writer.take_outcome(), None);
        assert!(writer.idle());
    }

    #[test]
    fn the_state_writer_runs_a_thread_only_while_there_is_something_to_write() {
        let saves = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&saves);
        let saver: Saver = Box::new(move |_: &mut Moderation| {
            *lock(&counted) += 1;
            Ok(())
        });
        let mut writer = StateWriter::with_saver(saver, || {});
        writer.idle_exit = Duration::from_millis(20);
        let running = |writer: &StateWriter| lock(&writer.shared.slot).running;
        assert!(!running(&writer), "no thread before the first save");
        for round in 1..=2 {
            writer.submit(Moderation::default());
            assert!(running(&writer) || *lock(&saves) == round);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while running(&writer) {
                assert!(std::time::Instant::now() < deadline, "the idle thread did not end");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(*lock(&saves), round, "written before the thread ended");
        }
    }

    #[test]
    fn the_ban_file_follows_changes_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = BanFile::new(dir.path());
        let ip: IpAddr = "198.51.100.9".parse().expect("ip");
        assert!(file.check(ip).0.is_none());
        let mut state = Moderation::default();
        state.ban(ban("198.51.100.0/24", None));
        state.save(&dir.path().join(STATE_FILE), unix_now()).expect("saved");
        assert!(file.check(ip).0.is_some());
        state.unban(&"198.51.100.0/24".parse().expect("target"));
        state.save(&dir.path().join(STATE_FILE), unix_now()).expect("saved");
        assert!(file.check(ip).0.is_none());
    }
}
