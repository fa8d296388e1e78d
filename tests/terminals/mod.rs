//! Terminals and people: telnet negotiation, character sets, line editing, colour, wrapping,
//! safe text, and the chat comforts — driven by real clients (Linux telnet and netcat in tmux)
//! and by a scripted client that behaves like Windows telnet.exe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Daemon, PATIENCE, wait_until};

const IAC: u8 = 255;
const WILL: u8 = 251;
const DO: u8 = 253;
const SB: u8 = 250;
const SE: u8 = 240;
const ECHO: u8 = 1;
const SGA: u8 = 3;
const TTYPE: u8 = 24;
const NAWS: u8 = 31;

/// `小明` in GBK.
const XIAOMING_GBK: [u8; 4] = [0xD0, 0xA1, 0xC3, 0xF7];

fn gbk(text: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(text).0.into_owned()
}

/// A client that types one key at a time and never echoes locally, as Windows telnet.exe does
/// in its default character mode. It answers chatd's options as telnet.exe does and keeps what
/// arrives, telnet commands removed, as raw bytes (which may be GBK).
struct CharacterModeClient {
    stream: TcpStream,
    /// Data received, telnet commands removed.
    screen: Vec<u8>,
    /// How much of `screen` the last `wait_for` consumed.
    read_to: usize,
    /// Telnet commands received.
    commands: Vec<u8>,
}

impl CharacterModeClient {
    fn connect(port: u16, terminal_type: &str, width: u16) -> CharacterModeClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let mut client =
            CharacterModeClient { stream, screen: Vec::new(), read_to: 0, commands: Vec::new() };
        // telnet.exe opens with its own offers: it will send its terminal type and window size.
        client.send(&[IAC, WILL, TTYPE, IAC, WILL, NAWS]);
        client.wait_for_command(&[IAC, WILL, ECHO]);
        client.send(&[IAC, DO, ECHO, IAC, DO, SGA]);
        client.wait_for_command(&[IAC, SB, TTYPE, 1, IAC, SE]);
        let mut answer = vec![IAC, SB, TTYPE, 0];
        answer.extend_from_slice(terminal_type.as_bytes());
        answer.extend_from_slice(&[IAC, SE, IAC, SB, NAWS]);
        answer.extend_from_slice(&width.to_be_bytes());
        answer.extend_from_slice(&[0, 25, IAC, SE]);
        client.send(&answer);
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Types `keys` one byte per write, as a person at a character-mode terminal does.
    fn type_keys(&mut self, keys: &[u8]) {
        for key in keys {
            self.send(std::slice::from_ref(key));
        }
    }

    fn pump(&mut self) {
        let mut buffer = [0u8; 4096];
        match self.stream.read(&mut buffer) {
            Ok(0) => panic!("connection closed; screen: {}", self.shown()),
            Ok(n) => self.absorb(&buffer[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => panic!("read: {err}"),
        }
    }

    /// Splits telnet commands (IAC ...) from data. Commands arrive whole in practice; a
    /// command split across reads would show up as a failed expectation, not as silence.
    fn absorb(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] != IAC {
                self.screen.push(bytes[at]);
                at += 1;
                continue;
            }
            if bytes.get(at + 1) == Some(&IAC) {
                // IAC IAC: the data byte 255.
                self.screen.push(IAC);
                at += 2;
                continue;
            }
            let length = match bytes.get(at + 1) {
                Some(&SB) => bytes[at..]
                    .windows(2)
                    .position(|pair| pair == [IAC, SE])
                    .map_or(bytes.len() - at, |end| end + 2),
                Some(251..=254) => 3,
                _ => 2,
            };
            let end = (at + length).min(bytes.len());
            self.commands.extend_from_slice(&bytes[at..end]);
            at = end;
        }
    }

    fn wait_for_command(&mut self, command: &[u8]) {
        let deadline = Instant::now() + PATIENCE;
        while !self.commands.windows(command.len()).any(|w| w == command) {
            assert!(Instant::now() < deadline, "no {command:?}; got {:?}", self.commands);
            self.pump();
        }
    }

    /// Waits until `needle` appears on screen after what earlier waits consumed; returns the
    /// bytes up to and including it.
    fn wait_for(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(at) =
                self.screen[self.read_to..].windows(needle.len()).position(|w| w == needle)
            {
                let end = self.read_to + at + needle.len();
                let seen = self.screen[self.read_to..end].to_vec();
                self.read_to = end;
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} never arrived; screen so far:\n{}",
                String::from_utf8_lossy(needle),
                self.shown()
            );
            self.pump();
        }
    }

    fn shown(&self) -> String {
        let (text, _, _) = encoding_rs::GBK.decode(&self.screen);
        text.into_owned()
    }
}

