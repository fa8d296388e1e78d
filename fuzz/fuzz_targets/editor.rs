//! Any keystrokes, in UTF-8 or GBK: the line editor never panics, echoes no escape sequence,
//! and its lines hold no control character and stay within the line limit.
#![no_main]

use chatd::session::charset::Charset;
use chatd::session::editor::{LineEditor, Typed};
use chatd::text::MAX_LINE_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&choice, keys)) = input.split_first() else { return };
    let charset = if choice % 2 == 0 { "utf-8" } else { "gbk" };
    let mut editor = LineEditor::new(Charset::by_name(charset).expect("known"));
    let (mut typed, mut echo) = (Vec::new(), String::new());
    for chunk in keys.chunks(7) {
        editor.feed(chunk, &mut typed, &mut echo);
    }
    assert!(!echo.contains('\x1b'));
    for line in typed {
        if let Typed::Line(Ok(text) | Err(text)) = line {
            assert!(!text.chars().any(char::is_control));
            assert!(text.len() <= MAX_LINE_BYTES);
        }
    }
});
