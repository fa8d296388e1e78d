//! The moderation state file (`state.toml`) when it is damaged, huge, or cannot be written.

use std::io::Write;

use crate::util::{Client, Daemon};

#[test]
fn a_60_mb_damaged_state_file_is_reported_once_and_logins_carry_on() {
    let daemon = Daemon::start();
    daemon.wait_for_log("broker ready");
    // Written after start: it is the master, checking the bans at every accept, that meets it.
    let path = daemon.runtime.path().join("state/state.toml");
    let mut file = std::fs::File::create(&path).expect("create state.toml");
    file.write_all(b"[[ban]]\ntarget = \"").expect("write");
    let junk = vec![b'x'; 1 << 20];
    for _ in 0..60 {
        file.write_all(&junk).expect("write");
    }
    drop(file);
    for last in 10..50 {
        let mut client = Client::connect_from(daemon.port, [127, 0, 0, last]);
        client.expect_prefix("*** Please choose a nickname");
    }
    let mut alice = daemon.login("alice");
    alice.send("still fast");
    alice.expect("<alice> still fast");
    let reported: Vec<String> = daemon
        .log()
        .into_iter()
        .filter(|line| {
            line.contains("enforcing the bans read before") || line.contains("(state file)")
        })
        .collect();
    assert_eq!(reported.len(), 1, "{reported:#?}");
    assert!(reported[0].contains("more than the 1048576 a state file may have"), "{reported:#?}");
}
