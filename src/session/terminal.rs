//! What one client's terminal can do, and turning [`Shown`] lines into bytes for it.
//!
//! Owns the client's presentation settings — character set, colour, window width, timestamps,
//! bell — and, for clients that let the server echo, the [`LineEditor`] with the line being
//! typed. Colour is off until the terminal type (telnet TTYPE) says the terminal has it, or the
//! user says `/color on`. With colour, system lines are one colour, private lines another, and
//! each nick a colour derived from the nick, so the same person always looks the same; the
//! `*** ` prefix and the `<nick>` brackets stay, so colour is never the only difference. With a
//! known window width (telnet NAWS), long lines wrap at word boundaries, and continuation
//! lines are indented under the text, not under the nick. A line said in the room from the
//! ring is written by [`Terminal::write_said`] straight from the borrowed record, the same
//! bytes as its event's [`Shown`] would give, without allocating (lines are put together in a
//! buffer the terminal keeps). It does no I/O: the session sends the bytes; it also holds the
//! session's reused input and output buffers, as the client's side of the session.

use unicode_width::UnicodeWidthChar;

use super::input::InputScratch;
use super::output::OutputScratch;
use crate::names;
use crate::proto::broadcast::Said;
use crate::session::charset::Charset;
use crate::session::editor::LineEditor;
use crate::session::render::{self, Kind, Shown};
use crate::text::columns;

const RESET: &str = "\x1b[0m";
const SYSTEM_COLOUR: &str = "\x1b[33m";
const PRIVATE_COLOUR: &str = "\x1b[35m";
const HISTORY_COLOUR: &str = "\x1b[2m";
/// Nick colours: red, green, blue, cyan and their bright forms (yellow and magenta are taken by
/// system and private lines).
const NICK_COLOURS: [&str; 8] = [
    "\x1b[31m", "\x1b[32m", "\x1b[34m", "\x1b[36m", "\x1b[91m", "\x1b[92m", "\x1b[94m", "\x1b[96m",
];
const BELL: char = '\u{07}';

/// Narrower windows than this are not wrapped for (the indentation would eat the line).
const MIN_WRAP_WIDTH: usize = 20;

/// Whether a terminal type (as telnet TTYPE names it, any case) shows colour: xterm, screen
/// and tmux and their relatives do; vt100, dumb terminals and types naming bots do not.
pub fn type_has_colour(terminal_type: &str) -> bool {
    let name = terminal_type.to_ascii_lowercase();
    ["xterm", "screen", "tmux", "rxvt", "linux", "ansi", "putty", "konsole", "gnome", "vt220-color"]
        .iter()
        .any(|family| name.starts_with(family))
        || name.ends_with("-color")
        || name.ends_with("-256color")
}

/// The colour of a nick: the same for the same nick (in any case), on every terminal.
pub fn nick_colour(nick: &str) -> &'static str {
    // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
    // Over the bytes of the nick's fold, folded as they are hashed: no allocation per line.
    let mut hash = 0x811c_9dc5_u32;
    let mut buffer = [0; 4];
    for c in names::folded(nick) {
        for &byte in c.encode_utf8(&mut buffer).as_bytes() {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    NICK_COLOURS[hash as usize % NICK_COLOURS.len()]
}

#[derive(Debug)]
pub struct Terminal {
    pub charset: Charset,
    pub colour: bool,
    /// The user chose colour with `/color`: the terminal type no longer decides.
    pub colour_chosen: bool,
    /// Window width in columns, when the client told it.
    pub width: Option<usize>,
    pub timestamps: bool,
    pub bell: bool,
    /// Told once that its input is not valid in its character set.
    pub charset_hinted: bool,
    /// Present while the server echoes (character-mode clients).
    pub editor: Option<LineEditor>,
    /// Where lines are put together before they are encoded; reused, so that rendering a line
    /// allocates nothing once it has grown to the longest line.
    text: String,
    /// Where a system line's text is put together (see [`Terminal::write_system`]); apart from
    /// `text`, which the line is formatted into.
    system_text: String,
    /// The session's reused buffers for what it writes (see `output`); kept here, with the
    /// rest of the client's output side.
    pub(super) output: OutputScratch,
    /// The session's reused buffers for what it reads (see `input`).
    pub(super) input: InputScratch,
}

/// The parts of one line, borrowed: a [`Shown`]'s, or a ring record's line as shown.
struct Parts<'a> {
    kind: Kind,
    before: &'a str,
    nick: &'a str,
    after: &'a str,
    text: &'a str,
}

