//! Operators: chatctl against a running daemon, over its control socket.

mod hostile;
mod state;

use std::process::{Command, Output};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::{Client, Daemon, wait_until};

/// Asserts chatctl succeeded and returns what it printed.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "chatctl failed ({:?}): {}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Asserts chatctl exited with `code` and returns what it said on stderr.
pub fn fails(output: Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stderr).expect("UTF-8 output")
}

pub fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(daemon.chatctl(&all));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}):\n{text}"))
}

/// The master's figures reach the broker once a second: wait for a condition on them.
pub fn wait_for_status(daemon: &Daemon, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(what, || {
        last = json(daemon, &["status"]);
        condition(&last)
    });
    last
}

fn refusals(status: &Value, reason: &str) -> u64 {
    status["master"]["refusals"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["reason"] == reason))
        .and_then(|r| r["count"].as_u64())
        .unwrap_or(0)
}

#[test]
fn status_who_and_rooms_answer_in_tables_and_in_json() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    bob.send("/join #dev");
    bob.expect("*** bob has joined dev");
    alice.send("hello");
    alice.expect("<alice> hello");

    let status = wait_for_status(&daemon, "two connections in the master's figures", |s| {
        s["master"]["connections"] == 2
    });
    assert_eq!(status["users"], 2);
    assert_eq!(status["rooms"], 2);
    assert_eq!(status["messages"], 1);
    assert_eq!(status["deliveries"], 1, "alice was alone in the lobby");
    assert_eq!(status["master"]["pid"], daemon.pid());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let text = ok(daemon.chatctl(&["status"]));
    assert!(text.contains(&format!("master       pid {}", daemon.pid())), "{text}");
    assert!(text.contains("users        2 in 2 room(s)"), "{text}");

    let who = json(&daemon, &["who"]);
    let rows = who.as_array().expect("a list");
    assert_eq!(rows.len(), 2, "{who}");
    assert_eq!((rows[0]["nick"].as_str(), rows[0]["room"].as_str()), (Some("bob"), Some("dev")));
    assert_eq!(rows[1]["nick"], "alice");
    let alice_pid = rows[1]["pid"].as_i64().expect("pid") as i32;
    assert_eq!(daemon.holders_of(&alice), vec![alice_pid], "who shows the session's pid");
    let port = alice.stream.local_addr().expect("addr").port();
    assert_eq!(rows[1]["peer"], format!("127.0.0.1:{port}"));
    let who_dev = json(&daemon, &["who", "dev"]);
    assert_eq!(who_dev.as_array().map(Vec::len), Some(1), "{who_dev}");
    fails(daemon.chatctl(&["who", "nowhere"]), 1);
    let table = ok(daemon.chatctl(&["who"]));
    assert!(table.starts_with("NICK "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("alice  lobby  127.0.0.1:")), "{table}");

    let rooms = json(&daemon, &["rooms"]);
    let names: Vec<&str> =
        rooms.as_array().expect("list").iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["dev", "lobby"]);
}

#[test]
fn kick_removes_a_user_and_tells_the_room() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let said = ok(daemon.chatctl(&["kick", "BOB", "stop", "spamming"]));
    assert_eq!(said, "kicked bob\n");
    bob.expect("*** You were removed by an operator (stop spamming).");
    assert!(bob.expect_closed().is_empty());
    alice.expect("*** bob was removed by an operator (stop spamming)");
    let said = fails(daemon.chatctl(&["kick", "bob"]), 1);
    assert_eq!(said, "chatctl: no such nick: bob\n");
    daemon.wait_for_log("notice: operator removed bob");
    // The nickname is free again.
    daemon.login("bob");
}

