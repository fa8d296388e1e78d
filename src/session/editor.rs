//! Server-side echo and line editing, for clients in character mode that do not echo what the
//! user types (Windows telnet, and any telnet client that accepted chatd's `WILL ECHO`).
//!
//! Owns the line being typed: keystrokes are decoded in the client's character set (a GBK
//! character split across two reads waits for its second byte), echoed, and edited —
//! backspace and DEL erase one character (a CJK character is erased whole, both columns),
//! `^U` the line, `^W` the last word; `^D` on an empty line ends the session. Cursor and
//! function keys (escape sequences) are swallowed, not echoed. A line can grow to
//! [`MAX_LINE_BYTES`] bytes of UTF-8; keys beyond that ring the bell instead.
//!
//! The session asks for [`LineEditor::hide`] and [`LineEditor::show`] around every message it
//! prints, so what the user is typing is redrawn below the message and never torn apart. It
//! produces text; the session encodes and sends it.

use encoding_rs::{CoderResult, Decoder};
use unicode_width::UnicodeWidthChar;

use crate::session::charset::Charset;
use crate::text::{MAX_LINE_BYTES, columns};

/// What the user finished typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// A line, decoded; `Err` when its bytes were not valid in the client's character set
    /// (invalid sequences are U+FFFD).
    Line(Result<String, String>),
    /// `^D` on an empty line.
    EndOfInput,
}

/// Where the editor is in an escape sequence the terminal sent for a special key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After `ESC [` or `ESC O`: until a final byte.
    Sequence,
}

pub struct LineEditor {
    decoder: Decoder,
    line: String,
    /// Some bytes of the current line were not valid in the character set.
    invalid: bool,
    /// The previous character was CR: a following LF or NUL belongs to the same line end.
    after_cr: bool,
    escape: Escape,
}

impl std::fmt::Debug for LineEditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineEditor").field("line", &self.line).finish_non_exhaustive()
    }
}

const BACKSPACE: char = '\u{08}';
const DELETE: char = '\u{7f}';
const CTRL_D: char = '\u{04}';
const CTRL_U: char = '\u{15}';
const CTRL_W: char = '\u{17}';
const BELL: char = '\u{07}';
const ESC: char = '\u{1b}';

/// Text that erases `columns` columns before the cursor on any terminal.
fn rub_out(columns: usize, echo: &mut String) {
    for piece in ["\u{08}", " ", "\u{08}"] {
        echo.extend(std::iter::repeat_n(piece, columns));
    }
}

