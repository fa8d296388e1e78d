//! The shared store: a PostgreSQL server, for several chatd hosts (`database =
//! "postgres://..."`).
//!
//! It owns the connection (a synchronous `postgres::Client`, which runs a current-thread tokio
//! runtime of its own inside the calling thread: the broker's database thread), the schema in
//! PostgreSQL's terms, its migrations and the queries. A lost connection is a `Failed` call,
//! and the next call connects again (a call that finds the connection lost while it runs
//! connects again and runs once more: every write is idempotent, by `(sender, seq)`).
//!
//! What it must not do: show a password (its location is `user@host:port/db`, built from
//! the parsed settings, and no error carries the URL), or let PostgreSQL's own text parser or
//! locale decide what a search finds: the index is an array of our tokens
//! (`search::index_text`) turned into a `tsvector` as it is.
//!
//! The schema, as the SQLite store's: version 1 has `lines` (an identity `id`: later is larger)
//! and `topics`; version 2 adds `search_text` (the tokens), `tsv` (generated from it) and a GIN
//! index, filling `search_text` for the lines already there; version 3 the accounts
//! ([`accounts`]: their tables and queries), version 4 the kept messages' names. The version
//! is the one row of `chatd_schema`. Each migration is a transaction holding an advisory lock,
//! so that two brokers starting at once migrate one after the other.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use super::accounts::SettingsReader;
use super::search::{self, Term};
use super::{
    AccountsRecord, Batch, LAST_SEQS_MAX, NewLine, Query, RoomRecord, Store, StoreError, StoredLine,
};

mod accounts;

/// The schema version this code reads and writes.
const SCHEMA_VERSION: i64 = 4;
/// How long connecting may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sent data may stay unacknowledged, unless the URL says (`tcp_user_timeout`): a
/// server gone from the network fails a call instead of holding the database thread.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// The advisory lock migrations hold ("chatd" in ASCII): any number that other programs on
/// the same database are unlikely to take.
const MIGRATION_LOCK: i64 = 0x0063_6861_7464;
/// Longest token the index keeps, in bytes: PostgreSQL keeps a lexeme's length in 11 bits,
/// and `array_to_tsvector` silently cuts a longer one.
const MAX_LEXEME_BYTES: usize = 2047;
/// Lines read and indexed per query while migrating to version 2.
const INDEX_CHUNK: i64 = 1000;

/// A chatd store on a PostgreSQL server.
pub struct PostgresStore {
    /// What to connect with, kept to connect again after the connection is lost.
    config: Config,
    /// `user@host:port/db`, for logs and errors.
    location: String,
    connection: Connection,
}

/// A live connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: Statements,
}

/// Every query the store runs, prepared once per connection.
struct Statements {
    insert_lines: Statement,
    set_topic: Statement,
    topic: Statement,
    page: Statement,
    line_id: Statement,
    after: Statement,
    last_seqs: Statement,
    search: Statement,
    since: Statement,
    expire: Statement,
    forget: Statement,
    size: Statement,
    accounts: accounts::AccountStatements,
}

impl PostgresStore {
    /// Connects to the server `url` names (`postgres://` or `postgresql://`, a socket
    /// directory as `?host=/dir`), with the password from the first line of `password_file`
    /// if given, and brings the schema up to date.
    pub fn connect(url: &str, password_file: Option<&Path>) -> Result<PostgresStore, StoreError> {
        let mut config = Config::from_str(url).map_err(|err| StoreError::Open {
            location: without_password(url),
            why: describe(&err),
        })?;
        let location = location_of(&config);
        let open_error = |why: String| StoreError::Open { location: location.clone(), why };
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(open_error(
                "the URL names no server (postgres://USER@HOST/DB, or ?host=/socket/dir)".into(),
            ));
        }
        if let Some(file) = password_file {
            config.password(read_password(file).map_err(open_error)?);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // "relation already exists, skipping" and the like are not news for the log.
        config.notice_callback(|notice| log::debug!("PostgreSQL: {}", notice.message()));
        let mut client = config.connect(NoTls).map_err(|err| open_error(describe(&err)))?;
        migrate(&mut client, &location, SCHEMA_VERSION)?;
        let statements =
            Statements::prepare(&mut client).map_err(|err| open_error(describe(&err)))?;
        Ok(PostgresStore { config, location, connection: Connection { client, statements } })
    }

