//! Server-side echo and line editing, for clients in character mode that do not echo what the
//! user types (Windows telnet, and any telnet client that accepted chatd's `WILL ECHO`).
//!
//! Owns the line being typed: keystrokes are decoded in the client's character set (a GBK
//! character split across two reads waits for its second byte), echoed, and edited at a
//! cursor, with the keys a shell user expects:
//!
//! | key | what it does |
//! | --- | --- |
//! | Left, Right (`^B`, `^F`) | move the cursor; typing inserts at it |
//! | Home, End (`^A`, `^E`) | to the start, to the end of the line |
//! | Up, Down (`^P`, `^N`) | earlier lines (the last [`HISTORY_LINES`]), and back |
//! | Backspace, Delete | erase the character before, under the cursor (a CJK character whole) |
//! | `^U`, `^W`, `^K` | erase the line, the word before the cursor, the rest of the line |
//! | `^C` | clear the line |
//! | `^D` | on an empty line: leave (like `/quit`); otherwise Delete |
//!
//! Cursor and function keys arrive as escape sequences (CSI `ESC [` and SS3 `ESC O` forms,
//! `ESC [ 1 ~`-style ones included); those it does not know are swallowed, never echoed. The
//! echo moves the cursor with backspaces and re-prints, which every terminal understands. A
//! line can grow to [`MAX_LINE_BYTES`] bytes of UTF-8; keys beyond that ring the bell instead.
//!
//! The session asks for [`LineEditor::hide`] and [`LineEditor::show`] around every message it
//! prints, so what the user is typing is redrawn below the message and never torn apart. It
//! produces text; the session encodes and sends it.

use std::collections::VecDeque;

use encoding_rs::{CoderResult, Decoder};
use unicode_width::UnicodeWidthChar;

use crate::session::charset::Charset;
use crate::text::{MAX_LINE_BYTES, columns};

/// Lines kept for Up and Down.
pub const HISTORY_LINES: usize = 50;

/// The keys, as `/help` lists them.
pub const KEYS: &[(&str, &str)] = &[
    ("Left Right Home End", "move (also ^B ^F ^A ^E); typing inserts"),
    ("Up Down", "earlier lines (the last 50), and back (^P ^N)"),
    ("Backspace Delete", "erase before, under the cursor"),
    ("^U ^W ^K ^C", "erase the line, a word, to the end; clear"),
    ("^D", "on an empty line: leave, like /quit"),
];
/// Longest parameter string of an escape sequence kept (`1;5` of `ESC [ 1 ; 5 D`).
const MAX_ESCAPE_PARAMETERS: usize = 8;

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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After `ESC [`: parameters until a final byte.
    Csi(String),
    /// After `ESC O`: the final byte comes next.
    Ss3,
}

/// A key that edits or moves rather than types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    Delete,
}

pub struct LineEditor {
    decoder: Decoder,
    line: String,
    /// Byte offset of the cursor in `line` (always on a character boundary).
    cursor: usize,
    /// Some bytes of the current line were not valid in the character set.
    invalid: bool,
    /// The previous character was CR: a following LF or NUL belongs to the same line end.
    after_cr: bool,
    escape: Escape,
    /// Lines sent, oldest first, at most [`HISTORY_LINES`].
    history: VecDeque<String>,
    /// While recalling: which history line is shown, and the line being typed before.
    recalling: Option<(usize, String)>,
    /// A password is being typed: nothing is echoed but the line end, and the line is not
    /// kept for Up.
    secret: bool,
}

impl std::fmt::Debug for LineEditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineEditor")
            .field("line", &self.line)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

const CTRL_A: char = '\u{01}';
const CTRL_B: char = '\u{02}';
const CTRL_C: char = '\u{03}';
const CTRL_D: char = '\u{04}';
const CTRL_E: char = '\u{05}';
const CTRL_F: char = '\u{06}';
const BACKSPACE: char = '\u{08}';
const CTRL_K: char = '\u{0b}';
const CTRL_N: char = '\u{0e}';
const CTRL_P: char = '\u{10}';
const CTRL_U: char = '\u{15}';
const CTRL_W: char = '\u{17}';
const DELETE: char = '\u{7f}';
const BELL: char = '\u{07}';
const ESC: char = '\u{1b}';

/// Moves the terminal's cursor `columns` columns left.
fn back(columns: usize, echo: &mut String) {
    echo.extend(std::iter::repeat_n('\u{08}', columns));
}

