//! The master's read-only view of the bans ([`BanFile`]): the state file re-read at accept
//! when it changed on disk, so that a ban the broker saved refuses the very next connection.
//!
//! It only reads: it must never write or repair the file (the broker is its one writer), and
//! must not parse the same unusable version twice (it is asked at every accept).

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Ban, Moderation, STATE_FILE, StateError};
use crate::clock::unix_now;

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
    use crate::moderation::MAX_STATE_BYTES;

    fn ban(target: &str, until: Option<u64>) -> Ban {
        Ban { target: target.parse().expect("valid target"), since: 100, until, reason: None }
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
