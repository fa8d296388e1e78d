//! The list of commands with their usage lines and one-line descriptions.
//!
//! Owns that text, which two sides read: the parser ([`command`](super::command)) names a
//! command's correct form from it, and the renderer ([`render`](super::render)) lists it for
//! `/help`. It holds data only, so that neither of them reaches into the other.

/// Every command with its usage and a one-line description, in `/help` order.
pub const HELP: &[(&str, &str)] = &[
    ("/nick NAME", "change your nickname"),
    ("/join ROOM", "leave this room and enter ROOM (created if needed)"),
    ("/who", "list the people in this room"),
    ("/rooms", "list the rooms and how many are in each"),
    ("/topic [TEXT]", "show this room's topic, or set it to TEXT"),
    ("/me ACTION", "tell the room what you are doing"),
    ("/msg NICK TEXT", "send TEXT to NICK only"),
    ("/away [REASON]", "mark yourself away (shown in /who and to /msg senders)"),
    ("/back", "you are back"),
    ("/whois NICK", "where NICK is, for how long, and whether away"),
    ("/history [N]", "show N earlier lines here (again: the page before)"),
    ("/search WORDS", "find lines said here that have every word"),
    ("/reply TEXT", "send TEXT to whoever last sent you a private message"),
    ("/ignore [NICK]", "hide NICK's lines and messages (no NICK: list who)"),
    ("/unignore NICK", "show NICK's lines again"),
    ("/charset [NAME]", "your character set: utf-8, gbk, big5 or latin1"),
    ("/color on|off", "colour on or off"),
    ("/timestamps on|off", "prefix lines with the time"),
    ("/bell on|off", "ring the bell when you are named or messaged"),
    ("/register", "protect your nickname with a password (asked twice)"),
    ("/login [NICK]", "log in to your registered nickname"),
    ("/password", "change your password"),
    ("/logout", "log out; you go on under a guest name"),
    ("/unregister", "delete your account (your password is asked)"),
    ("/admin COMMAND", "for administrators: status, who, kick, ban, mute, motd"),
    ("/quit [REASON]", "leave the chat"),
    ("/help", "show this list"),
    ("//TEXT", "send TEXT that starts with a /"),
];
