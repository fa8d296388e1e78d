//! The operators' commands from a chat connection: `/admin ...` typed by a user, and the web
//! dashboard, which types the same. They are `chatctl`'s commands ([`AdminRequest`] lists the
//! ones allowed: moderation and figures, never stopping, reloading or copying the daemon),
//! answered by the same code as `chatctl` ([`super::commands`]), for a session whose user is
//! logged in to an account with the admin role, over TLS or from loopback (a password and an
//! operator's power never cross a network in clear text).
//!
//! Who may: decided here, per request, from what the broker knows of the member (its account,
//! the transport it said at login, the address the master vouched for), never from what the
//! session claims. Every change is logged with who made it and from where. It owns no state.

use std::net::SocketAddr;

use log::{debug, info};

use super::super::Broker;
use super::super::room::{Audience, Delivery, MemberId};
use crate::logging;
use crate::proto::control::{ControlReply, ControlRequest};
use crate::proto::{AdminRequest, Event};

impl Broker {
    /// Carries out `request` for member `id` if its user may; the answer (now, or once a
    /// change is saved: see [`Broker::reply`]) is an [`Event::AdminReply`].
    pub(in crate::broker) fn admin_request(
        &mut self,
        id: MemberId,
        request: AdminRequest,
    ) -> Vec<Delivery> {
        let reply = match self.admin_of(id) {
            Err(why) => {
                debug!("member {id}: /admin refused: {why}");
                Some(ControlReply::Denied(why))
            }
            Ok(actor) => {
                let source = self.peers.get(id).map(|peer| peer.client.clone()).unwrap_or_default();
                if let Some(what) = change_of(&request) {
                    info!(target: logging::NOTICE, "admin {actor} (from {source}) asks: {what}");
                }
                self.answer(id, control_request(request))
            }
        };
        reply.map(|reply| admin_reply(id, reply)).into_iter().collect()
    }

    /// The nick of member `id`'s account if it has the admin role and may use it here.
    fn admin_of(&self, id: MemberId) -> Result<String, String> {
        let Some(key) = self.rooms.account_of(id) else {
            return Err(
                "/admin is for administrators: log in to an account with the admin role first"
                    .into(),
            );
        };
        let Some(account) = self.accounts.by_key(key).filter(|account| account.admin) else {
            return Err("this account is not an administrator".into());
        };
        let Some(peer) = self.peers.get(id) else { return Err("not connected".into()) };
        let loopback = peer
            .client
            .parse::<SocketAddr>()
            .is_ok_and(|addr| addr.ip().to_canonical().is_loopback());
        if !peer.tls && !loopback {
            return Err(
                "/admin needs an encrypted connection (TLS or HTTPS) from another host".into()
            );
        }
        Ok(account.nick.clone())
    }
}

/// The answer to a member's `/admin`.
pub(in crate::broker) fn admin_reply(id: MemberId, reply: ControlReply) -> Delivery {
    Delivery { to: Audience::One(id), event: Event::AdminReply(Box::new(reply)) }
}

/// What chatctl would have asked.
fn control_request(request: AdminRequest) -> ControlRequest {
    match request {
        AdminRequest::Status => ControlRequest::Status,
        AdminRequest::Who => ControlRequest::Who { room: None },
        AdminRequest::Rooms => ControlRequest::Rooms,
        AdminRequest::Kick { nick, reason } => ControlRequest::Kick { nick, reason },
        AdminRequest::Ban { target, seconds, reason } => {
            ControlRequest::Ban { target, seconds, reason }
        }
        AdminRequest::Unban { target } => ControlRequest::Unban { target },
        AdminRequest::Bans => ControlRequest::Bans,
        AdminRequest::Mute { nick, seconds } => ControlRequest::Mute { nick, seconds },
        AdminRequest::Unmute { nick } => ControlRequest::Unmute { nick },
        AdminRequest::Announce { room, text } => ControlRequest::Announce { room, text },
        AdminRequest::Motd { text } => ControlRequest::Motd { text },
        AdminRequest::Mutes => ControlRequest::Mutes,
    }
}

/// A request that changes something, as the log says it; `None` for the queries.
fn change_of(request: &AdminRequest) -> Option<String> {
    let reason =
        |reason: &Option<String>| reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
    let seconds = |s: &Option<u64>| s.map(|s| format!(" for {s} s")).unwrap_or_default();
    Some(match request {
        AdminRequest::Status
        | AdminRequest::Who
        | AdminRequest::Rooms
        | AdminRequest::Bans
        | AdminRequest::Mutes => {
            return None;
        }
        AdminRequest::Motd { text: None } => return None,
        AdminRequest::Kick { nick, reason: why } => format!("kick {nick}{}", reason(why)),
        AdminRequest::Ban { target, seconds: s, reason: why } => {
            format!("ban {target}{}{}", seconds(s), reason(why))
        }
        AdminRequest::Unban { target } => format!("unban {target}"),
        AdminRequest::Mute { nick, seconds: s } => format!("mute {nick}{}", seconds(s)),
        AdminRequest::Unmute { nick } => format!("unmute {nick}"),
        AdminRequest::Announce { room: Some(room), text } => format!("announce in {room}: {text}"),
        AdminRequest::Announce { room: None, text } => format!("announce everywhere: {text}"),
        AdminRequest::Motd { text: Some(text) } if text.is_empty() => {
            "clear the message of the day".into()
        }
        AdminRequest::Motd { text: Some(text) } => format!("set the message of the day: {text}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_not_logged_as_changes_and_changes_say_what() {
        assert_eq!(change_of(&AdminRequest::Status), None);
        assert_eq!(change_of(&AdminRequest::Motd { text: None }), None);
        let kick = AdminRequest::Kick { nick: "bob".into(), reason: Some("spam".into()) };
        assert_eq!(change_of(&kick).as_deref(), Some("kick bob (spam)"));
        let ban =
            AdminRequest::Ban { target: "10.0.0.0/8".into(), seconds: Some(600), reason: None };
        assert_eq!(change_of(&ban).as_deref(), Some("ban 10.0.0.0/8 for 600 s"));
        assert_eq!(
            control_request(AdminRequest::Who),
            ControlRequest::Who { room: None },
            "the dashboard's who-list is every room's"
        );
    }
}
