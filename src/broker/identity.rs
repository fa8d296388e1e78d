//! The broker's side of accounts, as the loop sees it: a login of a registered nick becomes a
//! challenge, a proof becomes a login (replacing the account's old session), a registration, a
//! new password or a deletion; resuming sessions keep their login with a token; private lines
//! to registered users who are away are kept; preferences are saved; `accounts = "required"`
//! holds guests to `/register` and `/login`.
//!
//! The decisions are `accounts`' (challenges, proofs, throttles, the registry) and `room`'s
//! (who holds which nick); this file connects them to the peers, the store and the log. Every
//! change to an account goes to the store through `storage`, never written here. A wrong
//! password is logged once, at notice, as `authentication failure for NICK from ADDR` (the
//! line the shipped fail2ban filter matches); the session tells the master, which counts a
//! penalty trip for the address.

use std::net::SocketAddr;
use std::time::Instant;

use log::{info, warn};

use super::Broker;
use super::accounts::{Denied, NOT_LOADED, Proved};
use super::room::{Audience, Delivery, MemberId};
use crate::clock::unix_now;
use crate::config::AccountsMode;
use crate::logging;
use crate::names::{self, DEFAULT_ROOM};
use crate::proto::{AccountNews, AccountSettings, Event, Failure, Purpose};
use crate::store::AccountsRecord;

/// The answer to every account command when `accounts = "off"`.
const ACCOUNTS_OFF: &str = "accounts are off on this server";

fn to(id: MemberId, event: Event) -> Delivery {
    Delivery { to: Audience::One(id), event }
}

fn failed(id: MemberId, failure: Failure) -> Vec<Delivery> {
    vec![to(id, Event::Failed(failure))]
}

impl Broker {
    /// The client's address as the broker knows it (the master's word, or the session's).
    fn source_of(&self, id: MemberId) -> String {
        self.peers.get(id).map(|peer| peer.client.clone()).unwrap_or_default()
    }

    /// Whether a password may be asked of this session's client: over TLS, from loopback, or
    /// because the operator allows passwords on plain connections.
    fn passwords_allowed(&self, id: MemberId) -> bool {
        let Some(peer) = self.peers.get(id) else { return false };
        let loopback = peer.client.parse::<SocketAddr>().is_ok_and(|addr| addr.ip().is_loopback());
        peer.tls || loopback || !self.passwords_need_tls
    }

    /// The account `nick` belongs to, when accounts are on.
    fn registered(&self, nick: &str) -> Option<(String, String)> {
        if self.accounts.mode() == AccountsMode::Off {
            return None;
        }
        self.accounts.find(nick).map(|account| (account.key.clone(), account.nick.clone()))
    }

