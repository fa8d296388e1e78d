//! The PostgreSQL store's accounts: schema version 3 (`accounts`, `kept_messages`,
//! `secrets`) and 4 (each kept message's name, `sender` and `seq`, unique where given), the
//! statements that write a batch's account changes, and the load at start.
//!
//! It owns these tables' SQL and nothing else: the connection and its retries are the
//! store's, a batch's transaction is the caller's. The token key is made with `INSERT ... ON
//! CONFLICT DO NOTHING` and then read back, so that two brokers loading a new database at
//! once keep the one that committed first. A `Put` is an upsert that keeps the account's kept
//! messages.

use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row, Statement, Transaction};

use super::{as_i64, clean};
use crate::accounts::Kdf;
use crate::store::accounts::{SettingsReader, TOKEN_KEY_NAME, new_token_key, settings_json};
use crate::store::{AccountChange, AccountRecord, AccountsRecord, KeptMessage};

/// Version 3: registered nicks, the private lines kept for them, and the token key.
pub(super) fn create_accounts(transaction: &mut Transaction<'_>) -> Result<(), postgres::Error> {
    transaction.batch_execute(
        "CREATE TABLE accounts (
             key text PRIMARY KEY,
             nick text NOT NULL,
             salt bytea NOT NULL,
             memory_kib bigint NOT NULL,
             passes bigint NOT NULL,
             lanes bigint NOT NULL,
             verifier bytea NOT NULL,
             admin boolean NOT NULL,
             must_change boolean NOT NULL,
             settings text NOT NULL,
             created_at bigint NOT NULL,
             last_seen bigint NOT NULL,
             last_room text NOT NULL
         );
         CREATE TABLE kept_messages (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             to_key text NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
             at bigint NOT NULL,
             from_nick text NOT NULL,
             text text NOT NULL
         );
         CREATE INDEX kept_messages_to_key ON kept_messages (to_key);
         CREATE TABLE secrets (
             name text PRIMARY KEY,
             value bytea NOT NULL
         );",
    )
}

/// Version 4: a kept message's name, so that a private line sent again after a broker restart
/// is kept once. Messages kept before have none (0, 0), and are left out of the index.
pub(super) fn name_kept_messages(transaction: &mut Transaction<'_>) -> Result<(), postgres::Error> {
    transaction.batch_execute(
        "ALTER TABLE kept_messages ADD COLUMN sender bigint NOT NULL DEFAULT 0;
         ALTER TABLE kept_messages ADD COLUMN seq bigint NOT NULL DEFAULT 0;
         CREATE UNIQUE INDEX kept_messages_by_line ON kept_messages (sender, seq)
             WHERE sender <> 0;",
    )
}

/// The account statements, prepared once per connection.
pub(super) struct AccountStatements {
    put: Statement,
    delete: Statement,
    keep: Statement,
    delivered: Statement,
    token_key: Statement,
    new_token_key: Statement,
    accounts: Statement,
    kept: Statement,
}

