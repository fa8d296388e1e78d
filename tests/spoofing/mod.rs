//! Nicknames and text that would pass for someone else (issue #13, points 6–8): lookalike
//! nicknames are refused beside the person they imitate, no stretch of a long line can start a
//! terminal row that reads as a server or another person's line, and invisible or piled-up
//! characters are cleaned before they reach anyone.

use crate::util::Daemon;

/// Names that pass for `alice` on screen, and how each does it.
const ALICE_LOOKALIKES: [(&str, &str); 8] = [
    ("\u{1D68A}\u{1D695}\u{1D692}\u{1D68C}\u{1D68E}", "mathematical monospace"),
    ("\u{1D5BA}\u{1D5C5}\u{1D5C2}\u{1D5BC}\u{1D5BE}", "mathematical sans-serif"),
    ("\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}", "fullwidth"),
    ("aIice", "capital I for l"),
    ("al\u{131}ce", "dotless i"),
    ("\u{1D00}lice", "small capital A"),
    ("\u{430}lice", "Cyrillic a"),
    ("AIice", "capital A and I"),
];

#[test]
fn nicknames_that_would_pass_for_someone_online_are_refused_whatever_their_script() {
    let daemon = Daemon::start();
    let mut alice = daemon.login("alice");
    let mut bob = daemon.login("bob");
    alice.expect("*** bob has joined lobby");
    let mut other = daemon.connect();
    other.expect_prefix("*** Please choose a nickname");
    for (nick, how) in ALICE_LOOKALIKES {
        other.send(nick);
        let answer = other.expect_prefix("*** The nickname ");
        assert_eq!(
            answer,
            format!(
                "*** The nickname {nick} looks too much like alice, who is here; please choose another"
            ),
            "{how}"
        );
    }
    other.send("b0b");
    other
        .expect("*** The nickname b0b looks too much like bob, who is here; please choose another");
    // Distinct names still work, beside their near neighbours.
    other.send("alicia");
    other.expect("*** You are now known as alicia. Type /help for commands.");
    let _xiaoming = daemon.login("\u{5C0F}\u{660E}");
    let _xiaoli = daemon.login("\u{5C0F}\u{674E}");
    let _bob2 = daemon.login("bob2");
    // Nobody impersonated alice: the room saw no join of a lookalike.
    alice.expect("*** alicia has joined lobby");
    bob.send("still here");
    let seen = alice.expect("<bob> still here");
    for (nick, how) in ALICE_LOOKALIKES {
        assert!(!seen.iter().any(|line| line.contains(nick)), "{how} got in: {seen:?}");
    }
    // A renamed member is held to the same rule.
    bob.send("/nick \u{1D00}lice");
    bob.expect("*** The nickname \u{1D00}lice looks too much like alice, who is here; please choose another");
}