impl<'a> From<&'a Shown> for Parts<'a> {
    fn from(line: &'a Shown) -> Parts<'a> {
        Parts {
            kind: line.kind,
            before: &line.before,
            nick: &line.nick,
            after: &line.after,
            text: &line.text,
        }
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            charset: Charset::default(),
            colour: false,
            colour_chosen: false,
            width: None,
            timestamps: false,
            bell: true,
            charset_hinted: false,
            editor: None,
            text: String::new(),
            system_text: String::new(),
            output: OutputScratch::default(),
            input: InputScratch::default(),
        }
    }
}

impl Terminal {
    /// The client named its terminal type.
    pub fn set_type(&mut self, terminal_type: &str) {
        if !self.colour_chosen {
            self.colour = type_has_colour(terminal_type);
        }
    }

    pub fn set_width(&mut self, width: u16) {
        self.width = (usize::from(width) >= MIN_WRAP_WIDTH).then_some(usize::from(width));
    }

    pub fn set_charset(&mut self, charset: Charset) {
        self.charset = charset;
        if let Some(editor) = &mut self.editor {
            editor.set_charset(charset);
        }
    }

    /// Turns server-side echo and line editing on or off.
    pub fn set_echo(&mut self, on: bool) {
        match (on, self.editor.is_some()) {
            (true, false) => self.editor = Some(LineEditor::new(self.charset)),
            (false, true) => self.editor = None,
            _ => {}
        }
    }

    /// Appends `lines` to `out` as the client's bytes: the line being typed is taken off the
    /// screen first and put back after. `hh_mm` is the local time, for timestamps; `ring` adds
    /// the bell.
    pub fn write_lines(&mut self, lines: &[Shown], hh_mm: &str, ring: bool, out: &mut Vec<u8>) {
        self.write_with(ring, out, |terminal, text| {
            for line in lines {
                terminal.format(&Parts::from(line), hh_mm, text);
            }
        });
    }

    /// Appends a line or action said in the room to `out`, exactly as [`write_lines`]
    /// writes what `render::event` makes of the same `Event::Chat` or `Event::Action`, but
    /// without allocating: the text is cleaned and defused borrowed (a copy only when there is
    /// something to change), wrapped by slices, and put together in a reused buffer.
    ///
    /// [`write_lines`]: Terminal::write_lines
    pub fn write_said(
        &mut self,
        said: &Said<'_>,
        action: bool,
        hh_mm: &str,
        ring: bool,
        out: &mut Vec<u8>,
    ) {
        let nick = render::user_text(said.from);
        let text = render::user_text(said.text);
        let (before, after) = render::said_frame(action);
        let parts = Parts { kind: Kind::Chat, before, nick: &nick, after, text: &text };
        self.write_with(ring, out, |terminal, text| terminal.format(&parts, hh_mm, text));
    }

    /// Appends the system line whose text `fill` appends (e.g. `render::arrival_text`) to
    /// `out`, exactly as [`write_lines`] writes `render::system` of the same text, without
    /// allocating once the reused buffers have grown: a room's arrivals and departures are
    /// shown this way, one per member of a crowd that logs in or drops out.
    ///
    /// [`write_lines`]: Terminal::write_lines
    pub fn write_system(&mut self, fill: impl FnOnce(&mut String), hh_mm: &str, out: &mut Vec<u8>) {
        let mut system_text = std::mem::take(&mut self.system_text);
        system_text.clear();
        fill(&mut system_text);
        let parts = Parts {
            kind: Kind::System,
            before: render::SYSTEM_PREFIX,
            nick: "",
            after: "",
            text: &system_text,
        };
        self.write_with(false, out, |terminal, text| terminal.format(&parts, hh_mm, text));
        self.system_text = system_text;
    }

