//! What a valid nickname and room name look like, and when two of them are the same.
//!
//! Shared by the session (to answer a typo at once) and the broker (which decides, and must not
//! trust a session's check). Pure functions, no I/O.
//!
//! Nicknames may use letters and digits of any script (`小明` is a nickname) plus `_-[]{}|^`\`.
//! A nickname is kept in Unicode normal form C, with escape sequences, controls and invisible
//! characters (zero-width spaces and joiners, soft hyphens, Hangul fillers) removed by
//! [`normalize_nick`]; it is at most [`MAX_NICK_CHARS`] characters and [`MAX_NICK_COLUMNS`]
//! terminal columns wide (a CJK character takes two). Two nicknames are the same when their
//! Unicode case folds are ([`fold`]), and one would pass for the other when they look the same
//! on screen ([`lookalike_key`]: Unicode's UTS #39 confusable skeleton of the compatibility-
//! normalised, case-folded name), whatever their scripts: Cyrillic `аlice`, `𝚊𝚕𝚒𝚌𝚎`, `ａｌｉｃｅ`,
//! `aIice`, `alıce`, `ᴀlice` all pass for `alice`. The broker refuses both kinds against
//! everyone online (`broker::room`, which indexes members by both keys).

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_width::UnicodeWidthStr;

use crate::text;

/// Longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 24;
/// Widest nickname, in terminal columns.
pub const MAX_NICK_COLUMNS: usize = 24;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// The room everyone enters first; it exists even when empty.
pub const DEFAULT_ROOM: &str = "lobby";

const NICK_SPECIALS: &str = "_-[]{}|^`\\";

/// Characters that take no room on screen, so two nicknames differing only in them would look
/// the same: they are removed from nicknames.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

/// The form a typed nickname is registered in: cleaned of escape sequences and controls,
/// without invisible characters, trimmed, in normal form C.
pub fn normalize_nick(raw: &str) -> String {
    text::sanitize(raw)
        .chars()
        .filter(|&c| !is_invisible(c))
        .nfc()
        .collect::<String>()
        .trim()
        .to_string()
}

/// Checks a nickname (as [`normalize_nick`] returns it): 1–24 letters, digits and
/// `_-[]{}|^`\`, at most 24 columns wide, not starting with a digit or `-`. The error says why,
/// in words a user can act on.
pub fn check_nick(nick: &str) -> Result<(), String> {
    if nick.is_empty() {
        return Err("a nickname cannot be empty".into());
    }
    if nick.chars().count() > MAX_NICK_CHARS {
        return Err(format!("a nickname has at most {MAX_NICK_CHARS} characters"));
    }
    if let Some(bad) = nick.chars().find(|&c| !(c.is_alphanumeric() || NICK_SPECIALS.contains(c))) {
        return Err(format!(
            "{:?} is not allowed in a nickname (use letters, digits and {NICK_SPECIALS})",
            text::sanitize(&bad.to_string())
        ));
    }
    if nick.width() > MAX_NICK_COLUMNS {
        return Err(format!(
            "a nickname is at most {MAX_NICK_COLUMNS} columns wide (CJK characters take two)"
        ));
    }
    if nick.starts_with(|c: char| c.is_numeric() || c == '-') {
        return Err("a nickname cannot start with a digit or '-'".into());
    }
    if normalize_nick(nick) != nick {
        return Err("a nickname must be in Unicode normal form C".into());
    }
    Ok(())
}

/// Whether two nicknames are the same one ([`fold`] equal), without allocating: sessions ask
/// this for every line they receive, so the folds are compared as they are produced.
pub fn same(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() { a.eq_ignore_ascii_case(b) } else { folded(a).eq(folded(b)) }
}

/// Longest case fold of a nickname [`mentions`] looks for without allocating, in characters
/// (a valid nickname has at most 24 characters, and one folds to at most 3).
const MAX_FOLDED_NICK: usize = 96;

