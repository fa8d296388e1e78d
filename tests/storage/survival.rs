//! What was said survives a restart of the whole daemon (every line echoed before a SIGTERM,
//! the topics, rooms entered after it), what entering a room the store is still loading
//! shows, and `/history` paging back. Each scenario takes the store it runs on; the SQLite
//! tests are here, the PostgreSQL ones in `postgres.rs`.

use super::{
    Backend, Page, arrive, enter, history, history_answer, numbers, restart, say, start, stored,
    wait_stored,
};
use crate::reliability::NO_FLOOD_CONTROL;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Lines, an action and a topic; the whole daemon stopped and started again on the same
/// state, twice; each time a newcomer sees the topic and every line once, in order.
pub fn lines_and_topic_survive_restarts(backend: &Backend) {
    let daemon = start(backend, "");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    alice.send("/topic Tea at five");
    alice.expect("*** alice set the topic of lobby to: Tea at five");
    say(&mut alice, "alice", "first line");
    say(&mut alice, "alice", "/me pours the tea");
    say(&mut bob, "bob", "Grüße from bob");
    bob.send("/join dev");
    bob.expect("*** bob has joined dev");
    bob.send("/topic Dev talk");
    bob.expect("*** bob set the topic of dev to: Dev talk");
    say(&mut bob, "bob", "only in dev");
    drop((alice, bob));

    let daemon = restart(daemon);
    let lobby = ["<alice> first line", "* alice pours the tea", "<bob> Grüße from bob"];
    let mut carol = arrive(&daemon, "carol");
    assert_eq!(
        carol.topic,
        "*** Topic for lobby: Tea at five",
        "log:\n{}",
        daemon.log().join("\n")
    );
    assert_eq!(carol.history, lobby, "log:\n{}", daemon.log().join("\n"));
    assert_eq!(history(&mut carol.client, "lobby", "/history"), Page::Lines(lines(&lobby)));

    // Lines said after a restart join the ones from before it; a second restart neither loses
    // nor repeats any.
    say(&mut carol.client, "carol", "after the restart");
    wait_stored(&daemon, "lobby", "after the restart");
    drop(carol);
    let daemon = restart(daemon);
    let dave = arrive(&daemon, "dave");
    assert_eq!(dave.topic, "*** Topic for lobby: Tea at five");
    let mut all = lines(&lobby);
    all.push("<carol> after the restart".into());
    assert_eq!(dave.history, all);
    let texts = ["first line", "pours the tea", "Grüße from bob", "after the restart"];
    assert_eq!(stored(&daemon, "lobby"), lines(&texts));

    // A room first entered after the restart has its topic and lines too, not only lobby.
    let mut dave = dave.client;
    assert_eq!(history(&mut dave, "lobby", "/history"), Page::Lines(all));
    let dev = lines(&["<bob> only in dev"]);
    assert_eq!(history(&mut dave, "lobby", "/history"), Page::NoEarlier);
    let shown = enter(&mut dave, "dave", "dev");
    assert_eq!(shown, ("*** Topic for dev: Dev talk".to_string(), dev.clone()));
    assert_eq!(history(&mut dave, "dev", "/history"), Page::Lines(dev));
}

fn lines(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|text| text.to_string()).collect()
}

/// A writer under load, and the daemon stopped (SIGTERM) as soon as the last line is echoed:
/// every line its sender saw echoed is stored, once, in order; a newcomer after the restart
/// sees the last `history_lines` of them.
pub fn every_echoed_line_survives_a_stop(backend: &Backend) {
    let daemon = start(backend, &format!("history_lines = 5\n{NO_FLOOD_CONTROL}"));
    let mut alice = daemon.login("alice");
    let said: String = (1..=2000).map(|n| format!("n {n}\r\n")).collect();
    alice.send_raw(said.as_bytes());
    alice.expect("<alice> n 2000");
    drop(alice);
    let daemon = restart(daemon);
    let held = numbers(&stored(&daemon, "lobby"));
    assert!(held.iter().copied().eq(1..=2000), "{} lines, the last {:?}", held.len(), held.last());
    let newest: Vec<String> = (1996..=2000).map(|n| format!("<alice> n {n}")).collect();
    assert_eq!(arrive(&daemon, "carol").history, newest);
}