    /// Runs `call` on the connection, connecting again first if it was lost, and once more
    /// if it is lost while `call` runs (so that a server restart between two calls costs
    /// none). Every error is `Failed`.
    fn run<T>(
        &mut self,
        mut call: impl FnMut(&mut Connection) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if self.connection.client.is_closed() {
            self.reconnect()?;
        }
        match call(&mut self.connection) {
            Ok(value) => Ok(value),
            Err(err) if self.connection.client.is_closed() || is_server_going(&err) => {
                log::debug!(
                    "the connection to {} was lost ({}), connecting again",
                    self.location,
                    describe(&err)
                );
                self.reconnect()?;
                call(&mut self.connection).map_err(|err| self.failed(&err))
            }
            Err(err) => Err(self.failed(&err)),
        }
    }

    fn reconnect(&mut self) -> Result<(), StoreError> {
        let mut client = self.config.connect(NoTls).map_err(|err| self.failed(&err))?;
        let statements = Statements::prepare(&mut client).map_err(|err| self.failed(&err))?;
        self.connection = Connection { client, statements };
        Ok(())
    }

    fn failed(&self, err: &postgres::Error) -> StoreError {
        StoreError::Failed { location: self.location.clone(), why: describe(err) }
    }
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        const COLUMNS: &str = "id, at, nick, action, text, sender, seq";
        Ok(Statements {
            // One statement for the whole batch, in batch order (ids follow it).
            insert_lines: client.prepare(
                "INSERT INTO lines (room, at, nick, nick_key, sender, seq, action, text, search_text)
                 SELECT room, at, nick, nick_key, sender, seq, action, text, search_text
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                             $6::bigint[], $7::boolean[], $8::text[], $9::text[]) WITH ORDINALITY
                      AS batch(room, at, nick, nick_key, sender, seq, action, text, search_text, place)
                 ORDER BY place
                 ON CONFLICT (sender, seq) DO NOTHING",
            )?,
            set_topic: client.prepare(
                "INSERT INTO topics (room, text, set_at)
                 VALUES ($1, $2, extract(epoch FROM now())::bigint)
                 ON CONFLICT (room) DO UPDATE SET text = excluded.text, set_at = excluded.set_at",
            )?,
            topic: client.prepare("SELECT text FROM topics WHERE room = $1")?,
            page: client.prepare(&format!(
                "SELECT {COLUMNS} FROM (
                     SELECT {COLUMNS} FROM lines WHERE room = $1 AND id < $2
                     ORDER BY id DESC LIMIT $3
                 ) AS newest ORDER BY id"
            ))?,
            line_id: client
                .prepare("SELECT id FROM lines WHERE sender = $1 AND seq = $2 AND room = $3")?,
            after: client.prepare(&format!(
                "SELECT {COLUMNS} FROM lines WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3"
            ))?,
            last_seqs: client.prepare(
                "SELECT sender, MAX(seq) FROM lines WHERE room = $1 AND at >= $2
                 GROUP BY sender LIMIT $3",
            )?,
            // The tsquery finds the lines with every token (through the index); the patterns
            // check that each phrase's tokens are adjacent.
            search: client.prepare(&format!(
                "SELECT {COLUMNS} FROM lines
                 WHERE room = $1 AND tsv @@ $2::text::tsquery
                   AND (' ' || search_text || ' ') LIKE ALL ($3::text[])
                 ORDER BY id DESC LIMIT $4"
            ))?,
            since: client.prepare(&format!(
                "SELECT {COLUMNS} FROM lines WHERE room = $1 AND at >= $2 ORDER BY id LIMIT $3"
            ))?,
            expire: client.prepare("DELETE FROM lines WHERE at < $1")?,
            forget: client.prepare("DELETE FROM lines WHERE nick_key = $1")?,
            size: client.prepare("SELECT pg_database_size(current_database())")?,
            accounts: accounts::AccountStatements::prepare(client)?,
        })
    }
}

