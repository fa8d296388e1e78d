//! Turns broker events and session notices into the text lines a client sees.
//!
//! Owns the look of chatd: user lines are `<nick> text`, actions `* nick text`, private lines
//! `*nick* text` and `-> *nick* text`, and everything the server says starts with `*** `.
//! Every field that came from a user is cleaned with `text::sanitize` here too, so no path can
//! put a control character on a client's screen. Lines are returned without line ends; the
//! session adds them. No I/O, no state.

use crate::proto::{Event, Failure, LeaveReason};
use crate::session::command::HELP;
use crate::text::sanitize;

/// Prefix of every line the server itself says.
pub const SYSTEM_PREFIX: &str = "*** ";

/// A system line.
pub fn system(text: &str) -> String {
    format!("{SYSTEM_PREFIX}{text}")
}

/// The lines shown for one event.
pub fn event(event: &Event) -> Vec<String> {
    let line = match event {
        Event::Welcome { .. } => return Vec::new(),
        Event::LoggedIn { nick } => {
            system(&format!("You are now known as {}. Type /help for commands.", sanitize(nick)))
        }
        Event::Chat { from, text, .. } => format!("<{}> {}", sanitize(from), sanitize(text)),
        Event::Action { from, text, .. } => format!("* {} {}", sanitize(from), sanitize(text)),
        Event::Joined { nick, room } => {
            system(&format!("{} has joined {}", sanitize(nick), sanitize(room)))
        }
        Event::Left { nick, room, reason } => {
            let nick = sanitize(nick);
            match reason {
                LeaveReason::JoinedOther(to) => {
                    system(&format!("{nick} has left {} (joined {})", sanitize(room), sanitize(to)))
                }
                LeaveReason::Quit(Some(why)) => {
                    system(&format!("{nick} has left ({})", sanitize(why)))
                }
                LeaveReason::Quit(None) => system(&format!("{nick} has left (quit)")),
                LeaveReason::ConnectionLost => {
                    system(&format!("{nick} has left (connection lost)"))
                }
                LeaveReason::TooSlow => system(&format!("{nick} has left (too slow)")),
                LeaveReason::Kicked(Some(why)) => {
                    system(&format!("{nick} was removed by an operator ({})", sanitize(why)))
                }
                LeaveReason::Kicked(None) => system(&format!("{nick} was removed by an operator")),
            }
        }
        Event::NickChanged { old, new } => {
            system(&format!("{} is now known as {}", sanitize(old), sanitize(new)))
        }
        Event::TopicChanged { room, by, text } => system(&format!(
            "{} set the topic of {} to: {}",
            sanitize(by),
            sanitize(room),
            sanitize(text)
        )),
        Event::Topic { room, text: Some(text) } => {
            system(&format!("Topic for {}: {}", sanitize(room), sanitize(text)))
        }
        Event::Topic { room, text: None } => {
            system(&format!("No topic is set for {}", sanitize(room)))
        }
        Event::Private { from, text, .. } => format!("*{}* {}", sanitize(from), sanitize(text)),
        Event::PrivateSent { to, text, .. } => format!("-> *{}* {}", sanitize(to), sanitize(text)),
        Event::Members { room, nicks, away } => {
            let names: Vec<String> =
                nicks
                    .iter()
                    .map(|n| {
                        if away.contains(n) {
                            format!("{} (away)", sanitize(n))
                        } else {
                            sanitize(n)
                        }
                    })
                    .collect();
            system(&format!("In {} ({}): {}", sanitize(room), names.len(), names.join(", ")))
        }
        Event::RoomList { rooms } => {
            let rows: Vec<String> =
                rooms.iter().map(|r| format!("{} ({})", sanitize(&r.name), r.members)).collect();
            system(&format!("Rooms: {}", rows.join(", ")))
        }
        Event::Failed(failure) | Event::Rejected { failure, .. } => system(&self::failure(failure)),
        // The session words this itself: it knows what it asked for.
        Event::Resumed { .. } => return Vec::new(),
        Event::Shutdown => notice::shutting_down(),
        Event::Kicked { reason: Some(why) } => {
            system(&format!("You were removed by an operator ({}).", sanitize(why)))
        }
        Event::Kicked { reason: None } => system("You were removed by an operator."),
        Event::Away { reason: Some(reason) } => system(&format!(
            "You are marked as away ({}). /back when you return.",
            sanitize(reason)
        )),
        Event::Away { reason: None } => system("You are back."),
        Event::IsAway { nick, reason } => {
            system(&format!("{} is away: {}", sanitize(nick), sanitize(reason)))
        }
        Event::Announcement { text } => system(&format!("Announcement: {}", sanitize(text))),
        Event::Motd { lines } => {
            let mut out = vec![system("Message of the day:")];
            out.extend(lines.iter().map(|line| system(&format!("  {}", sanitize(line)))));
            return out;
        }
        // Only for the master; a session never receives them.
        Event::Reload | Event::Stop => return Vec::new(),
    };
    vec![line]
}

