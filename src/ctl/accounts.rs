//! `chatctl accounts ...`: its command line, the one-time password of `reset-password`, and
//! how the accounts look (a table for `list`, `key: value` lines for `show`).
//!
//! The one-time password is drawn and derived here, in chatctl: the broker gets only its
//! Argon2 tag (`AccountsRequest::ResetPassword`), like a session's, so that no password ever
//! reaches the broker. chatctl reads no settings file, so the tag is derived at the default
//! cost ([`KdfCost::DEFAULT`]); where the server's `password_memory_kib`/`password_passes` are
//! higher the account is rehashed at its next login, and the user's own new password (which
//! must be chosen at once) gets the configured cost anyway.

use clap::{Subcommand, ValueEnum};

use super::CtlError;
use crate::accounts::{self, KdfCost, SALT_BYTES};
use crate::proto::control::{AccountRow, AccountsRequest};

/// Characters of a one-time password.
pub const ONE_TIME_LENGTH: usize = 12;
/// Letters and digits, without those that pass for each other when read out or copied by
/// hand (`0`/`O`/`o`, `1`/`l`/`I`): 56 symbols, 69 bits in 12 characters.
const ONE_TIME_ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

#[derive(Debug, Clone, Subcommand)]
pub enum AccountsCommand {
    /// Every registered nick: created, last seen, online, admin (the default).
    List,
    /// One account in detail.
    Show { nick: String },
    /// Give NICK a one-time password (printed); it must be changed at the next login.
    ResetPassword { nick: String },
    /// Delete the account (and the messages kept for it); a connected owner stays, as a guest.
    Delete { nick: String },
    /// Give NICK a role.
    Grant { nick: String, role: Role },
    /// Take a role from NICK.
    Revoke { nick: String, role: Role },
}

/// What an account may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// What the web dashboard checks.
    Admin,
}

/// A one-time password drawn for `reset-password`, and the request that carries its tag.
pub struct Reset {
    pub nick: String,
    pub password: zeroize::Zeroizing<String>,
    pub request: AccountsRequest,
}

/// The request for `command` (`None`: `chatctl accounts` alone, a list). A password reset
/// draws and derives its one-time password first (the derivation takes a moment).
pub fn request(command: Option<&AccountsCommand>) -> Result<AccountsRequest, CtlError> {
    Ok(match command.cloned().unwrap_or(AccountsCommand::List) {
        AccountsCommand::List => AccountsRequest::List,
        AccountsCommand::Show { nick } => AccountsRequest::Show { nick },
        AccountsCommand::ResetPassword { nick } => reset(nick)?.request,
        AccountsCommand::Delete { nick } => AccountsRequest::Delete { nick },
        AccountsCommand::Grant { nick, role: Role::Admin } => {
            AccountsRequest::Admin { nick, admin: true }
        }
        AccountsCommand::Revoke { nick, role: Role::Admin } => {
            AccountsRequest::Admin { nick, admin: false }
        }
    })
}

/// Draws a one-time password for `nick` and derives its tag under a fresh salt.
pub fn reset(nick: String) -> Result<Reset, CtlError> {
    let failed = |why: String| CtlError::Usage(format!("cannot make a one-time password: {why}"));
    let password = one_time_password().map_err(|err| failed(err.to_string()))?;
    let salt = accounts::try_random_bytes(SALT_BYTES).map_err(|err| failed(err.to_string()))?;
    let kdf = KdfCost::DEFAULT.with_salt(salt);
    let normal =
        accounts::normalise_password(&password, true).map_err(|err| failed(err.to_string()))?;
    let tag = accounts::derive(&normal, &kdf).map_err(|err| failed(err.to_string()))?;
    let request = AccountsRequest::ResetPassword { nick: nick.clone(), kdf, tag: tag.to_vec() };
    Ok(Reset { nick, password, request })
}

/// [`ONE_TIME_LENGTH`] characters of [`ONE_TIME_ALPHABET`], each equally likely: bytes at or
/// above the largest multiple of the alphabet's size are drawn again.
fn one_time_password() -> Result<zeroize::Zeroizing<String>, accounts::NoRandomness> {
    let size = ONE_TIME_ALPHABET.len();
    let unbiased = 256 - 256 % size;
    let mut password = zeroize::Zeroizing::new(String::with_capacity(ONE_TIME_LENGTH));
    while password.len() < ONE_TIME_LENGTH {
        let bytes = zeroize::Zeroizing::new(accounts::try_random_bytes(2 * ONE_TIME_LENGTH)?);
        for &byte in bytes.iter().filter(|&&byte| usize::from(byte) < unbiased) {
            if password.len() < ONE_TIME_LENGTH {
                password.push(char::from(ONE_TIME_ALPHABET[usize::from(byte) % size]));
            }
        }
    }
    Ok(password)
}

/// What `reset-password` prints once the broker took the tag.
pub fn reset_done(nick: &str, password: &str) -> String {
    format!("one-time password for {nick}: {password} (it must be changed at the next login)\n")
}

/// The same, for scripts.
pub fn reset_done_json(nick: &str, password: &str) -> String {
    let value =
        serde_json::json!({ "ok": true, "nick": nick, "password": password, "must_change": true });
    format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default())
}

