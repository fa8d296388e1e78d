//! The fork guard: SQLite is not fork-safe and closing any descriptor of the database drops a
//! process's locks, so only the broker, which never forks, may have `chatd.db` open; with 50
//! sessions connected, no other process on the machine holds or maps it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Backend, db_path, say, search, start, wait_stored};
use crate::util::Client;

/// Every process on the machine that has one of `files` open (`/proc/*/fd`) or mapped
/// (`/proc/*/maps`).
fn holders(files: &[PathBuf]) -> BTreeSet<i32> {
    let names: Vec<String> = files.iter().map(|file| file.display().to_string()).collect();
    let pids = std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok());
    pids.filter(|pid| {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().any(|fd| {
            let target = fd.ok().and_then(|fd| std::fs::read_link(fd.path()).ok());
            target.is_some_and(|target| files.contains(&target))
        });
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mapped = maps.lines().any(|map| names.iter().any(|name| map.ends_with(name.as_str())));
        open || mapped
    })
    .collect()
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

#[test]
fn only_the_broker_has_the_database_open_with_fifty_sessions() {
    let daemon = start(&Backend::Sqlite, "max_clients_per_ip = 50\n");
    let mut clients: Vec<Client> = (0..50).map(|n| daemon.login(&format!("u{n}"))).collect();
    clients[49].expect("*** No topic is set for lobby");
    say(&mut clients[0], "u0", "the database is in use");
    wait_stored(&daemon, "lobby", "the database is in use");
    assert!(
        matches!(search(&mut clients[49], "lobby", "database"), super::Found::Lines(..)),
        "the broker searched its database"
    );
    assert_eq!(daemon.processes().len(), 52, "master, broker and 50 sessions");

    let db = db_path(&daemon).canonicalize().expect("chatd.db exists");
    let broker = daemon.broker_pid(1);
    assert_eq!(holders(std::slice::from_ref(&db)), BTreeSet::from([broker]), "chatd.db");
    let all = [
        db.clone(),
        with_suffix(&db, "-wal"),
        with_suffix(&db, "-shm"),
        with_suffix(&db, "-journal"),
    ];
    assert_eq!(holders(&all), BTreeSet::from([broker]), "chatd.db and its -wal, -shm, -journal");
}
