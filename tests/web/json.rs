//! What a browser is sent: one JSON object per message (session::web::json), checked field by
//! field against a telnet user's view of the same room.

use serde_json::Value;
use std::net::TcpStream;
use tungstenite::protocol::WebSocket;

use super::{WebDaemon, send};

/// Reads messages until one satisfies `wanted`; returns it parsed. Every message must be JSON.
fn until(socket: &mut WebSocket<TcpStream>, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let text = super::expect_message(socket, what, |text| {
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"));
        wanted(&value)
    });
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn line_with(kind: &'static str, text: &'static str) -> impl Fn(&Value) -> bool {
    move |m| {
        m["t"] == "line"
            && m["kind"] == kind
            && m["text"].as_str().is_some_and(|t| t.contains(text))
    }
}

#[test]
fn a_browser_gets_structured_lines_prompts_and_lists() {
    let web = WebDaemon::start("");
    let mut bob = crate::util::login(web.daemon.port, "bob");
    bob.send("before you came");
    bob.expect("<bob> before you came");

    let mut alice = web.websocket();
    let greeting = until(&mut alice, "the greeting", line_with("system", "Welcome to chatd"));
    assert!(greeting["text"].as_str().is_some_and(|t| t.starts_with("*** ")), "{greeting}");
    let prompt = until(&mut alice, "the nickname prompt", |m| m["t"] == "prompt");
    assert_eq!(prompt["secret"], false, "{prompt}");
    send(&mut alice, "alice");
    let you = until(&mut alice, "who alice is", |m| m["t"] == "you");
    assert_eq!((you["nick"].as_str(), you["room"].as_str()), (Some("alice"), Some("lobby")));
    assert_eq!((you["account"].as_bool(), you["admin"].as_bool()), (Some(false), Some(false)));
    let history = until(&mut alice, "the room's history", line_with("history", "before you came"));
    assert_eq!(history["nick"], "bob");
    assert!(history["at"].as_u64().is_some_and(|at| at > 1_700_000_000), "{history}");
    let members = until(&mut alice, "the member list", |m| m["t"] == "members");
    let nicks: Vec<&str> = members["members"]
        .as_array()
        .map(|list| list.iter().filter_map(|m| m["nick"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(nicks, ["alice", "bob"], "{members}");
    let rooms = until(&mut alice, "the room list", |m| m["t"] == "rooms");
    assert_eq!(rooms["rooms"][0]["name"], "lobby", "{rooms}");
    assert_eq!(rooms["rooms"][0]["members"], 2, "{rooms}");

    bob.send("hello alice");
    let chat = until(&mut alice, "bob's line", line_with("chat", "hello alice"));
    assert_eq!((chat["nick"].as_str(), chat["action"].as_bool()), (Some("bob"), Some(false)));
    assert_eq!(chat["mention"], true, "a line that names alice rings: {chat}");
    bob.send("/me waves");
    let action = until(&mut alice, "bob's action", line_with("chat", "waves"));
    assert_eq!(action["action"], true, "{action}");
    bob.send("/msg alice psst");
    let private = until(&mut alice, "bob's private line", line_with("private", "psst"));
    assert_eq!(private["nick"], "bob", "{private}");
    send(&mut alice, "/msg bob hi back");
    let sent = until(&mut alice, "alice's private line", line_with("sent", "hi back"));
    assert_eq!(sent["nick"], "bob", "{sent}");
    bob.expect("*alice* hi back");

    // A /who typed is shown as text too, after its structure.
    send(&mut alice, "/who");
    until(&mut alice, "the typed /who's list", |m| m["t"] == "members");
    until(&mut alice, "the typed /who's line", line_with("system", "In lobby (2)"));

    bob.send("/nick robert");
    let renamed = until(&mut alice, "the rename", |m| m["t"] == "renamed");
    assert_eq!((renamed["old"].as_str(), renamed["new"].as_str()), (Some("bob"), Some("robert")));
    until(&mut alice, "the rename's line", line_with("system", "bob is now known as robert"));
    bob.send("/quit");
    let left = until(&mut alice, "robert leaving", |m| m["t"] == "left");
    assert_eq!(left["nick"], "robert", "{left}");
}

#[test]
fn the_password_prompt_is_secret_and_admin_answers_are_json() {
    let web = WebDaemon::start(crate::accounts::FAST);
    let mut alice = web.websocket();
    super::login(&mut alice, "alice");
    send(&mut alice, "/register");
    let secret = until(&mut alice, "a secret prompt", |m| m["t"] == "prompt");
    assert_eq!(secret["secret"], true, "{secret}");
    send(&mut alice, crate::accounts::PASSWORD);
    let again = until(&mut alice, "the second secret prompt", |m| m["t"] == "prompt");
    assert_eq!(again["secret"], true, "{again}");
    send(&mut alice, crate::accounts::PASSWORD);
    let you =
        until(&mut alice, "alice with her account", |m| m["t"] == "you" && m["account"] == true);
    assert_eq!(you["admin"], false, "{you}");

    send(&mut alice, "/admin who");
    let denied = until(&mut alice, "the refusal", |m| m["t"] == "admin");
    assert_eq!(denied["reply"]["Denied"], "this account is not an administrator", "{denied}");
    let output = web.daemon.chatctl(&["accounts", "grant", "alice", "admin"]);
    assert!(output.status.success(), "{output:?}");
    send(&mut alice, "/admin who");
    let users = until(&mut alice, "the who-list", |m| m["t"] == "admin");
    let rows = users["reply"]["Users"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{users}");
    assert_eq!(rows[0]["nick"], "alice");
    assert_eq!(rows[0]["registered"], true, "logged in to her account: {users}");
    assert!(rows[0]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{users}");
    send(&mut alice, "/admin status");
    let status = until(&mut alice, "the figures", |m| m["t"] == "admin");
    assert!(status["reply"]["Status"]["master"]["pid"].as_u64().is_some(), "{status}");

    // Closing says why, before the connection ends.
    send(&mut alice, "/quit bye");
    let closed = until(&mut alice, "the goodbye", |m| m["t"] == "closed");
    assert!(closed["reason"].is_string(), "{closed}");
}

/// The ids of a `missed` answer's lines, and their texts.
fn missed_lines(answer: &Value) -> (Vec<String>, Vec<String>) {
    let lines = answer["lines"].as_array().cloned().unwrap_or_default();
    let field = |name: &str| -> Vec<String> {
        lines.iter().map(|line| line[name].as_str().unwrap_or_default().to_string()).collect()
    };
    (field("id"), field("text"))
}

/// What the page asks after a reconnect (`/missed ID`): the lines said after ID, from memory
/// while the room still holds ID, from the store after that, in pages of at most 200; an ID
/// the room does not know is answered `found: false` with the room's last lines. A terminal
/// has no such command.
#[test]
fn the_lines_said_after_a_line_come_in_pages_from_memory_and_then_the_store() {
    let web = WebDaemon::start("flood_burst = 300\n");
    let mut bob = crate::util::login(web.daemon.port, "bob");
    let mut alice = web.websocket();
    super::login(&mut alice, "alice");
    bob.send("first");
    let first = until(&mut alice, "bob's first line", line_with("chat", "first"));
    let first_id = first["id"].as_str().expect("a room line has an id").to_string();
    let (sender, seq) = first_id.split_once('.').expect("SENDER.SEQ");
    assert!(sender.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(), "{first}");

    // Nothing said since: the line is in memory, and nothing follows it.
    send(&mut alice, &format!("/missed {first_id}"));
    let nothing = until(&mut alice, "the answer", |m| m["t"] == "missed");
    assert_eq!((nothing["found"].as_bool(), nothing["more"].as_bool()), (Some(true), Some(false)));
    assert_eq!(missed_lines(&nothing).0.len(), 0, "{nothing}");

    // 250 lines: the room keeps the last 20 in memory, the store has them all.
    for n in 1..=250 {
        bob.send(&format!("line {n}"));
    }
    bob.expect("<bob> line 250");
    until(&mut alice, "the last line live", line_with("chat", "line 250"));
    send(&mut alice, &format!("/missed {first_id}"));
    let page = until(&mut alice, "the first page", |m| m["t"] == "missed");
    assert_eq!((page["found"].as_bool(), page["more"].as_bool()), (Some(true), Some(true)));
    let (ids, texts) = missed_lines(&page);
    let expected: Vec<String> = (1..=200).map(|n| format!("line {n}")).collect();
    assert_eq!(texts, expected, "oldest first, from the store");
    send(&mut alice, &format!("/missed {}", ids[199]));
    let rest = until(&mut alice, "the second page", |m| m["t"] == "missed");
    assert_eq!((rest["found"].as_bool(), rest["more"].as_bool()), (Some(true), Some(false)));
    let expected: Vec<String> = (201..=250).map(|n| format!("line {n}")).collect();
    assert_eq!(missed_lines(&rest).1, expected, "{rest}");
    // From memory: line 240 is among the last 20.
    let (ids, _) = missed_lines(&rest);
    send(&mut alice, &format!("/missed {}", ids[39]));
    let tail = until(&mut alice, "the tail", |m| m["t"] == "missed");
    let expected: Vec<String> = (241..=250).map(|n| format!("line {n}")).collect();
    assert_eq!(missed_lines(&tail).1, expected, "{tail}");

    // An id nobody said: not found, and what a newcomer is shown comes instead.
    send(&mut alice, "/missed 1.1");
    let unknown = until(&mut alice, "the unknown line's answer", |m| m["t"] == "missed");
    assert_eq!((unknown["found"].as_bool(), unknown["more"].as_bool()), (Some(false), Some(false)));
    let expected: Vec<String> = (231..=250).map(|n| format!("line {n}")).collect();
    assert_eq!(missed_lines(&unknown).1, expected, "{unknown}");

    bob.send(&format!("/missed {first_id}"));
    bob.expect("*** Unknown command /missed; try /help");
}
