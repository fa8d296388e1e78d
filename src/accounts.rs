//! Registered nicknames: the shapes every role shares, and the password arithmetic.
//!
//! The scheme (docs/ARCHITECTURE.md, "Accounts"): the **session** turns a password into a tag
//! with Argon2id, from a salt and parameters the broker handed out ([`Kdf`]); the **broker**
//! keeps only [`verifier_of`] the tag (SHA-256) and compares in constant time
//! ([`verifier_matches`]). A leaked database therefore still costs one Argon2 per guess, and
//! its rows cannot be replayed on `broker.sock` (they are hashes of what a session must send).
//! A session resuming with a restarted broker proves its login with a [`resume_token`], an
//! HMAC under a key the store keeps.
//!
//! This module owns the arithmetic and the shared shapes (wire and store); it does no I/O and
//! decides nothing (the broker's `accounts` module owns challenges, throttles and
//! reservation; the session owns prompting).

use serde::{Deserialize, Serialize};

/// Bytes of salt drawn for every new password.
pub const SALT_BYTES: usize = 16;
/// Bytes of the Argon2 output (the tag a session sends).
pub const TAG_BYTES: usize = 32;
/// Bytes of a verifier (SHA-256 of the tag) and of a resume token (HMAC-SHA-256).
pub const VERIFIER_BYTES: usize = 32;
/// Bytes of the broker's token key.
pub const TOKEN_KEY_BYTES: usize = 32;

/// The most memory a stored parameter set may ask of a session (256 MiB): a corrupt row, or
/// an operator's typo, must not make children fail or swap.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The most passes a stored parameter set may ask.
pub const MAX_PASSES: u32 = 16;
/// The longest password accepted, in bytes after normalisation.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// How a password becomes a tag: Argon2id, version 0x13, with these parameters and salt.
/// Kept per account, so that raising the defaults rehashes each account at its next login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    pub salt: Vec<u8>,
    /// Argon2's m, in KiB.
    pub memory_kib: u32,
    /// Argon2's t.
    pub passes: u32,
    /// Argon2's p.
    pub lanes: u32,
}

/// The parameters for new passwords (`password_memory_kib`, `password_passes`; one lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub passes: u32,
}

impl KdfCost {
    /// OWASP's first Argon2id configuration (and the argon2 crate's default).
    pub const DEFAULT: KdfCost = KdfCost { memory_kib: 19 * 1024, passes: 2 };

    /// A [`Kdf`] of this cost with `salt`.
    pub fn with_salt(self, salt: Vec<u8>) -> Kdf {
        Kdf { salt, memory_kib: self.memory_kib, passes: self.passes, lanes: 1 }
    }

    /// Whether `kdf` costs less than this (its account is rehashed at its next login).
    pub fn is_above(self, kdf: &Kdf) -> bool {
        kdf.memory_kib < self.memory_kib || kdf.passes < self.passes
    }
}

/// What an account keeps of a user's preferences between logins. `None`: the user never chose
/// (the session's own default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSettings {
    /// The charset's name as `/charset` takes it.
    pub charset: Option<String>,
    pub colour: Option<bool>,
    pub timestamps: Option<bool>,
    pub bell: Option<bool>,
    /// Ignored nicks, as shown.
    pub ignored: Vec<String>,
}

/// Why a password cannot be used or derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("a password has at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The parameters are outside what chatd accepts (a corrupt row, say).
    #[error("unusable password parameters: {0}")]
    BadParameters(String),
}

/// The password as hashed: NFKC (NIST SP 800-63B), so that the same password typed on any
/// terminal, in any charset the session decoded to UTF-8, gives the same bytes. Refuses a
/// password shorter than [`MIN_PASSWORD_CHARS`] when `new` (one being chosen), and one longer
/// than [`MAX_PASSWORD_BYTES`] always.
pub fn normalise_password(
    typed: &str,
    new: bool,
) -> Result<zeroize::Zeroizing<String>, PasswordError> {
    let _ = (typed, new);
    todo!("accounts helper")
}

/// Argon2id of `password` (already normalised) under `kdf`: the tag a session sends.
/// Blocks for the derivation (about 20 ms and 19 MiB at the default cost).
pub fn derive(password: &str, kdf: &Kdf) -> Result<zeroize::Zeroizing<Vec<u8>>, PasswordError> {
    let _ = (password, kdf);
    todo!("accounts helper")
}

/// What the store keeps of a tag: its SHA-256.
pub fn verifier_of(tag: &[u8]) -> Vec<u8> {
    let _ = tag;
    todo!("accounts helper")
}

/// Whether `tag` hashes to `verifier`, compared in constant time.
pub fn verifier_matches(tag: &[u8], verifier: &[u8]) -> bool {
    let _ = (tag, verifier);
    todo!("accounts helper")
}

/// The token that lets the session `sender` resume as the account `key` with a restarted
/// broker: HMAC-SHA-256 under `token_key` of the key, the sender id and `issued_at`. The token
/// carries `issued_at` so that the broker can recompute it.
pub fn resume_token(token_key: &[u8], key: &str, sender: u64, issued_at: u64) -> Vec<u8> {
    let _ = (token_key, key, sender, issued_at);
    todo!("accounts helper")
}

/// Whether `token` is one [`resume_token`] issued for `key` and `sender`, in constant time.
pub fn token_matches(token_key: &[u8], key: &str, sender: u64, token: &[u8]) -> bool {
    let _ = (token_key, key, sender, token);
    todo!("accounts helper")
}

/// `n` random bytes from the kernel (salts, nonces, keys, one-time passwords).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let _ = n;
    todo!("accounts helper")
}
