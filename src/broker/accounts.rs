//! The broker's account state: the registered nicks (read from the store once), the password
//! challenges under way, the throttles, the messages kept for users who are away, and the
//! resume-token key. Pure logic — no sockets, no clock reads (every method that needs the
//! time takes `now` and/or `unix_now`), no logging, no store: each change comes back as a
//! [`store::AccountChange`] for the caller to hand to the store, and each wrong password as
//! [`Denied::WrongPassword`] for the caller to log and penalise.
//!
//! The flow (docs/ARCHITECTURE.md, "Accounts"): a session asks for a [`challenge`]; within the
//! throttles it gets the account's [`Kdf`] (and a fresh one for a new tag) and a nonce good
//! once, for that member, for [`CHALLENGE_LIFETIME`]; it derives the tags and sends them in
//! [`prove`], which compares `SHA-256(tag)` with the stored verifier in constant time. The
//! broker never sees a password, and it hands out parameters only within the throttles, so
//! nobody can make sessions burn CPU for free.
//!
//! Accounts are keyed by the nick's lookalike key (`names::lookalike_key`): `аlice` with a
//! Cyrillic а is `alice`'s account, and cannot be registered beside it. A nick is also found
//! by the lookalike key of its case fold ([`lookup_keys`]): the key of a nick as written reads
//! a capital I as an l, so `ALICE` has another key than `alice` (`allce`), and would otherwise
//! be free while `alice` is registered.
//!
//! Parts: `throttle` (the limits, as arithmetic on instants), `operators` (`chatctl
//! accounts`: rows and the changes an operator may make).
//!
//! [`challenge`]: Accounts::challenge
//! [`prove`]: Accounts::prove

mod operators;
mod throttle;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::accounts::{self, AccountSettings, Kdf, KdfCost, NoRandomness, SALT_BYTES, TAG_BYTES};
use crate::broker::room::MemberId;
use crate::config::AccountsMode;
use crate::names;
use crate::proto::{self, Failure, Purpose};
use crate::store::{self, AccountChange, AccountRecord};

use throttle::Throttles;
pub use throttle::source_key;

/// How long a challenge waits for its proof.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(120);

/// What a proof did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proved {
    pub purpose: Purpose,
    /// The account's lookalike key.
    pub key: String,
    /// The nick as registered.
    pub nick: String,
    /// What the store must write (a registration, a rehash, a new password, a deletion).
    pub changes: Vec<AccountChange>,
    /// An operator reset the password: the user must choose a new one now.
    pub must_change: bool,
    pub admin: bool,
    pub settings: AccountSettings,
}

/// Why a proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Nothing was checked (no such challenge, no account, ...): tell the session.
    Failure(Failure),
    /// A wrong password for `nick` (counted already): the caller logs it and penalises the
    /// source, and tells the session `Failure::WrongPassword`.
    WrongPassword { nick: String },
}

/// A challenge waiting for its proof.
#[derive(Debug, Clone)]
struct Pending {
    nonce: u64,
    purpose: Purpose,
    /// The account's key (for a registration: the key it will have).
    key: String,
    /// The nick it was asked for.
    nick: String,
    /// What the fresh tag must have been derived under.
    fresh: Option<Kdf>,
    expires: Instant,
}

/// Where salts and nonces come from.
enum Randomness {
    Kernel,
    /// Tests: a fixed sequence.
    #[cfg(test)]
    Seeded(fastrand::Rng),
}

impl Randomness {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, NoRandomness> {
        match self {
            Randomness::Kernel => accounts::try_random_bytes(n),
            #[cfg(test)]
            Randomness::Seeded(rng) => Ok(std::iter::repeat_with(|| rng.u8(..)).take(n).collect()),
        }
    }
}

