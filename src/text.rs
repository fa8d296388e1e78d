//! Cleaning user-supplied text before it reaches anyone's terminal.
//!
//! Owns one rule: text that came from a user (chat lines, topics, quit reasons, nicknames) can
//! neither drive a terminal nor pass for something the server said. [`sanitize`] removes every
//! escape sequence whole — CSI (`ESC [` or 8-bit `U+009B`, up to its final byte), the string
//! sequences OSC, DCS, SOS, PM and APC (up to BEL or ST), SS2/SS3 with the character they
//! shift, and two-character escapes — so that no printable remainder such as `[31m` is left
//! behind. It removes every other C0 and C1 control and DEL (tab becomes a space), the line and
//! paragraph separators, and the bidirectional overrides and isolates (U+202A–U+202E,
//! U+2066–U+2069), which could visually reorder a line. With no line break left, user text can
//! never begin a line of its own: it always follows the `<nick> ` the renderer puts first.
//!
//! Used on input by the session, by the broker, and again on output by the renderer, so a
//! misbehaving peer cannot skip it. Besides, how wide text is on a terminal ([`columns`]) and
//! how ages are worded ([`age`]). Pure functions, no I/O.

/// Longest line a user may send, in bytes, not counting the line end.
pub const MAX_LINE_BYTES: usize = 512;

/// Longest quit reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 128;

const ESC: char = '\u{1b}';
const BEL: char = '\u{07}';
/// 8-bit String Terminator.
const ST: char = '\u{9c}';

/// Characters that reorder text visually (U+202A–U+202E, U+2066–U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters no user text may contain: controls, line/paragraph separators, bidi controls.
fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c)
}

/// What the cleaner is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skipping {
    Nothing,
    /// After ESC: the next character says what kind of sequence this is.
    Escape,
    /// Inside an nF escape (`ESC (` …): intermediates until a final character.
    EscapeIntermediates,
    /// Inside CSI: parameters and intermediates until a final byte (0x40–0x7E).
    ControlSequence,
    /// Inside OSC/DCS/SOS/PM/APC: everything until BEL or ST.
    ControlString,
    /// ESC inside a control string: `\` ends it (ST).
    ControlStringEscape,
    /// After SS2/SS3: the one shifted character.
    SingleShift,
}

/// Returns `text` without escape sequences, control characters, separators or bidi controls;
/// tabs become spaces.
pub fn sanitize(text: &str) -> String {
    // Most lines have nothing to remove: one scan, then a copy.
    if is_clean(text) {
        return text.to_string();
    }
    let mut clean = String::with_capacity(text.len());
    let mut state = Skipping::Nothing;
    for c in text.chars() {
        state = match state {
            Skipping::Nothing => return_to_text(c, &mut clean),
            Skipping::Escape => match c {
                '[' => Skipping::ControlSequence,
                ']' | 'P' | 'X' | '^' | '_' => Skipping::ControlString,
                'N' | 'O' => Skipping::SingleShift,
                ' '..='/' => Skipping::EscapeIntermediates,
                ESC => Skipping::Escape,
                // A two-character escape (ESC 7, ESC c, ...): its final character goes too.
                '0'..='~' => Skipping::Nothing,
                // Not an escape sequence after all: the ESC alone is dropped and `c` is
                // looked at afresh (so are the characters that end the sequences below).
                c => return_to_text(c, &mut clean),
            },
            Skipping::EscapeIntermediates => match c {
                ' '..='/' => Skipping::EscapeIntermediates,
                '0'..='~' => Skipping::Nothing,
                c => return_to_text(c, &mut clean),
            },
            Skipping::ControlSequence => match c {
                ' '..='?' => Skipping::ControlSequence,
                '@'..='~' => Skipping::Nothing,
                // A terminal aborts a sequence on anything else; so do we.
                c => return_to_text(c, &mut clean),
            },
            Skipping::ControlString => match c {
                BEL | ST => Skipping::Nothing,
                ESC => Skipping::ControlStringEscape,
                _ => Skipping::ControlString,
            },
            Skipping::ControlStringEscape => match c {
                '\\' => Skipping::Nothing,
                ESC => Skipping::ControlStringEscape,
                _ => Skipping::ControlString,
            },
            Skipping::SingleShift if is_forbidden(c) => return_to_text(c, &mut clean),
            Skipping::SingleShift => Skipping::Nothing,
        };
    }
    clean
}

