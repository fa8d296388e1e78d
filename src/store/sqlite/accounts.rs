//! The SQLite store's accounts: schema version 3 (`accounts`, `kept_messages`, `secrets`) and
//! 4 (each kept message's name, `sender` and `seq`, unique where given: 0 before version 4),
//! the account changes a batch writes, and the load of everything at start.
//!
//! It owns these tables' SQL and nothing else: the transaction is the caller's (a batch's
//! changes go in the transaction of its lines), and what the rows mean is the broker's. A
//! `Put` is an upsert (`ON CONFLICT DO UPDATE`, never `INSERT OR REPLACE`, whose delete would
//! take the account's kept messages with it through the cascade).

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{failed, sql_time};
use crate::accounts::Kdf;
use crate::store::accounts::{SettingsReader, TOKEN_KEY_NAME, new_token_key, settings_json};
use crate::store::{AccountChange, AccountRecord, AccountsRecord, KeptMessage, StoreError};

/// Version 3: registered nicks, the private lines kept for them, and the token key.
pub(super) fn create_accounts(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE accounts (
             key TEXT PRIMARY KEY NOT NULL,
             nick TEXT NOT NULL,
             salt BLOB NOT NULL,
             memory_kib INTEGER NOT NULL,
             passes INTEGER NOT NULL,
             lanes INTEGER NOT NULL,
             verifier BLOB NOT NULL,
             admin INTEGER NOT NULL,
             must_change INTEGER NOT NULL,
             settings TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             last_seen INTEGER NOT NULL,
             last_room TEXT NOT NULL
         );
         CREATE TABLE kept_messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             to_key TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
             at INTEGER NOT NULL,
             from_nick TEXT NOT NULL,
             text TEXT NOT NULL
         );
         CREATE INDEX kept_messages_by_key ON kept_messages (to_key);
         CREATE TABLE secrets (
             name TEXT PRIMARY KEY NOT NULL,
             value BLOB NOT NULL
         );",
    )
}

/// Version 4: a kept message's name, so that a private line sent again after a broker restart
/// is kept once. Messages kept before have none (0, 0), and are left out of the index.
pub(super) fn name_kept_messages(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "ALTER TABLE kept_messages ADD COLUMN sender INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE kept_messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
         CREATE UNIQUE INDEX kept_messages_by_line ON kept_messages (sender, seq)
             WHERE sender <> 0;",
    )
}

const UPSERT_ACCOUNT: &str = "INSERT INTO accounts (key, nick, salt, memory_kib, passes, lanes,
         verifier, admin, must_change, settings, created_at, last_seen, last_room)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
     ON CONFLICT (key) DO UPDATE SET nick = excluded.nick, salt = excluded.salt,
         memory_kib = excluded.memory_kib, passes = excluded.passes, lanes = excluded.lanes,
         verifier = excluded.verifier, admin = excluded.admin,
         must_change = excluded.must_change, settings = excluded.settings,
         created_at = excluded.created_at, last_seen = excluded.last_seen,
         last_room = excluded.last_room";

const DELETE_ACCOUNT: &str = "DELETE FROM accounts WHERE key = ?1";

/// Kept only while the account exists (it may have been deleted after the line was kept),
/// and once (`OR IGNORE`: the index on its name).
const KEEP_MESSAGE: &str =
    "INSERT OR IGNORE INTO kept_messages (to_key, at, from_nick, text, sender, seq)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM accounts WHERE key = ?1)";

const DELIVERED: &str = "DELETE FROM kept_messages WHERE to_key = ?1";

const ACCOUNT_COLUMNS: &str = "SELECT key, nick, salt, memory_kib, passes, lanes, verifier,
         admin, must_change, settings, created_at, last_seen, last_room
     FROM accounts ORDER BY key";

const KEPT_COLUMNS: &str =
    "SELECT to_key, at, from_nick, text, sender, seq FROM kept_messages ORDER BY id";

const TOKEN_KEY: &str = "SELECT value FROM secrets WHERE name = ?1";

const NEW_TOKEN_KEY: &str =
    "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING";

