//! The store (#16), from outside: what rooms said survives a restart of the whole daemon, on
//! SQLite (the default) and on PostgreSQL; `/history`, `/search`, retention, the operators'
//! chatctl commands, crashes, a full disk and unusable databases at start.
//!
//! This file holds what the tests share: [`Backend`] (the store a daemon is given), stopping
//! and restarting a daemon on the same state, and reading what users and operators see (a
//! newcomer's history, a `/history` page, `/search` results, `chatctl history`). A scenario
//! that must hold on both stores is a function taking a `&Backend`, in the file of its job;
//! `postgres.rs` runs those against a real cluster and holds no scenario of its own.
//!
//! Nothing here looks inside the daemon: the database is read with the `sqlite3` CLI only
//! while the daemon is stopped (or with `-readonly`), and otherwise through chatctl.

mod crash;
mod disk;
mod fork_guard;
mod full_text;
mod memory_only;
mod operators;
mod postgres;
mod refusals;
mod retention;
mod survival;
mod upgrade;

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::control::ok;
use crate::util::{Client, Daemon, processes_in_group, wait_until};

/// Which store a daemon keeps what was said in.
pub enum Backend {
    /// The default: `<state_dir>/chatd.db`, nothing in the settings.
    Sqlite,
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

impl Backend {
    /// The settings that select this store.
    pub fn config(&self) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres(url) => format!("database = \"{url}\"\n"),
        }
    }
}

/// Starts a daemon on `backend` with `extra` settings.
pub fn start(backend: &Backend, extra: &str) -> Daemon {
    Daemon::start_with_config(&format!("{}{extra}", backend.config()))
}

/// Stops the whole daemon the way an operator does (SIGTERM to the master) and waits until
/// every one of its processes is gone.
pub fn stop(daemon: &mut Daemon) {
    let group = daemon.pid();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit();
    assert!(
        status.success(),
        "the master exited with {status}; log:\n{}",
        daemon.whole_log().join("\n")
    );
    wait_until("every process of the daemon is gone", || processes_in_group(group).is_empty());
}

/// Stops the daemon and starts a new one on the same settings and state directory.
pub fn restart(mut daemon: Daemon) -> Daemon {
    stop(&mut daemon);
    daemon.start_sharing()
}

/// The SQLite database of a daemon started with the default settings.
pub fn db_path(daemon: &Daemon) -> PathBuf {
    daemon.runtime.path().join("state").join("chatd.db")
}

/// Runs the `sqlite3` CLI on `db` and returns what it printed. Only while no daemon uses the
/// file, unless `-readonly` is among `options`.
pub fn sqlite3(db: &Path, options: &[&str], sql: &str) -> String {
    let output = Command::new("sqlite3")
        .args(options)
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (Debian package sqlite3) must be installed");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "sqlite3 {} {sql:?}: {}",
        db.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 from sqlite3")
}

/// Gives every file in `dir` to `nobody`, whom the daemon runs as: files the `sqlite3` CLI
/// (run as root) made there must stay usable by the daemon.
pub fn give_to_nobody(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list the state directory") {
        let path = entry.expect("a directory entry").path();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown to nobody");
    }
}

/// What the store row of `chatctl status` says (after its label, `store`).
pub fn store_line(daemon: &Daemon) -> String {
    let status = ok(daemon.chatctl(&["status"]));
    let line = status.lines().find_map(|line| line.strip_prefix("store "));
    line.unwrap_or_else(|| panic!("no store row in\n{status}")).trim().to_string()
}

/// A log line that says the store works again after failing (the failure's own line says
/// what happens "when the database works again": not that).
pub fn says_it_works_again(line: &str) -> bool {
    line.contains("works again") && !line.contains("kept in memory")
}

/// Waits until the daemon has logged that the store works again; returns how often it has.
pub fn wait_until_it_works_again(daemon: &Daemon) -> usize {
    let count = || daemon.log().iter().filter(|line| says_it_works_again(line)).count();
    wait_until("the log says the store works again", || count() > 0);
    count()
}

/// Says `text` as `client` and waits for its echo (`<nick> text`, or `* nick text` for `/me`).
pub fn say(client: &mut Client, nick: &str, text: &str) {
    match text.strip_prefix("/me ") {
        Some(action) => {
            client.send(text);
            client.expect(&format!("* {nick} {action}"));
        }
        None => {
            client.send(text);
            client.expect(&format!("<{nick}> {text}"));
        }
    }
}