/// Whether `text` names `nick` (in any case), for the bell: whether [`fold`]`(text)` contains
/// `fold(nick)`. Asked for every line, so it does not allocate: the text's fold is searched as
/// it is produced, through a window as long as the nick's fold.
pub fn mentions(text: &str, nick: &str) -> bool {
    if nick.is_empty() {
        return false;
    }
    if nick.is_ascii() {
        let nick = nick.as_bytes();
        return text.as_bytes().windows(nick.len()).any(|w| w.eq_ignore_ascii_case(nick));
    }
    let mut wanted = ['\0'; MAX_FOLDED_NICK];
    let mut length = 0;
    for c in folded(nick) {
        let Some(slot) = wanted.get_mut(length) else {
            // Longer than any valid nickname: not worth a window on the stack.
            return fold(text).contains(&fold(nick));
        };
        *slot = c;
        length += 1;
    }
    let wanted = &wanted[..length];
    if wanted.is_empty() {
        return true;
    }
    // The last `length` characters of the folded text, as a ring: `seen % length` is where
    // the next one goes, so the oldest is there too.
    let mut window = ['\0'; MAX_FOLDED_NICK];
    let mut seen = 0;
    for c in folded(text) {
        window[seen % length] = c;
        seen += 1;
        if seen >= length
            && wanted.iter().enumerate().all(|(i, &w)| window[(seen + i) % length] == w)
        {
            return true;
        }
    }
    false
}

/// What a nickname looks like on screen, for [`is_lookalike`]: equal keys pass for each other.
///
/// The UTS #39 skeleton (`unicode_security::skeleton`, Unicode's confusables data) of the name
/// in compatibility form (NFKC: fullwidth and mathematical letters become plain ones), with Latin
/// small capitals read as their letters (`ᴀ` is `a`; the confusables data leaves them out). The
/// skeleton is taken of the name as written (so `I` passes for `l`, and `0` for `O`), then of
/// its case fold (so `O` and `o` are one), because a name is shown as written but unique in any
/// case. Consequences, on purpose: `b0b` passes for `bob`, `bum` for `burn` (`rn` looks like
/// `m`), `al1ce` for `allce`; `alicia`, `bob2`, `小明` and `小李` stay distinct.
pub fn lookalike_key(nick: &str) -> String {
    let plain: String = nick.nfkc().map(small_capital_as_letter).collect();
    let as_written: String = unicode_security::skeleton(&plain).collect();
    unicode_security::skeleton(&fold(&as_written)).collect()
}

/// Whether `nick`'s [`lookalike_key`] is one of `keys`, without allocating for a name of
/// ordinary length: the session asks this for every line while its user ignores someone.
pub fn lookalike_key_in(nick: &str, keys: &[String]) -> bool {
    if keys.is_empty() {
        return false;
    }
    // The steps of `lookalike_key`, each into a buffer on the stack.
    let mut plain = StackText::new();
    let mut as_written_folded = StackText::new();
    let mut key = StackText::new();
    let fits = plain.extend(nick.nfkc().map(small_capital_as_letter))
        && as_written_folded
            .extend(unicode_security::skeleton(plain.as_str()).nfc().default_case_fold().nfc())
        && key.extend(unicode_security::skeleton(as_written_folded.as_str()));
    if !fits {
        let key = lookalike_key(nick);
        return keys.contains(&key);
    }
    keys.iter().any(|k| k == key.as_str())
}

/// Text of at most [`StackText::CAPACITY`] bytes on the stack.
struct StackText {
    bytes: [u8; StackText::CAPACITY],
    len: usize,
}

impl StackText {
    /// Room for the longest nickname after compatibility normalisation, but for names built of
    /// the few characters that expand tenfold.
    const CAPACITY: usize = 384;

    fn new() -> StackText {
        StackText { bytes: [0; StackText::CAPACITY], len: 0 }
    }

    /// Appends `chars`; false (and the text unusable) if they do not fit.
    fn extend(&mut self, chars: impl Iterator<Item = char>) -> bool {
        for c in chars {
            let Some(room) = self.bytes.get_mut(self.len..self.len + c.len_utf8()) else {
                return false;
            };
            c.encode_utf8(room);
            self.len += c.len_utf8();
        }
        true
    }