#[test]
fn a_windows_telnet_user_typing_gbk_chats_with_a_utf8_user() {
    let daemon = Daemon::start();
    let mut xiaoming = CharacterModeClient::connect(daemon.port, "ANSI", 80);
    xiaoming.wait_for(b"Please choose a nickname");
    // Character mode without local echo: every key comes back from the server.
    xiaoming.type_keys(b"/charset gbk\r\n");
    xiaoming.wait_for(b"/charset gbk\r\n");
    xiaoming.wait_for(b"Your character set is now gbk.");
    let mut nick = XIAOMING_GBK.to_vec();
    nick.extend_from_slice(b"\r\n");
    xiaoming.type_keys(&nick);
    xiaoming.wait_for(&nick);
    let mut known = gbk("You are now known as ");
    known.extend_from_slice(&XIAOMING_GBK);
    xiaoming.wait_for(&known);

    let mut bob = daemon.login("bob");
    xiaoming.wait_for(b"bob has joined lobby");
    // Half a line typed when bob speaks: it is taken off the screen and put back after.
    xiaoming.type_keys(&gbk("你好"));
    xiaoming.wait_for(&gbk("你好"));
    bob.send("你好，小明！");
    let seen = xiaoming.wait_for(&gbk("你好，小明！"));
    assert!(seen.starts_with(b"\r    \r"), "the typed line is hidden first: {seen:?}");
    // ANSI colours the nick; the bell rings because bob named him; the typed line returns.
    xiaoming.wait_for(&gbk("\u{7}\r\n你好"));
    assert!(
        xiaoming.screen.windows(2).any(|w| w == b"\x1b["),
        "colour for a terminal that says ANSI"
    );
    xiaoming.type_keys(&gbk(" bob\r\n"));
    xiaoming.wait_for(&gbk("> 你好 bob"));
    bob.expect("<小明> 你好 bob");
}

#[test]
fn a_latin1_telnet_user_gets_the_byte_255_as_telnet_data() {
    let daemon = Daemon::start();
    let mut pierre = CharacterModeClient::connect(daemon.port, "VT100", 80);
    pierre.wait_for(b"Please choose a nickname");
    pierre.type_keys(b"/charset latin1\r\n");
    pierre.wait_for(b"Your character set is now latin1.");
    pierre.type_keys(b"pierre\r\n");
    pierre.wait_for(b"pierre has joined lobby");
    let mut bob = daemon.login("bob");
    pierre.wait_for(b"bob has joined lobby");
    // In Latin-1, y with diaeresis is 0xFF, telnet's IAC: sent doubled, it is one character
    // on the screen, and the one after it is not swallowed as a command.
    bob.send("na\u{ff}ve");
    pierre.wait_for(b"<bob> na\xffve");
}

#[test]
fn server_side_line_editing_erases_characters_words_and_lines() {
    let daemon = Daemon::start();
    let mut bob = daemon.login("bob");
    let mut alice = CharacterModeClient::connect(daemon.port, "VT100", 80);
    alice.wait_for(b"Please choose a nickname");
    alice.type_keys(b"alice\r\n");
    alice.wait_for(b"alice has joined lobby");
    bob.expect("*** alice has joined lobby");
    // Backspace erases a whole CJK character: two columns rubbed out.
    alice.type_keys("ab你".as_bytes());
    alice.wait_for("ab你".as_bytes());
    alice.type_keys(b"\x7f");
    alice.wait_for(b"\x08\x08  \x08\x08");
    // ^W erases the last word, ^U the whole line; cursor keys are swallowed.
    alice.type_keys(b" two\x17three\x1b[D\x15fresh start\r\n");
    bob.expect("<alice> fresh start");
    alice.type_keys(b"keep \x17thix\x08s\r\n");
    bob.expect("<alice> this");
    // ^D on an empty line leaves like /quit.
    alice.type_keys(b"\x04");
    bob.expect("*** alice has left (quit)");
    // IAC AYT is answered.
    let mut carol = CharacterModeClient::connect(daemon.port, "VT100", 80);
    carol.send(&[IAC, 246]);
    carol.wait_for(b"Yes, chatd is here.");
}