#[test]
fn an_address_ban_refuses_before_fork_disconnects_matches_and_survives_a_restart() {
    let mut daemon = Daemon::start();
    let mut banned = Client::connect_from(daemon.port, [127, 0, 0, 5]);
    banned.expect_prefix("*** Please choose a nickname");
    banned.send("mallory");
    banned.expect("*** mallory has joined lobby");
    let mut alice = daemon.login("alice");

    let said = ok(daemon.chatctl(&["ban", "127.0.0.4/30", "flooding"]));
    assert_eq!(said, "banned 127.0.0.4/30; 1 session(s) disconnected\n");
    banned.expect("*** You were removed by an operator (banned: flooding).");
    alice.expect("*** mallory was removed by an operator (banned: flooding)");

    // Figures are a second old at most: wait for both connections counted and one gone.
    let before = wait_for_status(&daemon, "figures after the ban", |s| {
        s["master"]["accepted"] == 2 && s["master"]["connections"] == 1
    });
    let mut again = Client::connect_from(daemon.port, [127, 0, 0, 5]);
    assert_eq!(again.expect_closed(), ["*** You are banned from this server (flooding)."]);
    let after = wait_for_status(&daemon, "the refusal counted", |s| refusals(s, "banned") == 1);
    assert_eq!(after["master"]["accepted"], before["master"]["accepted"], "no session was forked");
    daemon.wait_for_log("notice: refused 127.0.0.5:");
    // Outside the network: welcome.
    let mut other = Client::connect_from(daemon.port, [127, 0, 0, 9]);
    other.expect_prefix("*** Please choose a nickname");

    let bans = json(&daemon, &["bans"]);
    assert_eq!(bans[0]["target"], "127.0.0.4/30");
    assert_eq!(bans[0]["reason"], "flooding");
    assert_eq!(bans[0]["until"], Value::Null, "no expiry: {bans}");

    // A new daemon on the same state directory enforces it.
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit().success());
    let daemon = daemon.start_sharing();
    let mut again = Client::connect_from(daemon.port, [127, 0, 0, 6]);
    assert_eq!(again.expect_closed(), ["*** You are banned from this server (flooding)."]);
    assert_eq!(json(&daemon, &["bans"])[0]["target"], "127.0.0.4/30");
    ok(daemon.chatctl(&["unban", "127.0.0.4/30"]));
    fails(daemon.chatctl(&["unban", "127.0.0.4/30"]), 1);
    let mut welcome = Client::connect_from(daemon.port, [127, 0, 0, 6]);
    welcome.expect_prefix("*** Please choose a nickname");
}

#[test]
fn a_ban_with_a_duration_expires_by_itself() {
    let daemon = Daemon::start();
    ok(daemon.chatctl(&["ban", "127.0.0.7", "--for", "2s"]));
    let mut refused = Client::connect_from(daemon.port, [127, 0, 0, 7]);
    assert_eq!(refused.expect_closed(), ["*** You are banned from this server."]);
    wait_until("the ban to expire", || {
        let mut client = Client::connect_from(daemon.port, [127, 0, 0, 7]);
        client.next_line().is_some_and(|line| line.starts_with("*** Welcome"))
    });
    assert_eq!(json(&daemon, &["bans"]), Value::Array(Vec::new()));
}

#[test]
fn a_nick_ban_removes_the_holder_and_refuses_the_name() {
    let daemon = Daemon::start();
    let mut carol = daemon.login("carol");
    ok(daemon.chatctl(&["ban", "Carol"]));
    carol.expect("*** You were removed by an operator (banned).");
    let mut again = daemon.connect();
    again.expect_prefix("*** Please choose a nickname");
    again.send("CAROL");
    again.expect("*** The nickname CAROL is banned here");
    again.send("dave");
    again.expect("*** dave has joined lobby");
    again.send("/nick carol");
    again.expect("*** The nickname carol is banned here");
}