/// What a failed request tells its user.
pub fn failure(failure: &Failure) -> String {
    match failure {
        Failure::NickInUse(nick) => format!("The nickname {} is already in use", sanitize(nick)),
        Failure::InvalidNick { nick, why } => {
            format!("Invalid nickname {:?}: {}", sanitize(nick), sanitize(why))
        }
        Failure::InvalidRoom { room, why } => {
            format!("Invalid room {:?}: {}", sanitize(room), sanitize(why))
        }
        Failure::AlreadyInRoom(room) => format!("You are already in {}", sanitize(room)),
        Failure::NoSuchNick(nick) => format!("No such nick: {}", sanitize(nick)),
        Failure::NotLoggedIn => "Choose a nickname first".to_string(),
        Failure::AlreadyLoggedIn => {
            "You already have a nickname; use /nick to change it".to_string()
        }
        Failure::VersionMismatch { .. } => {
            "The chat service is being upgraded; please try again later".to_string()
        }
        Failure::InvalidText(why) => format!("Not sent: {}", sanitize(why)),
        Failure::NickBanned(nick) => format!("The nickname {} is banned here", sanitize(nick)),
    }
}

/// The `/help` listing.
pub fn help() -> Vec<String> {
    let mut lines = vec![system("Commands:")];
    lines.extend(HELP.iter().map(|(usage, what)| system(&format!("  {usage:<16} {what}"))));
    lines.push(system("Anything else you type is sent to everyone in your room."));
    lines
}

/// Notices the session itself produces.
pub mod notice {
    use super::system;
    use crate::text::MAX_LINE_BYTES;

    pub fn greeting(version: &str) -> Vec<String> {
        vec![system(&format!("Welcome to chatd {version}.")), prompt()]
    }

    pub fn prompt() -> String {
        system("Please choose a nickname (1-24 letters, digits or _-[]{}|^`\\):")
    }

    pub fn too_long() -> String {
        system(&format!("Line too long (more than {MAX_LINE_BYTES} bytes); it was not sent."))
    }

    pub fn not_utf8() -> String {
        system("Your line was not valid UTF-8 and was not sent.")
    }

    pub fn unknown(word: &str) -> String {
        system(&format!("Unknown command {}; try /help", super::sanitize(word)))
    }

    pub fn usage(usage: &str) -> String {
        system(&format!("Usage: {usage}"))
    }

    pub fn nick_first() -> String {
        system("Choose a nickname first.")
    }

    pub fn goodbye() -> String {
        system("Goodbye.")
    }

    pub fn login_timeout(seconds: u64) -> String {
        let unit = if seconds == 1 { "second" } else { "seconds" };
        system(&format!("No nickname chosen within {seconds} {unit}; goodbye."))
    }

    pub fn shutting_down() -> String {
        system("The server is shutting down. Goodbye.")
    }

    pub fn killed() -> String {
        system("You were disconnected by an operator.")
    }