impl Store for PostgresStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let columns = LineColumns::of(&batch.lines);
        self.run(|connection| {
            let statements = &connection.statements;
            let mut transaction = connection.client.transaction()?;
            if !batch.lines.is_empty() {
                transaction.execute(&statements.insert_lines, &columns.params())?;
            }
            for (room, topic) in &batch.topics {
                transaction.execute(&statements.set_topic, &[&clean(room), &clean(topic)])?;
            }
            statements.accounts.apply(&mut transaction, &batch.accounts)?;
            transaction.commit()
        })
    }

    fn load_room(
        &mut self,
        room: &str,
        lines: usize,
        senders_since: u64,
    ) -> Result<RoomRecord, StoreError> {
        let topic = self.run(|connection| {
            let row = connection.client.query_opt(&connection.statements.topic, &[&room])?;
            row.map(|row| row.try_get::<_, String>(0)).transpose()
        })?;
        let lines = self.page(room, None, lines)?;
        let (since, limit) = (as_i64(senders_since), as_i64(LAST_SEQS_MAX));
        let last_seqs = self.run(|connection| {
            let rows = connection
                .client
                .query(&connection.statements.last_seqs, &[&room, &since, &limit])?;
            // The same 64 bits as written (see `NewLine::sender`).
            rows.iter()
                .map(|row| Ok((row.try_get::<_, i64>(0)? as u64, row.try_get::<_, i64>(1)? as u64)))
                .collect()
        })?;
        Ok(RoomRecord { topic, lines, last_seqs })
    }

    fn page(
        &mut self,
        room: &str,
        before: Option<i64>,
        count: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        let count = as_i64(count);
        self.run(|connection| {
            let rows =
                connection.client.query(&connection.statements.page, &[&room, &before, &count])?;
            stored_lines(&rows)
        })
    }

    fn after(
        &mut self,
        room: &str,
        sender: u64,
        seq: u64,
        count: usize,
    ) -> Result<Option<Vec<StoredLine>>, StoreError> {
        let (sender, seq, count) = (sender as i64, seq as i64, as_i64(count));
        self.run(|connection| {
            let statements = &connection.statements;
            let Some(row) =
                connection.client.query_opt(&statements.line_id, &[&sender, &seq, &room])?
            else {
                return Ok(None);
            };
            let id: i64 = row.try_get(0)?;
            let rows = connection.client.query(&statements.after, &[&room, &id, &count])?;
            stored_lines(&rows).map(Some)
        })
    }

    fn search(
        &mut self,
        room: &str,
        query: &Query,
        limit: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let tokens = query.tokens();
        // The index holds no such token, and PostgreSQL would refuse it in a query.
        if tokens.iter().any(|token| token.len() > MAX_LEXEME_BYTES) {
            return Ok(Vec::new());
        }
        let tsquery: Vec<String> = tokens.iter().map(|token| quoted_lexeme(token)).collect();
        let tsquery = tsquery.join(" & ");
        let adjacent: Vec<String> = query
            .terms()
            .iter()
            .filter_map(|term| match term {
                Term::Phrase(tokens) => Some(phrase_pattern(tokens)),
                Term::Word(_) => None,
            })
            .collect();
        let limit = as_i64(limit);
        self.run(|connection| {
            let params: [&(dyn ToSql + Sync); 4] = [&room, &tsquery, &adjacent, &limit];
            stored_lines(&connection.client.query(&connection.statements.search, &params)?)
        })
    }

    fn since(
        &mut self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let since = as_i64(since);
        let limit = as_i64(limit);
        self.run(|connection| {
            let rows =
                connection.client.query(&connection.statements.since, &[&room, &since, &limit])?;
            stored_lines(&rows)
        })
    }

    fn expire(&mut self, cutoff: u64) -> Result<u64, StoreError> {
        let cutoff = as_i64(cutoff);
        self.run(|connection| connection.client.execute(&connection.statements.expire, &[&cutoff]))
    }

    fn forget(&mut self, nick_key: &str) -> Result<u64, StoreError> {
        self.run(|connection| {
            connection.client.execute(&connection.statements.forget, &[&nick_key])
        })
    }

    fn backup(&mut self, _into: &mut std::fs::File) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported("the store is PostgreSQL: back it up with pg_dump".into()))
    }

    fn size(&mut self) -> Result<u64, StoreError> {
        let bytes: i64 = self.run(|connection| {
            connection.client.query_one(&connection.statements.size, &[])?.try_get(0)
        })?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    fn load_accounts(&mut self) -> Result<AccountsRecord, StoreError> {
        let (record, settings) = self.run(|connection| {
            // A reader per try: a retried load must not name an account twice.
            let mut settings = SettingsReader::default();
            let record =
                connection.statements.accounts.load(&mut connection.client, &mut settings)?;
            Ok((record, settings))
        })?;
        settings.finish(&self.location);
        Ok(record)
    }
}