#[test]
fn a_muted_user_sees_its_own_lines_and_nobody_else_does() {
    let daemon = Daemon::start();
    let [mut alice, mut bob, mut carol] = daemon.room(["alice", "bob", "carol"]);
    fails(daemon.chatctl(&["mute", "nobody-here"]), 1);
    assert_eq!(ok(daemon.chatctl(&["mute", "bob", "--for", "1h"])), "muted bob for 1h\n");
    bob.send("buy cheap watches");
    bob.expect("<bob> buy cheap watches");
    bob.send("/msg alice psst");
    bob.expect("-> *alice* psst");
    carol.send("marker");
    let before = alice.expect("<carol> marker");
    assert!(
        before.iter().all(|line| !line.contains("watches") && !line.contains("psst")),
        "{before:?}"
    );
    let who = json(&daemon, &["who"]);
    assert!(who.as_array().expect("list").iter().any(|u| u["nick"] == "bob" && u["muted"] == true));
    // The mute follows a new nickname.
    bob.send("/nick robert");
    bob.expect("*** bob is now known as robert");
    bob.send("still here");
    bob.expect("<robert> still here");
    // The list of mutes has every mute in force, whether or not its user is connected.
    ok(daemon.chatctl(&["mute", "carol"]));
    carol.send("/quit");
    alice.expect("*** carol has left (quit)");
    let mutes = json(&daemon, &["mutes"]);
    let listed: Vec<(&str, bool)> = mutes
        .as_array()
        .expect("a list")
        .iter()
        .map(|mute| (mute["nick"].as_str().unwrap_or("?"), mute["until"].is_null()))
        .collect();
    assert_eq!(listed, [("robert", false), ("carol", true)], "oldest first: {mutes}");
    let table = ok(daemon.chatctl(&["mutes"]));
    let rows: Vec<Vec<&str>> = table.lines().map(|row| row.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NICK", "SET", "EXPIRES"], "{table}");
    assert!(rows[1][0] == "robert" && rows[1].contains(&"in"), "{table}");
    assert_eq!((rows[2][0], rows[2].last()), ("carol", Some(&"never")), "{table}");
    ok(daemon.chatctl(&["unmute", "robert"]));
    fails(daemon.chatctl(&["unmute", "robert"]), 1);
    bob.send("sorry");
    let before = alice.expect("<robert> sorry");
    assert!(before.iter().all(|line| !line.contains("still here")), "{before:?}");
    ok(daemon.chatctl(&["unmute", "carol"]));
    assert_eq!(ok(daemon.chatctl(&["mutes"])), "no mutes\n");
}

#[test]
fn announcements_and_the_message_of_the_day_are_system_lines() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    bob.send("/join dev");
    bob.expect("*** bob has joined dev");
    ok(daemon.chatctl(&["announce", "--room", "#dev", "maintenance", "at", "noon"]));
    bob.expect("*** Announcement: maintenance at noon");
    ok(daemon.chatctl(&["announce", "\x1b[31mhello\x1b[0m", "everyone"]));
    alice.expect("*** Announcement: hello everyone");
    bob.expect("*** Announcement: hello everyone");
    fails(daemon.chatctl(&["announce", "--room", "nowhere", "hi"]), 1);

    assert_eq!(ok(daemon.chatctl(&["motd"])), "no message of the day is set\n");
    let file = daemon.runtime.path().join("motd.txt");
    std::fs::write(&file, "Be nice.\nNo spam.\n").expect("write motd");
    ok(daemon.chatctl(&["motd", "--file", file.to_str().expect("path")]));
    assert_eq!(ok(daemon.chatctl(&["motd"])), "Be nice.\nNo spam.\n");
    let mut carol = daemon.connect();
    carol.expect_prefix("*** Please choose a nickname");
    carol.send("carol");
    carol.expect("*** Message of the day:");
    carol.expect("***   Be nice.");
    carol.expect("***   No spam.");
    ok(daemon.chatctl(&["motd", "--clear"]));
    assert_eq!(json(&daemon, &["motd"])["motd"], Value::Null);
}

#[test]
fn reload_reports_whether_the_settings_were_valid() {
    let daemon = Daemon::start();
    assert_eq!(ok(daemon.chatctl(&["reload"])), "configuration reloaded\n");
    daemon.wait_for_log("configuration reloaded");
    let config = daemon.runtime.path().join("chatd.toml");
    let good = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, format!("{good}max_clients = 0\n")).expect("break config");
    let said = fails(daemon.chatctl(&["reload"]), 1);
    assert!(said.contains("reload failed") && said.contains("max_clients"), "{said}");
    std::fs::write(&config, good).expect("restore config");
    let answer = json(&daemon, &["reload"]);
    assert_eq!(answer["ok"], true);
}