impl LineEditor {
    pub fn new(charset: Charset) -> LineEditor {
        LineEditor {
            decoder: charset.stream_decoder(),
            line: String::new(),
            invalid: false,
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// Switches the character set keystrokes are decoded in (from the next byte on).
    pub fn set_charset(&mut self, charset: Charset) {
        self.decoder = charset.stream_decoder();
    }

    /// The line typed so far.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Feeds keystroke bytes: finished lines go to `typed`, what to echo to `echo`.
    pub fn feed(&mut self, bytes: &[u8], typed: &mut Vec<Typed>, echo: &mut String) {
        let mut text = String::with_capacity(
            self.decoder.max_utf8_buffer_length(bytes.len()).unwrap_or(bytes.len() * 3),
        );
        let (result, _, had_replacements) = self.decoder.decode_to_string(bytes, &mut text, false);
        debug_assert_eq!(result, CoderResult::InputEmpty, "capacity was reserved");
        if had_replacements {
            self.invalid = true;
        }
        for c in text.chars() {
            self.key(c, typed, echo);
        }
    }

    fn key(&mut self, c: char, typed: &mut Vec<Typed>, echo: &mut String) {
        if std::mem::take(&mut self.after_cr) && (c == '\n' || c == '\0') {
            return;
        }
        match self.escape {
            Escape::Started => {
                self.escape = if c == '[' || c == 'O' { Escape::Sequence } else { Escape::None };
                return;
            }
            Escape::Sequence => {
                if ('@'..='~').contains(&c) {
                    self.escape = Escape::None;
                }
                return;
            }
            Escape::None => {}
        }
        match c {
            '\r' | '\n' => {
                self.after_cr = c == '\r';
                echo.push_str("\r\n");
                let line = std::mem::take(&mut self.line);
                let line = if std::mem::take(&mut self.invalid) { Err(line) } else { Ok(line) };
                typed.push(Typed::Line(line));
            }
            BACKSPACE | DELETE => self.erase_character(echo),
            CTRL_U => self.erase_line(echo),
            CTRL_W => {
                while self.line.ends_with(' ') {
                    self.erase_character(echo);
                }
                while !self.line.is_empty() && !self.line.ends_with(' ') {
                    self.erase_character(echo);
                }
            }
            CTRL_D if self.line.is_empty() => typed.push(Typed::EndOfInput),
            ESC => self.escape = Escape::Started,
            '\t' => self.insert(' ', echo),
            c if c.is_control() => {}
            c => self.insert(c, echo),
        }
    }

    fn insert(&mut self, c: char, echo: &mut String) {
        if self.line.len() + c.len_utf8() > MAX_LINE_BYTES {
            echo.push(BELL);
            return;
        }
        self.line.push(c);
        // What the user typed is echoed as it will be sent: cleaned (no controls reach here).
        echo.push(c);
    }

    /// Erases the last character, however many columns it takes.
    pub fn erase_character(&mut self, echo: &mut String) {
        if let Some(c) = self.line.pop() {
            rub_out(c.width().unwrap_or(0), echo);
        }
    }

    /// Erases the whole line being typed.
    pub fn erase_line(&mut self, echo: &mut String) {
        rub_out(columns(&self.line), echo);
        self.line.clear();
    }

    /// Text that removes the line being typed from the screen, before a message is printed.
    pub fn hide(&self, echo: &mut String) {
        if !self.line.is_empty() {
            echo.push('\r');
            echo.extend(std::iter::repeat_n(' ', columns(&self.line)));
            echo.push('\r');
        }
    }

    /// Text that puts the line being typed back, after a message was printed.
    pub fn show(&self, echo: &mut String) {
        echo.push_str(&self.line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn type_keys(editor: &mut LineEditor, keys: &[u8]) -> (Vec<Typed>, String) {
        let mut typed = Vec::new();
        let mut echo = String::new();
        editor.feed(keys, &mut typed, &mut echo);
        (typed, echo)
    }

    fn line(text: &str) -> Typed {
        Typed::Line(Ok(text.to_string()))
    }

    #[test]
    fn typing_is_echoed_and_enter_ends_the_line() {
        let mut editor = LineEditor::new(Charset::default());
        let (typed, echo) = type_keys(&mut editor, b"hi\r\0there\r\n");
        assert_eq!(typed, vec![line("hi"), line("there")]);
        assert_eq!(echo, "hi\r\nthere\r\n");
    }

    #[test]
    fn backspace_erases_a_whole_cjk_character() {
        let mut editor = LineEditor::new(Charset::default());
        let (_, echo) = type_keys(&mut editor, "a你".as_bytes());
        assert_eq!(echo, "a你");
        let (_, echo) = type_keys(&mut editor, b"\x7f");
        assert_eq!(echo, "\x08\x08  \x08\x08", "two columns rubbed out");
        assert_eq!(editor.line(), "a");
        let (typed, _) = type_keys(&mut editor, b"\x08b\r\n");
        assert_eq!(typed, vec![line("b")]);
    }

    #[test]
    fn control_u_erases_the_line_and_control_w_a_word() {
        let mut editor = LineEditor::new(Charset::default());
        let (typed, _) = type_keys(&mut editor, b"one two  \x17three\x15four\r");
        assert_eq!(typed, vec![line("four")]);
        let (typed, _) = type_keys(&mut editor, b"one two\x17\r");
        assert_eq!(typed, vec![line("one ")]);
    }

    #[test]
    fn gbk_keystrokes_split_across_reads_are_one_character() {
        let gbk = Charset::by_name("gbk").expect("gbk");
        let mut editor = LineEditor::new(gbk);
        let (_, echo) = type_keys(&mut editor, &[0xD0]);
        assert_eq!(echo, "", "half a character waits");
        let (_, echo) = type_keys(&mut editor, &[0xA1, 0xC3, 0xF7]);
        assert_eq!(echo, "小明");
        let (typed, _) = type_keys(&mut editor, b"\x7f\r\n");
        assert_eq!(typed, vec![line("小")]);
    }

    #[test]
    fn cursor_keys_are_swallowed() {
        let mut editor = LineEditor::new(Charset::default());
        let (typed, echo) = type_keys(&mut editor, b"a\x1b[Ab\x1bOPc\x1b[1;5Dd\r");
        assert_eq!(typed, vec![line("abcd")]);
        assert_eq!(echo, "abcd\r\n");
    }

    #[test]
    fn control_d_on_an_empty_line_ends_input() {
        let mut editor = LineEditor::new(Charset::default());
        let (typed, _) = type_keys(&mut editor, b"x\x04\x7f\x04");
        assert_eq!(typed, vec![Typed::EndOfInput]);
    }

    #[test]
    fn invalid_bytes_mark_the_line() {
        let mut editor = LineEditor::new(Charset::default());
        let (typed, _) = type_keys(&mut editor, b"a\xffb\r\nok\r\n");
        assert_eq!(typed, vec![Typed::Line(Err("a\u{FFFD}b".into())), line("ok")]);
    }

    #[test]
    fn a_full_line_rings_the_bell() {
        let mut editor = LineEditor::new(Charset::default());
        let (_, echo) = type_keys(&mut editor, &[b'x'; MAX_LINE_BYTES + 2]);
        assert_eq!(editor.line().len(), MAX_LINE_BYTES);
        assert!(echo.ends_with("\x07\x07"));
    }

    #[test]
    fn hiding_and_showing_the_line_being_typed() {
        let mut editor = LineEditor::new(Charset::default());
        type_keys(&mut editor, "hé你".as_bytes());
        let mut out = String::new();
        editor.hide(&mut out);
        assert_eq!(out, "\r    \r");
        out.clear();
        editor.show(&mut out);
        assert_eq!(out, "hé你");
    }

    proptest! {
        #[test]
        fn echo_and_lines_hold_no_escape_or_stray_control(keys in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut editor = LineEditor::new(Charset::default());
            let (typed, echo) = type_keys(&mut editor, &keys);
            prop_assert!(!echo.contains('\x1b'));
            prop_assert!(echo.chars().all(|c| !c.is_control() || matches!(c, '\r' | '\n' | '\x08' | '\x07')));
            for t in typed {
                if let Typed::Line(Ok(text) | Err(text)) = t {
                    prop_assert!(!text.chars().any(char::is_control));
                    prop_assert!(text.len() <= MAX_LINE_BYTES);
                }
            }
        }
    }
}