    /// Puts together what `lines` writes, between taking the line being typed off the screen
    /// and putting it back, with the bell if `ring`, and appends it to `out` in the client's
    /// character set.
    fn write_with(
        &mut self,
        ring: bool,
        out: &mut Vec<u8>,
        lines: impl FnOnce(&Terminal, &mut String),
    ) {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        if let Some(editor) = &self.editor {
            editor.hide(&mut text);
        }
        lines(self, &mut text);
        if ring && self.bell && text.ends_with("\r\n") {
            // Inside the last line, before its end: line-reading clients see it on that line.
            text.insert(text.len() - 2, BELL);
        }
        if let Some(editor) = &self.editor {
            editor.show(&mut text);
        }
        self.charset.encode(&text, out);
        text.clear();
        self.text = text;
    }

    /// One line, wrapped, with its line ends.
    fn format(&self, line: &Parts<'_>, hh_mm: &str, out: &mut String) {
        let stamped = self.timestamps && line.kind != Kind::History;
        // `[hh_mm] `: the brackets and the blank take three columns.
        let stamp_columns = if stamped { columns(hh_mm) + 3 } else { 0 };
        let lead_columns =
            stamp_columns + columns(line.before) + columns(line.nick) + columns(line.after);
        // One column is left free: some terminals wrap early when the last one is written.
        let pieces =
            Wrap::new(line.text, self.width.map(|width| width.saturating_sub(1)), lead_columns);
        let line_colour = match line.kind {
            Kind::System => SYSTEM_COLOUR,
            Kind::Private | Kind::PrivateSent => PRIVATE_COLOUR,
            // Only the time and nick are dimmed; the text reads as usual.
            Kind::History => HISTORY_COLOUR,
            Kind::Chat => "",
        };
        for (index, piece) in pieces.enumerate() {
            if self.colour && !line_colour.is_empty() {
                out.push_str(line_colour);
            }
            if index == 0 {
                if stamped {
                    out.push('[');
                    out.push_str(hh_mm);
                    out.push_str("] ");
                }
                out.push_str(line.before);
                if self.colour && !line.nick.is_empty() && line.kind != Kind::Private {
                    out.push_str(nick_colour(line.nick));
                    out.push_str(line.nick);
                    out.push_str(RESET);
                    out.push_str(line_colour);
                } else {
                    out.push_str(line.nick);
                }
                out.push_str(line.after);
            } else {
                out.extend(std::iter::repeat_n(' ', lead_columns));
            }
            if self.colour && line.kind == Kind::History {
                out.push_str(RESET);
            }
            out.push_str(piece);
            if self.colour && !line_colour.is_empty() {
                out.push_str(RESET);
            }
            out.push_str("\r\n");
        }
    }
}

/// Splits `text` into pieces that fit in `width - indent` columns: at spaces where it can, inside
/// a word (or between CJK characters, which have no spaces) where it must. Every piece is a
/// slice of `text`; the spaces a break falls on are dropped.
pub fn wrap(text: &str, width: usize, indent: usize) -> Vec<&str> {
    Wrap::new(text, Some(width), indent).collect()
}

/// The pieces of [`wrap`], one by one (no `Vec` per line); with no width, `text` whole.
struct Wrap<'a> {
    /// What is left to split; `None` once the last piece is out.
    rest: Option<&'a str>,
    /// Columns a piece may take.
    room: Option<usize>,
}