#[test]
fn shutdown_warns_everyone_waits_and_stops_the_daemon() {
    let mut daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let said = ok(daemon.chatctl(&["shutdown", "--grace", "1", "--message", "Back at 10:00."]));
    assert_eq!(said, "shutting down in 1 s\n");
    alice.expect("*** Announcement: The server is shutting down in 1 s. Back at 10:00.");
    alice.expect("*** The server is shutting down. Goodbye.");
    alice.expect_closed();
    assert!(daemon.wait_exit().success());
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: runs chatctl as another user (setpriv)")]
fn chatctl_is_refused_to_strangers_and_allowed_to_the_admin_group() {
    crate::util::assert_root_as_built();
    let daemon = Daemon::start_with_config("admin_group = \"audio\"\n");
    let chatctl = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=games", "--regid=games", groups, "--"])
            .arg(env!("CARGO_BIN_EXE_chatctl"))
            .arg("--runtime-dir")
            .arg(daemon.runtime_dir())
            .arg("status")
            .output()
            .expect("run setpriv")
    };
    let said = fails(chatctl("--clear-groups"), 3);
    assert_eq!(
        said,
        "chatctl: permission denied: only root, or members of group audio may control chatd\n"
    );
    daemon.wait_for_log("notice: refused an operator connection from uid 5");
    ok(chatctl("--groups=audio"));
    // Usage errors and an unreachable daemon have their own exit codes.
    fails(daemon.chatctl(&["ban"]), 2);
    let said = fails(
        Command::new(env!("CARGO_BIN_EXE_chatctl"))
            .args(["--runtime-dir", "/nonexistent", "status"])
            .output()
            .expect("run chatctl"),
        3,
    );
    assert!(said.contains("cannot reach chatd at /nonexistent/control.sock"), "{said}");
}

#[test]
fn ps_names_each_session_and_kill_works_as_a_kick() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let pid = daemon.holders_of(&bob)[0];
    let port = bob.stream.local_addr().expect("addr").port();
    let title = || {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        String::from_utf8_lossy(&raw).trim_end_matches('\0').trim_end().to_string()
    };
    assert_eq!(title(), format!("chatd: bob@lobby [127.0.0.1:{port}]"));
    bob.send("/join dev");
    bob.expect("*** bob has joined dev");
    bob.send("/nick robert");
    bob.expect("*** bob is now known as robert");
    assert_eq!(title(), format!("chatd: robert@dev [127.0.0.1:{port}]"));
    let ps = Command::new("ps").args(["-o", "args=", "-p", &pid.to_string()]).output().expect("ps");
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), title());
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "chatd: robert@d", "top shows the 15-character name");
    bob.send("/join lobby");
    bob.expect("*** robert has joined lobby");
    alice.expect("*** robert has joined lobby");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).expect("kill");
    bob.expect("*** You were disconnected by an operator.");
    bob.expect_closed();
    alice.expect("*** robert has left (disconnected by an operator)");
}

