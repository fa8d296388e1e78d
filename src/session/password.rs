//! Asking for a password: the prompts one account request needs, and what the user typed.
//!
//! Owns the steps of each [`Purpose`] (a login asks once; a registration asks twice; a new
//! password asks for the current one first), the checks the session makes before anything is
//! derived (the two entries agree; a new password is long enough), and turning the entries
//! into a [`Request::Prove`] with Argon2id ([`accounts::derive`]). The entries are normalised
//! (NFKC) as they are typed — they arrive already decoded from the client's charset — and
//! kept in [`Zeroizing`] strings until they are derived. It does no I/O: the session shows the
//! prompts, turns echo off and on, and sends the proof; the broker decides whether it holds.

use zeroize::Zeroizing;

use crate::accounts::{self, PasswordError};
use crate::proto::{Challenge, Purpose, Request};

/// What the next entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The account's password as it is.
    Current,
    /// A new password.
    New,
    /// The new password again.
    Again,
}

/// A password being asked for, to answer one challenge.
pub struct PasswordPrompt {
    challenge: Challenge,
    /// The steps still to come, the next first.
    steps: Vec<Step>,
    current: Option<Zeroizing<String>>,
    fresh: Option<Zeroizing<String>>,
    /// The session asked the client to stop echoing (IAC WILL ECHO) for this prompt, and
    /// must ask it to echo again once the prompt ends.
    pub turned_echo_off: bool,
}

impl std::fmt::Debug for PasswordPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the entries.
        f.debug_struct("PasswordPrompt")
            .field("nick", &self.challenge.nick)
            .field("purpose", &self.challenge.purpose)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// What happens after an entry.
#[derive(Debug)]
pub enum Next {
    /// Show this prompt and wait for the next entry.
    Ask(String),
    /// The prompt ends without a proof; tell the user this.
    Refused(String),
    /// Every entry is in: derive and prove.
    Ready(Entries),
}

/// The entries of a finished prompt, with the challenge they answer.
pub struct Entries {
    challenge: Challenge,
    current: Option<Zeroizing<String>>,
    fresh: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("nick", &self.challenge.nick).finish_non_exhaustive()
    }
}

impl PasswordPrompt {
    /// The prompt for `challenge`. `known_current`: the password the user just logged in with,
    /// when an operator's reset forces a new one at once (it is not asked again).
    pub fn new(challenge: Challenge, known_current: Option<Zeroizing<String>>) -> PasswordPrompt {
        let mut steps = match challenge.purpose {
            Purpose::Login | Purpose::Unregister => vec![Step::Current],
            Purpose::Register => vec![Step::New, Step::Again],
            Purpose::ChangePassword => vec![Step::Current, Step::New, Step::Again],
        };
        let current = known_current.filter(|_| challenge.purpose == Purpose::ChangePassword);
        if current.is_some() {
            steps.retain(|step| *step != Step::Current);
        }
        PasswordPrompt { challenge, steps, current, fresh: None, turned_echo_off: false }
    }

    /// The nick the challenge is for.
    pub fn nick(&self) -> &str {
        &self.challenge.nick
    }

    pub fn purpose(&self) -> Purpose {
        self.challenge.purpose
    }

    /// The prompt line for the next entry.
    pub fn prompt(&self) -> String {
        let nick = crate::text::sanitize(&self.challenge.nick);
        match (self.steps.first(), self.challenge.purpose) {
            (Some(Step::Current), Purpose::Login) => format!("Password for {nick}:"),
            (Some(Step::Current), Purpose::Unregister) => {
                format!("Password for {nick}, to delete the account:")
            }
            (Some(Step::Current), _) => "Current password:".to_string(),
            (Some(Step::New), Purpose::Register) => format!("Choose a password for {nick}:"),
            (Some(Step::New), _) => "New password:".to_string(),
            (Some(Step::Again), _) | (None, _) => "Type it again:".to_string(),
        }
    }

    /// Takes one typed line. After [`Next::Refused`] or [`Next::Ready`] the prompt is over
    /// (its entries moved into the [`Entries`]).
    pub fn enter(&mut self, typed: &str) -> Next {
        let Some(step) = self.steps.first().copied() else {
            return Next::Refused("Nothing was asked".into());
        };
        let normalised = match accounts::normalise_password(typed, step != Step::Current) {
            Ok(normalised) => normalised,
            Err(err) => return Next::Refused(sentence(&err)),
        };
        self.steps.remove(0);
        match step {
            Step::Current => self.current = Some(normalised),
            Step::New => self.fresh = Some(normalised),
            Step::Again
                if self.fresh.as_ref().map(|fresh| fresh.as_str()) != Some(normalised.as_str()) =>
            {
                return Next::Refused("The passwords differ; nothing changed".into());
            }
            Step::Again => {}
        }
        if !self.steps.is_empty() {
            return Next::Ask(self.prompt());
        }
        Next::Ready(Entries {
            challenge: self.challenge.clone(),
            current: self.current.take(),
            fresh: self.fresh.take(),
        })
    }
}

/// A password error as the user reads it.
fn sentence(err: &PasswordError) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