impl<'a> Wrap<'a> {
    fn new(text: &'a str, width: Option<usize>, indent: usize) -> Wrap<'a> {
        Wrap { rest: Some(text), room: width.map(|width| width.saturating_sub(indent).max(10)) }
    }
}

impl<'a> Iterator for Wrap<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let room = match self.room {
            Some(room) if columns(rest) > room => room,
            _ => {
                self.rest = None;
                return Some(rest);
            }
        };
        let mut used = 0;
        let mut cut = 0;
        let mut last_space = None;
        for (at, c) in rest.char_indices() {
            let w = c.width().unwrap_or(0);
            if used + w > room {
                break;
            }
            if c == ' ' {
                last_space = Some(at);
            }
            used += w;
            cut = at + c.len_utf8();
        }
        let (piece, next) = match last_space {
            Some(at) if at > 0 => (&rest[..at], rest[at..].trim_start_matches(' ')),
            _ => (&rest[..cut], rest[cut..].trim_start_matches(' ')),
        };
        self.rest = Some(next);
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::render::system;

    fn chat(nick: &str, text: &str) -> Shown {
        Shown {
            kind: Kind::Chat,
            before: "<".into(),
            nick: nick.into(),
            after: "> ".into(),
            text: text.into(),
        }
    }

    fn written(terminal: &mut Terminal, line: Shown) -> String {
        let mut out = Vec::new();
        terminal.write_lines(&[line], "12:34", false, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn colour_follows_the_terminal_type() {
        for kind in ["XTERM", "xterm-256color", "screen", "tmux-256color", "rxvt-unicode", "linux"]
        {
            assert!(type_has_colour(kind), "{kind}");
        }
        for kind in ["VT100", "dumb", "bot", "unknown", "network"] {
            assert!(!type_has_colour(kind), "{kind}");
        }
    }

    #[test]
    fn monochrome_lines_are_the_plain_text() {
        let mut terminal = Terminal::default();
        assert_eq!(written(&mut terminal, chat("alice", "hi")), "<alice> hi\r\n");
        assert_eq!(
            written(&mut terminal, system("bob has joined lobby")),
            "*** bob has joined lobby\r\n"
        );
    }

    #[test]
    fn colour_marks_system_lines_and_nicks_but_keeps_the_prefixes() {
        let mut terminal = Terminal { colour: true, ..Terminal::default() };
        let line = written(&mut terminal, system("bob has joined lobby"));
        assert_eq!(line, "\x1b[33m*** bob has joined lobby\x1b[0m\r\n");
        let line = written(&mut terminal, chat("alice", "hi"));
        assert_eq!(line, format!("<{}alice\x1b[0m> hi\r\n", nick_colour("alice")));
        assert_eq!(nick_colour("Alice"), nick_colour("alice"), "same nick, same colour");
    }

    #[test]
    fn long_lines_wrap_under_the_text_not_the_nick() {
        let mut terminal = Terminal { width: Some(31), ..Terminal::default() };
        let line =
            written(&mut terminal, chat("alice", "the quick brown fox jumps over the lazy dog"));
        assert_eq!(
            line,
            "<alice> the quick brown fox\r\n        jumps over the lazy\r\n        dog\r\n"
        );
        for row in line.split("\r\n") {
            assert!(columns(row) < 31, "{row:?}");
        }
    }

    #[test]
    fn cjk_text_wraps_by_columns() {
        let pieces = wrap("你好世界你好世界你好世界", 20, 8);
        assert_eq!(pieces, vec!["你好世界你好", "世界你好世界"]);
        assert!(pieces.iter().all(|p| columns(p) <= 12));
    }

    #[test]
    fn a_word_longer_than_the_line_is_cut() {
        assert_eq!(wrap("aaaaaaaaaaaaaaa", 12, 0), vec!["aaaaaaaaaaaa", "aaa"]);
        assert_eq!(wrap("", 30, 5), vec![""]);
    }

    #[test]
    fn timestamps_prefix_the_local_time() {
        let mut terminal = Terminal { timestamps: true, ..Terminal::default() };
        assert_eq!(written(&mut terminal, chat("alice", "hi")), "[12:34] <alice> hi\r\n");
    }

    #[test]
    fn the_bell_rings_only_when_asked_and_allowed() {
        let mut terminal = Terminal::default();
        let mut out = Vec::new();
        terminal.write_lines(&[chat("bob", "hi alice")], "12:34", true, &mut out);
        assert!(out.ends_with(b"\x07\r\n"));
        terminal.bell = false;
        out.clear();
        terminal.write_lines(&[chat("bob", "hi alice")], "12:34", true, &mut out);
        assert!(!out.contains(&7));
    }

    /// Removes the server's own colour codes (SGR: `ESC [` digits and `;` `m`).
    fn without_server_colour(bytes: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        let mut out = String::new();
        let mut rest = text.as_ref();
        while let Some(at) = rest.find("\x1b[") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after.find(|c: char| !(c.is_ascii_digit() || c == ';')).unwrap_or(0);
            if after[end..].starts_with('m') {
                rest = &after[end + 1..];
            } else {
                out.push_str("\x1b[");
                rest = after;
            }
        }
        out.push_str(rest);
        out.into_bytes()
    }

    proptest::proptest! {
        /// Whatever bytes a user sends, as a line or as a nickname, what another client receives
        /// holds no ESC and no control character but CR LF — besides the server's own colour
        /// codes when colour is on.
        #[test]
        fn what_reaches_another_client_holds_no_control_but_cr_lf(
            line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            nick in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            colour in proptest::prelude::any::<bool>(),
            width in 0u16..200,
        ) {
            use crate::proto::Event;
            use crate::session::line::{Line, LineSplitter};
            let mut lines = Vec::new();
            let mut splitter = LineSplitter::new();
            splitter.feed(&line, &mut lines);
            splitter.feed(b"\r\n", &mut lines);
            let mut terminal = Terminal { colour, ..Terminal::default() };
            terminal.set_width(width);
            for line in lines {
                let Line::Bytes(bytes) = line else { continue };
                let text = match Charset::default().decode(&bytes) {
                    Ok(text) | Err(text) => crate::text::sanitize(&text),
                };
                let from = crate::names::normalize_nick(&String::from_utf8_lossy(&nick));
                let event = Event::Chat { from, sender: 1, seq: 1, text };
                let mut out = Vec::new();
                terminal.write_lines(&crate::session::render::event(&event), "12:34", false, &mut out);
                let seen = if colour { without_server_colour(&out) } else { out.clone() };
                let seen = String::from_utf8_lossy(&seen).replace("\r\n", "");
                proptest::prop_assert!(
                    !seen.chars().any(char::is_control),
                    "control character in {:?}", String::from_utf8_lossy(&out)
                );
            }
        }
    }

    /// The rows a terminal `width` columns wide shows `line` in when it wraps it itself: a
    /// character that does not fit goes to the next row (a wide one whole), zero-width ones stay
    /// with the character before them.
    fn terminal_rows(line: &str, width: usize) -> Vec<String> {
        let mut rows = vec![String::new()];
        let mut used = 0;
        for c in line.chars() {
            let w = c.width().unwrap_or(0);
            if w > 0 && used + w > width {
                rows.push(String::new());
                used = 0;
            }
            if let Some(row) = rows.last_mut() {
                row.push(c);
            }
            used += w;
        }
        rows
    }

    /// Lines that would start a row with someone else's line at some width (issue #13.7), each
    /// tried behind 0 to 29 characters of padding.
    const WRAP_SPOOFS: [&str; 10] = [
        "*** alice has quit (Connection lost)",
        "<alice> I am leaving, bye",
        "* alice waves goodbye",
        "*alice* psst, your password?",
        "-> *alice* psst",
        "[12:34] <alice> hello",
        "\u{2217}\u{2217}\u{2217} alice has quit",
        "\u{FF0A}\u{FF0A}\u{FF0A}\u{3000}alice has quit",
        "\u{FF1C}alice\u{FF1E} hi",
        "***\u{2800}alice has quit",
    ];

    /// Every spoof, behind every padding, rendered for `terminal` and wrapped by a terminal of
    /// each of `widths`: no row but the first reads as the start of a line.
    fn no_row_passes_for_a_line(terminal: &mut Terminal, widths: std::ops::RangeInclusive<usize>) {
        use crate::proto::Event;
        for spoof in WRAP_SPOOFS {
            for padding in ["", " ", ".", "x", "\u{4E2D}"] {
                for count in 0..30 {
                    let text = format!("{}{spoof}", padding.repeat(count));
                    let event = Event::Chat { from: "mallory".into(), sender: 1, seq: 1, text };
                    let mut out = Vec::new();
                    let lines = crate::session::render::event(&event);
                    terminal.write_lines(&lines, "12:34", false, &mut out);
                    let shown = String::from_utf8(out).expect("utf-8");
                    for width in widths.clone() {
                        for line in shown.split_terminator("\r\n") {
                            let rows = terminal_rows(line, width);
                            for row in &rows[1..] {
                                assert!(
                                    !crate::text::reads_as_a_line_start(row),
                                    "width {width}: a row reads {row:?} in {rows:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_terminal_that_wraps_by_itself_never_starts_a_row_with_someone_elses_line() {
        no_row_passes_for_a_line(&mut Terminal::default(), 20..=250);
    }

    #[test]
    fn server_side_wrapping_is_safe_too_even_when_the_terminal_wraps_again() {
        // A NAWS client of each width, and its terminal at that width or narrower (resized
        // since it said, or a nick so long that the indented text cannot fit).
        for told in [20, 40, 80, 132] {
            let mut terminal = Terminal::default();
            terminal.set_width(told);
            no_row_passes_for_a_line(&mut terminal, 20..=usize::from(told));
        }
    }

    #[test]
    fn without_defusing_the_spoof_works_at_a_chosen_width() {
        // The test's own check: the raw line of issue #13.7 does start a row with `*** alice`.
        let raw = format!("<mallory> {}.*** alice has quit (Connection lost)", " ".repeat(69));
        let rows = terminal_rows(&raw, 80);
        assert!(rows[1].starts_with("*** alice has quit"), "{rows:?}");
        assert!(crate::text::reads_as_a_line_start(&rows[1]));
    }

    #[test]
    fn output_is_encoded_in_the_clients_charset() {
        let mut terminal =
            Terminal { charset: Charset::by_name("gbk").expect("gbk"), ..Terminal::default() };
        let mut out = Vec::new();
        terminal.write_lines(&[chat("小明", "你好")], "12:34", false, &mut out);
        let mut expected = b"<".to_vec();
        expected.extend_from_slice(&[0xD0, 0xA1, 0xC3, 0xF7]);
        expected.extend_from_slice(b"> ");
        expected.extend_from_slice(&[0xC4, 0xE3, 0xBA, 0xC3]);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(out, expected);
    }

    /// Lines and nicks for comparing the two ways of writing a said line: plain, with escapes
    /// to strip, with line starts to defuse, naming alice (the user), wide CJK, emoji, long
    /// enough to wrap, and nothing at all.
    const SAID_TEXTS: [&str; 12] = [
        "hello there",
        "\x1b[31mred\x1b[0m and \x1b]0;title\x07 tab\there",
        "*** alice has quit (Connection lost)",
        "<alice> I am leaving, *really* now",
        "hi Alice, how are you?",
        "\u{4F60}\u{597D}\u{5C0F}\u{660E}\u{FF0C}\u{4ECA}\u{5929}\u{5929}\u{6C14}\u{5F88}\u{597D}\u{3002}\u{6211}\u{4EEC}\u{53BB}\u{516C}\u{56ED}\u{5427}",
        "thumbs \u{1F44D}\u{1F3FD} and a family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} ok",
        "the quick brown fox jumps over the lazy dog, and then it jumps over the lazy dog again and again",
        "Gr\u{FC}\u{DF}e aus K\u{F6}ln",
        "a\u{301}\u{302}\u{303}\u{304}\u{305}\u{306} marks",
        "2 * 3 < 7 > 5",
        "",
    ];
    const SAID_NICKS: [&str; 5] = ["bob", "alice", "\u{5C0F}\u{660E}", "x\x1b[31my", "*star*"];

    /// Every terminal setting that changes how a said line is written.
    fn terminals() -> Vec<Terminal> {
        let mut terminals = Vec::new();
        for charset in ["utf-8", "gbk", "big5", "latin1"] {
            for colour in [false, true] {
                for timestamps in [false, true] {
                    for width in [None, Some(20), Some(80)] {
                        for (bell, editing) in [(true, false), (false, false), (true, true)] {
                            let charset = Charset::by_name(charset).expect("a charset");
                            let mut terminal =
                                Terminal { colour, timestamps, width, bell, ..Terminal::default() };
                            terminal.set_charset(charset);
                            if editing {
                                terminal.set_echo(true);
                                let editor = terminal.editor.as_mut().expect("echo on");
                                let (mut typed, mut echo) = (Vec::new(), String::new());
                                editor.feed(
                                    "half typed \u{4E2D}\x1b[D".as_bytes(),
                                    &mut typed,
                                    &mut echo,
                                );
                            }
                            terminals.push(terminal);
                        }
                    }
                }
            }
        }
        terminals
    }

    /// `Terminal::write_lines` as it was before lines were put together in a reused buffer
    /// and wrapped piece by piece: the oracle for `write_lines` and `write_said`.
    fn write_lines_before(
        terminal: &Terminal,
        lines: &[Shown],
        hh_mm: &str,
        ring: bool,
        out: &mut Vec<u8>,
    ) {
        let mut text = String::new();
        if let Some(editor) = &terminal.editor {
            editor.hide(&mut text);
        }
        for line in lines {
            format_before(terminal, line, hh_mm, &mut text);
        }
        if ring && terminal.bell && text.ends_with("\r\n") {
            text.insert(text.len() - 2, BELL);
        }
        if let Some(editor) = &terminal.editor {
            editor.show(&mut text);
        }
        terminal.charset.encode(&text, out);
    }

    fn format_before(terminal: &Terminal, line: &Shown, hh_mm: &str, out: &mut String) {
        let stamp = if terminal.timestamps && line.kind != Kind::History {
            format!("[{hh_mm}] ")
        } else {
            String::new()
        };
        let lead_columns =
            columns(&stamp) + columns(&line.before) + columns(&line.nick) + columns(&line.after);
        let pieces = match terminal.width {
            Some(width) => wrap_before(&line.text, width - 1, lead_columns),
            None => vec![line.text.as_str()],
        };
        let line_colour = match line.kind {
            Kind::System => SYSTEM_COLOUR,
            Kind::Private | Kind::PrivateSent => PRIVATE_COLOUR,
            Kind::History => HISTORY_COLOUR,
            Kind::Chat => "",
        };
        for (index, piece) in pieces.iter().enumerate() {
            if terminal.colour && !line_colour.is_empty() {
                out.push_str(line_colour);
            }
            if index == 0 {
                out.push_str(&stamp);
                out.push_str(&line.before);
                if terminal.colour && !line.nick.is_empty() && line.kind != Kind::Private {
                    out.push_str(nick_colour_before(&line.nick));
                    out.push_str(&line.nick);
                    out.push_str(RESET);
                    out.push_str(line_colour);
                } else {
                    out.push_str(&line.nick);
                }
                out.push_str(&line.after);
            } else {
                out.extend(std::iter::repeat_n(' ', lead_columns));
            }
            if terminal.colour && line.kind == Kind::History {
                out.push_str(RESET);
            }
            out.push_str(piece);
            if terminal.colour && !line_colour.is_empty() {
                out.push_str(RESET);
            }
            out.push_str("\r\n");
        }
    }

    /// `nick_colour` as it was, over the folded string.
    fn nick_colour_before(nick: &str) -> &'static str {
        let hash = names::fold(nick)
            .bytes()
            .fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
        NICK_COLOURS[hash as usize % NICK_COLOURS.len()]
    }

    #[test]
    fn a_said_line_is_written_byte_for_byte_as_its_event_is() {
        use crate::proto::{Event, HistoryLine};
        // Every text on every terminal, each time with another of the nicks (all of them,
        // for every text, across the terminals).
        for (index, mut terminal) in terminals().into_iter().enumerate() {
            for (nth, text) in SAID_TEXTS.into_iter().enumerate() {
                let from = SAID_NICKS[(index + nth) % SAID_NICKS.len()];
                for (action, ring) in [(false, false), (false, true), (true, true)] {
                    let said = Said { from, sender: 3, seq: 9, text };
                    let (from, text) = (from.to_string(), text.to_string());
                    let event = if action {
                        Event::Action { from, sender: 3, seq: 9, text }
                    } else {
                        Event::Chat { from, sender: 3, seq: 9, text }
                    };
                    let lines = render::event(&event);
                    let mut before = b"queued ".to_vec();
                    write_lines_before(&terminal, &lines, "09:41", ring, &mut before);
                    let mut now = b"queued ".to_vec();
                    terminal.write_said(&said, action, "09:41", ring, &mut now);
                    assert_eq!(
                        String::from_utf8_lossy(&now),
                        String::from_utf8_lossy(&before),
                        "{event:?} on {terminal:?}"
                    );
                    assert_eq!(now, before, "{event:?} on {terminal:?}");
                    // And the lines of every other kind, through `write_lines` (once per text
                    // and terminal: the bell is the one thing the combinations add).
                    if action || !ring {
                        continue;
                    }
                    let mut lines = lines;
                    lines.extend([
                        render::system(said.text),
                        render::history_line(
                            &HistoryLine {
                                at: 0,
                                from: said.from.into(),
                                action,
                                text: said.text.into(),
                            },
                            "08:15",
                        ),
                        Shown { kind: Kind::Private, ..lines[0].clone() },
                        Shown { kind: Kind::PrivateSent, ..lines[0].clone() },
                    ]);
                    let mut before = Vec::new();
                    write_lines_before(&terminal, &lines, "09:41", ring, &mut before);
                    let mut now = Vec::new();
                    terminal.write_lines(&lines, "09:41", ring, &mut now);
                    assert_eq!(now, before, "{lines:?} on {terminal:?}");
                }
            }
        }
    }

    #[test]
    fn arrivals_and_departures_are_written_byte_for_byte_as_their_events_are() {
        use crate::proto::{Event, LeaveReason};
        let why = || Some("<bob> \x1b[31mbye\u{5C0F}".to_string());
        let reasons = [
            LeaveReason::JoinedOther("*** \u{F6}ther".into()),
            LeaveReason::Quit(why()),
            LeaveReason::Quit(None),
            LeaveReason::ConnectionLost,
            LeaveReason::TooSlow,
            LeaveReason::Kicked(why()),
            LeaveReason::Kicked(None),
            LeaveReason::Replaced,
        ];
        for mut terminal in terminals() {
            for nick in SAID_NICKS {
                for room in ["lobby", "\x1b[2Jr\u{F6}\u{F6}m", "*** \u{5C0F}\u{660E}"] {
                    let joined = Event::Joined { nick: nick.into(), room: room.into() };
                    let mut before = b"queued ".to_vec();
                    terminal.write_lines(&render::event(&joined), "09:41", false, &mut before);
                    let mut now = b"queued ".to_vec();
                    let arrival = |text: &mut String| render::arrival_text(nick, room, text);
                    terminal.write_system(arrival, "09:41", &mut now);
                    assert_eq!(now, before, "{joined:?} on {terminal:?}");
                    for reason in &reasons {
                        let left = Event::Left {
                            nick: nick.into(),
                            room: room.into(),
                            reason: reason.clone(),
                        };
                        let mut before = Vec::new();
                        terminal.write_lines(&render::event(&left), "09:41", false, &mut before);
                        let mut now = Vec::new();
                        let departure =
                            |text: &mut String| render::departure_text(nick, room, reason, text);
                        terminal.write_system(departure, "09:41", &mut now);
                        assert_eq!(now, before, "{left:?} on {terminal:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn nick_colours_are_those_of_the_folded_string() {
        for nick in SAID_NICKS.iter().chain(&[
            "Alice",
            "ALICE",
            "Stra\u{DF}e",
            "\u{3A3}\u{3BF}\u{3C6}\u{3AF}\u{3B1}",
            "\u{212A}",
            "",
        ]) {
            assert_eq!(nick_colour(nick), nick_colour_before(nick), "{nick:?}");
        }
    }

    /// [`wrap`] as it was before it was an iterator: the oracle for [`Wrap`].
    fn wrap_before(text: &str, width: usize, indent: usize) -> Vec<&str> {
        let room = width.saturating_sub(indent).max(10);
        let mut pieces = Vec::new();
        let mut rest = text;
        while columns(rest) > room {
            let mut used = 0;
            let mut cut = 0;
            let mut last_space = None;
            for (at, c) in rest.char_indices() {
                let w = c.width().unwrap_or(0);
                if used + w > room {
                    break;
                }
                if c == ' ' {
                    last_space = Some(at);
                }
                used += w;
                cut = at + c.len_utf8();
            }
            let (piece, next) = match last_space {
                Some(at) if at > 0 => (&rest[..at], rest[at..].trim_start_matches(' ')),
                _ => (&rest[..cut], rest[cut..].trim_start_matches(' ')),
            };
            pieces.push(piece);
            rest = next;
        }
        pieces.push(rest);
        pieces
    }

    #[test]
    fn wrapping_piece_by_piece_is_wrapping() {
        for text in SAID_TEXTS.iter().chain(&[
            "   leading",
            "trailing   ",
            "a  b  c  d  e  f  g  h  i  j  k",
        ]) {
            for width in [0, 10, 19, 30, 79] {
                for indent in [0, 8, 25] {
                    assert_eq!(wrap(text, width, indent), wrap_before(text, width, indent));
                }
            }
            assert_eq!(Wrap::new(text, None, 8).collect::<Vec<_>>(), vec![*text]);
        }
    }
}