/// Applies a batch's account changes, in order, inside the batch's transaction.
pub(super) fn apply(tx: &Transaction<'_>, changes: &[AccountChange]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            AccountChange::Put(account) => {
                tx.prepare_cached(UPSERT_ACCOUNT)?.execute(params![
                    account.key,
                    account.nick,
                    account.kdf.salt,
                    account.kdf.memory_kib,
                    account.kdf.passes,
                    account.kdf.lanes,
                    account.verifier,
                    account.admin,
                    account.must_change,
                    settings_json(&account.settings),
                    sql_time(account.created_at),
                    sql_time(account.last_seen),
                    account.last_room,
                ])?;
            }
            AccountChange::Delete { key } => {
                tx.prepare_cached(DELETE_ACCOUNT)?.execute([key])?;
            }
            AccountChange::Keep(kept) => {
                tx.prepare_cached(KEEP_MESSAGE)?.execute(params![
                    kept.to,
                    sql_time(kept.at),
                    kept.from,
                    kept.text,
                    kept.sender as i64, // the same 64 bits (see `NewLine::sender`)
                    kept.seq as i64,
                ])?;
            }
            AccountChange::Delivered { to } => {
                tx.prepare_cached(DELIVERED)?.execute([to])?;
            }
        }
    }
    Ok(())
}

/// Every account, every kept message oldest first, and the token key, made now if the
/// database has none; one transaction, so that what is read is one moment's.
pub(super) fn load(conn: &mut Connection, location: &str) -> Result<AccountsRecord, StoreError> {
    let mut settings = SettingsReader::default();
    let record = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> =
            tx.query_row(TOKEN_KEY, [TOKEN_KEY_NAME], |row| row.get(0)).optional()?;
        let token_key = match existing {
            Some(key) => key,
            None => {
                tx.execute(NEW_TOKEN_KEY, params![TOKEN_KEY_NAME, new_token_key()])?;
                tx.query_row(TOKEN_KEY, [TOKEN_KEY_NAME], |row| row.get(0))?
            }
        };
        let accounts = {
            let mut select = tx.prepare(ACCOUNT_COLUMNS)?;
            let rows = select.query_map([], |row| account(row, &mut settings))?;
            rows.collect::<rusqlite::Result<Vec<AccountRecord>>>()?
        };
        let kept = {
            let mut select = tx.prepare(KEPT_COLUMNS)?;
            let rows = select.query_map([], kept_message)?;
            rows.collect::<rusqlite::Result<Vec<KeptMessage>>>()?
        };
        tx.commit()?;
        Ok(AccountsRecord { accounts, kept, token_key })
    })()
    .map_err(|err| failed(location, err))?;
    settings.finish(location);
    Ok(record)
}

/// One row of [`ACCOUNT_COLUMNS`]. A number out of range (a damaged or hand-edited row)
/// becomes the largest, which the accounts code refuses as a parameter.
fn account(row: &Row<'_>, settings: &mut SettingsReader) -> rusqlite::Result<AccountRecord> {
    let key: String = row.get(0)?;
    let json: String = row.get(9)?;
    let settings = settings.read(&key, &json);
    Ok(AccountRecord {
        nick: row.get(1)?,
        kdf: Kdf {
            salt: row.get(2)?,
            memory_kib: parameter(row.get(3)?),
            passes: parameter(row.get(4)?),
            lanes: parameter(row.get(5)?),
        },
        verifier: row.get(6)?,
        admin: row.get(7)?,
        must_change: row.get(8)?,
        settings,
        created_at: time(row.get(10)?),
        last_seen: time(row.get(11)?),
        last_room: row.get(12)?,
        key,
    })
}

fn kept_message(row: &Row<'_>) -> rusqlite::Result<KeptMessage> {
    Ok(KeptMessage {
        to: row.get(0)?,
        at: time(row.get(1)?),
        from: row.get(2)?,
        text: row.get(3)?,
        sender: row.get::<_, i64>(4)? as u64,
        seq: row.get::<_, i64>(5)? as u64,
    })
}

fn parameter(stored: i64) -> u32 {
    u32::try_from(stored).unwrap_or(u32::MAX)
}

fn time(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}
