//! The character set one client types and reads in.
//!
//! Owns the conversion between a client's bytes and chatd's text (UTF-8 inside): UTF-8 by
//! default; GBK, Big5 and Latin-1 on `/charset` or telnet CHARSET. The tables are
//! `encoding_rs`'s (the WHATWG Encoding Standard's). Output that the client's character set
//! cannot show becomes `?`; input that is not valid in it is reported, never guessed at. It
//! does not split lines or interpret what the text says.

use encoding_rs::{BIG5, EncoderResult, Encoding, GBK, UTF_8, WINDOWS_1252};

/// One client's character set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset {
    encoding: &'static Encoding,
}

impl Default for Charset {
    fn default() -> Self {
        Charset { encoding: UTF_8 }
    }
}

/// The names `/charset` accepts, as shown to users.
pub const NAMES: &str = "utf-8, gbk, big5, latin1";

/// Whether chatd can speak the character set called `name`.
pub fn known(name: &str) -> bool {
    Charset::by_name(name).is_some()
}

impl Charset {
    /// The character set called `name` (its usual names and aliases, in any case).
    pub fn by_name(name: &str) -> Option<Charset> {
        let encoding = match name.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => UTF_8,
            // GB2312 is a subset; GB18030's four-byte forms are not what these clients send.
            "gbk" | "gb2312" | "cp936" | "gb18030" => GBK,
            "big5" | "big-5" | "cp950" => BIG5,
            // As browsers do: Latin-1 labels mean Windows-1252, a superset of its printable part.
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "cp1252" | "windows-1252" => {
                WINDOWS_1252
            }
            _ => return None,
        };
        Some(Charset { encoding })
    }

    /// The name shown to the user.
    pub fn name(&self) -> &'static str {
        match self.encoding {
            e if e == GBK => "gbk",
            e if e == BIG5 => "big5",
            e if e == WINDOWS_1252 => "latin1",
            _ => "utf-8",
        }
    }

    pub fn is_utf8(&self) -> bool {
        self.encoding == UTF_8
    }

    /// Decodes one whole line; `Err` carries the line with each invalid sequence replaced by
    /// U+FFFD, for a client that was already told about `/charset`.
    pub fn decode(&self, bytes: &[u8]) -> Result<String, String> {
        let (text, had_errors) = self.encoding.decode_without_bom_handling(bytes);
        if had_errors { Err(text.into_owned()) } else { Ok(text.into_owned()) }
    }

    /// A decoder for a byte stream (the line editor's keystrokes), which keeps a character
    /// split across reads until its last byte arrives.
    pub fn stream_decoder(&self) -> encoding_rs::Decoder {
        self.encoding.new_decoder_without_bom_handling()
    }

    /// Encodes text for the client; what its character set cannot show becomes `?`.
    pub fn encode(&self, text: &str, out: &mut Vec<u8>) {
        if self.is_utf8() {
            out.extend_from_slice(text.as_bytes());
            return;
        }
        let mut encoder = self.encoding.new_encoder();
        let mut rest = text;
        let mut buffer = [0u8; 1024];
        loop {
            let (result, read, written) =
                encoder.encode_from_utf8_without_replacement(rest, &mut buffer, true);
            out.extend_from_slice(&buffer[..written]);
            rest = &rest[read..];
            match result {
                EncoderResult::InputEmpty => return,
                EncoderResult::OutputFull => {}
                EncoderResult::Unmappable(_) => out.push(b'?'),
            }
        }
    }
}

/// Whether the invalid UTF-8 in `bytes` is all multi-byte sequences cut short after at least
/// one continuation byte: what a line-mode telnet client leaves of UTF-8 text when it drops or
/// replaces bytes (see `telnet`), and rarely what text in another character set looks like.
pub fn cut_short_utf8(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut found = false;
    while let Err(error) = std::str::from_utf8(rest) {
        let bad = &rest[error.valid_up_to()..];
        let needed = match bad.first() {
            Some(0xc2..=0xdf) => 2,
            Some(0xe0..=0xef) => 3,
            Some(0xf0..=0xf4) => 4,
            _ => return false,
        };
        let kept = error.error_len().unwrap_or(bad.len());
        if kept < 2 || kept >= needed {
            return false;
        }
        found = true;
        rest = &bad[kept..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(charset: Charset, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        charset.encode(text, &mut out);
        out
    }

    #[test]
    fn gbk_round_trips_chinese() {
        let gbk = Charset::by_name("GBK").expect("gbk");
        // 小明 in GBK: D0 A1 C3 F7.
        assert_eq!(encoded(gbk, "小明"), vec![0xD0, 0xA1, 0xC3, 0xF7]);
        assert_eq!(gbk.decode(&[0xD0, 0xA1, 0xC3, 0xF7]), Ok("小明".to_string()));
        assert_eq!(gbk.name(), "gbk");
    }

    #[test]
    fn what_a_charset_cannot_show_becomes_a_question_mark() {
        let latin1 = Charset::by_name("latin1").expect("latin1");
        assert_eq!(encoded(latin1, "Grüße 小明!"), b"Gr\xfc\xdfe ??!".to_vec());
        let big5 = Charset::by_name("big5").expect("big5");
        assert_eq!(big5.decode(&encoded(big5, "中文")), Ok("中文".to_string()));
    }

    #[test]
    fn invalid_input_is_reported_not_guessed() {
        let utf8 = Charset::default();
        assert_eq!(utf8.decode(b"ok"), Ok("ok".to_string()));
        assert_eq!(utf8.decode(b"a\xffb"), Err("a\u{FFFD}b".to_string()));
        // GBK bytes are not UTF-8.
        assert!(utf8.decode(&[0xD0, 0xA1, 0xC3, 0xF7]).is_err());
    }

    #[test]
    fn utf8_cut_short_by_a_telnet_client_is_told_from_other_charsets() {
        // 久美 with 久's last byte (0x85, Linux telnet's echo toggle) dropped.
        assert!(cut_short_utf8(&[0xe4, 0xb9, 0xe7, 0xbe, 0x8e]));
        assert!(cut_short_utf8(&[b'a', 0xe4, 0xb9]));
        assert!(!cut_short_utf8("久美".as_bytes()), "valid");
        assert!(!cut_short_utf8(b"caf\xe9 ok"), "Latin-1");
        assert!(!cut_short_utf8(&[0xd0, 0xa1, 0xc3, 0xf7]), "GBK 小明");
        assert!(!cut_short_utf8(&[0xe4, 0xb9, 0xff]), "an impossible byte");
    }

    #[test]
    fn names_and_aliases() {
        for name in ["utf-8", "UTF8", "gbk", "GB2312", "big5", "latin1", "ISO-8859-1"] {
            assert!(known(name), "{name}");
        }
        assert!(!known("ebcdic"));
        assert_eq!(Charset::by_name("iso-8859-1").map(|c| c.name()), Some("latin1"));
    }
}