impl Entries {
    /// The proof: Argon2id of each entry under the challenge's parameters (a login whose
    /// account is rehashed derives its one password under both). Blocks for the derivations.
    pub fn prove(self) -> Result<Request, PasswordError> {
        let Entries { challenge, current, fresh } = self;
        let fresh = match (challenge.purpose, fresh) {
            (Purpose::Login, _) => current.clone().filter(|_| challenge.fresh.is_some()),
            (_, fresh) => fresh,
        };
        let tag = |password: &Option<Zeroizing<String>>, kdf: &Option<accounts::Kdf>| match (
            password, kdf,
        ) {
            (Some(password), Some(kdf)) => {
                accounts::derive(password, kdf).map(|tag| Some(tag.to_vec()))
            }
            _ => Ok(None),
        };
        let current = tag(&current, &challenge.current)?;
        let fresh = tag(&fresh, &challenge.fresh)?;
        Ok(Request::Prove { nonce: challenge.nonce, current, fresh })
    }

    /// The password the user logged in with, kept only to answer a forced change at once.
    pub fn current_password(&self) -> Option<Zeroizing<String>> {
        self.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::KdfCost;

    /// A cheap cost: the arithmetic is `accounts`' to test; these are the steps.
    fn kdf() -> accounts::Kdf {
        KdfCost { memory_kib: 64, passes: 1 }.with_salt(b"0123456789abcdef".to_vec())
    }

    fn challenge(purpose: Purpose, current: bool, fresh: bool) -> Challenge {
        Challenge {
            nick: "alice".into(),
            purpose,
            nonce: 9,
            current: current.then(kdf),
            fresh: fresh.then(kdf),
        }
    }

    fn ready(next: Next) -> Entries {
        match next {
            Next::Ready(entries) => entries,
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn a_login_asks_once_and_proves_the_current_password() {
        let mut prompt = PasswordPrompt::new(challenge(Purpose::Login, true, false), None);
        assert_eq!(prompt.prompt(), "Password for alice:");
        let entries = ready(prompt.enter("correct horse"));
        let Ok(Request::Prove { nonce, current, fresh }) = entries.prove() else {
            panic!("no proof")
        };
        assert_eq!(nonce, 9);
        let expected = accounts::derive("correct horse", &kdf()).expect("derives");
        assert_eq!(current.as_deref(), Some(expected.as_slice()));
        assert_eq!(fresh, None, "no rehash asked");
    }

    #[test]
    fn a_login_whose_account_is_rehashed_derives_the_one_password_twice() {
        let mut prompt = PasswordPrompt::new(challenge(Purpose::Login, true, true), None);
        let Ok(Request::Prove { current, fresh, .. }) =
            ready(prompt.enter("correct horse")).prove()
        else {
            panic!("no proof")
        };
        assert!(current.is_some() && current == fresh);
    }

    #[test]
    fn a_registration_asks_twice_and_refuses_two_different_entries() {
        let mut prompt = PasswordPrompt::new(challenge(Purpose::Register, false, true), None);
        assert_eq!(prompt.prompt(), "Choose a password for alice:");
        assert!(matches!(prompt.enter("correct horse"), Next::Ask(ref p) if p == "Type it again:"));
        assert!(
            matches!(prompt.enter("correct horsE"), Next::Refused(ref why) if why == "The passwords differ; nothing changed")
        );

        let mut prompt = PasswordPrompt::new(challenge(Purpose::Register, false, true), None);
        assert!(
            matches!(prompt.enter("short"), Next::Refused(ref why) if why.starts_with("A password has at least 8"))
        );

        let mut prompt = PasswordPrompt::new(challenge(Purpose::Register, false, true), None);
        let _ = prompt.enter("ｃｏｒｒｅｃｔ horse");
        // The same password typed in full-width letters: NFKC makes them one.
        let Ok(Request::Prove { current, fresh, .. }) =
            ready(prompt.enter("correct horse")).prove()
        else {
            panic!("no proof")
        };
        assert_eq!(current, None);
        assert!(fresh.is_some());
    }

    #[test]
    fn a_new_password_asks_for_the_current_one_unless_it_was_just_typed() {
        let mut prompt = PasswordPrompt::new(challenge(Purpose::ChangePassword, true, true), None);
        assert_eq!(prompt.prompt(), "Current password:");
        assert!(matches!(prompt.enter("one-time-pass"), Next::Ask(ref p) if p == "New password:"));
        assert!(matches!(prompt.enter("correct horse"), Next::Ask(_)));
        let entries = ready(prompt.enter("correct horse"));
        let Ok(Request::Prove { current: Some(current), fresh: Some(fresh), .. }) = entries.prove()
        else {
            panic!("no proof")
        };
        assert_ne!(current, fresh);

        let known = Some(Zeroizing::new("one-time-pass".to_string()));
        let prompt = PasswordPrompt::new(challenge(Purpose::ChangePassword, true, true), known);
        assert_eq!(prompt.prompt(), "New password:", "a forced change skips the current one");
    }

    #[test]
    fn unregistering_names_what_the_password_is_for() {
        let prompt = PasswordPrompt::new(challenge(Purpose::Unregister, true, false), None);
        assert_eq!(prompt.prompt(), "Password for alice, to delete the account:");
        assert!(!format!("{prompt:?}").contains("horse"));
    }
}