/// A Unix time in UTC to the minute, or `never` for 0.
fn when(at: u64) -> String {
    if at == 0 {
        return "never".to_string();
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    // 2026-12-01T19:00:00Z → 2026-12-01T19:00Z: seconds say nothing here.
    match text.len() {
        20 => format!("{}Z", &text[..16]),
        _ => text,
    }
}

fn yes(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

/// `chatctl accounts list`: `NICK CREATED LAST-SEEN ONLINE ADMIN`.
pub fn table(rows: &[AccountRow]) -> String {
    if rows.is_empty() {
        return "no accounts\n".to_string();
    }
    let rows = rows
        .iter()
        .map(|row| {
            vec![
                row.nick.clone(),
                when(row.created_at),
                when(row.last_seen),
                yes(row.online),
                yes(row.admin),
            ]
        })
        .collect();
    super::output::table(&["NICK", "CREATED", "LAST-SEEN", "ONLINE", "ADMIN"], rows)
}

/// `chatctl accounts show NICK`: one `key: value` line each.
pub fn details(row: &AccountRow) -> String {
    let lines = [
        ("nick", row.nick.clone()),
        ("created", when(row.created_at)),
        ("last-seen", when(row.last_seen)),
        ("online", yes(row.online)),
        ("admin", yes(row.admin)),
        ("must-change-password", yes(row.must_change)),
        ("kept-messages", row.kept_messages.to_string()),
        ("password-cost", format!("{} KiB, {} passes", row.memory_kib, row.passes)),
    ];
    lines.iter().map(|(key, value)| format!("{key}: {value}\n")).collect()
}

/// The same, for scripts: the row as an object.
pub fn details_json(row: &AccountRow) -> String {
    match serde_json::to_string_pretty(row) {
        Ok(text) => format!("{text}\n"),
        Err(err) => format!("{{\"ok\": false, \"error\": \"cannot encode the answer: {err}\"}}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::{Command, Ctl};
    use clap::Parser;

    fn parsed(args: &[&str]) -> Option<AccountsCommand> {
        let ctl = Ctl::try_parse_from(args).expect("parses");
        match ctl.command {
            Command::Accounts { action } => action,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_becomes_a_request() {
        assert_eq!(
            request(parsed(&["chatctl", "accounts"]).as_ref()).ok(),
            Some(AccountsRequest::List)
        );
        let cases = [
            (vec!["list"], AccountsRequest::List),
            (vec!["show", "alice"], AccountsRequest::Show { nick: "alice".into() }),
            (vec!["delete", "alice"], AccountsRequest::Delete { nick: "alice".into() }),
            (
                vec!["grant", "alice", "admin"],
                AccountsRequest::Admin { nick: "alice".into(), admin: true },
            ),
            (
                vec!["revoke", "alice", "admin"],
                AccountsRequest::Admin { nick: "alice".into(), admin: false },
            ),
        ];
        for (words, expected) in cases {
            let args: Vec<&str> =
                ["chatctl", "accounts"].into_iter().chain(words.clone()).collect();
            assert_eq!(request(parsed(&args).as_ref()).ok(), Some(expected), "{words:?}");
        }
        assert!(Ctl::try_parse_from(["chatctl", "accounts", "grant", "alice", "root"]).is_err());
        assert!(Ctl::try_parse_from(["chatctl", "accounts", "show"]).is_err());
        assert!(Ctl::try_parse_from(["chatctl", "accounts", "list", "--json"]).is_ok());
    }

    #[test]
    fn a_one_time_password_is_twelve_unambiguous_letters_and_digits() {
        let password = one_time_password().expect("random");
        assert_eq!(password.chars().count(), ONE_TIME_LENGTH);
        assert!(password.bytes().all(|byte| ONE_TIME_ALPHABET.contains(&byte)), "{}", *password);
        assert!(!ONE_TIME_ALPHABET.iter().any(|byte| b"0Oo1lI".contains(byte)));
        assert_ne!(*password, *one_time_password().expect("random"));
    }

    #[test]
    fn a_reset_sends_the_tag_of_the_password_it_prints() {
        let reset = reset("alice".into()).expect("reset");
        let AccountsRequest::ResetPassword { nick, kdf, tag } = &reset.request else {
            panic!("{:?}", reset.request.clone())
        };
        assert_eq!(nick, "alice");
        assert_eq!((kdf.memory_kib, kdf.passes, kdf.lanes, kdf.salt.len()), (19456, 2, 1, 16));
        let again = accounts::derive(&reset.password, kdf).expect("derive");
        assert_eq!(tag, &again.to_vec());
        assert_eq!(
            reset_done("alice", "abcdefghjkmn"),
            "one-time password for alice: abcdefghjkmn (it must be changed at the next login)\n"
        );
    }

    fn row(nick: &str, last_seen: u64) -> AccountRow {
        AccountRow {
            nick: nick.into(),
            created_at: 1_796_151_600,
            last_seen,
            online: last_seen == 0,
            admin: nick == "alice",
            must_change: false,
            kept_messages: 2,
            memory_kib: 19456,
            passes: 2,
        }
    }

    #[test]
    fn accounts_show_as_a_table_and_in_detail() {
        let text = table(&[row("alice", 0), row("小明", 1_796_155_200)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NICK   CREATED            LAST-SEEN          ONLINE  ADMIN");
        assert_eq!(lines[1], "alice  2026-12-01T19:00Z  never              yes     yes");
        assert_eq!(lines[2], "小明   2026-12-01T19:00Z  2026-12-01T20:00Z  no      no");
        assert_eq!(table(&[]), "no accounts\n");
        let text = details(&row("alice", 0));
        assert!(
            text.starts_with("nick: alice\ncreated: 2026-12-01T19:00Z\nlast-seen: never\n"),
            "{text}"
        );
        assert!(
            text.contains("\nadmin: yes\n")
                && text.ends_with("password-cost: 19456 KiB, 2 passes\n"),
            "{text}"
        );
    }
}