#[test]
fn prometheus_figures_pass_promtool_and_are_written_atomically() {
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    alice.send("hello");
    alice.expect("<alice> hello");
    ok(daemon.chatctl(&["ban", "127.0.0.8"]));
    let mut refused = Client::connect_from(daemon.port, [127, 0, 0, 8]);
    refused.expect_closed();
    wait_for_status(&daemon, "the refusal counted", |s| refusals(s, "banned") == 1);
    let text = ok(daemon.chatctl(&["status", "--prometheus"]));
    for needle in [
        "chatd_messages_total 1\n",
        "chatd_users 1\n",
        "chatd_connections 1\n",
        "chatd_refusals_total{reason=\"banned\"} 1\n",
        "chatd_fanout_latency_seconds_count 1\n",
        "# TYPE chatd_fanout_latency_seconds histogram\n",
        "chatd_broker_restarts_total 0\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    use std::io::Write as _;
    promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Written to a file, the figures replace the old file whole: a reader that opened the old
    // one keeps reading it, complete, and the name then leads to the new one.
    let file = daemon.runtime.path().join("chatd.prom");
    let output = ["status", "--prometheus", "--output", file.to_str().expect("path")];
    ok(daemon.chatctl(&output));
    let mut old_reader = std::fs::File::open(&file).expect("open the first file");
    // Bytes are reported by sessions every 5 s and when they close; a broker restart is counted
    // by the master, which links to the new broker.
    let mut bob = daemon.login("bob");
    bob.send("/quit");
    bob.expect_closed();
    let status = wait_for_status(&daemon, "bob's bytes reported", |s| {
        s["bytes_received"].as_u64() >= Some(9) && s["bytes_sent"].as_u64() > Some(100)
    });
    assert!(status["bytes_sent"].as_u64() > status["bytes_received"].as_u64(), "{status}");
    let broker = daemon.broker_pid(1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(broker), Signal::SIGKILL).expect("kill");
    let status = wait_for_status(&daemon, "the restart counted", |s| {
        s["master"]["broker_restarts"] == 1 && s["broker_pid"] != broker
    });
    assert_eq!(status["master"]["child_crashes"], 0, "{status}");
    ok(daemon.chatctl(&output));
    let written = std::fs::read_to_string(&file).expect("written");
    assert!(written.contains("chatd_broker_restarts_total 1\n"), "{written}");
    let mut old_text = String::new();
    std::io::Read::read_to_string(&mut old_reader, &mut old_text).expect("read the first file");
    assert!(old_text.contains("chatd_broker_restarts_total 0\n"), "rewritten in place: {old_text}");
    let leftovers: Vec<_> = std::fs::read_dir(daemon.runtime.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_hand_edited_state_file_is_read_again_on_sighup() {
    let daemon = Daemon::start();
    let state = daemon.runtime.path().join("state/state.toml");
    std::fs::write(
        &state,
        "motd = \"Edited by hand.\"\n[[ban]]\ntarget = \"127.0.0.12\"\nsince = 1\nreason = \"by hand\"\n",
    )
    .expect("write state");
    // The master reads bans from the file at every accept; the broker on SIGHUP.
    let mut refused = Client::connect_from(daemon.port, [127, 0, 0, 12]);
    assert_eq!(refused.expect_closed(), ["*** You are banned from this server (by hand)."]);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("moderation state reloaded");
    assert_eq!(json(&daemon, &["bans"])[0]["reason"], "by hand");
    assert_eq!(ok(daemon.chatctl(&["motd"])), "Edited by hand.\n");

    // A damaged file is reported, the bans in force stay, and it is not overwritten.
    std::fs::write(&state, "[[ban]]\ntarget = \"not an address!\"\n").expect("damage state");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("is damaged");
    assert_eq!(json(&daemon, &["bans"])[0]["target"], "127.0.0.12");
    let said = fails(daemon.chatctl(&["ban", "127.0.0.13"]), 1);
    assert!(said.contains("not overwriting it"), "{said}");
    assert!(std::fs::read_to_string(&state).expect("read").contains("not an address!"));
}

#[test]
fn garbage_on_the_control_socket_is_logged_and_harms_nobody() {
    use std::io::{Read, Write};
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let path = daemon.runtime_dir().join("control.sock");
    let mut garbage = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    garbage.write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]).expect("write");
    let mut rest = Vec::new();
    garbage.read_to_end(&mut rest).expect("the broker closes the connection");
    assert!(rest.is_empty(), "no answer to garbage: {rest:?}");
    daemon.wait_for_log("operator connection from pid");
    let mut huge = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    huge.write_all(&[0xff, 0xff, 0xff, 0xff]).expect("write");
    daemon.wait_for_log("frame declares 4294967295 bytes");
    alice.send("still here");
    alice.expect("<alice> still here");
    ok(daemon.chatctl(&["status"]));
}

#[test]
fn away_users_show_in_who_for_the_room_and_for_operators() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send("/away lunch, back at 2");
    alice.expect("*** You are marked as away (lunch, back at 2). /back when you return.");
    bob.send("/who");
    bob.expect("*** In lobby (2): alice (away), bob");
    bob.send("/msg alice are you there?");
    bob.expect("-> *alice* are you there?");
    bob.expect("*** alice is away: lunch, back at 2");
    alice.expect("*bob* are you there?");
    let who = json(&daemon, &["who"]);
    assert_eq!(who[0]["away"], "lunch, back at 2", "{who}");
    assert!(ok(daemon.chatctl(&["who"])).contains("away: lunch, back at 2"));
    alice.send("/back");
    alice.expect("*** You are back.");
    assert_eq!(json(&daemon, &["who"])[0]["away"], Value::Null);
}
