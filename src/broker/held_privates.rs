//! Private lines to a registered user who is not connected, said in a restarted broker's
//! first minute by a session that resumed (its broker had died): the sessions re-send their
//! last seconds of lines after a restart, so such a line may be one its recipient was shown
//! already, by the broker that died, and whose session has not resumed yet. Kept as an offline
//! message it would come again at their next login, where nothing can tell it from a new one.
//! Held instead: when the recipient is back within the resume window it is delivered as the
//! private line it is (`Event::Private` with its sender and number, which the recipient's
//! session drops if it saw it), and what is still held when the window closes is kept for the
//! next login as before.
//!
//! The sender is answered at once, as for a kept line (`PrivateKept`). At most [`MOST_HELD`]
//! are held; beyond that a line is kept at once. Owns the held lines only; it asks `accounts`
//! to keep them and the fan-out engine to deliver them, and never touches a socket itself.

use std::time::Instant;

use log::info;

use super::Broker;
use super::dispatch::RESUME_WINDOW;
use super::room::{Audience, Delivery, MemberId};
use crate::proto::Event;

/// Most private lines held at once; one more is kept for the next login at once.
pub(super) const MOST_HELD: usize = 1_000;

/// A private line held until its recipient resumes or the resume window closes.
#[derive(Debug, Clone)]
pub(super) struct HeldPrivate {
    /// The recipient's account key, and their nick as registered.
    to_key: String,
    to_nick: String,
    from: String,
    /// The line's name: the sender's id and its number.
    sender: u64,
    seq: u64,
    text: String,
}

impl Broker {
    /// Whether member `id`'s private line to an absent registered user may be a re-sent one
    /// (see the module docs), and there is room to hold it. Only a session that resumed sends
    /// lines again; telling sessions apart by their start time would not do, as it counts in
    /// clock ticks and a session forked in the broker's tick would look older.
    pub(super) fn may_hold_private(&self, id: MemberId) -> bool {
        self.held_privates.len() < MOST_HELD
            && self.started.elapsed() < RESUME_WINDOW
            && self.peers.get(id).is_some_and(|peer| peer.resumed)
    }

    /// Holds line `seq` of sender `sender` to the account `to_key` (nick `to_nick`).
    pub(super) fn hold_private(
        &mut self,
        (to_key, to_nick): (String, String),
        from: String,
        (sender, seq): (u64, u64),
        text: String,
    ) {
        self.held_privates.push(HeldPrivate { to_key, to_nick, from, sender, seq, text });
    }

    /// When the held lines are next looked at for good: the end of the resume window.
    pub(super) fn held_privates_due(&self) -> Option<Instant> {
        (!self.held_privates.is_empty()).then(|| self.started + RESUME_WINDOW)
    }

    /// Each loop turn: held lines whose recipient is back are delivered to them; once the
    /// resume window is over, the rest are kept for the recipients' next login.
    pub(super) fn release_held_privates(&mut self) {
        if self.held_privates.is_empty() {
            return;
        }
        let window_over = self.started.elapsed() >= RESUME_WINDOW;
        let mut deliveries = Vec::new();
        let mut kept = 0;
        for held in std::mem::take(&mut self.held_privates) {
            let present = self
                .rooms
                .find(&held.to_nick)
                .filter(|&target| self.rooms.account_of(target) == Some(held.to_key.as_str()));
            if let Some(target) = present {
                let HeldPrivate { from, sender, seq, text, .. } = held;
                let event = Event::Private { from, sender, seq, text };
                deliveries.push(Delivery { to: Audience::One(target), event });
            } else if window_over {
                let now = crate::clock::unix_now();
                let said_by = (held.sender, held.seq);
                match self.accounts.keep(&held.to_key, &held.from, &held.text, said_by, now) {
                    Ok(Some(change)) => {
                        self.storage.account_change(change);
                        kept += 1;
                    }
                    // Kept by the broker that died: the line was sent again.
                    Ok(None) => {}
                    Err(failure) => {
                        info!("a private line held for {} is dropped: {failure:?}", held.to_nick)
                    }
                }
            } else {
                self.held_privates.push(held);
            }
        }
        if kept > 0 {
            info!(
                "{kept} private line(s) held since the broker started, whose recipients did not \
                 come back within {} s, are kept for their next login",
                RESUME_WINDOW.as_secs()
            );
        }
        self.deliver(deliveries);
    }
}