    fn as_str(&self) -> &str {
        // Only whole characters are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// The lowercase letter a Latin small capital (`ᴀ`, `ʙ`, `ᴄ`, ...) passes for in a name.
fn small_capital_as_letter(c: char) -> char {
    match c {
        '\u{1D00}' => 'a',
        '\u{0299}' => 'b',
        '\u{1D04}' => 'c',
        '\u{1D05}' => 'd',
        '\u{1D07}' => 'e',
        '\u{A730}' => 'f',
        '\u{0262}' => 'g',
        '\u{029C}' => 'h',
        '\u{026A}' => 'i',
        '\u{1D0A}' => 'j',
        '\u{1D0B}' => 'k',
        '\u{029F}' => 'l',
        '\u{1D0D}' => 'm',
        '\u{0274}' => 'n',
        '\u{1D0F}' => 'o',
        '\u{1D18}' => 'p',
        '\u{A7AF}' => 'q',
        '\u{0280}' => 'r',
        '\u{A731}' => 's',
        '\u{1D1B}' => 't',
        '\u{1D1C}' => 'u',
        '\u{1D20}' => 'v',
        '\u{1D21}' => 'w',
        '\u{028F}' => 'y',
        '\u{1D22}' => 'z',
        c => c,
    }
}

/// Whether `new` would pass for `existing`, a different nickname ([`same`] is false), on
/// screen: their [`lookalike_key`]s are equal. Whatever the scripts: a name in mathematical or
/// fullwidth letters, or with `I` for `l`, is refused beside the name it imitates as surely as
/// a Cyrillic one.
pub fn is_lookalike(new: &str, existing: &str) -> bool {
    !same(new, existing) && lookalike_key(new) == lookalike_key(existing)
}

/// Whether `a` and `b` are one name for moderation: the same nickname ([`same`]) or one that
/// passes for the other ([`is_lookalike`]), so that a ban or mute of `alice` also holds for
/// `𝚊𝚕𝚒𝚌𝚎` and `аlice` when the person comes back under one of those.
pub fn passes_for(a: &str, b: &str) -> bool {
    same(a, b) || lookalike_key(a) == lookalike_key(b)
}

/// Checks a room name: 1–32 letters, digits, `_` and `-`. A leading `#` is not part of the name.
pub fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() {
        return Err("a room name cannot be empty".into());
    }
    if room.chars().count() > MAX_ROOM_CHARS {
        return Err(format!("a room name has at most {MAX_ROOM_CHARS} characters"));
    }
    if let Some(bad) = room.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(format!(
            "{bad:?} is not allowed in a room name (use letters, digits, _ and -)"
        ));
    }
    Ok(())
}

/// Drops the optional `#` users type in front of room names.
pub fn bare_room(room: &str) -> &str {
    room.strip_prefix('#').unwrap_or(room)
}

/// The key under which a nickname or room is unique: names differing only in case (by Unicode
/// case folding, after normal form C) are the same.
pub fn fold(name: &str) -> String {
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    folded(name).collect()
}

