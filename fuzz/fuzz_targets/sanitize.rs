//! Any text a user can send: after cleaning, no escape, no control character, no bidi control,
//! and cleaning again changes nothing.
#![no_main]

use chatd::text::{is_clean, sanitize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let clean = sanitize(&text);
    assert!(is_clean(&clean));
    assert!(!clean.chars().any(char::is_control));
    assert_eq!(sanitize(&clean), clean);
    let nick = chatd::names::normalize_nick(&text);
    assert!(!nick.chars().any(char::is_control));
});
