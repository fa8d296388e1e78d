//! The embedded store: SQLite (rusqlite, bundled) in one file, `<state_dir>/chatd.db` unless
//! the settings name another.
//!
//! It owns the connection, the SQLite side of the schema (its migrations by `user_version`),
//! the queries, and how SQLite's errors become [`StoreError`]s. At open: WAL (checked: the
//! answer must be `wal`), `synchronous=NORMAL`, a busy timeout (a second broker overlapping the
//! first during a restart waits for the other's transaction instead of failing), foreign keys
//! on; then the migrations, one transaction each. The search index is an FTS5 table of
//! [`search::index_text`] keyed by the line's id, with the `ascii` tokenizer: the indexed text
//! is already tokens separated by spaces and the `ascii` tokenizer splits it at exactly those
//! spaces (every non-ASCII character is a token character), so SQLite's Unicode tables decide
//! nothing. A trigger deletes a line's index entry with the line. Version 3 adds the accounts
//! ([`accounts`]: their tables, the changes a batch writes, the load at start), version 4
//! the kept messages' names (sender, seq), unique where given.
//!
//! It must not open, copy or close `chatd.db*` itself (closing any descriptor of the file
//! would drop the process's POSIX locks): SQLite does all of it, `size` only `stat`s the WAL.
//! It is used from one thread (the broker's database thread); it never forks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use super::search::{self, Term};
use super::{
    AccountsRecord, Batch, LAST_SEQS_MAX, Query, RoomRecord, Store, StoreError, StoredLine,
};

mod accounts;

/// How long a statement waits for another connection's lock (a second broker during a
/// restart, an operator's `sqlite3` shell) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// One schema change, run inside its own transaction.
type Migration = fn(&Connection) -> rusqlite::Result<()>;

/// `MIGRATIONS[n]` brings a database from version n to version n + 1.
const MIGRATIONS: [Migration; 4] = [
    create_lines_and_topics,
    create_search_index,
    accounts::create_accounts,
    accounts::name_kept_messages,
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: the lines and the topics.
fn create_lines_and_topics(conn: &Connection) -> rusqlite::Result<()> {
    // AUTOINCREMENT: an id is never given again after its line is deleted, so a `/history`
    // page that starts before an id stays where it was.
    conn.execute_batch(
        "CREATE TABLE lines (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             room TEXT NOT NULL,
             at INTEGER NOT NULL,
             nick TEXT NOT NULL,
             nick_key TEXT NOT NULL,
             sender INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             action INTEGER NOT NULL,
             text TEXT NOT NULL,
             UNIQUE (sender, seq)
         );
         CREATE INDEX lines_by_room ON lines (room, id);
         CREATE INDEX lines_by_time ON lines (at);
         CREATE INDEX lines_by_nick ON lines (nick_key);
         CREATE TABLE topics (
             room TEXT PRIMARY KEY,
             text TEXT NOT NULL,
             set_at INTEGER NOT NULL
         );",
    )
}

/// Version 2: the search index, filled from the lines already stored.
fn create_search_index(conn: &Connection) -> rusqlite::Result<()> {
    // Contentless: the indexed text is only ever searched, never read back, and it can be
    // made again from `lines.text`.
    conn.execute_batch(
        "CREATE VIRTUAL TABLE lines_search USING fts5(
             words, content = '', contentless_delete = 1, tokenize = 'ascii'
         );
         CREATE TRIGGER lines_search_delete AFTER DELETE ON lines BEGIN
             DELETE FROM lines_search WHERE rowid = old.id;
         END;",
    )?;
    let mut old_lines = conn.prepare("SELECT id, text FROM lines ORDER BY id")?;
    let mut index = conn.prepare(INSERT_SEARCH)?;
    let mut rows = old_lines.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let text: String = row.get(1)?;
        index.execute(params![id, search::index_text(&text)])?;
    }
    Ok(())
}

const INSERT_SEARCH: &str = "INSERT INTO lines_search (rowid, words) VALUES (?1, ?2)";

const INSERT_LINE: &str = "INSERT INTO lines (room, at, nick, nick_key, sender, seq, action, text)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (sender, seq) DO NOTHING";

const UPSERT_TOPIC: &str = "INSERT INTO topics (room, text, set_at) VALUES (?1, ?2, unixepoch())
     ON CONFLICT (room) DO UPDATE SET text = excluded.text, set_at = excluded.set_at";

/// The columns [`stored_line`] reads, in its order.
const LINE_COLUMNS: &str =
    "lines.id, lines.at, lines.nick, lines.action, lines.text, lines.sender, lines.seq";