    pub fn service_unavailable() -> String {
        system("The chat service is unavailable; please try again later.")
    }

    pub fn resumed(room: &str) -> String {
        system(&format!("The chat service restarted; you are still in {}.", super::sanitize(room)))
    }

    pub fn resumed_renamed(asked: &str, got: &str) -> String {
        system(&format!(
            "The chat service restarted and {} was taken meanwhile; you are now {}.",
            super::sanitize(asked),
            super::sanitize(got)
        ))
    }

    pub fn flooding() -> String {
        system("You are sending too fast; lines are being dropped until you slow down.")
    }

    pub fn too_many_errors(budget: u32) -> String {
        system(&format!("{budget} invalid commands in a row; goodbye."))
    }

    pub fn endless_line(limit: usize) -> String {
        system(&format!("More than {limit} bytes without a line end; goodbye."))
    }

    pub fn idle_warning(seconds_left: u64) -> String {
        system(&format!(
            "You have been idle; you will be disconnected in {seconds_left} s unless you type something."
        ))
    }

    pub fn idle_disconnect(seconds: u64) -> String {
        system(&format!("Disconnected after {seconds} s of inactivity."))
    }

    pub fn service_lost() -> String {
        system("Lost contact with the chat service; please reconnect.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RoomInfo;

    fn one(e: Event) -> String {
        let mut lines = event(&e);
        assert_eq!(lines.len(), 1);
        lines.remove(0)
    }

    #[test]
    fn user_lines_and_system_lines_look_different() {
        assert_eq!(
            one(Event::Chat { from: "alice".into(), sender: 9, seq: 1, text: "Hello,all".into() }),
            "<alice> Hello,all"
        );
        assert_eq!(
            one(Event::Joined { nick: "alice".into(), room: "lobby".into() }),
            "*** alice has joined lobby"
        );
        assert_eq!(
            one(Event::Action { from: "alice".into(), sender: 9, seq: 1, text: "waves".into() }),
            "* alice waves"
        );
    }

    #[test]
    fn departures_say_why() {
        let left = |reason| one(Event::Left { nick: "alice".into(), room: "lobby".into(), reason });
        assert_eq!(left(LeaveReason::Quit(Some("bye".into()))), "*** alice has left (bye)");
        assert_eq!(left(LeaveReason::ConnectionLost), "*** alice has left (connection lost)");
        assert_eq!(
            left(LeaveReason::JoinedOther("rust".into())),
            "*** alice has left lobby (joined rust)"
        );
    }

    #[test]
    fn private_lines_and_lists() {
        assert_eq!(
            one(Event::Private { from: "alice".into(), sender: 9, seq: 1, text: "psst".into() }),
            "*alice* psst"
        );
        assert_eq!(
            one(Event::PrivateSent { seq: 1, to: "bob".into(), text: "psst".into() }),
            "-> *bob* psst"
        );
        assert_eq!(
            one(Event::Members {
                room: "lobby".into(),
                nicks: vec!["a".into(), "b".into()],
                away: vec!["b".into()],
            }),
            "*** In lobby (2): a, b (away)"
        );
        assert_eq!(
            one(Event::RoomList { rooms: vec![RoomInfo { name: "lobby".into(), members: 3 }] }),
            "*** Rooms: lobby (3)"
        );
    }

    #[test]
    fn controls_from_a_misbehaving_broker_are_still_removed() {
        let line = one(Event::Chat {
            from: "x\r*** y".into(),
            sender: 9,
            seq: 1,
            text: "\x1b]0;pwned\x07".into(),
        });
        assert!(
            !line.contains('\x1b') && !line.contains('\r') && !line.contains('\x07'),
            "{line:?}"
        );
    }

    #[test]
    fn help_names_every_command() {
        let help = help().join("\n");
        for command in
            ["/nick", "/join", "/who", "/rooms", "/topic", "/me", "/msg", "/quit", "/help"]
        {
            assert!(help.contains(command), "{command} missing from help");
        }
    }
}
