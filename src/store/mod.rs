//! The store: what rooms said, kept on disk so that it survives a restart of the whole daemon
//! (history for newcomers, `/history`, `/search`, the operators' `chatctl history`,
//! `backup` and `forget`), and each room's topic.
//!
//! One interface ([`Store`]), two implementations: [`sqlite`] (the embedded default,
//! `<state_dir>/chatd.db`) and [`postgres`] (a server that several hosts share). Both keep the
//! same schema, run the same migrations by schema version at open, and answer the same way;
//! [`search`] turns text into the tokens both index, so that a search finds the same lines on
//! either.
//!
//! Who may use it: only the broker, and only from its database thread
//! (`broker::storage`). The master forks and SQLite is not fork-safe, so the master and the
//! sessions never open a store; and closing any descriptor of the database file drops all
//! of a process's POSIX locks, so nothing but SQLite itself opens or closes `chatd.db*`. A
//! store blocks (disk, network): it must never be called from the broker's loop.
//!
//! It owns the schema and the queries; it does not decide what is stored, when, or what
//! happens when it fails (the broker's storage side does).

mod accounts;
#[cfg(test)]
pub(crate) mod conformance;
pub mod postgres;
pub mod search;
pub mod sqlite;
#[cfg(test)]
mod test_cluster;

use std::path::PathBuf;

pub use search::Query;

/// A line on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    /// The room's key (its folded name, `names::fold`).
    pub room: String,
    /// When it was said (Unix seconds).
    pub at: u64,
    /// The speaker's nick as shown, and folded (`names::fold`) for `forget`.
    pub from: String,
    pub from_key: String,
    /// The speaker's sender id and line number: a line already stored under the same pair
    /// (a session repeating a line a restarted broker had stored but not acknowledged) is
    /// not stored twice. Stored as the same 64 bits in a signed column.
    pub sender: u64,
    pub seq: u64,
    /// A `/me` action rather than a line.
    pub action: bool,
    pub text: String,
}

/// What one transaction writes: lines, in the order they were said, topics set, and changes
/// to accounts, in the order they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub lines: Vec<NewLine>,
    /// (room key, topic); the last one for a room wins.
    pub topics: Vec<(String, String)>,
    pub accounts: Vec<AccountChange>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.topics.is_empty() && self.accounts.is_empty()
    }
}

/// A registered nickname as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// The nick's lookalike key (`names::lookalike_key`): one account per key, so that no
    /// confusable nick can be registered beside it.
    pub key: String,
    /// The nick as registered.
    pub nick: String,
    pub kdf: crate::accounts::Kdf,
    /// SHA-256 of the tag (`accounts::verifier_of`); never the tag.
    pub verifier: Vec<u8>,
    pub admin: bool,
    /// An operator reset the password: it must be changed at the next login.
    pub must_change: bool,
    pub settings: crate::accounts::AccountSettings,
    /// Unix seconds.
    pub created_at: u64,
    /// When its last session ended (Unix seconds; 0: none yet), and in which room (its key).
    pub last_seen: u64,
    pub last_room: String,
}

/// A private line kept for a registered user who was not connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMessage {
    /// The recipient's account key.
    pub to: String,
    /// Unix seconds.
    pub at: u64,
    pub from: String,
    pub text: String,
    /// The private line's name (its sender's id and number): a line sent again after a
    /// broker restart is kept once. (0, 0) for a message kept before schema version 4.
    pub sender: u64,
    pub seq: u64,
}

/// A change to accounts, written with the batch it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// Create or replace the account with this key.
    Put(AccountRecord),
    /// Delete the account with this key, and the messages kept for it.
    Delete { key: String },
    /// Keep a private line (the broker bounds how many one account has).
    Keep(KeptMessage),
    /// The messages kept for this key were delivered: delete them.
    Delivered { to: String },
}

/// Everything the broker keeps of accounts in memory, read once when the store opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountsRecord {
    pub accounts: Vec<AccountRecord>,
    /// Oldest first.
    pub kept: Vec<KeptMessage>,
    /// The key resume tokens are signed with (`accounts::TOKEN_KEY_BYTES`), made at the
    /// first load of a new database and kept from then on.
    pub token_key: Vec<u8>,
}

/// A stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    /// Its place in the store: larger is later. `/history` pages by it.
    pub id: i64,
    pub at: u64,
    pub from: String,
    /// Who said it and which of their lines it was (`NewLine::sender`, `NewLine::seq`): the
    /// line's name outside the store, which a page that reconnects asks [`Store::after`] by.
    pub sender: u64,
    pub seq: u64,
    pub action: bool,
    pub text: String,
}

