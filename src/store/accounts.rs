//! What both stores share of accounts: the token key's row name and how a new key is made,
//! and how an account's settings are kept (JSON of `AccountSettings` in a text column).
//!
//! It owns no SQL and no connection (each store writes its own queries). It must not fail a
//! load over a row's settings: a row whose JSON does not parse (a hand-edited database, an
//! older or newer chatd's fields) loads with default settings, and the load says so once, at
//! warn, naming the accounts.

use crate::accounts::{AccountSettings, TOKEN_KEY_BYTES};

/// The `secrets` row that holds the key resume tokens are signed with.
pub(super) const TOKEN_KEY_NAME: &str = "resume_token_key";

/// A token key for a database that has none yet.
pub(super) fn new_token_key() -> Vec<u8> {
    crate::accounts::random_bytes(TOKEN_KEY_BYTES)
}

/// An account's settings as stored.
pub(super) fn settings_json(settings: &AccountSettings) -> String {
    // Strings, booleans and a list of strings: serde_json cannot fail on them; were it to,
    // the defaults are what the next login gets, which is what an unreadable row gives too.
    serde_json::to_string(settings).unwrap_or_else(|_| String::from("{}"))
}

/// Reads the settings of the accounts one load returns, remembering the rows it could not.
#[derive(Default)]
pub(super) struct SettingsReader {
    unreadable: Vec<String>,
}

impl SettingsReader {
    /// The settings stored for the account `key`; the defaults if they do not parse.
    pub(super) fn read(&mut self, key: &str, json: &str) -> AccountSettings {
        match serde_json::from_str(json) {
            Ok(settings) => settings,
            Err(_) => {
                self.unreadable.push(key.to_string());
                AccountSettings::default()
            }
        }
    }

    /// The load is over: one warning for all the rows whose settings were not read.
    pub(super) fn finish(self, location: &str) {
        if self.unreadable.is_empty() {
            return;
        }
        log::warn!(
            "the database {location} has settings that cannot be read for {} account(s) ({}); they get the default settings",
            self.unreadable.len(),
            self.unreadable.join(", ")
        );
    }

    #[cfg(test)]
    pub(super) fn unreadable(&self) -> &[String] {
        &self.unreadable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_go_to_json_and_back_and_an_unreadable_row_gets_the_defaults() {
        let settings = AccountSettings {
            charset: Some("gbk".into()),
            colour: Some(false),
            timestamps: None,
            bell: Some(true),
            ignored: vec!["bob".into(), "Ζωή".into()],
        };
        let mut reader = SettingsReader::default();
        assert_eq!(reader.read("alice", &settings_json(&settings)), settings);
        assert!(reader.unreadable().is_empty());
        for broken in ["", "{", "[1, 2]", "{\"colour\": \"yes\"}"] {
            assert_eq!(reader.read("bob", broken), AccountSettings::default(), "{broken:?}");
        }
        assert_eq!(reader.unreadable().len(), 4);
        reader.finish("test.db");
    }
}
