//! The session's side of accounts: asking for a password with echo off, proving it, and the
//! preferences an account keeps.
//!
//! Owns what the loop does around a [`PasswordPrompt`](super::password::PasswordPrompt): echo
//! off before the prompt (the line editor stops echoing; a telnet client that echoes itself
//! is asked to stop with `IAC WILL ECHO`; a client that never spoke telnet is warned), echo
//! back after it, the Argon2 derivation (here, in the client's own process, where its CPU and
//! memory are this client's), and the proof sent to the broker. Also applying an account's
//! settings at login and saving them when the user changes one. The broker decides whether a
//! proof holds and owns every limit; this file decides nothing about accounts.

use log::{info, warn};

use mio::Interest;

use super::derivation::{Derivation, Derived};
use super::password::Next;
use super::render::{self, Shown, notice};
use super::state::Phase;
use super::{DERIVATION, Session};
use crate::proto::{AccountSettings, Purpose, Request};
use crate::session::charset::Charset;

impl Session {
    /// A challenge came: echo goes off and the prompt is shown.
    pub(super) fn ask_password(&mut self, prompt: Shown) {
        if self.is_browser() {
            return self.ask_browser_for_a_secret(prompt);
        }
        if let Some(editor) = &mut self.terminal.editor {
            editor.set_secret(true);
        } else if self.telnet.spoke_telnet() {
            let offer = self.telnet.offer_echo();
            if !offer.is_empty() {
                self.send_raw(&offer);
                if let Some(password) = &mut self.state.password {
                    password.turned_echo_off = true;
                }
            }
        } else {
            self.show(render::system("Your terminal will show what you type next."));
        }
        self.show(prompt);
    }

    /// The client's answer to `IAC WILL ECHO` turned the line editor on while a password is
    /// asked for: it must not echo that password.
    pub(super) fn keep_password_secret(&mut self) {
        if self.state.password.is_some()
            && let Some(editor) = &mut self.terminal.editor
        {
            editor.set_secret(true);
        }
    }

    /// One line typed while a password is asked for: never a command, never logged.
    pub(super) fn password_entry(&mut self, line: &str) {
        let Some(prompt) = &mut self.state.password else { return };
        if line.trim().is_empty() {
            self.end_password_prompt();
            self.show(render::system("Cancelled"));
            self.back_to_the_nickname_prompt();
            return;
        }
        match prompt.enter(line) {
            Next::Ask(next) => {
                if self.is_browser() {
                    self.ask_browser_for_a_secret(render::system(&next));
                } else {
                    self.show(render::system(&next));
                }
            }
            Next::Refused(why) => {
                self.end_password_prompt();
                self.show(render::system(&why));
                self.back_to_the_nickname_prompt();
            }
            Next::Ready(entries) => {
                let purpose = prompt.purpose();
                self.end_password_prompt();
                if purpose == Purpose::Login {
                    self.state.login_password = entries.current_password();
                }
                // SAFETY: a session is single-threaded: it never starts a thread.
                match unsafe { Derivation::start(entries) } {
                    Ok(derivation) => {
                        let fd = derivation.source();
                        let registered = self.poll.registry().register(
                            &mut mio::unix::SourceFd(&fd),
                            DERIVATION,
                            Interest::READABLE,
                        );
                        if let Err(err) = registered {
                            warn!("{}: cannot watch a password derivation: {err}", self.peer);
                        }
                        self.state.proving = Some(purpose);
                        self.derivation = Some(derivation);
                    }
                    Err(err) => {
                        warn!("{}: cannot start a password derivation: {err}", self.peer);
                        self.state.login_password = None;
                        self.show(render::system("The server is busy; please try again."));
                        self.back_to_the_nickname_prompt();
                    }
                }
            }
        }
    }

