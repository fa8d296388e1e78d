//! What a command does, decided without doing it.
//!
//! Owns the mapping from a parsed [`Command`] to an [`Action`], given a read-only [`View`] of
//! the session: before login only a nickname (and the terminal's own settings, `/help`,
//! `/quit`) is accepted; after it, commands become broker requests, or local answers (`/reply`
//! without a sender, `/ignore`, `/unignore`, `/charset`, `/color`, `/timestamps`, `/bell`,
//! `/help`, usage and unknown-command lines). It also says which commands count against the
//! error budget. No I/O and no state: the session's loop carries the action out, so every
//! command path is unit-tested here. The syntax is [`command`](super::command)'s; what the
//! broker then decides is the broker's.

use crate::names;
use crate::proto::{Failure, MAX_HISTORY_PAGE, Purpose, Request};
use crate::session::charset::{self, Charset};
use crate::session::command::Command;
use crate::session::render::{self, Shown, notice};
use crate::session::state::{Phase, SessionState};
use crate::text;

/// What dispatching reads of the session.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub state: &'a SessionState,
    /// The client's character set, for `/charset` without a name.
    pub charset: Charset,
    /// The client is the web page (which alone sends `/missed`).
    pub browser: bool,
}

/// A line the broker numbers (its echo acknowledges it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numbered {
    Say(String),
    Act(String),
    Private { to: String, text: String },
}

impl Numbered {
    /// The request, numbered `seq`.
    pub fn into_request(self, seq: u64) -> Request {
        match self {
            Numbered::Say(text) => Request::Say { seq, text },
            Numbered::Act(text) => Request::Act { seq, text },
            Numbered::Private { to, text } => Request::Private { seq, to, text },
        }
    }
}

/// A setting of this client's terminal that a command changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Also forgets that the client was told its input is not valid in the old one.
    Charset(Charset),
    Colour(bool),
    Timestamps(bool),
    Bell(bool),
}

/// What the session does about one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the broker for this (valid, normalised) nickname; lines wait for the answer.
    Login(String),
    /// Send the broker this request.
    Send(Request),
    /// Send the broker this line, numbered.
    SendNumbered(Numbered),
    /// Say goodbye to the broker (with the reason the room is told) and wait for its close.
    Quit(Option<String>),
    /// End the session at once (a `/quit` before login).
    Close { last_words: Shown, why: &'static str },
    /// Show these lines, in one write.
    Show(Vec<Shown>),
    /// Show these lines in one write, then the nickname prompt.
    Prompted(Vec<Shown>),
    /// Add `nick` (normalised) to the ignore list, and show `shown`.
    Ignore { nick: String, shown: Shown },
    /// Take `nick` (normalised) off the ignore list, and show `shown`.
    Unignore { nick: String, shown: Shown },
    /// Change a terminal setting, and show `shown`.
    Terminal { setting: Setting, shown: Shown },
}

/// Lines one `/history` shows unless told.
const HISTORY_PAGE: u16 = 20;

/// The count of a `/history [N]`: 1 to [`MAX_HISTORY_PAGE`]; `None` if it is not one.
fn history_count(typed: Option<&str>) -> Option<u16> {
    match typed {
        None => Some(HISTORY_PAGE),
        Some(text) => text.parse().ok().filter(|n| (1..=MAX_HISTORY_PAGE).contains(n)),
    }
}

/// Whether `command` is an invalid one: it counts against the error budget.
pub fn counts_as_error(command: &Command) -> bool {
    matches!(command, Command::Unknown(_) | Command::Usage(_))
        || matches!(command, Command::Nick(nick) if names::check_nick(&names::normalize_nick(nick)).is_err())
}

/// What `command` does in the session `view` shows.
pub fn dispatch(command: Command, view: &View) -> Action {
    match &view.state.phase {
        Phase::Chatting { .. } => chatting(command, view),
        Phase::ChoosingNick { .. } | Phase::Resuming { .. } => before_login(command, view),
    }
}

