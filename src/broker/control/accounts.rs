//! `chatctl accounts ...`: the operators' view of registered nicks and what they may change
//! (a one-time password, deletion, the admin role). The state and its rules are
//! `broker::accounts`'; this file answers, logs each change at notice level and hands each
//! change to the store. It must not block, and it never sees a password: chatctl derives the
//! one-time password's tag itself.
//!
//! A user whose account is deleted or whose password is reset stays connected: a deletion
//! leaves them a guest under the same nick (their session is told, as after `/unregister`),
//! a reset takes effect at their next login.

use log::info;

use super::super::Broker;
use super::super::room::{Audience, Delivery};
use crate::logging;
use crate::proto::control::{AccountsRequest, ControlReply};
use crate::proto::{AccountNews, Event};

impl Broker {
    /// The answer to `chatctl accounts ...`.
    pub(super) fn accounts_request(&mut self, request: AccountsRequest) -> ControlReply {
        let rooms = &self.rooms;
        let online = |nick: &str| rooms.find(nick).is_some();
        let done = match request {
            AccountsRequest::List => {
                if !self.accounts.is_loaded() {
                    return ControlReply::Failed("accounts are not loaded yet".into());
                }
                return ControlReply::Accounts(self.accounts.rows(online));
            }
            AccountsRequest::Show { nick } => {
                let shown = self.accounts.row(&nick, false).map(|mut row| {
                    row.online = online(&row.nick);
                    row
                });
                return match shown {
                    Ok(row) => ControlReply::Accounts(vec![row]),
                    Err(why) => ControlReply::Failed(why),
                };
            }
            AccountsRequest::ResetPassword { nick, kdf, tag } => {
                let registered = self.registered_nick(&nick);
                self.accounts.reset_password(&nick, kdf, &tag).map(|change| {
                    info!(target: logging::NOTICE, "an operator reset the password of {registered}");
                    (change, format!("the password of {registered} is reset"))
                })
            }
            AccountsRequest::Delete { nick } => {
                let registered = self.registered_nick(&nick);
                let deleted = self.accounts.delete(&nick).map(|change| {
                    info!(target: logging::NOTICE, "an operator deleted the account {registered}");
                    (change, format!("{registered} is no longer registered"))
                });
                if deleted.is_ok() {
                    self.tell_owner_unregistered(&registered);
                }
                deleted
            }
            AccountsRequest::Admin { nick, admin } => {
                let registered = self.registered_nick(&nick);
                self.accounts.set_admin(&nick, admin).map(|change| {
                    let (done, now) =
                        if admin { ("granted", "an admin") } else { ("revoked", "no admin") };
                    info!(target: logging::NOTICE, "an operator {done} the admin role of {registered}");
                    (change, format!("{registered} is {now} now"))
                })
            }
        };
        match done {
            Ok((change, text)) => {
                self.storage.account_change(change);
                ControlReply::Done(text)
            }
            Err(why) => ControlReply::Failed(why),
        }
    }

    /// A connected owner of a deleted account is told, as after `/unregister`, and goes on
    /// as a guest under the same nick. (The broker's own note of who is logged in to what is
    /// the lead's, in `identity`: it must let go of the key too.)
    fn tell_owner_unregistered(&mut self, nick: &str) {
        if let Some(member) = self.rooms.find(nick) {
            let news = AccountNews::Unregistered { nick: nick.to_string() };
            self.deliver(vec![Delivery { to: Audience::One(member), event: Event::Account(news) }]);
        }
    }

    /// The nick as registered for `nick` (a lookalike of it, in any case), or `nick` itself.
    fn registered_nick(&self, nick: &str) -> String {
        self.accounts.row(nick, false).map_or_else(|_| nick.to_string(), |row| row.nick)
    }
}