/// The registry, the challenges under way and the throttles.
pub struct Accounts {
    cost: KdfCost,
    mode: AccountsMode,
    /// Most messages kept for one account.
    kept_limit: usize,
    loaded: bool,
    /// By lookalike key.
    accounts: HashMap<String, AccountRecord>,
    /// Each of an account's [`lookup_keys`] → its key.
    aliases: HashMap<String, String>,
    /// By recipient key, oldest first.
    kept: HashMap<String, Vec<store::KeptMessage>>,
    token_key: Vec<u8>,
    /// One per member at most.
    pending: HashMap<MemberId, Pending>,
    throttles: Throttles,
    randomness: Randomness,
}

fn refused(text: impl Into<String>) -> Failure {
    Failure::AccountRefused(text.into())
}

/// Challenges and operators' commands before the store answered.
pub(super) const NOT_LOADED: &str = "accounts are not loaded yet";

impl Accounts {
    /// Accounts not loaded yet: every challenge is answered `Unavailable` until [`load`].
    ///
    /// [`load`]: Accounts::load
    pub fn new(cost: KdfCost, mode: AccountsMode, kept_limit: usize) -> Accounts {
        Accounts {
            cost,
            mode,
            kept_limit,
            loaded: false,
            accounts: HashMap::new(),
            aliases: HashMap::new(),
            kept: HashMap::new(),
            token_key: Vec::new(),
            pending: HashMap::new(),
            throttles: Throttles::default(),
            randomness: Randomness::Kernel,
        }
    }

    /// Accounts whose salts and nonces follow `seed` (tests).
    #[cfg(test)]
    fn seeded(cost: KdfCost, mode: AccountsMode, kept_limit: usize, seed: u64) -> Accounts {
        let mut accounts = Accounts::new(cost, mode, kept_limit);
        accounts.randomness = Randomness::Seeded(fastrand::Rng::with_seed(seed));
        accounts
    }

    /// New settings (a reload). A higher cost rehashes each account at its next login; a
    /// lower `kept_limit` keeps what is kept and refuses more.
    pub fn reconfigure(&mut self, cost: KdfCost, mode: AccountsMode, kept_limit: usize) {
        self.cost = cost;
        self.mode = mode;
        self.kept_limit = kept_limit;
    }