impl AccountStatements {
    pub(super) fn prepare(client: &mut Client) -> Result<AccountStatements, postgres::Error> {
        Ok(AccountStatements {
            put: client.prepare(
                "INSERT INTO accounts (key, nick, salt, memory_kib, passes, lanes, verifier,
                     admin, must_change, settings, created_at, last_seen, last_room)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (key) DO UPDATE SET nick = excluded.nick, salt = excluded.salt,
                     memory_kib = excluded.memory_kib, passes = excluded.passes,
                     lanes = excluded.lanes, verifier = excluded.verifier,
                     admin = excluded.admin, must_change = excluded.must_change,
                     settings = excluded.settings, created_at = excluded.created_at,
                     last_seen = excluded.last_seen, last_room = excluded.last_room",
            )?,
            delete: client.prepare("DELETE FROM accounts WHERE key = $1")?,
            // Kept only while the account exists (it may have been deleted meanwhile), and
            // once (the index on its name).
            keep: client.prepare(
                "INSERT INTO kept_messages (to_key, at, from_nick, text, sender, seq)
                 SELECT $1, $2, $3, $4, $5, $6
                 WHERE EXISTS (SELECT 1 FROM accounts WHERE key = $1)
                 ON CONFLICT DO NOTHING",
            )?,
            delivered: client.prepare("DELETE FROM kept_messages WHERE to_key = $1")?,
            token_key: client.prepare("SELECT value FROM secrets WHERE name = $1")?,
            new_token_key: client.prepare(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )?,
            accounts: client.prepare(
                "SELECT key, nick, salt, memory_kib, passes, lanes, verifier, admin,
                     must_change, settings, created_at, last_seen, last_room
                 FROM accounts ORDER BY key",
            )?,
            kept: client.prepare(
                "SELECT to_key, at, from_nick, text, sender, seq FROM kept_messages ORDER BY id",
            )?,
        })
    }

    /// Applies a batch's account changes, in order, inside the batch's transaction.
    pub(super) fn apply(
        &self,
        transaction: &mut Transaction<'_>,
        changes: &[AccountChange],
    ) -> Result<(), postgres::Error> {
        for change in changes {
            match change {
                AccountChange::Put(account) => {
                    let row = AccountRow::of(account);
                    transaction.execute(&self.put, &row.params())?;
                }
                AccountChange::Delete { key } => {
                    transaction.execute(&self.delete, &[&clean(key)])?;
                }
                AccountChange::Keep(kept) => {
                    // The same 64 bits as written (see `NewLine::sender`).
                    let (sender, seq) = (kept.sender as i64, kept.seq as i64);
                    let params: [&(dyn ToSql + Sync); 6] = [
                        &clean(&kept.to),
                        &as_i64(kept.at),
                        &clean(&kept.from),
                        &clean(&kept.text),
                        &sender,
                        &seq,
                    ];
                    transaction.execute(&self.keep, &params)?;
                }
                AccountChange::Delivered { to } => {
                    transaction.execute(&self.delivered, &[&clean(to)])?;
                }
            }
        }
        Ok(())
    }

    /// Every account, every kept message oldest first, and the token key, made first if the
    /// database has none. The key in a transaction of its own (another broker's insert is
    /// waited for, then seen); the rest in one snapshot.
    pub(super) fn load(
        &self,
        client: &mut Client,
        settings: &mut SettingsReader,
    ) -> Result<AccountsRecord, postgres::Error> {
        let mut transaction = client.transaction()?;
        if transaction.query_opt(&self.token_key, &[&TOKEN_KEY_NAME])?.is_none() {
            transaction.execute(&self.new_token_key, &[&TOKEN_KEY_NAME, &new_token_key()])?;
        }
        let token_key: Vec<u8> =
            transaction.query_one(&self.token_key, &[&TOKEN_KEY_NAME])?.try_get(0)?;
        transaction.commit()?;

        let mut snapshot = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let accounts = snapshot
            .query(&self.accounts, &[])?
            .iter()
            .map(|row| account(row, settings))
            .collect::<Result<Vec<AccountRecord>, postgres::Error>>()?;
        let kept = snapshot
            .query(&self.kept, &[])?
            .iter()
            .map(kept_message)
            .collect::<Result<Vec<KeptMessage>, postgres::Error>>()?;
        snapshot.commit()?;
        Ok(AccountsRecord { accounts, kept, token_key })
    }
}

/// An account as the parameters of the upsert.
struct AccountRow<'a> {
    account: &'a AccountRecord,
    key: String,
    nick: String,
    numbers: [i64; 5],
    settings: String,
    last_room: String,
}

impl<'a> AccountRow<'a> {
    fn of(account: &'a AccountRecord) -> AccountRow<'a> {
        let kdf = &account.kdf;
        AccountRow {
            account,
            key: clean(&account.key),
            nick: clean(&account.nick),
            numbers: [
                i64::from(kdf.memory_kib),
                i64::from(kdf.passes),
                i64::from(kdf.lanes),
                as_i64(account.created_at),
                as_i64(account.last_seen),
            ],
            settings: clean(&settings_json(&account.settings)),
            last_room: clean(&account.last_room),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        let [memory_kib, passes, lanes, created_at, last_seen] = &self.numbers;
        [
            &self.key,
            &self.nick,
            &self.account.kdf.salt,
            memory_kib,
            passes,
            lanes,
            &self.account.verifier,
            &self.account.admin,
            &self.account.must_change,
            &self.settings,
            created_at,
            last_seen,
            &self.last_room,
        ]
    }
}

/// One account row. A number out of range (a damaged or hand-edited row) becomes the largest,
/// which the accounts code refuses as a parameter.
fn account(row: &Row, settings: &mut SettingsReader) -> Result<AccountRecord, postgres::Error> {
    let key: String = row.try_get(0)?;
    let parameter = |at: usize| -> Result<u32, postgres::Error> {
        Ok(u32::try_from(row.try_get::<_, i64>(at)?).unwrap_or(u32::MAX))
    };
    let time = |at: usize| -> Result<u64, postgres::Error> {
        Ok(u64::try_from(row.try_get::<_, i64>(at)?).unwrap_or(0))
    };
    Ok(AccountRecord {
        nick: row.try_get(1)?,
        kdf: Kdf {
            salt: row.try_get(2)?,
            memory_kib: parameter(3)?,
            passes: parameter(4)?,
            lanes: parameter(5)?,
        },
        verifier: row.try_get(6)?,
        admin: row.try_get(7)?,
        must_change: row.try_get(8)?,
        settings: settings.read(&key, row.try_get(9)?),
        created_at: time(10)?,
        last_seen: time(11)?,
        last_room: row.try_get(12)?,
        key,
    })
}

fn kept_message(row: &Row) -> Result<KeptMessage, postgres::Error> {
    Ok(KeptMessage {
        to: row.try_get(0)?,
        at: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
        from: row.try_get(2)?,
        text: row.try_get(3)?,
        sender: row.try_get::<_, i64>(4)? as u64,
        seq: row.try_get::<_, i64>(5)? as u64,
    })
}