/// The embedded store. See the module docs.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The path as errors and logs name it.
    location: String,
}

impl SqliteStore {
    /// Opens the database at `path` (creating it if it does not exist) and brings its schema
    /// up to date. A file that is not a database is [`StoreError::Corrupt`], one of a newer
    /// schema [`StoreError::TooNew`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_at_version(path, SCHEMA_VERSION)
    }

    /// Opens the database and migrates it up to `version` only (tests make a database of an
    /// older schema with it).
    fn open_at_version(path: &Path, version: i64) -> Result<SqliteStore, StoreError> {
        let location = path.display().to_string();
        // No SQLITE_OPEN_URI: a path is a path, even one that starts with `file:`.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|err| opening(&location, err))?;
        let mut store = SqliteStore { conn, path: path.to_path_buf(), location };
        store.conn.busy_timeout(BUSY_TIMEOUT).map_err(|err| opening(&store.location, err))?;
        // The first query reads the file's header: a file that is not a database is found
        // here, not at `open_with_flags`. Before any pragma, so that a file chatd refuses is
        // left as it was.
        let found = store.schema_version()?;
        store.configure()?;
        store.migrate(found, version)?;
        Ok(store)
    }

    /// The database's schema version; [`StoreError::TooNew`] if this code does not know it.
    fn schema_version(&self) -> Result<i64, StoreError> {
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|err| opening(&self.location, err))?;
        if found > SCHEMA_VERSION {
            let location = self.location.clone();
            return Err(StoreError::TooNew { location, found, known: SCHEMA_VERSION });
        }
        Ok(found)
    }

    /// The pragmas every connection needs.
    fn configure(&self) -> Result<(), StoreError> {
        let conn = &self.conn;
        let fail = |err| opening(&self.location, err);
        let mode = self.switch_to_wal().map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                location: self.location.clone(),
                why: format!(
                    "SQLite keeps it in journal mode {mode:?}, not WAL (is it on a local filesystem?)"
                ),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(fail)?;
        Ok(())
    }

    /// `journal_mode=WAL`; the mode SQLite answers. Switching a new file needs its exclusive
    /// lock, and SQLite answers "busy" at once rather than wait when another connection that
    /// holds a shared lock wants it too (two brokers opening a new file together): try again
    /// until the busy timeout. Once a file is in WAL it stays, and this waits for nothing.
    fn switch_to_wal(&self) -> rusqlite::Result<String> {
        let give_up = Instant::now() + BUSY_TIMEOUT;
        loop {
            let answer =
                self.conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0));
            match answer {
                Err(err)
                    if err.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                answer => return answer,
            }
        }
    }

    /// Runs the migrations from version `found` up to `target`, each in a transaction that
    /// first reads the version again: a second broker starting at the same time may have run
    /// it already.
    fn migrate(&mut self, found: i64, target: i64) -> Result<(), StoreError> {
        let location = self.location.clone();
        let fail = |err| opening(&location, err);
        for (done_before, migration) in (0i64..).zip(MIGRATIONS) {
            let version = done_before + 1;
            if version <= found {
                continue;
            }
            if version > target {
                break;
            }
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let now: i64 =
                tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(fail)?;
            if now > SCHEMA_VERSION {
                return Err(StoreError::TooNew { location, found: now, known: SCHEMA_VERSION });
            }
            if now >= version {
                continue;
            }
            migration(&tx).map_err(fail)?;
            tx.pragma_update(None, "user_version", version).map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        Ok(())
    }

    /// `PRAGMA integrity_check`: `ok`, or what is wrong, one finding a line. For tests and
    /// operators.
    pub fn integrity_check(&mut self) -> Result<String, StoreError> {
        let conn = &self.conn;
        let findings = (|| {
            let mut check = conn.prepare("PRAGMA integrity_check")?;
            let rows = check.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        })()
        .map_err(|err| failed(&self.location, err))?;
        Ok(findings.join("\n"))
    }

    /// The lines one statement selects, in the order it selects them.
    fn lines(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let conn = &self.conn;
        (|| {
            let mut statement = conn.prepare_cached(sql)?;
            let rows = statement.query_map(params, stored_line)?;
            rows.collect::<rusqlite::Result<Vec<StoredLine>>>()
        })()
        .map_err(|err| failed(&self.location, err))
    }

    /// Runs one deleting statement in a transaction; returns how many lines it deleted (the
    /// trigger's index deletions are not counted).
    fn delete_lines(&mut self, sql: &str, param: impl rusqlite::ToSql) -> Result<u64, StoreError> {
        let conn = &mut self.conn;
        (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deleted = tx.prepare_cached(sql)?.execute([param])?;
            tx.commit()?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        })()
        .map_err(|err| failed(&self.location, err))
    }

    /// The WAL file's name: the database's with `-wal` added.
    /// Where a backup's snapshot is made: beside the database, named apart from it.
    fn snapshot_path(&self) -> PathBuf {
        self.path.with_file_name(format!(".chatd-backup-{}.tmp", std::process::id()))
    }

    fn wal_path(&self) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push("-wal");
        PathBuf::from(name)
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        write_batch(&mut self.conn, batch).map_err(|err| failed(&self.location, err))
    }

    fn load_room(
        &mut self,
        room: &str,
        lines: usize,
        senders_since: u64,
    ) -> Result<RoomRecord, StoreError> {
        let topic = self
            .conn
            .prepare_cached("SELECT text FROM topics WHERE room = ?1")
            .and_then(|mut select| select.query_row([room], |row| row.get(0)).optional())
            .map_err(|err| failed(&self.location, err))?;
        let lines = self.page(room, None, lines)?;
        let last_seqs = (|| {
            let mut select = self.conn.prepare_cached(
                "SELECT sender, MAX(seq) FROM lines WHERE room = ?1 AND at >= ?2
                 GROUP BY sender LIMIT ?3",
            )?;
            let params = params![room, sql_time(senders_since), sql_count(LAST_SEQS_MAX)];
            // The same 64 bits as written (see `NewLine::sender`).
            let rows = select.query_map(params, |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
            })?;
            rows.collect::<rusqlite::Result<Vec<(u64, u64)>>>()
        })()
        .map_err(|err| failed(&self.location, err))?;
        Ok(RoomRecord { topic, lines, last_seqs })
    }

    fn page(
        &mut self,
        room: &str,
        before: Option<i64>,
        count: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM lines WHERE room = ?1 AND id < ?2
             ORDER BY id DESC LIMIT ?3"
        );
        let mut lines =
            self.lines(&sql, params![room, before.unwrap_or(i64::MAX), sql_count(count)])?;
        lines.reverse();
        Ok(lines)
    }

    fn after(
        &mut self,
        room: &str,
        sender: u64,
        seq: u64,
        count: usize,
    ) -> Result<Option<Vec<StoredLine>>, StoreError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM lines WHERE sender = ?1 AND seq = ?2 AND room = ?3")
            .and_then(|mut select| {
                select
                    .query_row(params![sender as i64, seq as i64, room], |row| row.get(0))
                    .optional()
            })
            .map_err(|err| failed(&self.location, err))?;
        let Some(id) = found else { return Ok(None) };
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM lines WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        );
        self.lines(&sql, params![room, id, sql_count(count)]).map(Some)
    }

    fn search(
        &mut self,
        room: &str,
        query: &Query,
        limit: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let Some(expression) = match_expression(query) else {
            return Ok(Vec::new());
        };
        // Ordered by the index's rowid (the line's id): FTS5 hands its rows over newest first,
        // so the limit stops the scan early.
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM lines_search JOIN lines ON lines.id = lines_search.rowid
             WHERE lines_search MATCH ?1 AND lines.room = ?2
             ORDER BY lines_search.rowid DESC LIMIT ?3"
        );
        self.lines(&sql, params![expression, room, sql_count(limit)])
    }

    fn since(
        &mut self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM lines WHERE room = ?1 AND at >= ?2 ORDER BY id LIMIT ?3"
        );
        self.lines(&sql, params![room, sql_time(since), sql_count(limit)])
    }

    fn expire(&mut self, cutoff: u64) -> Result<u64, StoreError> {
        self.delete_lines("DELETE FROM lines WHERE at < ?1", sql_time(cutoff))
    }

    fn forget(&mut self, nick_key: &str) -> Result<u64, StoreError> {
        self.delete_lines("DELETE FROM lines WHERE nick_key = ?1", nick_key)
    }

    fn backup(&mut self, into: &mut std::fs::File) -> Result<u64, StoreError> {
        // VACUUM INTO writes a consistent snapshot (one read transaction) into a new file,
        // without a journal of its own. SQLite needs a name it can open: a file of ours next
        // to the database (another file: its descriptors are not the database's, whose locks
        // closing them would drop), copied into the operator's and removed.
        let snapshot = self.snapshot_path();
        let failed_to = |why: String| StoreError::Failed {
            location: self.location.clone(),
            why: format!("cannot back it up (through {}): {why}", snapshot.display()),
        };
        let name = snapshot.to_str().ok_or_else(|| failed_to("the name is not UTF-8".into()))?;
        // One left by a broker killed during a backup.
        let _ = std::fs::remove_file(&snapshot);
        let copied = match self.conn.execute("VACUUM INTO ?1", [name]) {
            Ok(_) => std::fs::File::open(&snapshot)
                .and_then(|mut from| std::io::copy(&mut from, into))
                .and_then(|bytes| into.sync_all().map(|()| bytes))
                .map_err(|err| failed_to(err.to_string())),
            Err(err) if is_damage(&err) => Err(failed(&self.location, err)),
            Err(err) => Err(failed_to(err.to_string())),
        };
        let _ = std::fs::remove_file(&snapshot);
        copied
    }

    fn load_accounts(&mut self) -> Result<AccountsRecord, StoreError> {
        accounts::load(&mut self.conn, &self.location)
    }

    fn size(&mut self) -> Result<u64, StoreError> {
        let conn = &self.conn;
        let pages = (|| {
            let count: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
            let size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
            Ok(count.saturating_mul(size))
        })()
        .map_err(|err| failed(&self.location, err))?;
        // `metadata` stats the file without opening it (see the module docs); no WAL file
        // is no bytes.
        let wal = std::fs::metadata(self.wal_path()).map_or(0, |meta| meta.len());
        Ok(u64::try_from(pages).unwrap_or(0).saturating_add(wal))
    }
}

