//! `/search`: every word must be there, case and accents ignored, a CJK word found inside a
//! longer run of characters, only this room's lines, newest first, at most 20, shown as
//! dated system output. The scenario takes the store it runs on.

use super::{Backend, Found, search, start, wait_stored};
use crate::reliability::NO_FLOOD_CONTROL;

pub fn search_finds_words_in_any_script(backend: &Backend) {
    let daemon = start(backend, NO_FLOOD_CONTROL);
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    bob.send("/join dev");
    bob.expect("*** bob has joined dev");
    bob.send("Café in dev too");
    bob.expect("<bob> Café in dev too");
    let lobby = [
        "Café au lait at noon",
        "你好世界",
        "世上有界限",
        "the CAFE is closed",
        "tea and cake",
        "green tea only",
    ];
    let mut texts: Vec<String> = lobby.iter().map(|text| text.to_string()).collect();
    texts.extend((1..=25).map(|n| format!("cup number {n}")));
    let said: String = texts.iter().map(|text| format!("{text}\r\n")).collect();
    alice.send_raw(said.as_bytes());
    alice.expect("<alice> cup number 25");
    wait_stored(&daemon, "lobby", "cup number 25");
    wait_stored(&daemon, "dev", "Café in dev too");

    let found = |lines: &[&str], count: usize| {
        Found::Lines(count, lines.iter().map(|text| format!("<alice> {text}")).collect())
    };
    let cafes = ["the CAFE is closed", "Café au lait at noon"];
    assert_eq!(search(&mut alice, "lobby", "cafe"), found(&cafes, 2));
    assert_eq!(search(&mut alice, "lobby", "CAFÉ"), found(&cafes, 2));
    // A CJK word inside a run of characters; its characters apart or in another order do not
    // make it.
    assert_eq!(search(&mut alice, "lobby", "世界"), found(&["你好世界"], 1));
    assert_eq!(search(&mut alice, "lobby", "界世"), Found::Nothing);
    // Every word is needed, in any order.
    assert_eq!(search(&mut alice, "lobby", "cake Tea"), found(&["tea and cake"], 1));
    assert_eq!(search(&mut alice, "lobby", "tea"), found(&["green tea only", "tea and cake"], 2));
    assert_eq!(search(&mut alice, "lobby", "coffee"), Found::Nothing);
    // At most 20, the newest first.
    match search(&mut alice, "lobby", "cup") {
        Found::Lines(_, lines) => {
            let newest: Vec<String> =
                (6..=25).rev().map(|n| format!("<alice> cup number {n}")).collect();
            assert_eq!(lines, newest);
        }
        other => panic!("/search cup gave {other:?}"),
    }
    // Each room finds its own lines only.
    assert_eq!(
        search(&mut bob, "dev", "café"),
        Found::Lines(1, vec!["<bob> Café in dev too".into()])
    );
    assert_eq!(search(&mut bob, "dev", "noon"), Found::Nothing);
}

#[test]
fn sqlite_search_finds_words_in_any_script() {
    search_finds_words_in_any_script(&Backend::Sqlite);
}
