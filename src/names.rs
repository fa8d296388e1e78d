//! What a valid nickname and room name look like, and when two of them are the same.
//!
//! Shared by the session (to answer a typo at once) and the broker (which decides, and must not
//! trust a session's check). Pure functions, no I/O.

/// Longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 24;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// The room everyone enters first; it exists even when empty.
pub const DEFAULT_ROOM: &str = "lobby";

const NICK_SPECIALS: &str = "_-[]{}|^`\\";

/// Checks a nickname: 1–24 letters, digits and `_-[]{}|^`\`, not starting with a digit or `-`.
/// The error says why, in words a user can act on.
pub fn check_nick(nick: &str) -> Result<(), String> {
    if nick.is_empty() {
        return Err("a nickname cannot be empty".into());
    }
    if nick.chars().count() > MAX_NICK_CHARS {
        return Err(format!("a nickname has at most {MAX_NICK_CHARS} characters"));
    }
    if let Some(bad) =
        nick.chars().find(|&c| !(c.is_ascii_alphanumeric() || NICK_SPECIALS.contains(c)))
    {
        return Err(format!(
            "{:?} is not allowed in a nickname (use letters, digits and {NICK_SPECIALS})",
            bad
        ));
    }
    if nick.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Err("a nickname cannot start with a digit or '-'".into());
    }
    Ok(())
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

/// The key under which a nickname or room is unique: names differing only in case are the same.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
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
        for nick in
            ["", "1abc", "-abc", "has space", "abcdefghijklmnopqrstuvwxy", "a*b", "<x>", "é"]
        {
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
    }
}
