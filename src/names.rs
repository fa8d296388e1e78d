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
//! Unicode case folds are ([`fold`]), and one is refused as a lookalike of another when both
//! look the same ([`lookalike_key`], Unicode's confusable skeletons) and one of them mixes
//! scripts or they are written in different scripts (Cyrillic `аlice` beside Latin `alice`).

use unicode_normalization::UnicodeNormalization;
use unicode_security::MixedScript;
use unicode_security::mixed_script::AugmentedScriptSet;
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

/// Whether two nicknames are the same one ([`fold`] equal), without allocating for ASCII names:
/// sessions ask this for every line they receive.
pub fn same(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() { a.eq_ignore_ascii_case(b) } else { fold(a) == fold(b) }
}

/// Whether `text` names `nick` (in any case), for the bell.
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

/// What a nickname looks like, for [`is_lookalike`]: the confusable skeleton of its case fold.
pub fn lookalike_key(nick: &str) -> String {
    unicode_security::skeleton(&fold(nick)).collect()
}

/// Whether `new` would pass for `existing` (a different nickname) on screen: they look the
/// same, and either one mixes scripts or they are written in different scripts. Lookalikes
/// within one script (`rn` and `m`) are left alone: they are ordinary names.
pub fn is_lookalike(new: &str, existing: &str) -> bool {
    if fold(new) == fold(existing) || lookalike_key(new) != lookalike_key(existing) {
        return false;
    }
    let mut shared = AugmentedScriptSet::for_str(new);
    shared.intersect_with(AugmentedScriptSet::for_str(existing));
    !new.is_single_script() || !existing.is_single_script() || shared.is_empty()
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
    caseless::default_case_fold_str(&name.nfc().collect::<String>()).nfc().collect()
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

    #[test]
    fn mixed_script_lookalikes_are_caught() {
        // Cyrillic а (U+0430) in an otherwise Latin name.
        assert!(is_lookalike("\u{430}lice", "alice"));
        // All Cyrillic against all Latin.
        assert!(is_lookalike("\u{440}\u{430}\u{443}", "pay"));
        // Same script, same look: ordinary names.
        assert!(!is_lookalike("bum", "burn"));
        assert!(!is_lookalike("Alice", "alice"), "the same nickname is not a lookalike");
        assert!(!is_lookalike("bob", "alice"));
    }
}
