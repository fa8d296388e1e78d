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
// A stored row from another chatd that lacks a field keeps the fields it has.
#[serde(default)]
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
    use unicode_normalization::UnicodeNormalization;

    // NFKC may shrink a password (fullwidth forms are three bytes, their ASCII one), so the
    // bound is on the result; this first one only spares normalising a huge paste.
    if typed.len() > MAX_PASSWORD_BYTES * 4 {
        return Err(PasswordError::TooLong);
    }
    // Room for the usual case up front: a String that grows leaves copies of the password in
    // the memory it gave back, which nothing zeroes.
    let mut normal = zeroize::Zeroizing::new(String::with_capacity(typed.len() * 2 + 16));
    normal.extend(typed.nfkc());
    if normal.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if new && normal.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(normal)
}

/// Argon2id of `password` (already normalised) under `kdf`: the tag a session sends.
/// Blocks for the derivation (about 20 ms and 19 MiB at the default cost).
pub fn derive(password: &str, kdf: &Kdf) -> Result<zeroize::Zeroizing<Vec<u8>>, PasswordError> {
    check_kdf(kdf)?;
    let bad = |err: argon2::Error| PasswordError::BadParameters(err.to_string());
    let params =
        argon2::Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(TAG_BYTES)).map_err(bad)?;
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut tag = zeroize::Zeroizing::new(vec![0; TAG_BYTES]);
    argon2.hash_password_into(password.as_bytes(), &kdf.salt, &mut tag).map_err(bad)?;
    Ok(tag)
}

/// Whether chatd would derive under `kdf`: one lane (sessions derive on one core), at most
/// [`MAX_MEMORY_KIB`] and [`MAX_PASSES`], a salt of at least 8 bytes (Argon2's minimum).
/// Argon2 itself checks the lower bounds.
pub fn check_kdf(kdf: &Kdf) -> Result<(), PasswordError> {
    let refuse = |what: String| Err(PasswordError::BadParameters(what));
    if kdf.lanes != 1 {
        return refuse(format!("{} lanes (chatd derives with 1)", kdf.lanes));
    }
    if kdf.memory_kib > MAX_MEMORY_KIB {
        return refuse(format!("{} KiB of memory (at most {MAX_MEMORY_KIB})", kdf.memory_kib));
    }
    if kdf.passes > MAX_PASSES {
        return refuse(format!("{} passes (at most {MAX_PASSES})", kdf.passes));
    }
    if kdf.salt.len() < argon2::MIN_SALT_LEN {
        return refuse(format!(
            "a salt of {} bytes (at least {})",
            kdf.salt.len(),
            argon2::MIN_SALT_LEN
        ));
    }
    Ok(())
}

/// What the store keeps of a tag: its SHA-256.
pub fn verifier_of(tag: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(tag).to_vec()
}

/// Whether `tag` hashes to `verifier`, compared in constant time.
pub fn verifier_matches(tag: &[u8], verifier: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // `ct_eq` of slices of different lengths is false (and says so at once: the length of a
    // verifier is no secret).
    bool::from(verifier_of(tag).ct_eq(verifier))
}

/// Bytes of `issued_at` at the head of a resume token.
const ISSUED_AT_BYTES: usize = 8;

/// The token that lets the session `sender` resume as the account `key` with a restarted
/// broker: HMAC-SHA-256 under `token_key` of the key, the sender id and `issued_at`. The token
/// carries `issued_at` so that the broker can recompute it.
///
/// Layout: `issued_at` (8 bytes, big-endian), then the MAC of the key's length (8 bytes,
/// big-endian), the key, `sender` and `issued_at` (8 bytes each, big-endian). The length
/// prefix keeps a key from running into the sender id.
pub fn resume_token(token_key: &[u8], key: &str, sender: u64, issued_at: u64) -> Vec<u8> {
    let mut token = Vec::with_capacity(ISSUED_AT_BYTES + VERIFIER_BYTES);
    token.extend_from_slice(&issued_at.to_be_bytes());
    if let Some(mac) = token_mac(token_key, key, sender, issued_at) {
        use hmac::Mac;
        token.extend_from_slice(&mac.finalize().into_bytes());
    }
    token
}

/// Whether `token` is one [`resume_token`] issued for `key` and `sender`, in constant time.
pub fn token_matches(token_key: &[u8], key: &str, sender: u64, token: &[u8]) -> bool {
    use hmac::Mac;
    let Some((issued_at, tag)) = token.split_first_chunk::<ISSUED_AT_BYTES>() else {
        return false;
    };
    let issued_at = u64::from_be_bytes(*issued_at);
    // `verify_slice` compares in constant time and refuses a tag of another length.
    token_mac(token_key, key, sender, issued_at).is_some_and(|mac| mac.verify_slice(tag).is_ok())
}

/// The MAC of a resume token, before finalising. `None` never happens (HMAC takes keys of any
/// length), and gives a token that matches nothing.
fn token_mac(
    token_key: &[u8],
    key: &str,
    sender: u64,
    issued_at: u64,
) -> Option<hmac::Hmac<sha2::Sha256>> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token_key).ok()?;
    mac.update(&(key.len() as u64).to_be_bytes());
    mac.update(key.as_bytes());
    mac.update(&sender.to_be_bytes());
    mac.update(&issued_at.to_be_bytes());
    Some(mac)
}

/// The kernel gave no random bytes (see [`try_random_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no random bytes from the kernel: {0}")]
pub struct NoRandomness(String);

/// `n` random bytes from the kernel, or why there are none. On Linux this is getrandom(2)
/// without flags, which blocks only until the kernel's generator is seeded at boot and then
/// cannot fail (EINTR is retried). The crate falls back to `/dev/urandom` where the system
/// call is missing (kernels before 3.17) or refused (ENOSYS or EPERM from a seccomp filter);
/// only then can it fail, when that file cannot be opened or read (a chroot or Landlock without
/// `/dev`, no descriptors left). chatd's unit allows getrandom (`@system-service`), so in
/// practice this fails only on a system set up against it.
pub fn try_random_bytes(n: usize) -> Result<Vec<u8>, NoRandomness> {
    let mut bytes = vec![0; n];
    getrandom::fill(&mut bytes).map_err(|err| NoRandomness(err.to_string()))?;
    Ok(bytes)
}

/// `n` random bytes from the kernel (salts, nonces, keys, one-time passwords).
///
/// # Panics
/// When the kernel gives none ([`try_random_bytes`] says when that can happen: not with
/// getrandom(2) available, which every kernel chatd supports has). There is no safe way on:
/// a predictable salt, key or one-time password is worse than stopping. Callers that can
/// answer an error instead (the broker, chatctl) use [`try_random_bytes`].
pub fn random_bytes(n: usize) -> Vec<u8> {
    match try_random_bytes(n) {
        Ok(bytes) => bytes,
        Err(err) => panic!("{err}"),
    }
}

#[cfg(test)]
mod tests;