/// A batch's lines as one array per column, for the one `INSERT` that writes them.
struct LineColumns {
    rooms: Vec<String>,
    ats: Vec<i64>,
    nicks: Vec<String>,
    nick_keys: Vec<String>,
    senders: Vec<i64>,
    seqs: Vec<i64>,
    actions: Vec<bool>,
    texts: Vec<String>,
    search_texts: Vec<String>,
}

impl LineColumns {
    fn of(lines: &[NewLine]) -> LineColumns {
        LineColumns {
            rooms: lines.iter().map(|line| clean(&line.room)).collect(),
            ats: lines.iter().map(|line| as_i64(line.at)).collect(),
            nicks: lines.iter().map(|line| clean(&line.from)).collect(),
            nick_keys: lines.iter().map(|line| clean(&line.from_key)).collect(),
            // The same 64 bits in a signed column: a sender id may have its top bit set.
            senders: lines.iter().map(|line| line.sender as i64).collect(),
            seqs: lines.iter().map(|line| line.seq as i64).collect(),
            actions: lines.iter().map(|line| line.action).collect(),
            texts: lines.iter().map(|line| clean(&line.text)).collect(),
            search_texts: lines.iter().map(|line| indexed(&line.text)).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.rooms,
            &self.ats,
            &self.nicks,
            &self.nick_keys,
            &self.senders,
            &self.seqs,
            &self.actions,
            &self.texts,
            &self.search_texts,
        ]
    }
}

/// Brings the schema to version `target`, one migration per transaction, each under the
/// advisory lock; `TooNew` if the database's version is newer than this code's.
fn migrate(client: &mut Client, location: &str, target: i64) -> Result<(), StoreError> {
    let open_error = |step: &str, err: postgres::Error| StoreError::Open {
        location: location.to_string(),
        why: format!("{step}: {}", describe(&err)),
    };
    loop {
        let mut transaction = client.transaction().map_err(|err| open_error("migrating", err))?;
        let version = schema_version(&mut transaction)
            .map_err(|err| open_error("reading the schema version", err))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                location: location.to_string(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version >= target {
            return transaction.commit().map_err(|err| open_error("migrating", err));
        }
        let next = version + 1;
        let step = format!("migrating the schema to version {next}");
        let migrated = match next {
            1 => create_tables(&mut transaction),
            2 => add_search_index(&mut transaction),
            3 => accounts::create_accounts(&mut transaction),
            _ => accounts::name_kept_messages(&mut transaction),
        };
        migrated
            .and_then(|()| transaction.execute("UPDATE chatd_schema SET version = $1", &[&next]))
            .and_then(|_| transaction.commit())
            .map_err(|err| open_error(&step, err))?;
    }
}

/// Takes the migration lock (until the transaction ends) and reads the version, making the
/// version table on an empty database (version 0).
fn schema_version(transaction: &mut Transaction<'_>) -> Result<i64, postgres::Error> {
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS chatd_schema (version bigint NOT NULL)")?;
    match transaction.query_opt("SELECT version FROM chatd_schema", &[])? {
        Some(row) => row.try_get(0),
        None => {
            transaction.execute("INSERT INTO chatd_schema (version) VALUES (0)", &[])?;
            Ok(0)
        }
    }
}

/// Version 1: the lines and the topics.
fn create_tables(transaction: &mut Transaction<'_>) -> Result<(), postgres::Error> {
    transaction.batch_execute(
        "CREATE TABLE lines (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             room text NOT NULL,
             at bigint NOT NULL,
             nick text NOT NULL,
             nick_key text NOT NULL,
             sender bigint NOT NULL,
             seq bigint NOT NULL,
             action boolean NOT NULL,
             text text NOT NULL,
             UNIQUE (sender, seq)
         );
         CREATE INDEX lines_room_id ON lines (room, id);
         CREATE INDEX lines_at ON lines (at);
         CREATE INDEX lines_nick_key ON lines (nick_key);
         CREATE TABLE topics (
             room text PRIMARY KEY,
             text text NOT NULL,
             set_at bigint NOT NULL
         );",
    )
}

