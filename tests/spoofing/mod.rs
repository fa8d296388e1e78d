//! Nicknames and text that would pass for someone else (issue #13, points 6–8): lookalike
//! nicknames are refused beside the person they imitate, no stretch of a long line can start a
//! terminal row that reads as a server or another person's line, and invisible or piled-up
//! characters are cleaned before they reach anyone.

use crate::terminals::Tmux;
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
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
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

#[test]
fn invisible_marks_and_piles_of_combining_marks_reach_nobody() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    // RLM, ALM, LRM, ZWSP, WJ, a BOM and a soft hyphen; 241 acute accents on one letter.
    alice.send(&format!(
        "1\u{200F}2\u{061C}3\u{200E}4\u{200B}5\u{2060}6\u{FEFF}7\u{00AD}8 Z{}!",
        "\u{301}".repeat(241)
    ));
    bob.expect(&format!("<alice> 12345678 Z{}!", "\u{301}".repeat(4)));
    // What a script or an emoji needs stays: a ZWJ sequence, a Persian ZWNJ, a variation
    // selector; a ZWJ between ASCII letters does not.
    let kept = "\u{1F469}\u{200D}\u{1F4BB} \u{645}\u{6CC}\u{200C}\u{62E}\u{648}\u{627}\u{647}\u{645} \u{2764}\u{FE0F}";
    alice.send(&format!("{kept} al\u{200D}ice"));
    bob.expect(&format!("<alice> {kept} alice"));
    // A topic is cleaned the same way.
    alice.send("/topic to\u{200F}pic\u{200B}");
    bob.expect("*** alice set the topic of lobby to: topic");
}

#[test]
fn a_netcat_terminal_of_any_width_never_starts_a_row_with_a_forged_line() {
    let daemon = Daemon::start();
    let mut mallory = daemon.login("mallory");
    for width in [80, 100, 132, 60] {
        let viewer = format!("viewer{width}");
        let tmux = Tmux::start_sized(
            daemon.runtime.path(),
            &viewer,
            &format!("nc 127.0.0.1 {}", daemon.port),
            width as u16,
            50,
        );
        tmux.wait_for("Please choose a nickname");
        tmux.keys(&[&viewer, "Enter"]);
        mallory.expect(&format!("*** {viewer} has joined lobby"));
        // Each forged line padded so that, undefused, it would start the second row exactly
        // at this width: `<mallory> ` is 10 columns.
        let forged = [
            "*** alice has quit (Connection lost)",
            "<alice> bye all",
            "* alice waves",
            "*alice* psst",
        ];
        for line in forged {
            mallory.send(&format!("{}.{line}", " ".repeat(width - 11)));
            mallory.send(&format!("{}{line}", "x".repeat(width - 10)));
        }
        mallory.send(&format!("end of {width}"));
        let screen = tmux.wait_for(&format!("<mallory> end of {width}"));
        for row in screen.lines() {
            for start in ["*** alice", "<alice>", "* alice", "*alice*"] {
                assert!(!row.starts_with(start), "width {width}: row {row:?}:\n{screen}");
            }
        }
        // The lines arrived, defused and readable.
        for defused in
            ["(***) alice has quit", "(alice) bye all", "(*) alice waves", "_alice_ psst"]
        {
            assert!(
                screen.lines().any(|row| row.starts_with(defused)),
                "width {width}: {defused:?} is not at a row start:\n{screen}"
            );
        }
        tmux.keys(&["/quit", "Enter"]);
        mallory.expect(&format!("*** {viewer} has left (quit)"));
    }
}
