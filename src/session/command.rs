//! Turns one line of user text into a [`Command`].
//!
//! Owns the command syntax: a line starting with `/` is a command, `//` escapes a literal `/`,
//! a line starting with a path (`/usr/bin/env`: a `/` in its first word) is chat, as is
//! anything else. Command words are case-insensitive; a known command with the wrong
//! arguments (missing or extra) becomes [`Command::Usage`] naming its correct form. It does not
//! decide whether a command is allowed now (that is the session's state) or what it does.

use crate::proto::AdminRequest;
use crate::session::help::HELP;

/// The forms of `/admin`, for its usage line.
pub const ADMIN_USAGE: &str = "/admin status | who | rooms | bans | mutes | kick NICK [WHY] | ban WHO [FOR] [WHY] | \
     unban WHO | mute NICK [FOR] | unmute NICK | announce [#ROOM] TEXT | motd [TEXT | -]";

/// A parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Chat text for the room (a plain line, or a `//` line with one `/` removed).
    Say(String),
    Nick(String),
    Quit(Option<String>),
    Join(String),
    Who,
    Rooms,
    Topic(Option<String>),
    Me(String),
    Msg {
        to: String,
        text: String,
    },
    Help,
    /// `/away [reason]`
    Away(Option<String>),
    /// `/back`
    Back,
    /// `/whois NICK`
    Whois(String),
    /// `/history [N]`: how many lines, as typed.
    History(Option<String>),
    /// `/search WORDS`
    Search(String),
    /// `/reply TEXT`: a private line to whoever last sent one to this user.
    Reply(String),
    /// `/ignore [NICK]`: hide NICK's lines from this session (no NICK: list who is ignored).
    Ignore(Option<String>),
    /// `/unignore NICK`
    Unignore(String),
    /// `/charset [NAME]`: switch (or show) the character set this client types and reads in.
    Charset(Option<String>),
    /// `/color on|off`
    Colour(bool),
    /// `/timestamps on|off`
    Timestamps(bool),
    /// `/bell on|off`
    Bell(bool),
    /// `/register`
    Register,
    /// `/login [NICK]`
    Login(Option<String>),
    /// `/password`
    Password,
    /// `/logout`
    Logout,
    /// `/unregister`
    Unregister,
    /// `/admin ...`: one of the operators' commands (the broker decides whether this user may).
    Admin(AdminRequest),
    /// `/missed SENDER.SEQ`: the web page's own, sent when it reconnects: the lines said after
    /// the last one it showed (its `id`, `session::web::json`). No terminal command.
    Missed {
        sender: u64,
        seq: u64,
    },
    /// A `/word` that is no command; carries the word as typed.
    Unknown(String),
    /// A known command used wrongly; carries its usage line.
    Usage(&'static str),
}

fn usage(command: &str) -> &'static str {
    HELP.iter()
        .find(|(line, _)| line.split(' ').next() == Some(command))
        .map_or("/help", |(line, _)| line)
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
fn first_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    }
}

fn optional(rest: &str) -> Option<String> {
    (!rest.is_empty()).then(|| rest.to_string())
}