/// Text that erases `columns` columns before the cursor on any terminal.
fn rub_out(columns: usize, echo: &mut String) {
    back(columns, echo);
    echo.extend(std::iter::repeat_n(' ', columns));
    back(columns, echo);
}

fn width(c: char) -> usize {
    c.width().unwrap_or(0)
}

impl LineEditor {
    pub fn new(charset: Charset) -> LineEditor {
        LineEditor {
            decoder: charset.stream_decoder(),
            line: String::new(),
            cursor: 0,
            invalid: false,
            after_cr: false,
            escape: Escape::None,
            history: VecDeque::new(),
            secret: false,
            recalling: None,
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
            if self.secret {
                // Only the line end shows; what a password's keys would echo does not.
                let mut hidden = String::new();
                let lines = typed.len();
                self.key(c, typed, &mut hidden);
                if typed.len() > lines {
                    echo.push_str("\r\n");
                }
            } else {
                self.key(c, typed, echo);
            }
        }
    }

    fn key(&mut self, c: char, typed: &mut Vec<Typed>, echo: &mut String) {
        if std::mem::take(&mut self.after_cr) && (c == '\n' || c == '\0') {
            return;
        }
        match std::mem::replace(&mut self.escape, Escape::None) {
            Escape::Started => {
                self.escape = match c {
                    '[' => Escape::Csi(String::new()),
                    'O' => Escape::Ss3,
                    // Alt and a key, or a lone ESC and a key: both swallowed.
                    _ => Escape::None,
                };
                return;
            }
            Escape::Csi(mut parameters) => {
                if ('@'..='~').contains(&c) {
                    if let Some(key) = csi_key(&parameters, c) {
                        self.special(key, echo);
                    }
                } else {
                    if parameters.len() < MAX_ESCAPE_PARAMETERS {
                        parameters.push(c);
                    }
                    self.escape = Escape::Csi(parameters);
                }
                return;
            }
            Escape::Ss3 => {
                if let Some(key) = csi_key("", c) {
                    self.special(key, echo);
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
                self.cursor = 0;
                self.recalling = None;
                self.remember(&line);
                let line = if std::mem::take(&mut self.invalid) { Err(line) } else { Ok(line) };
                typed.push(Typed::Line(line));
            }
            BACKSPACE | DELETE => self.erase_character(echo),
            CTRL_U | CTRL_C => {
                self.recalling = None;
                self.erase_line(echo);
            }
            CTRL_W => {
                while self.line[..self.cursor].ends_with(' ') {
                    self.erase_character(echo);
                }
                while self.cursor > 0 && !self.line[..self.cursor].ends_with(' ') {
                    self.erase_character(echo);
                }
            }
            CTRL_K => self.erase_to_end(echo),
            CTRL_D if self.line.is_empty() => typed.push(Typed::EndOfInput),
            CTRL_D => self.special(Key::Delete, echo),
            CTRL_A => self.special(Key::Home, echo),
            CTRL_E => self.special(Key::End, echo),
            CTRL_B => self.special(Key::Left, echo),
            CTRL_F => self.special(Key::Right, echo),
            CTRL_P => self.special(Key::Up, echo),
            CTRL_N => self.special(Key::Down, echo),
            ESC => self.escape = Escape::Started,
            '\t' => self.insert(' ', echo),
            c if c.is_control() => {}
            c => self.insert(c, echo),
        }
    }

    /// A password is typed from now on (`true`), or ordinary lines again.
    pub fn set_secret(&mut self, secret: bool) {
        self.secret = secret;
    }

    /// Keeps a sent line for Up (not blank ones, nor the same line twice in a row).
    fn remember(&mut self, line: &str) {
        if self.secret
            || line.trim().is_empty()
            || self.history.back().is_some_and(|last| last == line)
        {
            return;
        }
        if self.history.len() == HISTORY_LINES {
            self.history.pop_front();
        }
        self.history.push_back(line.to_string());
    }

    fn special(&mut self, key: Key, echo: &mut String) {
        match key {
            Key::Left => {
                if let Some(c) = self.line[..self.cursor].chars().next_back() {
                    self.cursor -= c.len_utf8();
                    back(width(c), echo);
                }
            }
            Key::Right => {
                if let Some(c) = self.line[self.cursor..].chars().next() {
                    self.cursor += c.len_utf8();
                    echo.push(c);
                }
            }
            Key::Home => {
                back(columns(&self.line[..self.cursor]), echo);
                self.cursor = 0;
            }
            Key::End => {
                echo.push_str(&self.line[self.cursor..]);
                self.cursor = self.line.len();
            }
            Key::Delete => {
                if let Some(c) = self.line[self.cursor..].chars().next() {
                    self.line.remove(self.cursor);
                    self.redraw_rest(width(c), echo);
                }
            }
            Key::Up => {
                let at = match &self.recalling {
                    Some((0, _)) => return echo.push(BELL),
                    Some((at, _)) => at - 1,
                    None if self.history.is_empty() => return echo.push(BELL),
                    None => self.history.len() - 1,
                };
                let draft = match self.recalling.take() {
                    Some((_, draft)) => draft,
                    None => self.line.clone(),
                };
                let recalled = self.history.get(at).cloned().unwrap_or_default();
                self.recalling = Some((at, draft));
                self.replace_line(recalled, echo);
            }
            Key::Down => {
                let Some((at, draft)) = self.recalling.take() else { return echo.push(BELL) };
                if at + 1 < self.history.len() {
                    let recalled = self.history.get(at + 1).cloned().unwrap_or_default();
                    self.recalling = Some((at + 1, draft));
                    self.replace_line(recalled, echo);
                } else {
                    self.replace_line(draft, echo);
                }
            }
        }
    }

    /// Shows `line` instead of the one being typed, with the cursor at its end.
    fn replace_line(&mut self, line: String, echo: &mut String) {
        self.erase_line(echo);
        for c in line.chars() {
            self.insert(c, echo);
        }
    }

    /// Re-prints the line from the cursor on after `erased` columns went at the cursor, and
    /// puts the cursor back.
    fn redraw_rest(&self, erased: usize, echo: &mut String) {
        let rest = &self.line[self.cursor..];
        echo.push_str(rest);
        echo.extend(std::iter::repeat_n(' ', erased));
        back(columns(rest) + erased, echo);
    }

    fn insert(&mut self, c: char, echo: &mut String) {
        if self.line.len() + c.len_utf8() > MAX_LINE_BYTES {
            echo.push(BELL);
            return;
        }
        self.line.insert(self.cursor, c);
        self.cursor += c.len_utf8();
        // What the user typed is echoed as it will be sent: cleaned (no controls reach here).
        echo.push(c);
        let rest = &self.line[self.cursor..];
        if !rest.is_empty() {
            echo.push_str(rest);
            back(columns(rest), echo);
        }
    }

    /// Erases the character before the cursor, however many columns it takes.
    pub fn erase_character(&mut self, echo: &mut String) {
        if let Some(c) = self.line[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.line.remove(self.cursor);
            back(width(c), echo);
            self.redraw_rest(width(c), echo);
        }
    }

    /// Erases from the cursor to the end of the line.
    fn erase_to_end(&mut self, echo: &mut String) {
        let erased = columns(&self.line[self.cursor..]);
        self.line.truncate(self.cursor);
        self.redraw_rest(erased, echo);
    }

    /// Erases the whole line being typed.
    pub fn erase_line(&mut self, echo: &mut String) {
        self.special(Key::End, echo);
        rub_out(columns(&self.line), echo);
        self.line.clear();
        self.cursor = 0;
    }

    /// Text that removes the line being typed from the screen, before a message is printed.
    pub fn hide(&self, echo: &mut String) {
        if !self.line.is_empty() && !self.secret {
            echo.push('\r');
            echo.extend(std::iter::repeat_n(' ', columns(&self.line)));
            echo.push('\r');
        }
    }

    /// Text that puts the line being typed back, after a message was printed.
    pub fn show(&self, echo: &mut String) {
        if self.secret {
            return;
        }
        echo.push_str(&self.line);
        back(columns(&self.line[self.cursor..]), echo);
    }
}

/// The key an escape sequence stands for: `parameters` and the final byte of `ESC [ … final`
/// (`ESC O final` has none). Modifiers (`1;5D`, Ctrl-Left) are ignored.
fn csi_key(parameters: &str, last: char) -> Option<Key> {
    Some(match last {
        'A' => Key::Up,
        'B' => Key::Down,
        'C' => Key::Right,
        'D' => Key::Left,
        'H' => Key::Home,
        'F' => Key::End,
        '~' => match parameters.split(';').next() {
            Some("1" | "7") => Key::Home,
            Some("4" | "8") => Key::End,
            Some("3") => Key::Delete,
            _ => return None,
        },
        _ => return None,
    })
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
    fn function_keys_are_swallowed() {
        let mut editor = LineEditor::new(Charset::default());
        // F1, F5, Insert, Page Up, Alt-x.
        let (typed, echo) = type_keys(&mut editor, b"a\x1bOPb\x1b[15~c\x1b[2~\x1b[5~d\x1bxe\r");
        assert_eq!(typed, vec![line("abcde")]);
        assert_eq!(echo, "abcde\r\n");
    }

    #[test]
    fn left_left_x_inserts_at_the_cursor() {
        let mut editor = LineEditor::new(Charset::default());
        let (_, echo) = type_keys(&mut editor, b"abc\x1b[D\x1b[D");
        assert_eq!(echo, "abc\x08\x08");
        let (_, echo) = type_keys(&mut editor, b"X");
        assert_eq!(echo, "Xbc\x08\x08", "the rest is re-printed, the cursor put back");
        let (typed, _) = type_keys(&mut editor, b"\r");
        assert_eq!(typed, vec![line("aXbc")]);
        // The SS3 forms, Ctrl-Left (a modifier) and ^B/^F move too.
        let (typed, _) = type_keys(&mut editor, b"ac\x1bODb\x1b[1;5D\x1b[1;5C\x02\x06!\r");
        assert_eq!(typed, vec![line("ab!c")]);
    }

    #[test]
    fn home_end_and_their_control_keys() {
        let mut editor = LineEditor::new(Charset::default());
        for keys in [
            &b"bc\x1b[Ha\x1b[Fd\r"[..],
            b"bc\x1bOHa\x1bOFd\r",
            b"bc\x1b[1~a\x1b[4~d\r",
            b"bc\x1b[7~a\x1b[8~d\r",
            b"bc\x01a\x05d\r",
        ] {
            let (typed, _) = type_keys(&mut editor, keys);
            assert_eq!(typed, vec![line("abcd")], "{keys:?}");
        }
    }

    #[test]
    fn delete_and_backspace_in_the_middle_of_the_line() {
        let mut editor = LineEditor::new(Charset::default());
        let (_, echo) = type_keys(&mut editor, b"abc\x01\x1b[3~");
        assert_eq!(echo, "abc\x08\x08\x08bc \x08\x08\x08");
        assert_eq!(editor.line(), "bc");
        let (_, echo) = type_keys(&mut editor, b"\x1b[C\x7f");
        assert_eq!(echo, "b\x08c \x08\x08");
        assert_eq!(editor.line(), "c");
        // ^D on a line that is not empty deletes under the cursor; it does not leave.
        let (typed, _) = type_keys(&mut editor, b"\x01\x04x\r");
        assert_eq!(typed, vec![line("x")]);
    }

    #[test]
    fn a_cjk_character_is_moved_over_and_erased_whole_in_the_middle() {
        let mut editor = LineEditor::new(Charset::default());
        let (_, echo) = type_keys(&mut editor, "a你".as_bytes());
        assert_eq!(echo, "a你");
        let (_, echo) = type_keys(&mut editor, b"\x1b[Db");
        assert_eq!(echo, "\x08\x08b你\x08\x08", "two columns back, then insert");
        let (_, echo) = type_keys(&mut editor, b"\x1b[C\x7f");
        assert_eq!(echo, "你\x08\x08  \x08\x08");
        assert_eq!(editor.line(), "ab");
    }

    #[test]
    fn up_and_down_recall_earlier_lines_and_the_draft() {
        let mut editor = LineEditor::new(Charset::default());
        type_keys(&mut editor, b"one\rtwo\r\r");
        let (_, echo) = type_keys(&mut editor, b"dr\x1b[A");
        assert_eq!(editor.line(), "two");
        assert_eq!(echo, "dr\x08\x08  \x08\x08two");
        type_keys(&mut editor, b"\x1b[A");
        assert_eq!(editor.line(), "one");
        let (_, echo) = type_keys(&mut editor, b"\x1b[A");
        assert_eq!((editor.line(), echo.as_str()), ("one", "\x07"), "nothing older");
        type_keys(&mut editor, b"\x1b[B");
        assert_eq!(editor.line(), "two");
        type_keys(&mut editor, b"\x1b[B");
        assert_eq!(editor.line(), "dr", "back to what was being typed");
        // A recalled line can be edited and sent; ^P and ^N work too.
        let (typed, _) = type_keys(&mut editor, b"\x15\x10\x10\x0e\x10!\r");
        assert_eq!(typed, vec![line("one!")]);
        // Sent, it is the newest line of the history.
        type_keys(&mut editor, b"\x1b[A");
        assert_eq!(editor.line(), "one!");
    }

    #[test]
    fn history_keeps_the_last_fifty_lines() {
        let mut editor = LineEditor::new(Charset::default());
        for n in 1..=60 {
            type_keys(&mut editor, format!("line {n}\r").as_bytes());
        }
        for _ in 0..HISTORY_LINES {
            type_keys(&mut editor, b"\x1b[A");
        }
        assert_eq!(editor.line(), "line 11");
        let (_, echo) = type_keys(&mut editor, b"\x1b[A");
        assert_eq!(echo, "\x07");
    }

    #[test]
    fn control_c_clears_the_line_and_control_k_the_rest() {
        let mut editor = LineEditor::new(Charset::default());
        let (typed, _) = type_keys(&mut editor, b"abc\x03d\r");
        assert_eq!(typed, vec![line("d")]);
        let (typed, _) = type_keys(&mut editor, b"abcd\x1b[D\x1b[D\x0b\r");
        assert_eq!(typed, vec![line("ab")]);
    }

    #[test]
    fn hiding_and_showing_keep_the_cursor_where_it_was() {
        let mut editor = LineEditor::new(Charset::default());
        type_keys(&mut editor, b"abc\x1b[D");
        let mut out = String::new();
        editor.show(&mut out);
        assert_eq!(out, "abc\x08");
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

    /// Keys that move and edit, and characters one and two columns wide.
    const KEY_ALPHABET: &[&[u8]] = &[
        b"\x1b[D",
        b"\x1b[C",
        b"\x1bOH",
        b"\x1b[4~",
        b"\x1b[A",
        b"\x1b[B",
        b"\x1b[3~",
        b"\x7f",
        b"\x17",
        b"\x0b",
        b"\x15",
        b"\x03",
        b"\x04",
        b"\r",
        b"a",
        b" ",
        "\u{4f60}".as_bytes(),
        "\u{e9}".as_bytes(),
        "e\u{301}".as_bytes(),
    ];

    /// A one-row terminal: what the echo leaves on screen, and where its cursor is.
    #[derive(Default)]
    struct Row {
        cells: Vec<char>,
        column: usize,
    }

    impl Row {
        fn apply(&mut self, echo: &str) {
            for c in echo.chars() {
                match c {
                    '\u{08}' => self.column = self.column.saturating_sub(1),
                    '\r' => self.column = 0,
                    '\n' => self.cells.clear(),
                    '\u{07}' => {}
                    c => {
                        let width = c.width().unwrap_or(0);
                        if self.cells.len() < self.column + width {
                            self.cells.resize(self.column + width, ' ');
                        }
                        self.cells[self.column] = c;
                        if width == 2 {
                            // The second cell of a wide character.
                            self.cells[self.column + 1] = '\0';
                        }
                        self.column += width;
                    }
                }
            }
        }

        fn text(&self) -> String {
            let text: String = self.cells.iter().filter(|&&c| c != '\0').collect();
            text.trim_end().to_string()
        }
    }

    proptest! {
        #[test]
        fn the_screen_shows_the_line_and_the_cursor_where_the_editor_has_them(
            keys in proptest::collection::vec(0..KEY_ALPHABET.len() - 1, 0..300)
        ) {
            // Without the combining mark (the last key): a cell per column keeps this simple.
            let mut editor = LineEditor::new(Charset::default());
            let mut row = Row::default();
            for key in keys {
                if KEY_ALPHABET[key] == b"\r" {
                    continue;
                }
                let (_, echo) = type_keys(&mut editor, KEY_ALPHABET[key]);
                row.apply(&echo);
                prop_assert_eq!(row.text(), editor.line().trim_end().to_string());
                prop_assert_eq!(row.column, columns(&editor.line()[..editor.cursor]));
            }
        }

        #[test]
        fn editing_anywhere_keeps_the_line_and_cursor_consistent(
            keys in proptest::collection::vec(0..KEY_ALPHABET.len(), 0..300)
        ) {
            let mut editor = LineEditor::new(Charset::default());
            for key in keys {
                let (_, echo) = type_keys(&mut editor, KEY_ALPHABET[key]);
                prop_assert!(editor.line.is_char_boundary(editor.cursor));
                prop_assert!(editor.cursor <= editor.line.len());
                prop_assert!(!echo.contains('\x1b'));
                prop_assert!(editor.history.len() <= HISTORY_LINES);
            }
        }

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