fn before_login(command: Command, view: &View) -> Action {
    match command {
        Command::Say(nick) | Command::Nick(nick) | Command::Login(Some(nick)) => {
            login(names::normalize_nick(&nick))
        }
        Command::Quit(_) => {
            Action::Close { last_words: notice::goodbye(), why: "quit before login" }
        }
        Command::Help => Action::Prompted(render::help()),
        command @ (Command::Charset(_)
        | Command::Colour(_)
        | Command::Timestamps(_)
        | Command::Bell(_)) => terminal(command, view),
        _ => Action::Prompted(vec![notice::nick_first()]),
    }
}

fn login(nick: String) -> Action {
    match names::check_nick(&nick) {
        Ok(()) => Action::Login(nick),
        Err(why) => {
            let failure = Failure::InvalidNick { nick, why };
            Action::Prompted(vec![render::system(&render::failure(&failure))])
        }
    }
}

fn chatting(command: Command, view: &View) -> Action {
    let state = view.state;
    let shown = |line: &str| Action::Show(vec![render::system(line)]);
    let request = match command {
        Command::Say(text) => return Action::SendNumbered(Numbered::Say(text)),
        Command::Me(text) => return Action::SendNumbered(Numbered::Act(text)),
        Command::Msg { to, text } => return Action::SendNumbered(Numbered::Private { to, text }),
        Command::Nick(nick) => {
            let nick = names::normalize_nick(&nick);
            if let Err(why) = names::check_nick(&nick) {
                let failure = Failure::InvalidNick { nick, why };
                return shown(&render::failure(&failure));
            }
            Request::ChangeNick { nick }
        }
        Command::Join(room) => Request::Join { room },
        Command::Who => Request::Who,
        Command::Rooms => Request::Rooms,
        Command::Topic(text) => Request::Topic { text },
        Command::Quit(reason) => return Action::Quit(reason),
        Command::Away(reason) => {
            Request::Away { reason: reason.unwrap_or_else(|| "away".to_string()) }
        }
        Command::Back => Request::Back,
        Command::Whois(nick) => Request::Whois { nick },
        Command::Admin(request) => Request::Admin(request),
        Command::History(count) => match history_count(count.as_deref()) {
            Some(count) => Request::History { before: state.history_before, count },
            None => return shown(&format!("Show 1 to {MAX_HISTORY_PAGE} lines: /history [N]")),
        },
        Command::Search(words) => Request::Search { words },
        Command::Missed { sender, seq } if view.browser => Request::Missed { sender, seq },
        Command::Missed { .. } => return Action::Show(vec![notice::unknown("/missed")]),
        Command::Reply(text) => {
            return match &state.last_private_from {
                Some(to) => Action::SendNumbered(Numbered::Private { to: to.clone(), text }),
                None => shown("Nobody has sent you a private message yet."),
            };
        }
        Command::Ignore(None) if state.ignored.is_empty() => {
            return shown("You are ignoring nobody.");
        }
        Command::Ignore(None) => {
            return shown(&format!("You are ignoring: {}", state.ignored.join(", ")));
        }
        Command::Ignore(Some(nick)) => {
            let nick = names::normalize_nick(&nick);
            // A logged-in user's ignore list is kept with the account.
            let scope = if state.account.is_some() { "from now on" } else { "in this session" };
            let shown = render::system(&format!(
                "You will not see lines or messages from {nick} {scope}. /unignore {nick} to undo."
            ));
            return Action::Ignore { nick, shown };
        }
        Command::Unignore(nick) => {
            let unignored = names::normalize_nick(&nick);
            let line = if state.is_ignored(&unignored) {
                format!("You see {nick} again.")
            } else {
                format!("You were not ignoring {nick}.")
            };
            return Action::Unignore {
                nick: unignored,
                shown: render::system(&text::sanitize(&line)),
            };
        }
        command @ (Command::Charset(_)
        | Command::Colour(_)
        | Command::Timestamps(_)
        | Command::Bell(_)) => return terminal(command, view),
        Command::Register | Command::Login(_) if !state.passwords_allowed => {
            return shown(&state.passwords_need_tls());
        }
        Command::Register => {
            let Phase::Chatting { nick, .. } = &state.phase else { return Action::Show(vec![]) };
            Request::Challenge { nick: nick.clone(), purpose: Purpose::Register }
        }
        Command::Login(nick) => {
            let nick = match nick {
                Some(nick) => names::normalize_nick(&nick),
                None => match &state.phase {
                    Phase::Chatting { nick, .. } => nick.clone(),
                    _ => return Action::Show(vec![]),
                },
            };
            Request::Challenge { nick, purpose: Purpose::Login }
        }
        Command::Password | Command::Unregister => {
            let Phase::Chatting { nick, .. } = &state.phase else { return Action::Show(vec![]) };
            let purpose = match command {
                Command::Password => Purpose::ChangePassword,
                _ => Purpose::Unregister,
            };
            Request::Challenge { nick: nick.clone(), purpose }
        }
        Command::Logout => Request::Logout,
        Command::Help => return Action::Show(render::help()),
        Command::Unknown(word) => return Action::Show(vec![notice::unknown(&word)]),
        Command::Usage(usage) => return Action::Show(vec![notice::usage(usage)]),
    };
    Action::Send(request)
}

