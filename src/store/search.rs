//! What a search looks for, and the words both stores index: one normalisation, so that
//! SQLite's FTS5 and PostgreSQL's text search find the same lines.
//!
//! A text becomes tokens separated by single spaces: compatibility-decomposed (a full-width
//! `Ａ` is an `a`), without combining marks (`café` is `cafe`), lower-cased, with everything
//! but letters and digits a separator. Scripts written without spaces between words (Han,
//! kana, Hangul) give one token per character, so that a search for `世界` finds it inside
//! `你好世界`: a query word that normalises to several tokens must find them next to each other
//! ([`Term::Phrase`]). Neither store's own tokenizer decides anything, so neither depends on
//! a locale.
//!
//! Pure: no database, no I/O.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Most words a search takes.
pub const MAX_WORDS: usize = 8;

/// One thing a line must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// This token.
    Word(String),
    /// These tokens, next to each other and in this order.
    Phrase(Vec<String>),
}

/// A search: a line matches when it has every term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
}

impl Query {
    /// The query for what a user typed after `/search`: each word it has is a term. Refuses a
    /// query without a letter or digit, or with more than [`MAX_WORDS`] words.
    pub fn parse(words: &str) -> Result<Query, String> {
        let mut terms = Vec::new();
        for word in words.split_whitespace() {
            let mut tokens: Vec<String> = Vec::new();
            push_tokens(word, |token| tokens.push(token.to_string()));
            let term = match tokens.len() {
                0 => continue,
                1 => tokens.pop().map(Term::Word),
                _ => Some(Term::Phrase(tokens)),
            };
            // A word typed twice asks for nothing more.
            if let Some(term) = term.filter(|term| !terms.contains(term)) {
                terms.push(term);
            }
        }
        if terms.is_empty() {
            return Err("search for at least one word (letters or digits)".into());
        }
        if terms.len() > MAX_WORDS {
            return Err(format!("search for at most {MAX_WORDS} words"));
        }
        Ok(Query { terms })
    }

    /// Every term, in the order typed.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Every token any term needs (the tokens of phrases included), without repeats.
    pub fn tokens(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Vec::new();
        for term in &self.terms {
            match term {
                Term::Word(word) => all.push(word),
                Term::Phrase(tokens) => all.extend(tokens.iter().map(String::as_str)),
            }
        }
        let mut seen = std::collections::HashSet::new();
        all.retain(|token| seen.insert(*token));
        all
    }
}

/// The tokens of `text` as both stores index them, separated by single spaces.
pub fn index_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_tokens(text, |token| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(token);
    });
    out
}

/// Calls `emit` with each token of `text`, in order.
fn push_tokens(text: &str, mut emit: impl FnMut(&str)) {
    let mut token = String::new();
    let mut single = [0u8; 4];
    // Composed again after the marks are gone: Hangul syllables stay syllables.
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)).nfc() {
        if written_without_spaces(c) {
            if !token.is_empty() {
                emit(&token);
                token.clear();
            }
            emit(c.encode_utf8(&mut single));
        } else if c.is_alphanumeric() {
            token.extend(c.to_lowercase());
        } else if !token.is_empty() {
            emit(&token);
            token.clear();
        }
    }
    if !token.is_empty() {
        emit(&token);
    }
}

/// A character of a script written without spaces between words: Han (and its radicals and
/// compatibility forms), hiragana, katakana, Hangul, Bopomofo.
fn written_without_spaces(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF        // Hangul Jamo
        | 0x2E80..=0x2FDF      // CJK and Kangxi radicals
        | 0x3005..=0x3007      // iteration mark, closing mark, ideographic zero
        | 0x3040..=0x30FF      // hiragana, katakana
        | 0x3100..=0x31BF      // Bopomofo, Hangul compatibility Jamo, Kanbun
        | 0x31F0..=0x31FF      // katakana phonetic extensions
        | 0x3400..=0x4DBF      // CJK extension A
        | 0x4E00..=0x9FFF      // CJK unified ideographs
        | 0xA960..=0xA97F      // Hangul Jamo extended A
        | 0xAC00..=0xD7FF      // Hangul syllables, Jamo extended B
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0xFF66..=0xFFDC      // half-width katakana and Hangul
        | 0x20000..=0x3FFFF    // CJK extensions B and later
    ) && c.is_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str) -> Term {
        Term::Word(w.into())
    }

    fn phrase(tokens: &[&str]) -> Term {
        Term::Phrase(tokens.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn latin_text_is_lower_cased_without_accents_or_punctuation() {
        assert_eq!(index_text("Café, CRÈME brûlée!"), "cafe creme brulee");
        assert_eq!(index_text("Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ"), "full width abc");
        assert_eq!(index_text("naïve Ærø straße"), "naive ærø straße");
        assert_eq!(index_text("don't stop_now 42"), "don t stop now 42");
        assert_eq!(index_text("  ...  "), "");
    }

    #[test]
    fn scripts_without_spaces_give_a_token_per_character() {
        assert_eq!(index_text("你好世界"), "你 好 世 界");
        assert_eq!(index_text("日本語のテキスト"), "日 本 語 の テ キ ス ト");
        assert_eq!(index_text("한국어 abc中文"), "한 국 어 abc 中 文");
        assert_eq!(index_text("Привет, мир"), "привет мир");
    }

    #[test]
    fn a_query_is_one_term_per_word_and_a_phrase_where_a_word_splits() {
        let query = Query::parse("Café  世界 don't").expect("valid");
        assert_eq!(query.terms(), &[word("cafe"), phrase(&["世", "界"]), phrase(&["don", "t"])]);
        assert_eq!(query.tokens(), vec!["cafe", "世", "界", "don", "t"]);
        assert_eq!(Query::parse("CAFE cafe").expect("valid").terms(), &[word("cafe")]);
        assert_eq!(
            Query::parse("tea cafe TEA").expect("valid").terms(),
            &[word("tea"), word("cafe")],
            "a repeat anywhere is one term"
        );
    }

    #[test]
    fn a_query_needs_a_word_and_not_too_many() {
        assert!(Query::parse("").is_err());
        assert!(Query::parse(" !! -- ").is_err());
        assert!(Query::parse("a b c d e f g h").is_ok());
        assert!(Query::parse("a b c d e f g h i").is_err());
    }

    #[test]
    fn what_a_query_looks_for_is_what_the_index_has() {
        // Every token of a query is a token of the indexed text it should find.
        let indexed = index_text("Ｗe ate crème brûlée at 東京駅");
        let tokens: Vec<&str> = indexed.split(' ').collect();
        for token in Query::parse("CREME Brulee 東京").expect("valid").tokens() {
            assert!(tokens.contains(&token), "{token} in {indexed}");
        }
    }
}
