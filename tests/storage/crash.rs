//! Crash safety: a writer under load, `kill -9` of the broker or of every process of the
//! daemon, a restart; then every line committed before the kill is there, none twice, in the
//! order said (and, on SQLite, `PRAGMA integrity_check` is ok). The scenario takes the store
//! it runs on and hands back the stopped daemon, whose database the SQLite tests then read.

use std::io::Write;
use std::thread;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{Backend, db_path, numbers, sqlite3, start, stop, store_status, stored, wait_stored};
use crate::reliability::NO_FLOOD_CONTROL;
use crate::util::{Daemon, processes_in_group, wait_until};

/// What is killed with SIGKILL.
#[derive(Clone, Copy, Debug)]
pub enum Kill {
    /// The broker only: the master starts another, the sessions stay.
    Broker,
    /// The master's whole process group: master, broker and sessions.
    Everything,
    /// The master only: a new master adopts the broker, which goes on writing; then that
    /// broker too, and the new master's own broker opens the database the first one wrote.
    Master,
}

/// Lines committed before the kill: the first block, and the one it is waited for.
const FIRST_BLOCK: u32 = 300;
/// The last line the writer sends.
const LAST: u32 = 4300;
/// The kill comes once the writer has seen this line echoed: well into the second block.
const KILL_AFTER: u32 = 1000;

fn numbered(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|n| format!("n {n}\r\n")).collect()
}

pub fn committed_lines_survive_a_kill(backend: &Backend, what: Kill) -> Daemon {
    let mut daemon = start(backend, NO_FLOOD_CONTROL);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send_raw(numbered(1..=FIRST_BLOCK).as_bytes());
    let last_of_first = format!("n {FIRST_BLOCK}");
    bob.expect(&format!("<alice> {last_of_first}"));
    // Committed: the database thread answers chatctl after it wrote the line, and nothing
    // waits for the store any more.
    wait_stored(&daemon, "lobby", &last_of_first);
    wait_until("no line waits for the store", || store_status(&daemon)["waiting_lines"] == 0);

    // The second block goes on while the kill comes.
    let mut stream = alice.stream.try_clone().expect("clone the writer's stream");
    let writer = thread::spawn(move || {
        for chunk in (FIRST_BLOCK + 1..=LAST).step_by(100) {
            let lines = numbered(chunk..=(chunk + 99).min(LAST));
            if stream.write_all(lines.as_bytes()).is_err() {
                return;
            }
        }
    });
    alice.expect(&format!("<alice> n {KILL_AFTER}"));
    let group = daemon.pid();
    // With `Kill::Master`, the first master's daemon: its group holds the adopted broker
    // and the sessions until the end, when the new master has stopped them.
    let mut _first = None;
    match what {
        Kill::Broker => {
            kill(Pid::from_raw(daemon.broker_pid(1)), Signal::SIGKILL).expect("kill the broker");
            daemon.broker_pid(2);
            // The sessions stayed: the writer's lines go on to the new broker and its store.
            let before_last = alice.expect(&format!("<alice> n {LAST}"));
            let restarted = "*** The chat service restarted; you are still in lobby.";
            // Else the broker had echoed everything before it died, and this tested nothing.
            assert!(before_last.iter().any(|line| line == restarted), "killed mid-way");
            writer.join().expect("the writer");
            wait_stored(&daemon, "lobby", &format!("n {LAST}"));
        }
        Kill::Everything => {
            killpg(Pid::from_raw(group), Signal::SIGKILL).expect("kill the daemon's group");
            daemon.wait_exit();
            wait_until("every process is gone", || processes_in_group(group).is_empty());
            writer.join().expect("the writer");
            daemon = daemon.start_sharing();
        }
        Kill::Master => {
            let broker = daemon.broker_pid(1);
            daemon.signal(Signal::SIGKILL);
            daemon.wait_exit();
            let second = daemon.start_sharing();
            second.wait_for_log(&format!("adopting broker pid {broker}"));
            alice.expect(&format!("<alice> n {LAST}"));
            writer.join().expect("the writer");
            wait_stored(&second, "lobby", &format!("n {LAST}"));
            kill(Pid::from_raw(broker), Signal::SIGKILL).expect("kill the adopted broker");
            second.wait_for_log("starting a broker of our own");
            alice.expect("*** The chat service restarted; you are still in lobby.");
            _first = Some(std::mem::replace(&mut daemon, second));
        }
    }
    drop((alice, bob));

    let held = numbers(&stored(&daemon, "lobby"));
    assert!(
        held.len() >= FIRST_BLOCK as usize
            && held[..FIRST_BLOCK as usize].iter().copied().eq(1..=FIRST_BLOCK),
        "after {what:?}, the committed first block is not all there, first: {:?}",
        &held[..held.len().min(FIRST_BLOCK as usize)]
    );
    let in_order = held.windows(2).all(|pair| pair[0] < pair[1]);
    assert!(in_order, "after {what:?}, stored twice or out of order: {}", disorder(&held));
    if let Kill::Master = what {
        // The adopted broker wrote everything before it was killed.
        assert_eq!(held.len(), LAST as usize, "after {what:?}: {}", disorder(&held));
    }
    if let Kill::Everything = what {
        // Batches commit in order and nothing writes after the kill: what is there is a
        // prefix of what was said.
        let all = held.len() as u32;
        assert_eq!(held.last().copied(), Some(all), "holes in {}", disorder(&held));
        // Else the kill came after everything was written, and tested nothing.
        assert!(all < LAST, "the kill came after the last line was stored");
    }
    stop(&mut daemon);
    daemon
}

/// The first places where `numbers` do not go up by one, for a failure message.
fn disorder(numbers: &[u32]) -> String {
    let breaks: Vec<String> = numbers
        .windows(2)
        .filter(|pair| pair[1] != pair[0] + 1)
        .take(10)
        .map(|pair| format!("{} then {}", pair[0], pair[1]))
        .collect();
    format!("{} lines, breaks: {}", numbers.len(), breaks.join(", "))
}

/// The texts of every stored line, one a line, in the store's own order (by id), as the
/// database's CLI prints them: each once, in the order said.
pub fn held_once_in_order(by_id: &str) {
    let texts: Vec<String> = by_id.lines().map(str::to_string).collect();
    let held = numbers(&texts);
    assert_eq!(held.len(), texts.len(), "only the numbered lines were said");
    assert!(held.windows(2).all(|pair| pair[0] < pair[1]), "by id: {}", disorder(&held));
}

#[test]
fn sqlite_committed_lines_survive_a_kill_of_the_broker() {
    let daemon = committed_lines_survive_a_kill(&Backend::Sqlite, Kill::Broker);
    sqlite_is_sound(&daemon);
}

/// The stopped daemon's SQLite database is sound, and holds each line once, in the order said.
fn sqlite_is_sound(daemon: &Daemon) {
    let db = db_path(daemon);
    assert_eq!(sqlite3(&db, &["-readonly"], "PRAGMA integrity_check"), "ok\n");
    held_once_in_order(&sqlite3(&db, &["-readonly"], "SELECT text FROM lines ORDER BY id"));
}

#[test]
fn sqlite_committed_lines_survive_a_kill_of_the_master_and_then_its_broker() {
    let daemon = committed_lines_survive_a_kill(&Backend::Sqlite, Kill::Master);
    sqlite_is_sound(&daemon);
}

#[test]
fn sqlite_committed_lines_survive_a_kill_of_everything() {
    let daemon = committed_lines_survive_a_kill(&Backend::Sqlite, Kill::Everything);
    sqlite_is_sound(&daemon);
}