/// Commands that change only how this client's terminal is served; allowed before login.
fn terminal(command: Command, view: &View) -> Action {
    let on_off = |on: bool| if on { "on" } else { "off" };
    let (setting, line) = match command {
        Command::Charset(Some(name)) => match Charset::by_name(&name) {
            Some(charset) => (
                Setting::Charset(charset),
                format!("Your character set is now {}.", charset.name()),
            ),
            None => {
                return Action::Show(vec![render::system(&format!(
                    "Unknown character set {}; choose one of {}.",
                    text::sanitize(&name),
                    charset::NAMES
                ))]);
            }
        },
        Command::Colour(on) => (Setting::Colour(on), format!("Colour is {}.", on_off(on))),
        Command::Timestamps(on) => {
            (Setting::Timestamps(on), format!("Timestamps are {}.", on_off(on)))
        }
        Command::Bell(on) => (Setting::Bell(on), format!("The bell is {}.", on_off(on))),
        Command::Charset(None) => {
            return Action::Show(vec![render::system(&format!(
                "Your character set is {}. /charset NAME switches ({}).",
                view.charset.name(),
                charset::NAMES
            ))]);
        }
        // Only the commands above are passed here.
        _ => return Action::Show(Vec::new()),
    };
    Action::Terminal { setting, shown: render::system(&line) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: Phase) -> SessionState {
        let mut state = SessionState::new(([127, 0, 0, 1], 4000).into());
        state.phase = phase;
        state
    }

    fn choosing() -> SessionState {
        state(Phase::ChoosingNick { asked: None })
    }

    fn chatting() -> SessionState {
        state(Phase::Chatting { nick: "alice".into(), room: "lobby".into() })
    }

    fn run(command: Command, state: &SessionState) -> Action {
        dispatch(command, &View { state, charset: Charset::default(), browser: false })
    }

    fn said(line: &str) -> Action {
        Action::Show(vec![render::system(line)])
    }

    fn invalid_nick(nick: &str) -> Shown {
        let why = names::check_nick(nick).err().unwrap_or_default();
        render::system(&render::failure(&Failure::InvalidNick { nick: nick.into(), why }))
    }

    /// Every command that is not a nickname or a terminal setting, with an argument each.
    fn commands_that_need_a_nickname() -> Vec<Command> {
        vec![
            Command::Join("rust".into()),
            Command::Who,
            Command::Rooms,
            Command::Topic(None),
            Command::Me("waves".into()),
            Command::Msg { to: "bob".into(), text: "hi".into() },
            Command::Away(None),
            Command::Back,
            Command::Whois("bob".into()),
            Command::Reply("hi".into()),
            Command::Ignore(None),
            Command::Ignore(Some("bob".into())),
            Command::Unignore("bob".into()),
            Command::Unknown("/foo".into()),
            Command::Usage("/who"),
        ]
    }

    #[test]
    fn before_login_a_line_or_nick_asks_for_that_nickname_normalised() {
        for phase in [Phase::ChoosingNick { asked: None }, Phase::Resuming { nick: "alice".into() }]
        {
            let state = state(phase);
            assert_eq!(run(Command::Say(" bob ".into()), &state), Action::Login("bob".into()));
            assert_eq!(run(Command::Nick("carol".into()), &state), Action::Login("carol".into()));
        }
    }

    #[test]
    fn before_login_an_invalid_nickname_is_explained_and_prompted_again() {
        let state = choosing();
        assert_eq!(
            run(Command::Say("a b".into()), &state),
            Action::Prompted(vec![invalid_nick("a b")])
        );
        assert_eq!(
            run(Command::Nick("9lives".into()), &state),
            Action::Prompted(vec![invalid_nick("9lives")])
        );
    }

    #[test]
    fn before_login_quit_closes_and_help_lists_then_prompts() {
        let state = choosing();
        assert_eq!(
            run(Command::Quit(Some("bye".into())), &state),
            Action::Close { last_words: notice::goodbye(), why: "quit before login" }
        );
        assert_eq!(run(Command::Help, &state), Action::Prompted(render::help()));
    }

    #[test]
    fn before_login_everything_else_asks_for_a_nickname_first() {
        let state = choosing();
        for command in commands_that_need_a_nickname() {
            assert_eq!(
                run(command.clone(), &state),
                Action::Prompted(vec![notice::nick_first()]),
                "{command:?}"
            );
        }
    }

    #[test]
    fn terminal_settings_work_before_and_after_login() {
        for state in [choosing(), chatting()] {
            assert_eq!(
                run(Command::Colour(true), &state),
                Action::Terminal {
                    setting: Setting::Colour(true),
                    shown: render::system("Colour is on.")
                }
            );
            assert_eq!(
                run(Command::Timestamps(false), &state),
                Action::Terminal {
                    setting: Setting::Timestamps(false),
                    shown: render::system("Timestamps are off.")
                }
            );
            assert_eq!(
                run(Command::Bell(false), &state),
                Action::Terminal {
                    setting: Setting::Bell(false),
                    shown: render::system("The bell is off.")
                }
            );
            let gbk = Charset::by_name("gbk");
            assert!(gbk.is_some());
            if let Some(gbk) = gbk {
                assert_eq!(
                    run(Command::Charset(Some("GBK".into())), &state),
                    Action::Terminal {
                        setting: Setting::Charset(gbk),
                        shown: render::system(&format!(
                            "Your character set is now {}.",
                            gbk.name()
                        ))
                    }
                );
            }
            assert_eq!(
                run(Command::Charset(Some("klingon".into())), &state),
                said(&format!("Unknown character set klingon; choose one of {}.", charset::NAMES))
            );
            assert_eq!(
                run(Command::Charset(None), &state),
                said(&format!(
                    "Your character set is {}. /charset NAME switches ({}).",
                    Charset::default().name(),
                    charset::NAMES
                ))
            );
        }
    }

    #[test]
    fn chat_actions_and_private_lines_are_numbered() {
        let state = chatting();
        assert_eq!(
            run(Command::Say("hi".into()), &state),
            Action::SendNumbered(Numbered::Say("hi".into()))
        );
        assert_eq!(
            run(Command::Me("waves".into()), &state),
            Action::SendNumbered(Numbered::Act("waves".into()))
        );
        let private = run(Command::Msg { to: "bob".into(), text: "psst".into() }, &state);
        assert_eq!(
            private,
            Action::SendNumbered(Numbered::Private { to: "bob".into(), text: "psst".into() })
        );
        assert_eq!(
            Numbered::Private { to: "bob".into(), text: "psst".into() }.into_request(7),
            Request::Private { seq: 7, to: "bob".into(), text: "psst".into() }
        );
        assert_eq!(
            Numbered::Say("a".into()).into_request(1),
            Request::Say { seq: 1, text: "a".into() }
        );
        assert_eq!(
            Numbered::Act("a".into()).into_request(2),
            Request::Act { seq: 2, text: "a".into() }
        );
    }

    #[test]
    fn after_login_commands_become_requests() {
        let state = chatting();
        let cases = [
            (Command::Nick(" bob ".into()), Request::ChangeNick { nick: "bob".into() }),
            (Command::Join("rust".into()), Request::Join { room: "rust".into() }),
            (Command::Who, Request::Who),
            (Command::Rooms, Request::Rooms),
            (Command::Topic(None), Request::Topic { text: None }),
            (Command::Topic(Some("t".into())), Request::Topic { text: Some("t".into()) }),
            (Command::Away(None), Request::Away { reason: "away".into() }),
            (Command::Away(Some("lunch".into())), Request::Away { reason: "lunch".into() }),
            (Command::Back, Request::Back),
            (Command::Whois("bob".into()), Request::Whois { nick: "bob".into() }),
            (Command::History(None), Request::History { before: None, count: 20 }),
            (Command::History(Some("200".into())), Request::History { before: None, count: 200 }),
            (Command::Search("café".into()), Request::Search { words: "café".into() }),
        ];
        for (command, request) in cases {
            assert_eq!(run(command, &state), Action::Send(request));
        }
        for wrong in ["0", "201", "many", "-1"] {
            assert_eq!(
                run(Command::History(Some(wrong.into())), &state),
                said("Show 1 to 200 lines: /history [N]")
            );
        }
        // A second /history asks for the page before the one shown.
        let mut paging = chatting();
        paging.history_before = Some(41);
        assert_eq!(
            run(Command::History(Some("5".into())), &paging),
            Action::Send(Request::History { before: Some(41), count: 5 })
        );
        assert_eq!(run(Command::Quit(None), &state), Action::Quit(None));
        assert_eq!(
            run(Command::Quit(Some("bye".into())), &state),
            Action::Quit(Some("bye".into()))
        );
    }

    #[test]
    fn after_login_an_invalid_new_nickname_is_explained_without_a_prompt() {
        assert_eq!(
            run(Command::Nick("a b".into()), &chatting()),
            Action::Show(vec![invalid_nick("a b")])
        );
    }

    #[test]
    fn reply_goes_to_the_last_private_sender_or_says_there_is_none() {
        let mut state = chatting();
        assert_eq!(
            run(Command::Reply("hi".into()), &state),
            said("Nobody has sent you a private message yet.")
        );
        state.last_private_from = Some("bob".into());
        assert_eq!(
            run(Command::Reply("hi".into()), &state),
            Action::SendNumbered(Numbered::Private { to: "bob".into(), text: "hi".into() })
        );
    }

    #[test]
    fn ignore_lists_adds_and_unignore_removes() {
        let mut state = chatting();
        assert_eq!(run(Command::Ignore(None), &state), said("You are ignoring nobody."));
        assert_eq!(
            run(Command::Ignore(Some(" bob ".into())), &state),
            Action::Ignore {
                nick: "bob".into(),
                shown: render::system(
                    "You will not see lines or messages from bob in this session. /unignore bob to undo."
                )
            }
        );
        state.account = Some(crate::session::state::LoggedIn { token: vec![], admin: false });
        assert_eq!(
            run(Command::Ignore(Some("dave".into())), &state),
            Action::Ignore {
                nick: "dave".into(),
                shown: render::system(
                    "You will not see lines or messages from dave from now on. /unignore dave to undo."
                )
            },
            "a logged-in user's list is kept with the account"
        );
        state.ignore("bob".into());
        state.ignore("carol".into());
        state.ignore("BOB".into());
        assert_eq!(run(Command::Ignore(None), &state), said("You are ignoring: bob, carol"));
        assert_eq!(
            run(Command::Unignore("Bob".into()), &state),
            Action::Unignore { nick: "Bob".into(), shown: render::system("You see Bob again.") }
        );
        assert_eq!(
            run(Command::Unignore("dave".into()), &state),
            Action::Unignore {
                nick: "dave".into(),
                shown: render::system("You were not ignoring dave.")
            }
        );
        state.unignore("Bob");
        assert_eq!(run(Command::Ignore(None), &state), said("You are ignoring: carol"));
    }

    #[test]
    fn after_login_help_unknown_and_usage_are_answered_locally() {
        let state = chatting();
        assert_eq!(run(Command::Help, &state), Action::Show(render::help()));
        assert_eq!(
            run(Command::Unknown("/foo".into()), &state),
            Action::Show(vec![notice::unknown("/foo")])
        );
        assert_eq!(run(Command::Usage("/who"), &state), Action::Show(vec![notice::usage("/who")]));
    }

    #[test]
    fn only_unknown_commands_wrong_usage_and_bad_nicknames_count_as_errors() {
        assert!(counts_as_error(&Command::Unknown("/foo".into())));
        assert!(counts_as_error(&Command::Usage("/who")));
        assert!(counts_as_error(&Command::Nick("a b".into())));
        assert!(!counts_as_error(&Command::Nick("bob".into())));
        assert!(!counts_as_error(&Command::Say("a b".into())), "a line is chat, or a login");
        assert!(!counts_as_error(&Command::Who));
    }
}