    /// `Login`: a free nick is taken as before; a registered one is challenged.
    pub(super) fn login_request(
        &mut self,
        id: MemberId,
        session: u64,
        nick: &str,
        tls: bool,
        now: Instant,
    ) -> Vec<Delivery> {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.tls = tls;
        }
        if let Some((_, registered)) = self.registered(nick) {
            if !self.passwords_allowed(id) {
                return failed(id, Failure::NickRegistered(registered));
            }
            return self.challenge_request(id, nick, Purpose::Login, now);
        }
        let mut deliveries = self.rooms.login(id, session, nick);
        self.rooms.set_tls(id, tls);
        if self.logged_in_now(&deliveries) {
            deliveries.extend(self.motd_for(id));
        }
        deliveries
    }

    /// Whether `deliveries` answer a login that succeeded.
    fn logged_in_now(&self, deliveries: &[Delivery]) -> bool {
        matches!(deliveries.first().map(|d| &d.event), Some(Event::LoggedIn { .. }))
    }

    /// The message of the day, for a session that just logged in.
    fn motd_for(&self, id: MemberId) -> Vec<Delivery> {
        match &self.moderation.motd {
            Some(motd) => {
                vec![to(id, Event::Motd { lines: motd.lines().map(str::to_string).collect() })]
            }
            None => Vec::new(),
        }
    }

    /// `Challenge` (and a `Login` of a registered nick): within the throttles, what the
    /// session must derive.
    pub(super) fn challenge_request(
        &mut self,
        id: MemberId,
        nick: &str,
        purpose: Purpose,
        now: Instant,
    ) -> Vec<Delivery> {
        if self.accounts.mode() == AccountsMode::Off {
            return failed(id, Failure::AccountRefused(ACCOUNTS_OFF.into()));
        }
        if !self.storage.is_on() {
            return failed(
                id,
                Failure::AccountRefused(
                    "accounts are not available on this server (history_days = 0)".into(),
                ),
            );
        }
        if !self.passwords_allowed(id) {
            return failed(
                id,
                Failure::AccountRefused(
                    "passwords are accepted only over TLS; connect to the TLS port".into(),
                ),
            );
        }
        let source = self.source_of(id);
        let logged_in = self.rooms.account_of(id).map(str::to_string);
        match self.accounts.challenge(id, &source, nick, purpose, logged_in.as_deref(), now) {
            Ok(challenge) => vec![to(id, Event::Challenge(challenge))],
            Err(failure) => failed(id, failure),
        }
    }

    /// `Prove`: the broker compares; what the proof was for is done.
    pub(super) fn prove_request(
        &mut self,
        id: MemberId,
        session: u64,
        nonce: u64,
        current: Option<&[u8]>,
        fresh: Option<&[u8]>,
        now: Instant,
    ) -> Vec<Delivery> {
        let source = self.source_of(id);
        let proved = match self.accounts.prove(id, &source, nonce, current, fresh, now, unix_now())
        {
            Ok(proved) => proved,
            Err(Denied::Failure(failure)) => return failed(id, failure),
            Err(Denied::WrongPassword { nick }) => {
                let address = source_address(&source);
                info!(
                    target: logging::NOTICE,
                    "authentication failure for {} from {address}",
                    crate::text::sanitize(&nick)
                );
                return failed(id, Failure::WrongPassword(nick));
            }
        };
        let mut stored_as = 0;
        for change in proved.changes.iter().cloned() {
            stored_as = self.storage.account_change(change);
        }
        // What the user is told of a registration, a new password or a deletion waits until
        // it is on disk: a confirmed change must survive a crash of the broker.
        let answer = match proved.purpose {
            Purpose::Login => return self.logged_in(id, session, proved),
            Purpose::Register => {
                info!("{} registered (session pid {})", proved.nick, self.pid_of(id));
                self.rooms.set_account(id, Some(proved.key.clone()));
                let nick = proved.nick.clone();
                let mut out = vec![self.identified(id, session, &proved)];
                out.push(to(id, Event::Account(AccountNews::Registered { nick })));
                out
            }
            Purpose::ChangePassword => {
                info!("{} changed its password", proved.nick);
                vec![to(id, Event::Account(AccountNews::PasswordChanged))]
            }
            Purpose::Unregister => {
                info!("{} is no longer registered (its owner said so)", proved.nick);
                if self.rooms.account_of(id) == Some(proved.key.as_str()) {
                    self.rooms.set_account(id, None);
                }
                vec![to(id, Event::Account(AccountNews::Unregistered { nick: proved.nick }))]
            }
        };
        self.held_until_stored.push_back((stored_as, answer));
        Vec::new()
    }

    /// Answers held until the account changes they confirm are on disk, now that they are.
    pub(super) fn release_stored(&mut self) {
        let settled = self.storage.account_changes_settled();
        self.accounts_settled(settled);
        while self.held_until_stored.front().is_some_and(|(number, _)| *number <= settled) {
            if let Some((_, deliveries)) = self.held_until_stored.pop_front() {
                self.deliver(deliveries);
            }
        }
    }

    fn pid_of(&self, id: MemberId) -> i32 {
        self.peers.get(id).map_or(0, |peer| peer.pid)
    }

    /// The `Identified` a logged-in session keeps (its token for a restarted broker).
    fn identified(&self, id: MemberId, session: u64, proved: &Proved) -> Delivery {
        let token = self.accounts.token_for(&proved.key, session, unix_now());
        to(
            id,
            Event::Identified {
                nick: proved.nick.clone(),
                token,
                settings: proved.settings.clone(),
                admin: proved.admin,
                must_change: proved.must_change,
            },
        )
    }

    /// A proved login: at the nickname prompt the session logs in as the account's nick; a
    /// guest takes it. Whoever held the account is replaced. Then what came while the user
    /// was away.
    fn logged_in(&mut self, id: MemberId, session: u64, proved: Proved) -> Vec<Delivery> {
        let key = proved.key.clone();
        let nick = proved.nick.clone();
        info!(
            "{nick} logged in (session pid {}, {})",
            self.pid_of(id),
            source_address(&self.source_of(id))
        );
        let mut out = vec![self.identified(id, session, &proved)];
        let old = self.rooms.holder_of(&key, id);
        if let Some(old) = old
            && let Some(peer) = self.peers.get_mut(old)
        {
            // Told why and out of its room; ignored until it closes.
            peer.kicked = true;
        }
        if self.rooms.nick(id).is_none() {
            let tls = self.peers.get(id).is_some_and(|peer| peer.tls);
            let entered = match old {
                Some(old) => self.rooms.take_over(id, session, &nick, old),
                None => self.rooms.login(id, session, &nick),
            };
            let logged_in = entered.iter().any(|d| matches!(d.event, Event::LoggedIn { .. }));
            out.extend(entered);
            if !logged_in {
                return out;
            }
            self.rooms.set_tls(id, tls);
            out.extend(self.motd_for(id));
        } else {
            out.extend(self.rooms.rename_replacing(id, &nick, old));
        }
        self.rooms.set_account(id, Some(key.clone()));
        out.extend(self.while_away(id, &key, &nick));
        out
    }

    /// The private lines kept for `key`, and (asked of the store) how many lines of its last
    /// room mentioned it since it left.
    fn while_away(&mut self, id: MemberId, key: &str, nick: &str) -> Vec<Delivery> {
        let (messages, delivered) = self.accounts.take_kept(key);
        if let Some(change) = delivered {
            self.storage.account_change(change);
        }
        let (since, room) = self.accounts.last_seen(key).unwrap_or((0, DEFAULT_ROOM.into()));
        if since > 0 && self.storage.mentions(id, room, nick.to_string(), since) {
            self.away_news.insert(id, messages);
            return Vec::new();
        }
        if messages.is_empty() {
            return Vec::new();
        }
        vec![to(id, Event::WhileAway { messages, mentions: 0, since })]
    }

    /// The store counted the lines that mentioned a user who just logged in.
    pub(super) fn mentions_counted(&mut self, id: MemberId, count: u64) {
        let messages = self.away_news.remove(&id).unwrap_or_default();
        let Some(key) = self.rooms.account_of(id).map(str::to_string) else { return };
        let since = self.accounts.last_seen(&key).map_or(0, |(since, _)| since);
        if messages.is_empty() && count == 0 {
            return;
        }
        self.deliver(vec![to(id, Event::WhileAway { messages, mentions: count, since })]);
    }

    /// `Logout`: the session goes on as a guest; a nick that is the account's becomes a guest
    /// name.
    pub(super) fn logout_request(&mut self, id: MemberId) -> Vec<Delivery> {
        if self.accounts.mode() == AccountsMode::Off {
            return failed(id, Failure::AccountRefused(ACCOUNTS_OFF.into()));
        }
        let Some(key) = self.rooms.account_of(id).map(str::to_string) else {
            return failed(id, Failure::AccountRefused("You are not logged in".into()));
        };
        self.account_ended(id, &key);
        self.rooms.set_account(id, None);
        let current = self.rooms.nick(id).unwrap_or_default().to_string();
        let guest = if names::lookalike_key(&current) == key {
            self.rooms.guest_name()
        } else {
            current.clone()
        };
        let mut out = vec![to(id, Event::Account(AccountNews::LoggedOut { guest: guest.clone() }))];
        if guest != current {
            out.extend(self.rooms.change_nick(id, &guest));
        }
        out
    }

    /// A logged-in session's account is left (logout, or the session ended): when, and where.
    fn account_ended(&mut self, id: MemberId, key: &str) {
        let room = self.rooms.room_key_of(id).unwrap_or(DEFAULT_ROOM).to_string();
        if let Some(change) = self.accounts.seen(key, unix_now(), &room) {
            self.storage.account_change(change);
        }
    }

    /// A member is removed: its account notes when it left; its challenge is void.
    pub(super) fn member_leaving(&mut self, id: MemberId) {
        self.accounts.forget_member(id);
        self.away_news.remove(&id);
        if let Some(key) = self.rooms.account_of(id).map(str::to_string) {
            self.account_ended(id, &key);
        }
    }

    /// `SaveSettings` from a logged-in session.
    pub(super) fn save_settings(&mut self, id: MemberId, settings: AccountSettings) {
        let Some(key) = self.rooms.account_of(id).map(str::to_string) else { return };
        if let Some(change) = self.accounts.save_settings(&key, settings) {
            self.storage.account_change(change);
        }
    }

    /// Whether `id` may not do what only account holders may (`accounts = "required"`).
    pub(super) fn needs_an_account(&self, id: MemberId) -> bool {
        self.accounts.mode() == AccountsMode::Required && self.rooms.account_of(id).is_none()
    }

    /// A `/nick` to a nick registered to another account is refused.
    pub(super) fn nick_reserved(&self, id: MemberId, nick: &str) -> Option<Failure> {
        let (key, registered) = self.registered(nick)?;
        (self.rooms.account_of(id) != Some(key.as_str()))
            .then_some(Failure::NickRegistered(registered))
    }

    /// A private line to a registered user who is not connected: kept for their next login.
    /// `None`: the recipient is online or not registered (the rooms answer as before).
    pub(super) fn private_to_absent(
        &mut self,
        id: MemberId,
        seq: u64,
        recipient: &str,
        raw: &str,
    ) -> Option<Vec<Delivery>> {
        if self.rooms.find(recipient).is_some() {
            return None;
        }
        let rejected = |failure| vec![to(id, Event::Rejected { seq, failure })];
        // A store that did not answer at start: whether the recipient is registered cannot be
        // told, and "no such nick" could be wrong. Refused as what it is, so the sender (and a
        // line sent again after a restart, whose first answer never came) knows it is not sent.
        if self.storage.is_on()
            && self.accounts.mode() != AccountsMode::Off
            && !self.accounts.is_loaded()
        {
            let why = format!(
                "not sent: {recipient} is not connected, and whether they are registered cannot \
                 be told yet ({NOT_LOADED})"
            );
            return Some(rejected(Failure::Unavailable(why)));
        }
        let (key, registered) = self.registered(recipient)?;
        let from = self.rooms.nick(id)?.to_string();
        let text = match super::room::clean_text(raw) {
            Ok(text) => text,
            Err(failure) => return Some(rejected(failure)),
        };
        let muted = self.moderation.is_muted(&from, unix_now());
        // Every session has its sender id once its `Hello` came, before any line.
        let sender = self.peers.get(id).and_then(|peer| peer.session).unwrap_or(0);
        if !muted && self.may_hold_private(id) {
            self.hold_private((key, registered.clone()), from, (sender, seq), text.clone());
        } else if !muted {
            match self.accounts.keep(&key, &from, &text, (sender, seq), unix_now()) {
                Ok(change) => {
                    if let Some(change) = change {
                        self.storage.account_change(change);
                    }
                }
                Err(failure) => return Some(rejected(failure)),
            }
        }
        Some(vec![to(id, Event::PrivateKept { seq, to: registered, text })])
    }

    /// `Resume` of a registered nick keeps the account only with a good token; without one the
    /// session resumes under a guest name. Before the accounts are loaded, the token is kept
    /// and checked when they are.
    pub(super) fn resume_nick(
        &mut self,
        id: MemberId,
        session: u64,
        nick: &str,
        token: Option<Vec<u8>>,
    ) -> (String, Option<String>) {
        if self.accounts.mode() == AccountsMode::Off {
            return (nick.to_string(), None);
        }
        if !self.accounts.is_loaded() {
            if let Some(token) = token {
                self.unchecked_tokens.insert(id, (nick.to_string(), session, token));
            }
            return (nick.to_string(), None);
        }
        let Some((key, _)) = self.registered(nick) else { return (nick.to_string(), None) };
        match token.and_then(|token| self.accounts.check_token(nick, session, &token).cloned()) {
            Some(account) if account.key == key => (nick.to_string(), Some(key)),
            _ => {
                info!(
                    "session pid {} may not keep the registered nick {nick}: no valid token",
                    self.pid_of(id)
                );
                (self.rooms.guest_name(), None)
            }
        }
    }

    /// The store read the accounts: logins resumed meanwhile are checked, and a guest who
    /// took a registered nick meanwhile goes on under a guest name.
    pub(super) fn accounts_loaded(&mut self, record: AccountsRecord) {
        let count = record.accounts.len();
        self.accounts.load(record);
        info!("{count} registered accounts");
        let unchecked = std::mem::take(&mut self.unchecked_tokens);
        for (id, (nick, session, token)) in unchecked {
            if let Some(account) = self.accounts.check_token(&nick, session, &token) {
                let key = account.key.clone();
                self.rooms.set_account(id, Some(key));
            }
        }
        let squatters: Vec<(MemberId, String)> = self
            .rooms
            .members_without_account()
            .filter(|(_, nick)| self.registered(nick).is_some())
            .map(|(id, nick)| (id, nick.to_string()))
            .collect();
        for (id, nick) in squatters {
            let guest = self.rooms.guest_name();
            warn!("{nick} is registered: its guest session goes on as {guest}");
            let deliveries = self.rooms.change_nick(id, &guest);
            self.deliver(deliveries);
        }
    }
}

/// The address part of a client's `IP:port` (the log line names the address fail2ban bans).
fn source_address(client: &str) -> String {
    match client.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => client.to_string(),
    }
}
