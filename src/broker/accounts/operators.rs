//! The operators' side of `broker::accounts` (`chatctl accounts`): rows to show, and the
//! changes an operator may make (a one-time password, deletion, the admin role). Pure, like
//! the rest: each change comes back for the caller to store; errors are the text chatctl
//! prints (`no such account: NICK`).

use super::{Accounts, NOT_LOADED};
use crate::accounts::{self, Kdf, TAG_BYTES};
use crate::proto::control::AccountRow;
use crate::store::{AccountChange, AccountRecord};

impl Accounts {
    /// Every account, by nick, for operators; `online` says whether the nick (as registered)
    /// is connected.
    pub fn rows(&self, online: impl Fn(&str) -> bool) -> Vec<AccountRow> {
        let mut rows: Vec<AccountRow> = self
            .accounts
            .values()
            .map(|account| self.row_of(account, online(&account.nick)))
            .collect();
        rows.sort_by(|a, b| a.nick.cmp(&b.nick));
        rows
    }

    /// One account, for operators.
    pub fn row(&self, nick: &str, online: bool) -> Result<AccountRow, String> {
        Ok(self.row_of(self.operated(nick)?, online))
    }

    fn row_of(&self, account: &AccountRecord, online: bool) -> AccountRow {
        AccountRow {
            nick: account.nick.clone(),
            created_at: account.created_at,
            last_seen: account.last_seen,
            online,
            admin: account.admin,
            must_change: account.must_change,
            kept_messages: self.kept.get(&account.key).map_or(0, Vec::len) as u64,
            memory_kib: account.kdf.memory_kib,
            passes: account.kdf.passes,
        }
    }

    /// The account an operator names, or why there is none.
    fn operated(&self, nick: &str) -> Result<&AccountRecord, String> {
        if !self.loaded {
            return Err(NOT_LOADED.into());
        }
        self.lookup(nick).ok_or_else(|| no_such_account(nick))
    }

    fn operated_mut(&mut self, nick: &str) -> Result<&mut AccountRecord, String> {
        let key = self.operated(nick)?.key.clone();
        self.accounts.get_mut(&key).ok_or_else(|| no_such_account(nick))
    }

    /// An operator's new password (chatctl drew it and derived `tag` under `kdf`): it must be
    /// changed at the next login. The account's throttle is lifted (its owner may have been
    /// kept out by someone guessing).
    pub fn reset_password(
        &mut self,
        nick: &str,
        kdf: Kdf,
        tag: &[u8],
    ) -> Result<AccountChange, String> {
        accounts::check_kdf(&kdf).map_err(|err| err.to_string())?;
        if tag.len() != TAG_BYTES {
            return Err(format!("a password tag has {TAG_BYTES} bytes, not {}", tag.len()));
        }
        let account = self.operated_mut(nick)?;
        account.kdf = kdf;
        account.verifier = accounts::verifier_of(tag);
        account.must_change = true;
        let change = AccountChange::Put(account.clone());
        let key = account.key.clone();
        self.throttles.succeeded(&key);
        Ok(change)
    }

    /// Deletes an account (and its kept messages); its owner, if connected, goes on as a
    /// guest (the caller's business).
    pub fn delete(&mut self, nick: &str) -> Result<AccountChange, String> {
        let key = self.operated(nick)?.key.clone();
        self.forget_account(&key);
        Ok(AccountChange::Delete { key })
    }

    /// Grants or revokes the admin role.
    pub fn set_admin(&mut self, nick: &str, admin: bool) -> Result<AccountChange, String> {
        let account = self.operated_mut(nick)?;
        account.admin = admin;
        Ok(AccountChange::Put(account.clone()))
    }
}

fn no_such_account(nick: &str) -> String {
    format!("no such account: {nick}")
}