/// Parses one line (already decoded and stripped of its line end).
pub fn parse(line: &str) -> Command {
    let Some(body) = line.strip_prefix('/') else {
        return Command::Say(line.to_string());
    };
    if body.starts_with('/') {
        return Command::Say(body.to_string());
    }
    let (word, rest) = first_word(body);
    if word.contains('/') {
        // A path (`/usr/bin/env python`, pasted from a shell) is no command: say it.
        return Command::Say(line.to_string());
    }
    let name = format!("/{}", word.to_ascii_lowercase());
    let one_word = |make: fn(String) -> Command| {
        let (arg, extra) = first_word(rest);
        if arg.is_empty() || !extra.is_empty() {
            Command::Usage(usage(&name))
        } else {
            make(arg.to_string())
        }
    };
    let no_args = |command: Command| {
        if rest.is_empty() { command } else { Command::Usage(usage(&name)) }
    };
    let switch = |make: fn(bool) -> Command| match rest.to_ascii_lowercase().as_str() {
        "on" => make(true),
        "off" => make(false),
        _ => Command::Usage(usage(&name)),
    };
    match name.as_str() {
        // More than one word is passed on, so that the name rules say why it is refused
        // (a space is not allowed) instead of a bare usage line.
        "/nick" if !rest.is_empty() => Command::Nick(rest.to_string()),
        "/nick" => Command::Usage(usage(&name)),
        "/join" => one_word(Command::Join),
        "/quit" => Command::Quit(optional(rest)),
        "/who" => no_args(Command::Who),
        "/rooms" => no_args(Command::Rooms),
        "/help" => no_args(Command::Help),
        "/away" => Command::Away(optional(rest)),
        "/back" => no_args(Command::Back),
        "/whois" => one_word(Command::Whois),
        "/history" if rest.is_empty() => Command::History(None),
        "/history" => one_word(|count| Command::History(Some(count))),
        "/search" if !rest.is_empty() => Command::Search(rest.to_string()),
        "/search" => Command::Usage(usage(&name)),
        "/missed" => match rest.split_once('.').map(|(s, q)| (s.parse(), q.parse())) {
            Some((Ok(sender), Ok(seq))) => Command::Missed { sender, seq },
            _ => Command::Unknown(name),
        },
        "/reply" if !rest.is_empty() => Command::Reply(rest.to_string()),
        "/reply" => Command::Usage(usage(&name)),
        "/ignore" if rest.is_empty() => Command::Ignore(None),
        "/ignore" => one_word(|nick| Command::Ignore(Some(nick))),
        "/unignore" => one_word(Command::Unignore),
        "/charset" if rest.is_empty() => Command::Charset(None),
        "/charset" => one_word(|name| Command::Charset(Some(name))),
        "/color" | "/colour" => switch(Command::Colour),
        "/timestamps" => switch(Command::Timestamps),
        "/bell" => switch(Command::Bell),
        "/topic" => Command::Topic(optional(rest)),
        "/register" => no_args(Command::Register),
        "/login" if rest.is_empty() => Command::Login(None),
        "/login" => one_word(|nick| Command::Login(Some(nick))),
        "/password" => no_args(Command::Password),
        "/logout" => no_args(Command::Logout),
        "/unregister" => no_args(Command::Unregister),
        "/me" if !rest.is_empty() => Command::Me(rest.to_string()),
        "/msg" => match first_word(rest) {
            (to, text) if !to.is_empty() && !text.is_empty() => {
                Command::Msg { to: to.to_string(), text: text.to_string() }
            }
            _ => Command::Usage(usage(&name)),
        },
        "/me" => Command::Usage(usage(&name)),
        "/admin" => admin(rest).map_or(Command::Usage(ADMIN_USAGE), Command::Admin),
        _ => Command::Unknown(format!("/{word}")),
    }
}

