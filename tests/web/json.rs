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
    assert!(rows[0]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{users}");
    send(&mut alice, "/admin status");
    let status = until(&mut alice, "the figures", |m| m["t"] == "admin");
    assert!(status["reply"]["Status"]["master"]["pid"].as_u64().is_some(), "{status}");

    // Closing says why, before the connection ends.
    send(&mut alice, "/quit bye");
    let closed = until(&mut alice, "the goodbye", |m| m["t"] == "closed");
    assert!(closed["reason"].is_string(), "{closed}");
}
