//! Cleaning user-supplied text before it reaches anyone's terminal.
//!
//! Owns one rule: text that came from a user (chat lines, topics, quit reasons) carries no
//! control characters. Removing every C0 and C1 control (tab becomes a space) and DEL means no
//! escape sequence can start, no carriage return can overwrite a line, and no line break can
//! make a user's text begin a fresh line that looks like a system message or another `<nick>`.
//! Bidirectional overrides and isolates are removed too: they can visually reorder a line.
//! Used on input by the session and again on output, so a misbehaving peer cannot skip it.

/// Longest line a user may send, in bytes, not counting the line end.
pub const MAX_LINE_BYTES: usize = 512;

/// Longest quit reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 128;

/// Characters that reorder text visually (U+202A–U+202E, U+2066–U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Returns `text` without control characters; tabs become spaces.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() || is_bidi_control(c) => None,
            c => Some(c),
        })
        .collect()
}

/// True when `text` has nothing that [`sanitize`] would remove or change.
pub fn is_clean(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || is_bidi_control(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn removes_escape_carriage_return_and_bidi() {
        assert_eq!(sanitize("a\x1b[31mred\x1b[0m"), "a[31mred[0m");
        assert_eq!(sanitize("fake\r*** alice has left"), "fake*** alice has left");
        assert_eq!(sanitize("x\u{202E}txet"), "xtxet");
        assert_eq!(sanitize("tab\there"), "tab here");
        assert_eq!(sanitize("c1\u{9b}31m"), "c131m");
    }

    proptest! {
        #[test]
        fn sanitized_text_has_no_controls(text in any::<String>()) {
            let clean = sanitize(&text);
            prop_assert!(is_clean(&clean));
            prop_assert!(!clean.contains('\x1b'));
        }
    }
}
