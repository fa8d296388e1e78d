//! The moderation state file (`state.toml`) when it is damaged, huge, or cannot be written.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::{fails, json, ok};
use crate::util::{Client, Daemon, runtime_dir};

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

#[test]
fn a_muted_users_renames_never_make_the_room_wait_for_the_disk() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    ok(daemon.chatctl(&["mute", "bob"]));
    // From now on a save hangs: the temporary file it opens is a FIFO that nobody reads.
    let state_dir = daemon.runtime.path().join("state");
    let fifo = state_dir.join("state.toml.new");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for (old, new) in [("bob", "bob1"), ("bob1", "bob2"), ("bob2", "bob3")] {
        bob.send(&format!("/nick {new}"));
        let renamed = format!("*** {old} is now known as {new}");
        bob.expect(&renamed);
        alice.expect(&renamed);
    }
    alice.send("still flowing");
    alice.expect("<alice> still flowing");
    bob.expect("<alice> still flowing");
    // An operator's change waits for the disk too, and so does its answer; the loop does not.
    let motd = Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .arg("--runtime-dir")
        .arg(daemon.runtime_dir())
        .args(["motd", "Be nice."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatctl");
    ok(daemon.chatctl(&["status"]));
    let mut motd = motd;
    assert!(motd.try_wait().expect("try_wait").is_none(), "answered before it was saved");
    // Reading the FIFO lets the stuck save go on (and fail: a FIFO cannot be fsynced); the
    // states submitted meanwhile were coalesced into one, the newest, which is saved.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO");
    let answered = motd.wait_with_output().expect("chatctl motd");
    drop(reader);
    assert_eq!(ok(answered), "set the message of the day\n");
    let saved = std::fs::read_to_string(state_dir.join("state.toml")).expect("state.toml");
    assert!(saved.contains("nick = \"bob3\"") && saved.contains("Be nice."), "{saved}");
    bob.send("/nick bob4");
    bob.expect("*** bob3 is now known as bob4");
    bob.send("muted still");
    bob.expect("<bob4> muted still");
    alice.send("marker");
    let before = alice.expect("<alice> marker");
    assert!(before.iter().all(|line| !line.contains("muted still")), "{before:?}");
}

#[test]
#[cfg_attr(
    chatd_tests_unprivileged,
    ignore = "needs root: a state directory root may write and the daemon's user may not"
)]
fn with_a_state_directory_it_cannot_write_every_change_is_refused_and_none_applies() {
    crate::util::assert_root_as_built();
    // Readable by the daemon's user, writable only by root.
    let state_dir = runtime_dir();
    std::fs::write(
        state_dir.path().join("state.toml"),
        "[[ban]]\ntarget = \"127.0.0.20\"\nsince = 1\n[[mute]]\nnick = \"carol\"\nsince = 1\n",
    )
    .expect("write state.toml");
    let config = format!("state_dir = \"{}\"\n", state_dir.path().display());
    let daemon = Daemon::start_with_config(&config);
    let warning = daemon.wait_for_log("warn: the state directory");
    assert!(warning.contains("is not writable (Permission denied)"), "{warning}");
    let [mut alice, mut bob, mut carol] = daemon.room(["alice", "bob", "carol"]);

    let said = fails(daemon.chatctl(&["mute", "bob"]), 1);
    assert!(said.contains("Permission denied") && said.contains("nothing was changed"), "{said}");
    let said = fails(daemon.chatctl(&["unmute", "carol"]), 1);
    assert!(said.contains("Permission denied"), "{said}");
    let who = json(&daemon, &["who"]);
    let muted = |nick: &str| {
        who.as_array().expect("list").iter().any(|u| u["nick"] == nick && u["muted"] == true)
    };
    assert!(!muted("bob") && muted("carol"), "{who}");
    let status = json(&daemon, &["status"]);
    assert_eq!((status["mutes"].as_u64(), status["bans"].as_u64()), (Some(1), Some(1)), "{status}");
    bob.send("not muted");
    alice.expect("<bob> not muted");
    carol.send("still muted");
    carol.expect("<carol> still muted");
    bob.send("marker");
    let before = alice.expect("<bob> marker");
    assert!(!before.iter().any(|line| line.contains("still muted")), "{before:?}");

    fails(daemon.chatctl(&["ban", "127.0.0.21"]), 1);
    let mut welcome = Client::connect_from(daemon.port, [127, 0, 0, 21]);
    welcome.expect_prefix("*** Please choose a nickname");
    fails(daemon.chatctl(&["unban", "127.0.0.20"]), 1);
    let mut refused = Client::connect_from(daemon.port, [127, 0, 0, 20]);
    assert_eq!(refused.expect_closed(), ["*** You are banned from this server."]);
    fails(daemon.chatctl(&["motd", "hello"]), 1);
    assert_eq!(ok(daemon.chatctl(&["motd"])), "no message of the day is set\n");
    // Checked again on reload.
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log_count("warn: the state directory", 2);
    daemon.wait_for_log("moderation state reloaded from");
}

#[test]
fn a_reload_without_a_state_file_does_not_claim_to_have_read_one() {
    let daemon = Daemon::start();
    daemon.signal(Signal::SIGHUP);
    let said = daemon.wait_for_log("moderation state: ");
    assert!(said.contains("state.toml does not exist; no bans, mutes"), "{said}");
    assert!(!daemon.log().iter().any(|line| line.contains("reloaded from")), "{:#?}", daemon.log());
}