    /// A derivation under way: its proof goes to the broker once the child wrote it.
    pub(super) fn finish_derivation(&mut self) {
        let Some(derivation) = &mut self.derivation else { return };
        let Some(derived) = derivation.poll() else { return };
        let fd = derivation.source();
        let _ = self.poll.registry().deregister(&mut mio::unix::SourceFd(&fd));
        self.derivation = None;
        match derived {
            Derived::Proof(proof) => {
                let sent = self.broker.send(&proof);
                self.check_sent(sent);
            }
            Derived::Failed(why) => {
                // The broker's parameters are out of range (a corrupt account row), or the
                // child found no memory.
                warn!("{}: cannot derive a password tag: {why}", self.peer);
                self.state.proving = None;
                self.state.login_password = None;
                self.show(render::system(
                    "This account cannot be used now; please tell the operators",
                ));
                self.back_to_the_nickname_prompt();
            }
        }
    }

    /// The prompt is over: echo comes back as it was.
    fn end_password_prompt(&mut self) {
        let Some(prompt) = self.state.password.take() else { return };
        if self.is_browser() {
            self.browser_input_is_plain();
        }
        if let Some(editor) = &mut self.terminal.editor {
            editor.set_secret(false);
        }
        if prompt.turned_echo_off {
            let withdraw = self.telnet.withdraw_echo();
            self.send_raw(&withdraw);
            self.terminal.set_echo(false);
        }
    }

    /// A login at the nickname prompt that ended without a proof: the prompt again.
    fn back_to_the_nickname_prompt(&mut self) {
        if matches!(self.state.phase, Phase::ChoosingNick { .. }) {
            self.state.phase = Phase::ChoosingNick { asked: None };
            self.show(notice::prompt());
        }
    }

    /// The login grace ran out while a password was asked for at the nickname prompt: the
    /// client goes on under a guest name.
    pub(super) fn enter_as_guest(&mut self) {
        self.end_password_prompt();
        let guest = format!("Guest-{:04x}", fastrand::u16(..));
        info!("{}: no password within the login grace time; entering as {guest}", self.peer);
        let login = Request::Login { nick: guest.clone(), tls: self.state.tls };
        self.state.phase = Phase::ChoosingNick { asked: Some(guest) };
        // The guest's login gets a grace of its own (the one that ran out was the user's).
        self.started = std::time::Instant::now();
        let sent = self.broker.send(&login);
        self.check_sent(sent);
    }

    /// Logged in to an account: its preferences apply from now on.
    pub(super) fn apply_account_settings(&mut self, settings: &AccountSettings) {
        if let Some(charset) = settings.charset.as_deref().and_then(Charset::by_name) {
            self.terminal.set_charset(charset);
        }
        if let Some(colour) = settings.colour {
            self.terminal.colour = colour;
            self.terminal.colour_chosen = true;
        }
        if let Some(timestamps) = settings.timestamps {
            self.terminal.timestamps = timestamps;
        }
        if let Some(bell) = settings.bell {
            self.terminal.bell = bell;
        }
        for nick in &settings.ignored {
            self.state.ignore(nick.clone());
        }
    }

    /// The user changed a preference: a logged-in user's account keeps it.
    pub(super) fn save_account_settings(&mut self) {
        if self.state.account.is_none() {
            return;
        }
        let settings = AccountSettings {
            charset: Some(self.terminal.charset.name().to_string()),
            colour: self.terminal.colour_chosen.then_some(self.terminal.colour),
            timestamps: Some(self.terminal.timestamps),
            bell: Some(self.terminal.bell),
            ignored: self.state.ignored(),
        };
        let sent = self.broker.send(&Request::SaveSettings(settings));
        self.check_sent(sent);
    }

    /// An operator reset this account's password: ask for the new one at once.
    pub(super) fn ask_for_a_new_password(&mut self, nick: String) {
        let request = Request::Challenge { nick, purpose: Purpose::ChangePassword };
        let sent = self.broker.send(&request);
        self.check_sent(sent);
    }
}