/// Lines until one starts with `prefix` (which is consumed); returns the lines before it.
fn lines_before(client: &mut Client, prefix: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        match client.next_line() {
            Some(line) if line.starts_with(prefix) => return before,
            Some(line) => before.push(line),
            None => panic!("closed before {prefix:?}; seen:\n{}", client.seen.join("\n")),
        }
    }
}

/// What a newcomer is shown on arriving in lobby.
pub struct Arrival {
    /// The topic notice (`*** Topic for lobby: ...` or `*** No topic is set for lobby`).
    pub topic: String,
    /// The history lines, without their `[HH:MM] ` time, oldest first.
    pub history: Vec<String>,
    /// The newcomer, still connected.
    pub client: Client,
}

/// Logs `nick` in and reads what it is shown on arrival in lobby.
pub fn arrive(daemon: &Daemon, nick: &str) -> Arrival {
    let mut client = daemon.login(nick);
    let (topic, history) = shown_on_entry(&mut client, "lobby");
    Arrival { topic, history, client }
}

/// Moves `client` to `room` and reads what it is shown there: its topic notice and history.
pub fn enter(client: &mut Client, nick: &str, room: &str) -> (String, Vec<String>) {
    client.send(&format!("/join {room}"));
    client.expect(&format!("*** {nick} has joined {room}"));
    shown_on_entry(client, room)
}

/// The topic notice and the history lines (without their `[HH:MM] ` time) a client that has
/// just entered `room` is shown. A room the store is still loading sends both when the store
/// answers, possibly after later answers: first the topic notice itself (it always comes,
/// once), then `/who`, behind which any history sent with the topic has come.
pub fn shown_on_entry(client: &mut Client, room: &str) -> (String, Vec<String>) {
    let before = lines_before_topic(client, room);
    let topic = client.seen.last().cloned().unwrap_or_default();
    client.send("/who");
    let shown = lines_before(client, &format!("*** In {room} ("));
    let again = shown.iter().chain(&before).find(|line| is_topic_of(line, room));
    assert!(again.is_none(), "a second topic notice in {room}: {again:?}");
    let mut history = Vec::new();
    if let Some(head) = shown.iter().position(|line| line.starts_with("*** Last ")) {
        let end = shown
            .iter()
            .position(|line| line == "*** End of history.")
            .unwrap_or_else(|| panic!("history without its end: {shown:?}"));
        for line in &shown[head + 1..end] {
            // "[HH:MM] <alice> text"
            let bytes = line.as_bytes();
            assert!(
                line.len() > 8 && bytes[0] == b'[' && bytes[3] == b':' && &line[6..8] == "] ",
                "a history line without its time: {line:?}"
            );
            history.push(line[8..].to_string());
        }
        let count = history.len();
        let noun = if count == 1 { "line" } else { "lines" };
        assert_eq!(shown[head], format!("*** Last {count} {noun} in {room} before you came:"));
    }
    let early = before.iter().find(|line| line.starts_with("*** Last "));
    assert!(early.is_none(), "history before the topic notice in {room}: {before:?}");
    (topic, history)
}

/// A room's topic notice, shown on entering it.
fn is_topic_notice(line: &str) -> bool {
    line.starts_with("*** Topic for ") || line.starts_with("*** No topic is set for ")
}

/// `room`'s topic notice.
fn is_topic_of(line: &str, room: &str) -> bool {
    line.starts_with(&format!("*** Topic for {room}: "))
        || line == format!("*** No topic is set for {room}")
}

/// Reads until `room`'s topic notice; returns the lines before it.
fn lines_before_topic(client: &mut Client, room: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        match client.next_line() {
            Some(line) if is_topic_of(&line, room) => return before,
            Some(line) => before.push(line),
            None => panic!("closed before the topic of {room}; seen:\n{}", client.seen.join("\n")),
        }
    }
}

/// The line without its `[YYYY-MM-DD HH:MM] ` date, which it must have.
fn undated(line: &str) -> String {
    let shape = "[dddd-dd-dd dd:dd] ";
    let dated = line.len() > shape.len()
        && line.bytes().zip(shape.bytes()).all(|(got, want)| match want {
            b'd' => got.is_ascii_digit(),
            _ => got == want,
        });
    assert!(dated, "a line without its [YYYY-MM-DD HH:MM] date: {line:?}");
    line[shape.len()..].to_string()
}