#[test]
fn long_lines_wrap_to_the_window_width_the_client_reported() {
    let daemon = Daemon::start();
    let mut alice = CharacterModeClient::connect(daemon.port, "VT100", 40);
    alice.wait_for(b"Please choose a nickname");
    alice.type_keys(b"alice\r\n");
    alice.wait_for(b"alice has joined lobby");
    let mut bob = daemon.login("bob");
    bob.send("the quick brown fox jumps over the lazy dog and keeps running far away");
    let seen = alice.wait_for(b"away\r\n");
    let text = String::from_utf8(seen).expect("utf-8");
    let rows: Vec<&str> = text.split("\r\n").filter(|row| !row.is_empty()).collect();
    let start = rows.iter().position(|row| row.starts_with("<bob> ")).expect("bob's line");
    let wrapped = &rows[start..];
    assert!(wrapped.len() >= 2, "{wrapped:?}");
    for row in wrapped {
        assert!(row.chars().count() < 40, "row wider than the window: {row:?}");
    }
    for row in &wrapped[1..] {
        assert!(
            row.starts_with("      ") && !row.starts_with("       "),
            "indented under the text: {row:?}"
        );
    }
}

/// A tmux server of the test's own, killed (with what runs in it) when dropped.
pub(crate) struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// `command` in a 40-row window `width` columns wide.
    fn start(dir: &Path, command: &str, width: u16) -> Tmux {
        Tmux::start_sized(dir, "tmux", command, width, 40)
    }

    /// `command` in a `width` × `height` window, on a server whose socket in `dir` is `name`.
    pub(crate) fn start_sized(
        dir: &Path,
        name: &str,
        command: &str,
        width: u16,
        height: u16,
    ) -> Tmux {
        let tmux = Tmux { socket: dir.join(format!("{name}.sock")) };
        let (width, height) = (width.to_string(), height.to_string());
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", "t", "-x", &width, "-y", &height, command])
            .status()
            .expect("tmux (Debian package tmux) must be installed");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        // UTF-8 whatever the caller's locale: the tests type CJK text.
        command.arg("-u").arg("-S").arg(&self.socket).env_remove("TMUX").env("LANG", "C.UTF-8");
        // The window's command runs in $SHELL, else in the user's login shell, which for a
        // service user (a test run as nobody) is nologin.
        command.env("SHELL", "/bin/sh");
        command
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let status =
            self.command().args(["send-keys", "-t", "t"]).args(keys).status().expect("send-keys");
        assert!(status.success());
    }

    /// The pane's text; with `escapes`, colour sequences included.
    pub(crate) fn screen(&self, escapes: bool) -> String {
        let mut command = self.command();
        command.args(["capture-pane", "-p", "-t", "t"]);
        if escapes {
            command.arg("-e");
        }
        let output = command.output().expect("capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub(crate) fn wait_for(&self, text: &str) -> String {
        let mut screen = String::new();
        let deadline = Instant::now() + PATIENCE;
        while !screen.contains(text) {
            assert!(Instant::now() < deadline, "{text:?} never appeared; pane:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
            screen = self.screen(false);
        }
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

#[test]
fn linux_telnet_negotiates_gets_colour_and_edits_lines_in_tmux() {
    let daemon = Daemon::start_with_config("telnet = true\n");
    let tmux = Tmux::start(
        daemon.runtime.path(),
        &format!("TERM=xterm telnet 127.0.0.1 {}", daemon.port),
        100,
    );
    tmux.wait_for("Please choose a nickname");
    tmux.keys(&["alice", "Enter"]);
    tmux.wait_for("alice has joined lobby");
    let mut bob = daemon.login("bob");
    tmux.wait_for("bob has joined lobby");
    bob.send("hello alice");
    tmux.wait_for("<bob> hello alice");
    // The terminal said xterm: system lines and nicks are coloured.
    let coloured = tmux.screen(true);
    assert!(coloured.contains("\x1b["), "no colour in the pane:\n{coloured}");
    // Typing with a mistake, corrected with backspace (the server echoes and edits).
    tmux.keys(&["helx", "BSpace", "lo bob", "Enter"]);
    bob.expect("<alice> hello bob");
    // A long line wraps at the pane's width (NAWS) with the text indented under the text.
    let words = "lorem ipsum dolor sit amet ".repeat(6);
    bob.send(words.trim());
    let screen = tmux.wait_for("<bob> lorem ipsum");
    let rows: Vec<&str> = screen.lines().skip_while(|l| !l.starts_with("<bob> lorem")).collect();
    assert!(rows.len() >= 2, "not wrapped: {rows:?}");
    assert!(rows[0].chars().count() < 100, "{rows:?}");
    let indent = rows[1].len() - rows[1].trim_start().len();
    assert_eq!(indent, "<bob> ".len(), "continuation indented under the text: {rows:?}");
    tmux.keys(&["/quit", "Enter"]);
    bob.expect("*** alice has left (quit)");
}

#[test]
fn netcat_in_tmux_never_sees_telnet_bytes_or_colour() {
    let daemon = Daemon::start();
    let out = daemon.runtime.path().join("nc.out");
    let tmux = Tmux::start(
        daemon.runtime.path(),
        &format!("TERM=xterm nc 127.0.0.1 {} | tee {}", daemon.port, out.display()),
        100,
    );
    tmux.wait_for("Please choose a nickname");
    tmux.keys(&["alice", "Enter"]);
    tmux.wait_for("alice has joined lobby");
    let mut bob = daemon.login("bob");
    bob.send("hi alice");
    tmux.wait_for("<bob> hi alice");
    tmux.keys(&["hi bob", "Enter"]);
    bob.expect("<alice> hi bob");
    let received = std::fs::read(&out).expect("nc output");
    assert!(!received.contains(&IAC), "netcat got a telnet byte");
    assert!(!received.contains(&0x1b), "netcat got an escape sequence");
}

#[test]
fn escape_sequences_controls_and_bidi_never_reach_another_terminal() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let attacks: [(&[u8], &str); 7] = [
        (b"a\x1b[31mred\x1b[0m b", "<alice> ared b"),
        (b"t\x1b]0;owned\x07itle", "<alice> title"),
        (b"l\x1b]8;;http://x\x1b\\ink\x1b]8;;\x1b\\", "<alice> link"),
        (b"d\x1bPq#0;2\x1b\\cs", "<alice> dcs"),
        ("c1\u{9b}2Jx\u{9d}0;t\u{9c}y".as_bytes(), "<alice> c1xy"),
        (b"s\x1bNxs\x1bOy3", "<alice> ss3"),
        ("tab\there\u{2067}bidi\u{2069}\u{202d}".as_bytes(), "<alice> tab herebidi"),
    ];
    for (bytes, _) in attacks {
        let mut line = bytes.to_vec();
        line.extend_from_slice(b"\r\n");
        alice.send_raw(&line);
    }
    for (_, expected) in attacks {
        bob.expect(expected);
    }
    for line in &bob.seen {
        assert!(!line.chars().any(char::is_control), "control character reached bob: {line:?}");
    }
    // Nicknames: invisible characters are removed, escape sequences too.
    let mut carol = daemon.connect();
    carol.expect_prefix("*** Please choose a nickname");
    carol.send_raw(b"ca\xe2\x80\x8brol\x1b[5m\r\n");
    carol.expect("*** You are now known as carol. Type /help for commands.");
}

#[test]
fn chinese_nicknames_case_folding_width_and_lookalikes() {
    let daemon = Daemon::start();
    let [mut xiaoming, mut sophia] = daemon.room(["小明", "Σοφία"]);
    let mut other = daemon.connect();
    other.expect_prefix("*** Please choose a nickname");
    other.send("ΣΟΦΊΑ");
    other.expect("*** The nickname ΣΟΦΊΑ is already in use");
    other.send(&"明".repeat(13));
    other.expect_prefix("*** Invalid nickname");
    let mut alice = daemon.login_seen_by("alice", &mut [&mut xiaoming, &mut sophia]);
    other.send("\u{430}lice");
    other.expect("*** The nickname \u{430}lice looks too much like alice, who is here; please choose another");
    other.send(&"明".repeat(12));
    other
        .expect(&format!("*** You are now known as {}. Type /help for commands.", "明".repeat(12)));
    xiaoming.send("大家好");
    sophia.expect("<小明> 大家好");
    alice.expect("<小明> 大家好");
}

#[test]
fn newcomers_see_the_rooms_recent_lines_marked_as_history() {
    let daemon = Daemon::start_with_config("history_lines = 2\n");
    let mut alice = daemon.login("alice");
    for text in ["one", "two", "three"] {
        alice.send(text);
        alice.expect(&format!("<alice> {text}"));
    }
    let mut bob = daemon.connect();
    bob.expect_prefix("*** Please choose a nickname");
    bob.send("bob");
    bob.expect("*** No topic is set for lobby");
    bob.expect("*** Last 2 lines in lobby before you came:");
    let two = bob.next_line().expect("history line");
    let three = bob.next_line().expect("history line");
    bob.expect("*** End of history.");
    for (line, text) in [(two, "<alice> two"), (three, "<alice> three")] {
        // "[HH:MM] <alice> two"
        assert!(line.len() > 8 && line.starts_with('[') && &line[6..8] == "] ", "{line:?}");
        assert_eq!(&line[8..], text);
    }
    let none = Daemon::start_with_config("history_lines = 0\n");
    let mut alice = none.login("alice");
    alice.send("unseen");
    alice.expect("<alice> unseen");
    let mut bob = none.login_seen_by("bob", &mut [&mut alice]);
    bob.send("/who");
    let before = bob.expect("*** In lobby (2): alice, bob");
    assert!(!before.iter().any(|l| l.contains("history")), "{before:?}");
}

#[test]
fn reply_ignore_bell_whois_timestamps_and_colour() {
    let daemon = Daemon::start();
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    // /reply goes to whoever last messaged you; a private message rings the bell.
    bob.send("/msg alice psst");
    alice.expect("*bob* psst");
    assert_eq!(alice.bells, 1);
    alice.send("/reply yes?");
    alice.expect("-> *bob* yes?");
    bob.expect("*alice* yes?");
    // Being named rings the bell; /bell off silences it.
    bob.send("ALICE, look");
    alice.expect("<bob> ALICE, look");
    assert_eq!(alice.bells, 2);
    alice.send("/bell off");
    alice.expect("*** The bell is off.");
    bob.send("alice again");
    alice.expect("<bob> alice again");
    assert_eq!(alice.bells, 2);
    // /ignore hides bob's lines and messages from alice only; it follows a nick change.
    alice.send("/ignore bob");
    alice.expect_prefix("*** You will not see lines or messages from bob");
    bob.send("/nick robert");
    alice.expect("*** bob is now known as robert");
    bob.send("can you hear me");
    bob.expect("<robert> can you hear me");
    bob.send("/msg alice hello?");
    bob.expect("-> *alice* hello?");
    alice.send("/ignore");
    alice.expect("*** You are ignoring: robert");
    alice.send("/unignore robert");
    alice.expect("*** You see robert again.");
    bob.send("and now");
    let between = alice.expect("<robert> and now");
    assert!(!between.iter().any(|l| l.contains("hear me") || l.contains("hello?")), "{between:?}");
    // /whois and /who.
    bob.send("/away tea");
    bob.expect_prefix("*** You are marked as away");
    alice.send("/whois Robert");
    let whois = alice.expect_prefix("*** robert is in lobby, connected for ");
    assert!(whois.contains(", idle ") && whois.ends_with(", away: tea"), "{whois:?}");
    alice.send("/who");
    alice.expect("*** In lobby (2): alice, robert (away)");
    // Timestamps and colour on request.
    alice.send("/timestamps on");
    let on = alice.expect_prefix("[");
    assert!(on.ends_with("] *** Timestamps are on."), "{on:?}");
    bob.send("tick");
    let line = alice.expect_prefix("[");
    let (stamp, rest) = line.split_at(8);
    assert_eq!(rest, "<robert> tick");
    assert!(stamp.len() == 8 && stamp.as_bytes()[3] == b':' && stamp.ends_with("] "), "{line:?}");
    alice.send("/timestamps off");
    alice.expect("*** Timestamps are off.");
    alice.send("/color on");
    alice.expect_prefix("\x1b[33m*** Colour is on.");
    bob.send("tock");
    let coloured = alice.expect_prefix("<\x1b[");
    assert!(coloured.contains("robert\x1b[0m> tock"), "{coloured:?}");
}

#[test]
fn a_telnet_client_that_refuses_everything_still_chats_in_line_mode() {
    let daemon = Daemon::start();
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // A client that speaks telnet but refuses every option chatd offers.
    stream.write_all(&[IAC, 252, 3]).expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    wait_until("chatd's offer", || {
        let n = stream.read(&mut buffer).unwrap_or(0);
        seen.extend_from_slice(&buffer[..n]);
        seen.windows(3).any(|w| w == [IAC, DO, NAWS])
    });
    stream
        .write_all(&[IAC, 254, ECHO, IAC, 254, SGA, IAC, 252, TTYPE, IAC, 252, NAWS])
        .expect("refuse");
    stream.write_all(b"dave\r\n").expect("nick");
    wait_until("dave's login", || {
        let n = stream.read(&mut buffer).unwrap_or(0);
        seen.extend_from_slice(&buffer[..n]);
        seen.windows(21).any(|w| w == b"dave has joined lobby")
    });
    let mut bob = daemon.login("bob");
    bob.send("hi dave");
    wait_until("bob's line", || {
        let n = stream.read(&mut buffer).unwrap_or(0);
        seen.extend_from_slice(&buffer[..n]);
        seen.windows(13).any(|w| w == b"<bob> hi dave")
    });
    // Line mode: the client echoes for itself, so "dave" is not echoed back.
    assert!(!seen.windows(6).any(|w| w == b"dave\r\n"), "{:?}", String::from_utf8_lossy(&seen));
}

/// Linux telnet as a new user runs it: `telnet host 2323`, no options. On a port other than 23
/// it negotiates nothing and stays in line mode with "local characters", turning UTF-8
/// continuation bytes it takes for its control keys into telnet commands (0x8f in `小` into
/// Abort Output, 0x83 in `ナ` into Interrupt, 0x9c in `本` into Break). chatd puts the bytes
/// back and switches the client to character mode and 8-bit input at its first command; after
/// that even `李` (0x9d, the client's escape key) passes.
#[test]
fn linux_telnet_in_line_mode_sends_japanese_and_chinese_exactly() {
    let daemon = Daemon::start();
    let tmux = Tmux::start(
        daemon.runtime.path(),
        &format!("LANG=C.UTF-8 TERM=xterm telnet 127.0.0.1 {}", daemon.port),
        80,
    );
    tmux.wait_for("Please choose a nickname");
    tmux.keys(&["小明", "Enter"]);
    tmux.wait_for("You are now known as 小明.");
    let mut bob = daemon.login("bob");
    tmux.wait_for("bob has joined lobby");
    for line in ["こんにちは カタカナ", "本日は晴天なり、東京タワー", "李さん、久しぶり"]
    {
        tmux.keys(&[line, "Enter"]);
        bob.expect(&format!("<小明> {line}"));
    }
    tmux.keys(&["/quit", "Enter"]);
    bob.expect("*** 小明 has left (quit)");
}

/// A first line whose only damage is a byte Linux telnet drops without a command (0x85 in
/// `久`, its local-echo key): chatd tells the user what happened, switches the client, and the
/// line typed again arrives whole.
#[test]
fn linux_telnet_that_dropped_a_byte_is_told_and_switched() {
    let daemon = Daemon::start();
    let tmux = Tmux::start(
        daemon.runtime.path(),
        &format!("LANG=C.UTF-8 TERM=xterm telnet 127.0.0.1 {}", daemon.port),
        80,
    );
    tmux.wait_for("Please choose a nickname");
    tmux.keys(&["久美", "Enter"]);
    tmux.wait_for("please type the line again");
    tmux.keys(&["久美", "Enter"]);
    tmux.wait_for("You are now known as 久美.");
    let mut bob = daemon.login("bob");
    tmux.wait_for("bob has joined lobby");
    tmux.keys(&["久しぶり", "Enter"]);
    bob.expect("<久美> 久しぶり");
}

/// The line editor a shell user expects, in Linux telnet (switched to character mode):
/// Left, Left, X inserts; Up recalls; Home and End; ^C clears; ^D on an empty line leaves.
#[test]
fn linux_telnet_edits_at_the_cursor_and_recalls_lines_in_tmux() {
    let daemon = Daemon::start_with_config("telnet = true\n");
    let tmux = Tmux::start(
        daemon.runtime.path(),
        &format!("TERM=xterm telnet 127.0.0.1 {}", daemon.port),
        100,
    );
    tmux.wait_for("Please choose a nickname");
    tmux.keys(&["alice", "Enter"]);
    tmux.wait_for("alice has joined lobby");
    let mut bob = daemon.login("bob");
    tmux.wait_for("bob has joined lobby");
    tmux.keys(&["abc", "Left", "Left", "X", "Enter"]);
    bob.expect("<alice> aXbc");
    tmux.keys(&["Up", "Home", "> ", "End", "!", "Enter"]);
    bob.expect("<alice> > aXbc!");
    tmux.keys(&["junk", "C-c", "ok", "Enter"]);
    bob.expect("<alice> ok");
    tmux.keys(&["C-d"]);
    bob.expect("*** alice has left (quit)");
}