/// The batch in one transaction: the lines in order, each with its index entry if it was
/// stored (a line whose (sender, seq) is stored already is skipped), then the topics, then
/// the account changes in order.
fn write_batch(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT_LINE)?;
        let mut index = tx.prepare_cached(INSERT_SEARCH)?;
        for line in &batch.lines {
            let inserted = insert.execute(params![
                line.room,
                sql_time(line.at),
                line.from,
                line.from_key,
                line.sender as i64, // the same 64 bits (see `NewLine::sender`)
                line.seq as i64,
                line.action,
                line.text,
            ])?;
            if inserted == 1 {
                index.execute(params![tx.last_insert_rowid(), search::index_text(&line.text)])?;
            }
        }
        let mut topic = tx.prepare_cached(UPSERT_TOPIC)?;
        for (room, text) in &batch.topics {
            topic.execute(params![room, text])?;
        }
    }
    accounts::apply(&tx, &batch.accounts)?;
    tx.commit()
}

/// One row of [`LINE_COLUMNS`].
fn stored_line(row: &Row<'_>) -> rusqlite::Result<StoredLine> {
    let at: i64 = row.get(1)?;
    Ok(StoredLine {
        id: row.get(0)?,
        at: u64::try_from(at).unwrap_or(0),
        from: row.get(2)?,
        action: row.get(3)?,
        text: row.get(4)?,
        // The same 64 bits as written (see `NewLine::sender`).
        sender: row.get::<_, i64>(5)? as u64,
        seq: row.get::<_, i64>(6)? as u64,
    })
}