/// The characters of [`fold`]`(name)`, as they are produced (for an ASCII name too: its fold
/// is its lowercase). Allocates nothing for text with at most a few combining marks on a
/// character (normalisation buffers four on the stack; `text::sanitize` allows fewer).
pub fn folded(name: &str) -> impl Iterator<Item = char> + '_ {
    name.chars().nfc().default_case_fold().nfc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_irc_style_nicks() {
        for nick in
            ["alice", "Bob_2", "[away]", "x", "a-b", "{curly}|^`\\", "abcdefghijklmnopqrstuvwx"]
        {
            assert_eq!(check_nick(nick), Ok(()), "{nick}");
        }
    }

    #[test]
    fn refuses_bad_nicks_with_a_reason() {
        for nick in [
            "",
            "1abc",
            "-abc",
            "has space",
            "abcdefghijklmnopqrstuvwxy",
            "a*b",
            "<x>",
            "*x",
            "a\u{300}",
        ] {
            assert!(check_nick(nick).is_err(), "{nick}");
        }
    }

    #[test]
    fn room_names() {
        assert_eq!(check_room("rust-lang_2"), Ok(()));
        assert!(check_room("").is_err());
        assert!(check_room("a b").is_err());
        assert!(check_room(&"r".repeat(33)).is_err());
        assert_eq!(bare_room("#rust"), "rust");
    }

    #[test]
    fn folding_ignores_case() {
        assert_eq!(fold("Alice"), fold("aLICE"));
        assert_eq!(fold("STRASSE"), fold("straße"));
        assert_eq!(fold("ΣΊΣΥΦΟΣ"), fold("σίσυφος"));
        assert_eq!(fold("Ｍiku"), fold("ｍIKU"));
        assert_ne!(fold("小明"), fold("小红"));
    }

    #[test]
    fn same_nick_and_mentions() {
        assert!(same("Alice", "aLICE") && same("ΣΟΦΊΑ", "σοφία") && !same("alice", "alicia"));
        assert!(mentions("hi ALICE!", "alice") && mentions("你好小明", "小明"));
        assert!(!mentions("hi al", "alice") && !mentions("text", ""));
    }

    #[test]
    fn nicknames_of_any_script() {
        for nick in ["小明", "Grüße", "Даша", "ありがと", "김민수", "محمد", "José_2"]
        {
            assert_eq!(check_nick(nick), Ok(()), "{nick}");
        }
        // Twelve CJK characters fill 24 columns; a thirteenth does not fit.
        assert_eq!(check_nick(&"明".repeat(12)), Ok(()));
        let why = check_nick(&"明".repeat(13)).expect_err("13 CJK characters are 26 columns");
        assert!(why.contains("columns"), "{why}");
        assert!(check_nick("٣abc").is_err(), "starts with a digit of another script");
    }

    #[test]
    fn normalizing_composes_and_removes_what_cannot_be_seen() {
        assert_eq!(normalize_nick("Jose\u{301}"), "José");
        assert_eq!(normalize_nick("al\u{200B}ice\u{FEFF}"), "alice");
        assert_eq!(normalize_nick(" \x1b[31mbob\x1b[0m "), "bob");
        assert_eq!(normalize_nick("\u{3164}"), "");
        assert!(check_nick("Jose\u{301}").is_err(), "not in normal form C");
    }

    /// The names of issue #13.6, each beside `alice`.
    const ALICE_LOOKALIKES: [&str; 8] = [
        "\u{1D68A}\u{1D695}\u{1D692}\u{1D68C}\u{1D68E}", // 𝚊𝚕𝚒𝚌𝚎, mathematical monospace
        "\u{1D5BA}\u{1D5C5}\u{1D5C2}\u{1D5BC}\u{1D5BE}", // 𝖺𝗅𝗂𝖼𝖾, mathematical sans-serif
        "\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}",      // ａｌｉｃｅ, fullwidth
        "aIice",                                         // capital I for l
        "al\u{131}ce",                                   // dotless ı
        "\u{1D00}lice",                                  // small capital ᴀ
        "\u{430}lice",                                   // Cyrillic а
        "AIice",                                         // both at once
    ];

    #[test]
    fn lookalikes_of_alice_pass_for_alice_whatever_their_script() {
        for nick in ALICE_LOOKALIKES {
            assert_eq!(check_nick(nick), Ok(()), "{nick} is a valid nickname on its own");
            assert!(is_lookalike(nick, "alice"), "{nick} passes for alice");
            assert!(is_lookalike("alice", nick), "and alice for {nick}");
            assert_eq!(lookalike_key(nick), lookalike_key("alice"), "{nick}");
        }
    }

    #[test]
    fn mixed_script_lookalikes_are_caught() {
        // All Cyrillic against all Latin.
        assert!(is_lookalike("\u{440}\u{430}\u{443}", "pay"));
        // One script, one look: `rn` passes for `m`, and a zero for an O.
        assert!(is_lookalike("bum", "burn"));
        assert!(is_lookalike("b0b", "bob") && is_lookalike("B0B", "bob"));
    }

    #[test]
    fn distinct_names_stay_distinct() {
        assert!(!is_lookalike("Alice", "alice"), "the same nickname is not a lookalike");
        assert!(!is_lookalike("ALICE", "alice"), "the same nickname, in capitals");
        for (a, b) in [
            ("alice", "alicia"),
            ("alice", "bob"),
            ("\u{5C0F}\u{660E}", "\u{5C0F}\u{674E}"), // 小明, 小李
            ("bob", "bob2"),
            ("bob", "rob"),
            ("alice", "al1ce"),
            ("\u{3A3}\u{3BF}\u{3C6}\u{3AF}\u{3B1}", "\u{414}\u{430}\u{448}\u{430}"), // Σοφία, Даша
        ] {
            assert!(!is_lookalike(a, b), "{a} and {b} look different");
            assert_ne!(lookalike_key(a), lookalike_key(b), "{a} {b}");
        }
    }

    /// [`fold`], [`same`] and [`mentions`] as they were before they folded lazily: the oracle
    /// the allocation-free forms must agree with.
    mod before {
        use unicode_normalization::UnicodeNormalization;

        pub fn fold(name: &str) -> String {
            if name.is_ascii() {
                return name.to_ascii_lowercase();
            }
            caseless::default_case_fold_str(&name.nfc().collect::<String>()).nfc().collect()
        }

        pub fn same(a: &str, b: &str) -> bool {
            if a.is_ascii() && b.is_ascii() {
                a.eq_ignore_ascii_case(b)
            } else {
                fold(a) == fold(b)
            }
        }

        pub fn mentions(text: &str, nick: &str) -> bool {
            if nick.is_empty() {
                return false;
            }
            if nick.is_ascii() {
                let nick = nick.as_bytes();
                return text.as_bytes().windows(nick.len()).any(|w| w.eq_ignore_ascii_case(nick));
            }
            fold(text).contains(&fold(nick))
        }
    }

    /// Names whose folds are tricky: case, expansions (`ß`, `ﬁ`, `İ`), final sigma, Kelvin and
    /// Ångström signs, composed and decomposed accents, CJK, Greek with tonos and iota
    /// subscript, lookalikes of other scripts, emoji, combining marks.
    const TRICKY: [&str; 34] = [
        "alice",
        "Alice",
        "ALICE",
        "\u{430}lice",
        "\u{1D68A}\u{1D695}\u{1D692}\u{1D68C}\u{1D68E}",
        "\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}",
        "aIice",
        "stra\u{DF}e",
        "STRASSE",
        "ss",
        "\u{DF}",
        "S",
        "\u{FB01}le",
        "FILE",
        "\u{130}stanbul",
        "i\u{307}stanbul",
        "\u{212A}elvin",
        "kelvin",
        "\u{212B}",
        "\u{C5}",
        "Jos\u{E9}",
        "Jose\u{301}",
        "JOS\u{C9}",
        "\u{3A3}\u{38A}\u{3A3}\u{3A5}\u{3A6}\u{39F}\u{3A3}",
        "\u{3C3}\u{3AF}\u{3C3}\u{3C5}\u{3C6}\u{3BF}\u{3C2}",
        "\u{3C2}",
        "\u{1FBC}",
        "\u{3B1}\u{3B9}",
        "\u{5C0F}\u{660E}",
        "\u{4F60}\u{597D}\u{5C0F}\u{660E}\u{FF01}",
        "\u{5C0F}\u{674E}",
        "\u{1F44D}\u{1F3FD}",
        "a\u{301}\u{302}\u{303}\u{304}\u{305}b",
        "",
    ];

    #[test]
    fn lazy_folding_agrees_with_the_folded_strings() {
        for a in TRICKY {
            assert_eq!(fold(a), before::fold(a), "fold {a:?}");
            assert_eq!(folded(a).collect::<String>(), before::fold(a), "folded {a:?}");
            for b in TRICKY {
                assert_eq!(same(a, b), before::same(a, b), "same {a:?} {b:?}");
                for text in
                    [a.to_string(), format!("hi {a}!"), format!("{a}{b}"), format!("x{a} y{b}z")]
                {
                    assert_eq!(
                        mentions(&text, b),
                        before::mentions(&text, b),
                        "mentions {text:?} {b:?}"
                    );
                }
            }
        }
        // What the comparisons hinge on, spelled out.
        assert!(same("STRASSE", "stra\u{DF}e") && same("Jose\u{301}", "JOS\u{C9}"));
        // An ASCII nick is looked for byte by byte, as before (so not in `ß`'s fold).
        assert!(!mentions("ein gro\u{DF}er Stra\u{DF}enname", "STRASSE"));
        assert!(mentions("hallo STRASSE", "stra\u{DF}e"));
        assert!(mentions("\u{4F60}\u{597D}\u{5C0F}\u{660E}\u{FF01}", "\u{5C0F}\u{660E}"));
        assert!(!mentions("\u{4F60}\u{597D}\u{5C0F}\u{674E}", "\u{5C0F}\u{660E}"));
        assert!(!same("\u{430}lice", "alice"), "a lookalike is not the same nick");
    }

    proptest::proptest! {
        /// Over strings of the tricky characters, the lazy forms agree with the old ones.
        #[test]
        fn lazy_folding_agrees_on_any_mix_of_tricky_characters(
            a in proptest::collection::vec(proptest::sample::select(TRICKY_CHARS.to_vec()), 0..8),
            b in proptest::collection::vec(proptest::sample::select(TRICKY_CHARS.to_vec()), 0..4),
        ) {
            let (a, b): (String, String) = (a.into_iter().collect(), b.into_iter().collect());
            proptest::prop_assert_eq!(fold(&a), before::fold(&a));
            proptest::prop_assert_eq!(same(&a, &b), before::same(&a, &b));
            proptest::prop_assert_eq!(mentions(&a, &b), before::mentions(&a, &b));
            let keys = [lookalike_key(&b)];
            proptest::prop_assert_eq!(lookalike_key_in(&a, &keys), lookalike_key(&a) == keys[0]);
        }
    }

    const TRICKY_CHARS: [char; 24] = [
        'a', 'A', 's', 'S', 'k', '\u{DF}', '\u{1E9E}', '\u{212A}', '\u{FB01}', 'i', 'I', '\u{130}',
        '\u{131}', '\u{307}', '\u{301}', 'e', '\u{E9}', '\u{3A3}', '\u{3C3}', '\u{3C2}', '\u{345}',
        '\u{5C0F}', '\u{FF41}', '\u{430}',
    ];

    #[test]
    fn the_lookalike_key_on_the_stack_is_the_lookalike_key() {
        let keys: Vec<String> = ["alice", "bob", "\u{5C0F}\u{660E}"].map(lookalike_key).into();
        for nick in
            ALICE_LOOKALIKES.iter().chain(&TRICKY).chain(&["b0b", "B0B", "bob2", "\u{FDFA}"])
        {
            assert_eq!(
                lookalike_key_in(nick, &keys),
                keys.contains(&lookalike_key(nick)),
                "{nick:?}"
            );
        }
        assert!(ALICE_LOOKALIKES.iter().all(|nick| lookalike_key_in(nick, &keys)));
        assert!(lookalike_key_in("B0B", &keys) && !lookalike_key_in("bob2", &keys));
        assert!(!lookalike_key_in("alice", &[]));
        // Too long for the stack (U+FDFA expands to 18 characters): the same answer, computed
        // on the heap.
        let long = "\u{FDFA}".repeat(24);
        assert!(lookalike_key_in(&long, &[lookalike_key(&long)]));
    }
}