/// Entering a room the store is still loading and talking at once (pasted lines): the room's
/// topic notice comes once, what the newcomer said after entering is never shown back to it
/// as history "before you came", and `/history` right after a line includes it.
pub fn talking_while_a_room_loads(backend: &Backend) {
    let daemon = start(backend, "");
    let mut bob = arrive(&daemon, "bob").client;
    let entered_at = bob.seen.len();
    bob.send_raw(b"/join dev\r\nhello dev\r\n/topic Dev talk\r\n/history\r\n");
    bob.expect("*** bob set the topic of dev to: Dev talk");
    let paged = history_answer(&mut bob, "dev");
    // The topic notice comes once, whenever the store answers (before or after the page):
    // once it has, `/who` marks the end of what entering shows.
    let is_topic = |line: &String| {
        line.starts_with("*** Topic for dev") || line.starts_with("*** No topic is set for dev")
    };
    while !bob.seen[entered_at..].iter().any(is_topic) {
        bob.next_line();
    }
    bob.send("/who");
    bob.expect_prefix("*** In dev (");
    let since = &bob.seen[entered_at..];
    assert_eq!(
        since.iter().filter(|line| is_topic(line)).count(),
        1,
        "one topic notice: {since:?}"
    );
    // Bob's own line is never shown back to him as what was said before he came.
    let history_blocks: Vec<&String> = since
        .iter()
        .skip_while(|line| !line.starts_with("*** Last "))
        .take_while(|line| *line != "*** End of history.")
        .collect();
    assert!(
        !history_blocks.iter().any(|line| line.ends_with("<bob> hello dev")),
        "bob's own line came back as history before he came: {since:?}"
    );
    assert_eq!(paged, Page::Lines(lines(&["<bob> hello dev"])), "{:?}", bob.seen);
}

/// 45 lines; `/history 20` three times gives 20, 20 and 5 ever older lines, each page oldest
/// first; then `No earlier lines`, after which `/history` starts again from the newest. A
/// count outside 1..=200 is refused.
pub fn history_pages_back_through_the_room(backend: &Backend) {
    let daemon = start(backend, NO_FLOOD_CONTROL);
    let mut alice = daemon.login("alice");
    let said: String = (1..=45).map(|n| format!("line {n}\r\n")).collect();
    alice.send_raw(said.as_bytes());
    alice.expect("<alice> line 45");
    wait_stored(&daemon, "lobby", "line 45");
    for refused in ["/history 0", "/history 201"] {
        match history(&mut alice, "lobby", refused) {
            Page::Refused(line) => assert!(line.contains("1 to 200"), "{refused}: {line}"),
            other => panic!("{refused} gave {other:?}"),
        }
    }
    let page = |numbers: std::ops::RangeInclusive<u32>| {
        Page::Lines(numbers.map(|n| format!("<alice> line {n}")).collect())
    };
    assert_eq!(history(&mut alice, "lobby", "/history 20"), page(26..=45));
    assert_eq!(history(&mut alice, "lobby", "/history 20"), page(6..=25));
    assert_eq!(history(&mut alice, "lobby", "/history 20"), page(1..=5));
    assert_eq!(history(&mut alice, "lobby", "/history 20"), Page::NoEarlier);
    // The default is 20; after the oldest page, paging starts again from the newest.
    assert_eq!(history(&mut alice, "lobby", "/history"), page(26..=45));
    assert_eq!(history(&mut alice, "lobby", "/history 200"), page(1..=25));
}

/// The broker killed -9 after lines were stored: the sessions send their last lines again
/// to the new broker (nothing is lost), and yet a newcomer's history, `/history` and the
/// store each hold every line once, in order, with the lines said after the restart.
pub fn lines_sent_again_after_a_broker_restart_are_kept_once(backend: &Backend) {
    let daemon = start(backend, "");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    for n in 1..=5 {
        say(&mut alice, "alice", &format!("n {n}"));
    }
    wait_stored(&daemon, "lobby", "n 5");
    kill(Pid::from_raw(daemon.broker_pid(1)), Signal::SIGKILL).expect("kill the broker");
    daemon.broker_pid(2);
    for client in [&mut alice, &mut bob] {
        client.expect("*** The chat service restarted; you are still in lobby.");
    }
    // The lines sent again come before this one on alice's connection.
    say(&mut alice, "alice", "n 6");
    bob.expect("<alice> n 6");
    wait_stored(&daemon, "lobby", "n 6");
    let mut carol = arrive(&daemon, "carol");
    let shown: Vec<String> = (1..=6).map(|n| format!("<alice> n {n}")).collect();
    assert_eq!(carol.history, shown, "log:\n{}", daemon.log().join("\n"));
    assert_eq!(history(&mut carol.client, "lobby", "/history"), Page::Lines(shown));
    assert_eq!(numbers(&stored(&daemon, "lobby")), [1, 2, 3, 4, 5, 6]);
    let bob_saw = bob.seen.iter().filter(|line| line.starts_with("<alice> n ")).count();
    assert_eq!(bob_saw, 6, "bob saw a line twice or missed one: {:?}", bob.seen);
}

#[test]
fn sqlite_lines_sent_again_after_a_broker_restart_are_kept_once() {
    lines_sent_again_after_a_broker_restart_are_kept_once(&Backend::Sqlite);
}

#[test]
fn sqlite_lines_and_topic_survive_restarts() {
    lines_and_topic_survive_restarts(&Backend::Sqlite);
}

#[test]
fn sqlite_every_echoed_line_survives_a_stop() {
    every_echoed_line_survives_a_stop(&Backend::Sqlite);
}

#[test]
fn sqlite_talking_while_a_room_loads() {
    talking_while_a_room_loads(&Backend::Sqlite);
}

#[test]
fn sqlite_history_pages_back_through_the_room() {
    history_pages_back_through_the_room(&Backend::Sqlite);
}
