//! Splits a client's data bytes into lines.
//!
//! Owns line framing: CR LF, LF, CR NUL and a bare CR each end a line (telnet clients send
//! all of these). A line longer than [`MAX_LINE_BYTES`] is not buffered: its bytes are
//! discarded as they arrive and the line is reported as [`Line::TooLong`] when it ends, so a
//! client without newlines costs bounded memory. It does not decode text or look at commands.

use crate::text::MAX_LINE_BYTES;

/// One line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The bytes of a line, without its terminator.
    Bytes(Vec<u8>),
    /// A line that exceeded the limit; its content was discarded.
    TooLong,
    /// What the line editor produced (clients the server echoes for).
    Typed(crate::session::editor::Typed),
}

#[derive(Debug, Default)]
pub struct LineSplitter {
    current: Vec<u8>,
    /// The current line went over the limit; discard until its end.
    overflowed: bool,
    /// Bytes of the current line discarded so far.
    discarded: usize,
    /// The previous byte was CR: a following LF or NUL belongs to the same line end.
    after_cr: bool,
    /// A line ended with CR LF: a telnet client (Linux telnet in line mode sends it) or a
    /// Windows program, never netcat on a Unix terminal (LF).
    crlf: bool,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds data bytes; complete lines are appended to `lines`.
    pub fn feed(&mut self, data: &[u8], lines: &mut Vec<Line>) {
        for &byte in data {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' || byte == 0 {
                    self.crlf |= byte == b'\n';
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    lines.push(self.finish());
                }
                b'\n' => lines.push(self.finish()),
                _ if self.overflowed => self.discarded += 1,
                _ if self.current.len() >= MAX_LINE_BYTES => {
                    self.overflowed = true;
                    self.discarded = self.current.len() + 1;
                    self.current = Vec::new();
                }
                _ => self.current.push(byte),
            }
        }
    }

    fn finish(&mut self) -> Line {
        self.discarded = 0;
        if std::mem::take(&mut self.overflowed) {
            Line::TooLong
        } else {
            Line::Bytes(std::mem::take(&mut self.current))
        }
    }

    /// Whether any line so far ended with CR LF.
    pub fn sends_crlf(&self) -> bool {
        self.crlf
    }

    /// Bytes held for the unfinished line.
    pub fn pending(&self) -> usize {
        self.current.len()
    }

    /// Bytes received since the last line end, kept or discarded.
    pub fn unterminated(&self) -> usize {
        self.current.len() + self.discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8]) -> Vec<Line> {
        let mut splitter = LineSplitter::new();
        let mut lines = Vec::new();
        splitter.feed(input, &mut lines);
        lines
    }

    fn bytes(s: &str) -> Line {
        Line::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn every_line_end_telnet_clients_send() {
        assert_eq!(
            split(b"a\r\nb\nc\r\0d\re\n"),
            vec![bytes("a"), bytes("b"), bytes("c"), bytes("d"), bytes("e")]
        );
    }

    #[test]
    fn crlf_line_ends_are_noticed() {
        let mut splitter = LineSplitter::new();
        let mut lines = Vec::new();
        splitter.feed(b"a\nb\r\0c\r", &mut lines);
        assert!(!splitter.sends_crlf());
        splitter.feed(b"\n", &mut lines);
        assert!(splitter.sends_crlf());
    }

    #[test]
    fn empty_lines_are_kept_and_partial_lines_wait() {
        let mut splitter = LineSplitter::new();
        let mut lines = Vec::new();
        splitter.feed(b"\r\nhal", &mut lines);
        assert_eq!(lines, vec![bytes("")]);
        splitter.feed(b"lo\r", &mut lines);
        splitter.feed(b"\n", &mut lines);
        assert_eq!(lines, vec![bytes(""), bytes("hallo")]);
    }

    #[test]
    fn exactly_the_limit_is_allowed_one_more_is_too_long() {
        let ok = vec![b'x'; MAX_LINE_BYTES];
        let mut input = ok.clone();
        input.push(b'\n');
        assert_eq!(split(&input), vec![Line::Bytes(ok)]);
        let mut input = vec![b'x'; MAX_LINE_BYTES + 1];
        input.extend_from_slice(b"\nnext\n");
        assert_eq!(split(&input), vec![Line::TooLong, bytes("next")]);
    }

    #[test]
    fn an_endless_line_holds_bounded_memory() {
        let mut splitter = LineSplitter::new();
        let mut lines = Vec::new();
        for _ in 0..1000 {
            splitter.feed(&[b'y'; 4096], &mut lines);
            assert!(splitter.pending() <= MAX_LINE_BYTES);
        }
        assert!(lines.is_empty());
        assert_eq!(splitter.unterminated(), 1000 * 4096);
        splitter.feed(b"\n", &mut lines);
        assert_eq!((lines, splitter.unterminated()), (vec![Line::TooLong], 0));
    }
}