/// Most senders [`Store::load_room`] tells the last line number of; a room with more in the
/// time asked for is told of some of them.
pub const LAST_SEQS_MAX: usize = 100_000;

/// What a room had when it was last used: its topic and last lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomRecord {
    pub topic: Option<String>,
    /// Oldest first.
    pub lines: Vec<StoredLine>,
    /// (sender, the last line number stored) for each sender of a line said in the room at
    /// or after the time asked for, in no order: a restarted broker tells by it a line a
    /// session sends again (stored already) from a new one.
    pub last_seqs: Vec<(u64, u64)>,
}

/// Why a store cannot do something. Each names the database (file or address, never a
/// password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be opened or reached.
    #[error("cannot open the database {location}: {why}")]
    Open { location: String, why: String },
    /// The database's schema is newer than this chatd knows (a downgrade).
    #[error(
        "the database {location} has schema version {found}, newer than this chatd's {known}: run the newer chatd, or restore a backup"
    )]
    TooNew { location: String, found: i64, known: i64 },
    /// The file is not a database, or its content is damaged.
    #[error("the database {location} is unusable: {why}")]
    Corrupt { location: String, why: String },
    /// A query or a transaction failed (disk full, connection lost, ...): the store may work
    /// again later.
    #[error("the database {location} failed: {why}")]
    Failed { location: String, why: String },
    /// The operation does not exist for this store (e.g. `backup` on PostgreSQL).
    #[error("{0}")]
    Unsupported(String),
}

/// The database chatd keeps what was said in. Every method blocks; see the module docs for who
/// may call them. Times are Unix seconds; rooms are room keys.
pub trait Store: Send {
    /// Where the database is, for logs and errors (a file, or a server address without its
    /// password).
    fn location(&self) -> &str;

    /// Writes a batch in one transaction: all of it or none. A line whose (sender, seq) is
    /// already stored is left out; a topic replaces the room's; the account changes apply in
    /// order (a `Put` keeps the account's kept messages, a `Keep` for a key with no account
    /// is skipped: the account was deleted meanwhile).
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// A room's topic, its last `lines` lines, oldest first, and the last line number of
    /// each sender heard in it since `senders_since` (see [`RoomRecord::last_seqs`]).
    fn load_room(
        &mut self,
        room: &str,
        lines: usize,
        senders_since: u64,
    ) -> Result<RoomRecord, StoreError>;

    /// Up to `count` lines of `room` said before the line `before` (`None`: the newest
    /// ones), oldest first.
    fn page(
        &mut self,
        room: &str,
        before: Option<i64>,
        count: usize,
    ) -> Result<Vec<StoredLine>, StoreError>;

    /// Up to `count` lines of `room` said after its line `seq` of `sender`, oldest first;
    /// `None` when the room has no such line stored (never stored, expired or forgotten).
    fn after(
        &mut self,
        room: &str,
        sender: u64,
        seq: u64,
        count: usize,
    ) -> Result<Option<Vec<StoredLine>>, StoreError>;

    /// Lines of `room` that match `query`, newest first, at most `limit`.
    fn search(
        &mut self,
        room: &str,
        query: &Query,
        limit: usize,
    ) -> Result<Vec<StoredLine>, StoreError>;

    /// Lines of `room` said at or after `since`, oldest first, at most `limit`.
    fn since(
        &mut self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredLine>, StoreError>;

    /// Deletes the lines said before `cutoff`; returns how many.
    fn expire(&mut self, cutoff: u64) -> Result<u64, StoreError>;

    /// Deletes every line said under a nick whose folded form is `nick_key`; returns how many.
    fn forget(&mut self, nick_key: &str) -> Result<u64, StoreError>;

    /// Writes a consistent copy of the live database into `into`, an empty file opened for
    /// writing (an operator created it: this process may not be able to open it by name);
    /// returns its length.
    fn backup(&mut self, into: &mut std::fs::File) -> Result<u64, StoreError>;

    /// How many bytes the database takes.
    fn size(&mut self) -> Result<u64, StoreError>;

    /// Every account, every kept message (oldest first), and the token key (made and stored
    /// now if the database has none, so that every broker on one database gets the same).
    fn load_accounts(&mut self) -> Result<AccountsRecord, StoreError>;
}

/// Which store the settings name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The embedded database, at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL server: a `postgres://` URL, and the password from a file if the
    /// settings name one (`database_password_file`).
    Postgres { url: String, password_file: Option<PathBuf> },
}

/// Opens the store the settings name and brings its schema up to date.
pub fn open(target: &Target) -> Result<Box<dyn Store>, StoreError> {
    match target {
        Target::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::open(path)?)),
        Target::Postgres { url, password_file } => {
            Ok(Box::new(postgres::PostgresStore::connect(url, password_file.as_deref())?))
        }
    }
}