    /// What the store holds (read once, at start).
    pub fn load(&mut self, record: store::AccountsRecord) {
        self.accounts.clear();
        self.aliases.clear();
        for account in record.accounts {
            self.insert(account);
        }
        self.kept.clear();
        for message in record.kept {
            self.kept.entry(message.to.clone()).or_default().push(message);
        }
        self.token_key = record.token_key;
        self.loaded = true;
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn mode(&self) -> AccountsMode {
        self.mode
    }

    /// Registered accounts.
    pub fn count(&self) -> usize {
        self.accounts.len()
    }

    /// The account `nick` belongs to, by lookalike key (names::lookalike_key). `None` when
    /// accounts are off: then no nick is reserved.
    pub fn find(&self, nick: &str) -> Option<&AccountRecord> {
        if self.mode == AccountsMode::Off {
            return None;
        }
        self.lookup(nick)
    }

    /// The account with the lookalike key `key` (what a member is logged in to).
    pub fn by_key(&self, key: &str) -> Option<&AccountRecord> {
        self.accounts.get(key)
    }

    /// The account whose nick `nick` passes for (see [`lookup_keys`]).
    fn lookup(&self, nick: &str) -> Option<&AccountRecord> {
        let key = lookup_keys(nick).iter().find_map(|key| self.aliases.get(key))?;
        self.accounts.get(key)
    }

    fn insert(&mut self, account: AccountRecord) {
        for alias in lookup_keys(&account.nick) {
            self.aliases.insert(alias, account.key.clone());
        }
        self.aliases.insert(account.key.clone(), account.key.clone());
        self.accounts.insert(account.key.clone(), account);
    }

    /// A challenge for `member` (from `source`, "IP:port" or an IP) to prove a password for
    /// `purpose`: `nick` is the account for a login, the nick to register for a
    /// registration; a password change and unregistering are for `logged_in`, the key of the
    /// account the member is logged in to. Within the throttles only; a registration counts
    /// against the server-wide limit here. A new challenge replaces the member's last.
    pub fn challenge(
        &mut self,
        member: MemberId,
        source: &str,
        nick: &str,
        purpose: Purpose,
        logged_in: Option<&str>,
        now: Instant,
    ) -> Result<proto::Challenge, Failure> {
        if self.mode == AccountsMode::Off {
            return Err(refused("accounts are off on this server"));
        }
        if !self.loaded {
            return Err(Failure::Unavailable(NOT_LOADED.into()));
        }
        self.pending.remove(&member);
        let source = source_key(source);
        let (key, nick, current) = match purpose {
            Purpose::Register => {
                let key = names::lookalike_key(nick);
                if let Some(account) = self.lookup(nick) {
                    return Err(refused(format!("{} is registered already", account.nick)));
                }
                (key, nick.to_string(), None)
            }
            Purpose::Login | Purpose::ChangePassword | Purpose::Unregister => {
                let account = match purpose {
                    Purpose::Login => self.lookup(nick),
                    _ => match logged_in {
                        Some(key) => self.accounts.get(key),
                        None => return Err(refused("You are not logged in")),
                    },
                };
                let Some(account) = account else {
                    return Err(refused(format!("{nick} is not registered")));
                };
                if accounts::check_kdf(&account.kdf).is_err() {
                    return Err(Failure::Unavailable(format!(
                        "the password of {} cannot be checked; an operator can reset it",
                        account.nick
                    )));
                }
                (account.key.clone(), account.nick.clone(), Some(account.kdf.clone()))
            }
        };
        if let Some(seconds) = self.throttles.wait(&key, &source, now) {
            return Err(Failure::Throttled { seconds });
        }
        let fresh_needed = match (&current, purpose) {
            (Some(kdf), Purpose::Login) => self.cost.is_above(kdf),
            (_, Purpose::Unregister) => false,
            _ => true,
        };
        let unavailable = |err: NoRandomness| Failure::Unavailable(err.to_string());
        let fresh = match fresh_needed {
            true => {
                Some(self.cost.with_salt(self.randomness.bytes(SALT_BYTES).map_err(unavailable)?))
            }
            false => None,
        };
        let nonce_bytes = self.randomness.bytes(8).map_err(unavailable)?;
        let nonce = nonce_bytes.try_into().map(u64::from_be_bytes).unwrap_or_default();
        // Counted last: a refusal for another reason takes no registration.
        if purpose == Purpose::Register && !self.throttles.take_registration(now) {
            return Err(refused("too many registrations just now; try again later"));
        }
        self.pending.insert(
            member,
            Pending {
                nonce,
                purpose,
                key,
                nick: nick.clone(),
                fresh: fresh.clone(),
                expires: now + CHALLENGE_LIFETIME,
            },
        );
        Ok(proto::Challenge { nick, purpose, nonce, current, fresh })
    }

    /// Checks the proof of the member's pending challenge `nonce` (consumed either way). Login:
    /// `current` must match; when the challenge carried `fresh` (the account's Kdf is weaker
    /// than the configured cost) and `fresh` is given, the account is rehashed. Register:
    /// `fresh` becomes the verifier. ChangePassword: `current` must match, `fresh` replaces
    /// it, `must_change` is cleared. Unregister: `current` must match → Delete (the kept
    /// messages go too). A wrong password counts for the account and for `source`; a right
    /// one resets the account's count. The throttles are asked again before comparing, so a
    /// proof for a challenge handed out before they closed is refused `Throttled`.
    #[allow(clippy::too_many_arguments)]
    pub fn prove(
        &mut self,
        member: MemberId,
        source: &str,
        nonce: u64,
        current: Option<&[u8]>,
        fresh: Option<&[u8]>,
        now: Instant,
        unix_now: u64,
    ) -> Result<Proved, Denied> {
        let deny = |text: &str| Err(Denied::Failure(refused(text)));
        let pending = match self.pending.remove(&member) {
            Some(pending) if pending.nonce == nonce && now < pending.expires => pending,
            _ => return deny("the password prompt has expired; try again"),
        };
        let well_formed = |tag: Option<&[u8]>| tag.is_none_or(|tag| tag.len() == TAG_BYTES);
        if !well_formed(current) || !well_formed(fresh) {
            return deny("that proof is not a password tag");
        }
        if pending.purpose == Purpose::Register {
            return self.register(pending, fresh, unix_now);
        }
        let Some(account) = self.accounts.get_mut(&pending.key) else {
            return Err(Denied::Failure(refused(format!("{} is not registered", pending.nick))));
        };
        let Some(current) = current else {
            return deny("the current password is missing");
        };
        // Again here: challenges gathered on many connections before the first failure must
        // not buy more guesses than the throttles allow.
        let source = source_key(source);
        if let Some(seconds) = self.throttles.wait(&pending.key, &source, now) {
            return Err(Denied::Failure(Failure::Throttled { seconds }));
        }
        if !accounts::verifier_matches(current, &account.verifier) {
            let nick = account.nick.clone();
            self.throttles.failed(&pending.key, &source, now);
            return Err(Denied::WrongPassword { nick });
        }
        self.throttles.succeeded(&pending.key);
        let replace = |account: &mut AccountRecord, kdf: Kdf, tag: &[u8]| {
            account.kdf = kdf;
            account.verifier = accounts::verifier_of(tag);
        };
        let mut changes = Vec::new();
        match (pending.purpose, pending.fresh, fresh) {
            (Purpose::Login, Some(kdf), Some(tag)) => {
                replace(account, kdf, tag);
                changes.push(AccountChange::Put(account.clone()));
            }
            (Purpose::Login, _, _) => {}
            (Purpose::ChangePassword, Some(kdf), Some(tag)) => {
                replace(account, kdf, tag);
                account.must_change = false;
                changes.push(AccountChange::Put(account.clone()));
            }
            (Purpose::ChangePassword, _, _) => return deny("the new password is missing"),
            (Purpose::Unregister, _, _) => {
                changes.push(AccountChange::Delete { key: pending.key.clone() });
            }
            // Proved by `register`, above.
            (Purpose::Register, _, _) => {}
        }
        let proved = Proved {
            purpose: pending.purpose,
            key: pending.key.clone(),
            nick: account.nick.clone(),
            changes,
            must_change: account.must_change,
            admin: account.admin,
            settings: account.settings.clone(),
        };
        if pending.purpose == Purpose::Unregister {
            self.forget_account(&pending.key);
        }
        Ok(proved)
    }

    /// A registration's proof: the fresh tag becomes the new account's verifier.
    fn register(
        &mut self,
        pending: Pending,
        fresh: Option<&[u8]>,
        unix_now: u64,
    ) -> Result<Proved, Denied> {
        let (Some(kdf), Some(tag)) = (pending.fresh, fresh) else {
            return Err(Denied::Failure(refused("the new password is missing")));
        };
        // Someone else may have registered a lookalike since the challenge.
        if let Some(account) = self.lookup(&pending.nick) {
            return Err(Denied::Failure(refused(format!(
                "{} is registered already",
                account.nick
            ))));
        }
        let account = AccountRecord {
            key: pending.key.clone(),
            nick: pending.nick,
            kdf,
            verifier: accounts::verifier_of(tag),
            admin: false,
            must_change: false,
            settings: AccountSettings::default(),
            created_at: unix_now,
            last_seen: 0,
            last_room: String::new(),
        };
        self.insert(account.clone());
        Ok(Proved {
            purpose: Purpose::Register,
            key: account.key.clone(),
            nick: account.nick.clone(),
            must_change: false,
            admin: false,
            settings: account.settings.clone(),
            changes: vec![AccountChange::Put(account)],
        })
    }

    /// The member is gone: its pending challenge with it.
    pub fn forget_member(&mut self, member: MemberId) {
        self.pending.remove(&member);
    }

    /// A resume token for the session `sender` logged in to `key`.
    pub fn token_for(&self, key: &str, sender: u64, unix_now: u64) -> Vec<u8> {
        accounts::resume_token(&self.token_key, key, sender, unix_now)
    }

    /// The account a resuming session may keep: the token must match (key, sender).
    pub fn check_token(&self, nick: &str, sender: u64, token: &[u8]) -> Option<&AccountRecord> {
        if !self.loaded || self.token_key.is_empty() {
            return None;
        }
        let account = self.find(nick)?;
        accounts::token_matches(&self.token_key, &account.key, sender, token).then_some(account)
    }

    /// Keeps private line `said_by` (its sender's id and number) for the registered user
    /// `to_key` who is not connected; refused beyond `kept_limit`. `None`: that line is kept
    /// already (sent again after a broker restart).
    pub fn keep(
        &mut self,
        to_key: &str,
        from: &str,
        text: &str,
        (sender, seq): (u64, u64),
        unix_now: u64,
    ) -> Result<Option<AccountChange>, Failure> {
        let Some(account) = self.accounts.get(to_key) else {
            return Err(Failure::NoSuchNick(to_key.to_string()));
        };
        let kept = self.kept.entry(to_key.to_string()).or_default();
        // (0, 0) names no line: messages kept before the store kept names.
        if sender != 0 && kept.iter().any(|message| (message.sender, message.seq) == (sender, seq))
        {
            return Ok(None);
        }
        if kept.len() >= self.kept_limit {
            return Err(refused(format!("{} has too many messages waiting", account.nick)));
        }
        let message = store::KeptMessage {
            to: to_key.to_string(),
            at: unix_now,
            from: from.to_string(),
            text: text.to_string(),
            sender,
            seq,
        };
        kept.push(message.clone());
        Ok(Some(AccountChange::Keep(message)))
    }

    /// Takes the kept messages of `key` (oldest first) and the change that deletes them
    /// (`None` when there were none).
    pub fn take_kept(&mut self, key: &str) -> (Vec<proto::KeptMessage>, Option<AccountChange>) {
        let Some(kept) = self.kept.remove(key).filter(|kept| !kept.is_empty()) else {
            return (Vec::new(), None);
        };
        let messages = kept
            .into_iter()
            .map(|kept| proto::KeptMessage { at: kept.at, from: kept.from, text: kept.text })
            .collect();
        (messages, Some(AccountChange::Delivered { to: key.to_string() }))
    }

    /// The account's preferences changed (`None`: no such account, or nothing changed).
    pub fn save_settings(&mut self, key: &str, settings: AccountSettings) -> Option<AccountChange> {
        let account = self.accounts.get_mut(key)?;
        if account.settings == settings {
            return None;
        }
        account.settings = settings;
        Some(AccountChange::Put(account.clone()))
    }

    /// The member's session ended (or logged out): when, and in which room (its key), for the
    /// mentions count at the next login.
    pub fn seen(&mut self, key: &str, unix_now: u64, room_key: &str) -> Option<AccountChange> {
        let account = self.accounts.get_mut(key)?;
        account.last_seen = unix_now;
        account.last_room = room_key.to_string();
        Some(AccountChange::Put(account.clone()))
    }

    /// When the account's last session ended, and in which room (its key).
    pub fn last_seen(&self, key: &str) -> Option<(u64, String)> {
        let account = self.accounts.get(key)?;
        Some((account.last_seen, account.last_room.clone()))
    }

    fn forget_account(&mut self, key: &str) {
        if let Some(account) = self.accounts.remove(key) {
            for alias in lookup_keys(&account.nick) {
                if self.aliases.get(&alias) == Some(&account.key) {
                    self.aliases.remove(&alias);
                }
            }
            self.aliases.remove(key);
        }
        self.kept.remove(key);
        self.throttles.succeeded(key);
    }
}

/// The keys a nick is looked up by: its lookalike key, and that of its case fold. Each catches
/// what the other misses: the first reads a capital I as an l (`AIice` passes for `Allce`),
/// the second sees that `ALICE` is `alice` (the first makes it `allce`).
fn lookup_keys(nick: &str) -> [String; 2] {
    [names::lookalike_key(nick), names::lookalike_key(&names::fold(nick))]
}

#[cfg(test)]
mod tests;