/// The FTS5 expression for a query: every term required, each a quoted string (a phrase
/// for several tokens, which FTS5 wants adjacent and in order), so that no token is read as
/// FTS5 syntax. `None` for a query without terms.
fn match_expression(query: &Query) -> Option<String> {
    let quoted: Vec<String> = query
        .terms()
        .iter()
        .map(|term| match term {
            Term::Word(token) => fts_string(token),
            Term::Phrase(tokens) => fts_string(&tokens.join(" ")),
        })
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(" AND "))
}

/// An FTS5 string: in double quotes, a quote inside doubled.
fn fts_string(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// A time as SQLite stores it (a time past `i64::MAX` seconds is not one a clock gives).
fn sql_time(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// A `LIMIT`.
fn sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Whether an error says the file is not a database or is damaged.
fn is_damage(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt))
}

/// An error while opening: damage is [`StoreError::Corrupt`], anything else
/// [`StoreError::Open`].
fn opening(location: &str, err: rusqlite::Error) -> StoreError {
    corrupt_or(location, err, |location, why| StoreError::Open { location, why })
}

/// An error of an open store: damage is [`StoreError::Corrupt`], anything else (disk full,
/// I/O, a lock held too long) [`StoreError::Failed`], which may pass.
fn failed(location: &str, err: rusqlite::Error) -> StoreError {
    corrupt_or(location, err, |location, why| StoreError::Failed { location, why })
}

/// [`StoreError::Corrupt`] if the error says the file is damaged, else `other`.
fn corrupt_or(
    location: &str,
    err: rusqlite::Error,
    other: fn(String, String) -> StoreError,
) -> StoreError {
    let (location, why) = (location.to_string(), err.to_string());
    if is_damage(&err) { StoreError::Corrupt { location, why } } else { other(location, why) }
}

#[cfg(test)]
mod tests;