/// Handles `c` as text: it may start a sequence, be dropped, or be kept.
fn return_to_text(c: char, clean: &mut String) -> Skipping {
    match c {
        ESC => Skipping::Escape,
        '\u{9b}' => Skipping::ControlSequence,
        '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => Skipping::ControlString,
        '\u{8e}' | '\u{8f}' => Skipping::SingleShift,
        '\t' => {
            clean.push(' ');
            Skipping::Nothing
        }
        c if is_forbidden(c) => Skipping::Nothing,
        c => {
            clean.push(c);
            Skipping::Nothing
        }
    }
}

/// `1h 2m`-style ages, to the second below an hour: for chatctl's tables and for `/who`.
pub fn age(seconds: u64) -> String {
    let rounded = if seconds >= 3600 { seconds - seconds % 60 } else { seconds };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

/// How many terminal columns `text` takes (a CJK character takes two; controls none).
pub fn columns(text: &str) -> usize {
    use unicode_width::UnicodeWidthChar;
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// True when `text` has nothing that [`sanitize`] would remove or change (a tab is a control).
pub fn is_clean(text: &str) -> bool {
    !text.chars().any(is_forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_escape_sequences_are_removed() {
        // CSI with parameters, 7-bit and 8-bit.
        assert_eq!(sanitize("a\x1b[31mred\x1b[0m!"), "ared!");
        assert_eq!(sanitize("a\u{9b}1;31mred"), "ared");
        assert_eq!(sanitize("\x1b[2J\x1b[H\x1b[?25lhidden cursor"), "hidden cursor");
        // OSC ended by BEL and by ST (7-bit and 8-bit): a window title is not set.
        assert_eq!(sanitize("x\x1b]0;pwned\x07y"), "xy");
        assert_eq!(sanitize("x\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\y"), "xlinky");
        assert_eq!(sanitize("x\u{9d}0;pwned\u{9c}y"), "xy");
        // DCS, SOS, PM, APC.
        assert_eq!(sanitize("a\x1bPq#0;2;0;0;0\x1b\\b"), "ab");
        assert_eq!(sanitize("a\x1bXsos\x1b\\b\x1b^pm\x1b\\c\x1b_apc\x1b\\d"), "abcd");
        assert_eq!(sanitize("a\u{90}dcs\u{9c}b"), "ab");
        // SS2 / SS3 take one character with them.
        assert_eq!(sanitize("a\x1bNxb\x1bOyc\u{8e}zd"), "abcd");
        // Two-character and nF escapes.
        assert_eq!(sanitize("a\x1bcb\x1b7c\x1b(Bd\x1b#8e"), "abcde");
    }

    #[test]
    fn an_unterminated_string_sequence_hides_the_rest_as_a_terminal_would() {
        assert_eq!(sanitize("ok\x1b]0;never ends"), "ok");
    }

    #[test]
    fn an_aborted_sequence_keeps_the_text_after_it() {
        assert_eq!(sanitize("a\x1b[12\u{e9}t\u{e9}"), "a\u{e9}t\u{e9}");
        assert_eq!(sanitize("a\x1b\u{e9}"), "a\u{e9}");
    }

    #[test]
    fn controls_separators_and_bidi_are_removed() {
        assert_eq!(sanitize("fake\r*** alice has left"), "fake*** alice has left");
        assert_eq!(sanitize("a\nb\u{85}c\u{2028}d\u{2029}e"), "abcde");
        assert_eq!(sanitize("x\u{202E}txet\u{2066}y\u{2069}"), "xtxety");
        assert_eq!(sanitize("tab\there"), "tab here");
        assert_eq!(sanitize("bell\x07 del\x7f nul\0"), "bell del nul");
    }

    #[test]
    fn ordinary_text_of_any_script_is_kept() {
        for text in ["Hello, all", "你好，世界", "Grüße", "😀 ok", "[31m as typed"] {
            assert_eq!(sanitize(text), text);
        }
    }

    proptest! {
        #[test]
        fn sanitized_text_has_no_controls(text in any::<String>()) {
            let clean = sanitize(&text);
            prop_assert!(is_clean(&clean));
            prop_assert!(!clean.chars().any(|c| c.is_control()));
        }

        #[test]
        fn sanitized_bytes_of_any_kind_have_no_controls(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(is_clean(&sanitize(&text)));
        }

        #[test]
        fn sanitizing_twice_changes_nothing(text in any::<String>()) {
            let once = sanitize(&text);
            prop_assert_eq!(sanitize(&once), once.clone());
        }

        #[test]
        fn clean_text_is_kept_as_it_is(text in "[^\\p{Cc}\\u{2028}\\u{2029}\\u{202A}-\\u{202E}\\u{2066}-\\u{2069}]*") {
            prop_assert_eq!(sanitize(&text), text);
        }
    }
}
