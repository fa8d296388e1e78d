//! The password arithmetic of `accounts`: a pinned vector, normalisation, tokens.

use super::*;

/// The vector's salt: 16 bytes, as a new password gets.
const SALT: &[u8; 16] = b"chatd-test-salt!";

fn kdf() -> Kdf {
    KdfCost::DEFAULT.with_salt(SALT.to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tag_of(typed: &str) -> Vec<u8> {
    let password = normalise_password(typed, true).expect("a usable password");
    derive(&password, &kdf()).expect("the default cost derives").to_vec()
}

/// Argon2id v0x13, m=19456 t=2 p=1, 32 bytes. Computed once with this code, and the same
/// from the reference implementation (Debian's `argon2` 0~20171227):
/// `echo -n 'correct horse' | argon2 chatd-test-salt! -id -t 2 -k 19456 -p 1 -l 32 -r`.
const CORRECT_HORSE_TAG: &str = "75ff1ee3899f6475285fb80e643b5abde12917cef6122d6afcb44ac34ef3f745";
/// SHA-256 of those 32 bytes (`xxd -r -p | sha256sum`): what the store keeps.
const CORRECT_HORSE_VERIFIER: &str =
    "1bd76167f09d4b96821e72f5d6c07931276b2f7d32c91fb0e551f5c746f4548a";
/// The reference implementation's tag of `password12` under the same parameters.
const PASSWORD12_TAG: &str = "e50bb7a40c798afb3bf05fd688561b1b3593a06ac05582e90c0bf6fc3b097274";

#[test]
fn the_pinned_vector_gives_the_pinned_tag_and_verifier() {
    assert_eq!(KdfCost::DEFAULT, KdfCost { memory_kib: 19456, passes: 2 });
    let tag = tag_of("correct horse");
    assert_eq!(hex(&tag), CORRECT_HORSE_TAG);
    assert_eq!(hex(&verifier_of(&tag)), CORRECT_HORSE_VERIFIER);
    assert!(verifier_matches(&tag, &verifier_of(&tag)));
}

#[test]
fn the_reference_implementation_agrees_on_a_second_password() {
    assert_eq!(hex(&tag_of("password12")), PASSWORD12_TAG);
}

#[test]
fn fullwidth_letters_and_digits_give_the_ascii_password_s_tag() {
    assert_eq!(
        normalise_password("ｐａｓｓｗｏｒｄ１２", true).as_deref().map(String::as_str),
        Ok("password12")
    );
    assert_eq!(hex(&tag_of("ｐａｓｓｗｏｒｄ１２")), PASSWORD12_TAG);
}

#[test]
fn composed_and_decomposed_accents_are_one_password() {
    let composed = "caf\u{e9} au lait";
    let decomposed = "cafe\u{301} au lait";
    assert_ne!(composed, decomposed);
    assert_eq!(tag_of(composed), tag_of(decomposed));
    assert_ne!(tag_of(composed), tag_of("cafe au lait"));
}

#[test]
fn length_rules_count_characters_after_normalising() {
    assert_eq!(normalise_password("seven77", true), Err(PasswordError::TooShort));
    // A short password that exists already (an old one being typed) is still tried.
    assert_eq!(normalise_password("seven77", false).as_deref().map(String::as_str), Ok("seven77"));
    // Eight characters of two bytes each are enough; the bound is on characters.
    assert!(normalise_password("éééééééé", true).is_ok());
    assert_eq!(normalise_password("", true), Err(PasswordError::TooShort));
    let longest = "a".repeat(MAX_PASSWORD_BYTES);
    assert!(normalise_password(&longest, true).is_ok());
    let too_long = "a".repeat(MAX_PASSWORD_BYTES + 1);
    assert_eq!(normalise_password(&too_long, false), Err(PasswordError::TooLong));
    // Fullwidth forms shrink to a third: 1000 of them are 3000 bytes typed, 1000 hashed.
    assert!(normalise_password(&"ａ".repeat(1000), true).is_ok());
    assert_eq!(
        normalise_password(&"a".repeat(MAX_PASSWORD_BYTES * 4 + 1), false),
        Err(PasswordError::TooLong)
    );
}

#[test]
fn parameters_outside_chatd_s_bounds_are_refused_before_any_work() {
    let refused =
        |kdf: Kdf| matches!(derive("password12", &kdf), Err(PasswordError::BadParameters(_)));
    assert!(refused(Kdf { lanes: 2, ..kdf() }));
    assert!(refused(Kdf { lanes: 0, ..kdf() }));
    assert!(refused(Kdf { memory_kib: MAX_MEMORY_KIB + 1, ..kdf() }));
    assert!(refused(Kdf { passes: MAX_PASSES + 1, ..kdf() }));
    assert!(refused(Kdf { passes: 0, ..kdf() }));
    assert!(refused(Kdf { memory_kib: 1, ..kdf() }));
    assert!(refused(Kdf { salt: b"7 bytes".to_vec(), ..kdf() }));
    // The smallest that Argon2 takes derives (8 KiB, one pass, an 8-byte salt).
    let smallest = Kdf { salt: b"8 bytes!".to_vec(), memory_kib: 8, passes: 1, lanes: 1 };
    assert_eq!(derive("password12", &smallest).map(|tag| tag.len()), Ok(TAG_BYTES));
}

#[test]
fn a_verifier_does_not_match_another_tag_or_length() {
    let tag = [7u8; TAG_BYTES];
    let verifier = verifier_of(&tag);
    assert_eq!(verifier.len(), VERIFIER_BYTES);
    assert!(!verifier_matches(&[8u8; TAG_BYTES], &verifier));
    assert!(!verifier_matches(&tag, &verifier[..31]));
    assert!(!verifier_matches(&tag, &[]));
    // The verifier itself is not a tag that matches it (a leaked row cannot be replayed).
    assert!(!verifier_matches(&verifier, &verifier));
}

#[test]
fn a_token_matches_its_key_and_sender_only() {
    let token_key = [1u8; TOKEN_KEY_BYTES];
    let token = resume_token(&token_key, "alice", 42, 1_800_000_000);
    assert_eq!(token.len(), 8 + VERIFIER_BYTES);
    assert_eq!(token[..8], 1_800_000_000u64.to_be_bytes());
    assert!(token_matches(&token_key, "alice", 42, &token));
    assert!(!token_matches(&token_key, "alice", 43, &token));
    assert!(!token_matches(&token_key, "alicf", 42, &token));
    assert!(!token_matches(&[2u8; TOKEN_KEY_BYTES], "alice", 42, &token));
    assert!(!token_matches(&token_key, "alice", 42, &token[..token.len() - 1]));
    assert!(!token_matches(&token_key, "alice", 42, &token[..8]));
    assert!(!token_matches(&token_key, "alice", 42, &[]));
    // Every single flipped bit, in the time as in the MAC, spoils it.
    for bit in 0..token.len() * 8 {
        let mut flipped = token.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(!token_matches(&token_key, "alice", 42, &flipped), "bit {bit}");
    }
}

#[test]
fn a_token_names_one_key_and_one_time() {
    let token_key = [1u8; TOKEN_KEY_BYTES];
    let token = resume_token(&token_key, "alice", 42, 7);
    assert!(!token_matches(&token_key, "alic", 42, &token));
    assert_ne!(resume_token(&token_key, "alice", 42, 7), resume_token(&token_key, "alice", 42, 8));
}

#[test]
fn random_bytes_are_as_many_as_asked_and_differ() {
    assert_eq!(random_bytes(0), Vec::<u8>::new());
    let one = random_bytes(SALT_BYTES);
    assert_eq!(one.len(), SALT_BYTES);
    assert_ne!(one, random_bytes(SALT_BYTES));
    assert_eq!(try_random_bytes(3).map(|bytes| bytes.len()), Ok(3));
}