/// Version 2: the search index. The tokens come from `search::index_text`, in Rust, so the
/// lines already stored are indexed here, a chunk at a time.
fn add_search_index(transaction: &mut Transaction<'_>) -> Result<(), postgres::Error> {
    transaction
        .batch_execute("ALTER TABLE lines ADD COLUMN search_text text NOT NULL DEFAULT ''")?;
    let mut after = 0i64;
    loop {
        let rows = transaction.query(
            "SELECT id, text FROM lines WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &INDEX_CHUNK],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
        let mut search_texts: Vec<String> = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get(0)?);
            search_texts.push(indexed(row.try_get(1)?));
        }
        transaction.execute(
            "UPDATE lines SET search_text = chunk.search_text
             FROM unnest($1::bigint[], $2::text[]) AS chunk(id, search_text)
             WHERE lines.id = chunk.id",
            &[&ids, &search_texts],
        )?;
    }
    transaction.batch_execute(
        "ALTER TABLE lines ADD COLUMN tsv tsvector
             GENERATED ALWAYS AS (array_to_tsvector(string_to_array(search_text, ' '))) STORED;
         CREATE INDEX lines_tsv ON lines USING gin (tsv);",
    )
}

/// The tokens PostgreSQL indexes for `text`: ours, without any too long for a lexeme.
fn indexed(text: &str) -> String {
    let tokens = search::index_text(text);
    if tokens.split(' ').all(|token| token.len() <= MAX_LEXEME_BYTES) {
        return tokens;
    }
    let kept: Vec<&str> =
        tokens.split(' ').filter(|token| token.len() <= MAX_LEXEME_BYTES).collect();
    kept.join(" ")
}

/// `text` as PostgreSQL can keep it: a NUL (which a `text` value cannot hold, and which
/// would fail every retry of the batch) becomes U+FFFD.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// A token as a tsquery lexeme: quoted, so that nothing in it is an operator.
fn quoted_lexeme(token: &str) -> String {
    format!("'{}'", token.replace('\\', "\\\\").replace('\'', "''"))
}

/// The LIKE pattern a line's `' ' || search_text || ' '` matches when it has `tokens` next to
/// each other, in order.
fn phrase_pattern(tokens: &[String]) -> String {
    let escaped: Vec<String> = tokens
        .iter()
        .map(|token| token.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
        .collect();
    format!("% {} %", escaped.join(" "))
}

fn stored_lines(rows: &[Row]) -> Result<Vec<StoredLine>, postgres::Error> {
    rows.iter()
        .map(|row| {
            Ok(StoredLine {
                id: row.try_get(0)?,
                at: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                from: row.try_get(2)?,
                action: row.try_get(3)?,
                text: row.try_get(4)?,
                // The same 64 bits as written (see `NewLine::sender`).
                sender: row.try_get::<_, i64>(5)? as u64,
                seq: row.try_get::<_, i64>(6)? as u64,
            })
        })
        .collect()
}

/// A count or a time as PostgreSQL's bigint (the largest one if it does not fit).
fn as_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// The server is ending the connection (a restart, a shutdown): worth connecting again.
fn is_server_going(err: &postgres::Error) -> bool {
    err.code().is_some_and(|code| code.code().starts_with("57P"))
}

/// The first line of a password file, trimmed.
fn read_password(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("cannot read the password file {}: {err}", file.display()))?;
    let password = text.lines().next().unwrap_or("").trim();
    if password.is_empty() {
        return Err(format!("the password file {} is empty", file.display()));
    }
    Ok(password.to_string())
}

/// Where `config` connects: `user@host:port/db` (hosts separated by commas), no password.
fn location_of(config: &Config) -> String {
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config.get_hostaddrs().iter().map(|addr| addr.to_string()).collect();
    }
    let ports = config.get_ports();
    let servers: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(at, host)| {
            let port = ports.get(at).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let user = config.get_user().map(|user| format!("{user}@")).unwrap_or_default();
    let database = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{user}{}/{database}", servers.join(","))
}

/// A URL that did not parse, for its error: without what may be a password (after `user:`
/// and before `@`, or a `password=` parameter).
fn without_password(url: &str) -> String {
    let mut shown = match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user_info, after)) => {
                let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
                format!("{scheme}://{user}@{after}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    if let Some(at) = shown.find("password=") {
        let end = shown[at..].find(['&', ' ']).map_or(shown.len(), |length| at + length);
        shown.replace_range(at..end, "password=...");
    }
    shown
}

/// An error and its causes, one after another (`postgres::Error` shows only its kind).
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests;