/// The system line that answers a command just sent (anything else on the way is skipped,
/// and so is what entering a room shows).
fn system_answer(client: &mut Client) -> String {
    let mut in_history = false;
    loop {
        let line = client.next_line().expect("connection open");
        // What entering a room shows may come late, when the store answers: never an answer.
        if in_history || line.starts_with("*** Last ") {
            in_history = line != "*** End of history.";
        } else if line.starts_with("*** ") && !is_topic_notice(&line) {
            return line;
        }
    }
}

/// The answer to a `/history` command.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    /// The lines of a page, oldest first, each without its date.
    Lines(Vec<String>),
    /// `*** No earlier lines in <room>`.
    NoEarlier,
    /// Any other system line (an error).
    Refused(String),
}

/// Sends `command` (`/history`, `/history 20`) in `room` and reads the answer.
pub fn history(client: &mut Client, room: &str, command: &str) -> Page {
    client.send(command);
    history_answer(client, room)
}

/// Reads the answer to a `/history` command sent in `room`.
pub fn history_answer(client: &mut Client, room: &str) -> Page {
    let head = system_answer(client);
    if head.starts_with(&format!("*** No earlier lines in {room}")) {
        return Page::NoEarlier;
    }
    if !head.starts_with(&format!("*** History of {room}")) {
        return Page::Refused(head);
    }
    let lines = lines_before(client, "*** End of history page");
    Page::Lines(lines.iter().map(|line| undated(line)).collect())
}

/// The answer to a `/search` command.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The count the header gives (`*** N lines in <room> match "WORDS"...`) and the lines,
    /// newest first, each without its date.
    Lines(usize, Vec<String>),
    /// `*** Nothing in <room> matches "WORDS"`.
    Nothing,
    /// Any other system line (an error).
    Refused(String),
}

/// Sends `/search WORDS` in `room` and reads the answer.
pub fn search(client: &mut Client, room: &str, words: &str) -> Found {
    client.send(&format!("/search {words}"));
    let head = system_answer(client);
    if head.starts_with(&format!("*** Nothing in {room} matches \"{words}\"")) {
        return Found::Nothing;
    }
    let count = head.strip_prefix("*** ").and_then(|rest| {
        let (count, rest) = rest.split_once(' ')?;
        let said = if count == "1" { "line in {room} matches" } else { "lines in {room} match" };
        let said = said.replace("{room}", room);
        rest.starts_with(&format!("{said} \"{words}\"")).then_some(count)
    });
    let Some(count) = count.and_then(|count| count.parse().ok()) else {
        return Found::Refused(head);
    };
    let lines = lines_before(client, "*** End of search");
    Found::Lines(count, lines.iter().map(|line| undated(line)).collect())
}

/// `chatctl --json ARGS`, parsed.
pub fn chatctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(daemon.chatctl(&all));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}):\n{text}"))
}

/// The `"store"` object of `chatctl status --json`.
pub fn store_status(daemon: &Daemon) -> Value {
    chatctl_json(daemon, &["status"])["store"].clone()
}

/// The texts `chatctl history ROOM --json` shows, oldest first; None if chatctl fails (the
/// store is not available).
fn stored_now(daemon: &Daemon, room: &str) -> Option<Vec<String>> {
    let output = daemon.chatctl(&["--json", "history", room]);
    if !output.status.success() {
        return None;
    }
    let lines: Value = serde_json::from_slice(&output.stdout).ok()?;
    let texts = lines.as_array()?.iter().map(|line| line["text"].as_str().map(str::to_string));
    texts.collect()
}

/// What the store holds for `room` (chatctl history), oldest first.
pub fn stored(daemon: &Daemon, room: &str) -> Vec<String> {
    stored_now(daemon, room).unwrap_or_else(|| {
        panic!("chatctl history {room} failed: {:?}", daemon.chatctl(&["history", room]))
    })
}

/// Waits until the store has `text` for `room` (it is committed: chatctl reads the
/// database), and returns what it holds then.
pub fn wait_stored(daemon: &Daemon, room: &str, text: &str) -> Vec<String> {
    let mut held = Vec::new();
    wait_until(&format!("the store holds {text:?} in {room}"), || {
        held = stored_now(daemon, room).unwrap_or_default();
        held.iter().any(|stored| stored == text)
    });
    held
}

/// The numbers of the lines `n 1`, `n 2`, ... among `texts`, in their order.
pub fn numbers(texts: &[String]) -> Vec<u32> {
    texts.iter().filter_map(|text| text.strip_prefix("n ")?.parse().ok()).collect()
}