/// `/admin`'s arguments, as chatctl takes them: a duration (`30m`, `12h`, `7d`) where one
/// may be, a reason or a text for the rest.
fn admin(rest: &str) -> Option<AdminRequest> {
    let (what, rest) = first_word(rest);
    let (first, after) = first_word(rest);
    let one = |make: fn(String) -> AdminRequest| {
        (!first.is_empty() && after.is_empty()).then(|| make(first.to_string()))
    };
    // The next word, if it is a duration, and what follows it.
    let duration = |text: &str| -> (Option<u64>, String) {
        let (word, tail) = first_word(text);
        match crate::ctl::parse_duration(word) {
            Ok(seconds) if !word.is_empty() => (Some(seconds), tail.to_string()),
            _ => (None, text.to_string()),
        }
    };
    let request = match what.to_ascii_lowercase().as_str() {
        "status" if rest.is_empty() => AdminRequest::Status,
        "who" if rest.is_empty() => AdminRequest::Who,
        "rooms" if rest.is_empty() => AdminRequest::Rooms,
        "bans" if rest.is_empty() => AdminRequest::Bans,
        "mutes" if rest.is_empty() => AdminRequest::Mutes,
        "kick" if !first.is_empty() => {
            AdminRequest::Kick { nick: first.to_string(), reason: optional(after) }
        }
        "ban" if !first.is_empty() => {
            let (seconds, reason) = duration(after);
            AdminRequest::Ban { target: first.to_string(), seconds, reason: optional(&reason) }
        }
        "unban" => one(|target| AdminRequest::Unban { target })?,
        "mute" if !first.is_empty() => match duration(after) {
            (seconds, tail) if tail.is_empty() => {
                AdminRequest::Mute { nick: first.to_string(), seconds }
            }
            _ => return None,
        },
        "unmute" => one(|nick| AdminRequest::Unmute { nick })?,
        "announce" if first.starts_with('#') && !after.is_empty() => {
            AdminRequest::Announce { room: Some(first.to_string()), text: after.to_string() }
        }
        "announce" if !rest.is_empty() => {
            AdminRequest::Announce { room: None, text: rest.to_string() }
        }
        "motd" if rest.is_empty() => AdminRequest::Motd { text: None },
        "motd" if rest == "-" => AdminRequest::Motd { text: Some(String::new()) },
        "motd" => AdminRequest::Motd { text: Some(rest.to_string()) },
        _ => return None,
    };
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_and_escaped_slashes_are_chat() {
        assert_eq!(parse("hello /all"), Command::Say("hello /all".into()));
        assert_eq!(parse("//etc/passwd"), Command::Say("/etc/passwd".into()));
    }

    #[test]
    fn commands_with_arguments() {
        assert_eq!(parse("/nick bob"), Command::Nick("bob".into()));
        assert_eq!(parse("/NICK  bob "), Command::Nick("bob".into()));
        assert_eq!(parse("/join #rust"), Command::Join("#rust".into()));
        assert_eq!(parse("/quit"), Command::Quit(None));
        assert_eq!(parse("/quit gone fishing"), Command::Quit(Some("gone fishing".into())));
        assert_eq!(parse("/topic"), Command::Topic(None));
        assert_eq!(parse("/topic Rust  only"), Command::Topic(Some("Rust  only".into())));
        assert_eq!(parse("/me waves"), Command::Me("waves".into()));
        assert_eq!(
            parse("/msg bob hi  there"),
            Command::Msg { to: "bob".into(), text: "hi  there".into() }
        );
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/rooms"), Command::Rooms);
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/away"), Command::Away(None));
        assert_eq!(parse("/AWAY lunch, back at 2"), Command::Away(Some("lunch, back at 2".into())));
        assert_eq!(parse("/back"), Command::Back);
        assert_eq!(parse("/back now"), Command::Usage("/back"));
        assert_eq!(parse("/whois bob"), Command::Whois("bob".into()));
        assert_eq!(parse("/history"), Command::History(None));
        assert_eq!(parse("/HISTORY 50"), Command::History(Some("50".into())));
        assert_eq!(parse("/history 5 6"), Command::Usage("/history [N]"));
        assert_eq!(parse("/search  café 世界 "), Command::Search("café 世界".into()));
        assert_eq!(parse("/search"), Command::Usage("/search WORDS"));
        assert_eq!(parse("/reply see you"), Command::Reply("see you".into()));
        assert_eq!(parse("/ignore"), Command::Ignore(None));
        assert_eq!(parse("/ignore 小明"), Command::Ignore(Some("小明".into())));
        assert_eq!(parse("/unignore bob"), Command::Unignore("bob".into()));
        assert_eq!(parse("/charset GBK"), Command::Charset(Some("GBK".into())));
        assert_eq!(parse("/charset"), Command::Charset(None));
        assert_eq!(parse("/color off"), Command::Colour(false));
        assert_eq!(parse("/colour ON"), Command::Colour(true));
        assert_eq!(parse("/timestamps on"), Command::Timestamps(true));
        assert_eq!(parse("/bell off"), Command::Bell(false));
        assert_eq!(parse("/bell"), Command::Usage("/bell on|off"));
        assert_eq!(parse("/color blue"), Command::Usage("/color on|off"));
        assert_eq!(parse("/reply"), Command::Usage("/reply TEXT"));
        assert_eq!(parse("/register"), Command::Register);
        assert_eq!(parse("/register now"), Command::Usage("/register"));
        assert_eq!(parse("/login"), Command::Login(None));
        assert_eq!(parse("/LOGIN alice"), Command::Login(Some("alice".into())));
        assert_eq!(parse("/login a b"), Command::Usage("/login [NICK]"));
        assert_eq!(parse("/password"), Command::Password);
        assert_eq!(parse("/logout"), Command::Logout);
        assert_eq!(parse("/unregister"), Command::Unregister);
    }

    #[test]
    fn wrong_arguments_give_the_usage() {
        assert_eq!(parse("/nick"), Command::Usage("/nick NAME"));
        assert_eq!(parse("/nick a b"), Command::Nick("a b".into()), "the name rules say why");
        assert_eq!(parse("/join"), Command::Usage("/join ROOM"));
        assert_eq!(parse("/who extra"), Command::Usage("/who"));
        assert_eq!(parse("/msg bob"), Command::Usage("/msg NICK TEXT"));
        assert_eq!(parse("/me"), Command::Usage("/me ACTION"));
    }

    #[test]
    fn help_fits_an_80_column_terminal() {
        for line in crate::session::render::help() {
            let line = line.plain();
            assert!(crate::text::columns(&line) <= 80, "{} columns: {line}", line.len());
        }
    }

    #[test]
    fn a_line_that_starts_with_a_path_is_chat() {
        assert_eq!(parse("/usr/bin/env python3"), Command::Say("/usr/bin/env python3".into()));
        assert_eq!(parse("/etc/"), Command::Say("/etc/".into()));
        assert_eq!(parse("/usr"), Command::Unknown("/usr".into()));
    }

    #[test]
    fn admin_commands_take_chatctl_arguments() {
        let admin = |line: &str| match parse(line) {
            Command::Admin(request) => Some(request),
            _ => None,
        };
        assert_eq!(admin("/admin status"), Some(AdminRequest::Status));
        assert_eq!(admin("/ADMIN who"), Some(AdminRequest::Who));
        assert_eq!(admin("/admin mutes"), Some(AdminRequest::Mutes));
        assert_eq!(admin("/admin mutes bob"), None, "mutes takes no argument");
        assert_eq!(
            admin("/admin kick bob flooding again"),
            Some(AdminRequest::Kick { nick: "bob".into(), reason: Some("flooding again".into()) })
        );
        assert_eq!(
            admin("/admin ban 10.0.0.0/8 2h spam bots"),
            Some(AdminRequest::Ban {
                target: "10.0.0.0/8".into(),
                seconds: Some(7200),
                reason: Some("spam bots".into())
            })
        );
        assert_eq!(
            admin("/admin ban bob spam"),
            Some(AdminRequest::Ban {
                target: "bob".into(),
                seconds: None,
                reason: Some("spam".into())
            })
        );
        assert_eq!(
            admin("/admin mute bob 10m"),
            Some(AdminRequest::Mute { nick: "bob".into(), seconds: Some(600) })
        );
        assert_eq!(
            admin("/admin announce #ops back in 5"),
            Some(AdminRequest::Announce { room: Some("#ops".into()), text: "back in 5".into() })
        );
        assert_eq!(
            admin("/admin announce maintenance at 10"),
            Some(AdminRequest::Announce { room: None, text: "maintenance at 10".into() })
        );
        assert_eq!(admin("/admin motd"), Some(AdminRequest::Motd { text: None }));
        assert_eq!(admin("/admin motd -"), Some(AdminRequest::Motd { text: Some(String::new()) }));
        assert_eq!(admin("/admin unban bob"), Some(AdminRequest::Unban { target: "bob".into() }));
        for wrong in [
            "/admin",
            "/admin shutdown",
            "/admin kick",
            "/admin mute bob 10m x",
            "/admin status now",
        ] {
            assert_eq!(parse(wrong), Command::Usage(ADMIN_USAGE), "{wrong}");
        }
    }

    #[test]
    fn unknown_commands_keep_their_word() {
        assert_eq!(parse("/foo bar"), Command::Unknown("/foo".into()));
        assert_eq!(parse("/"), Command::Unknown("/".into()));
    }
}
