//! The telnet layer of a client connection: separates data bytes from telnet commands and
//! negotiates the few options chatd uses.
//!
//! Owns the byte-level protocol (RFC 854/855) and option negotiation by the rules of RFC 1143
//! (the "Q method", without queueing): an option's state changes only in answer to a request
//! that would change it, so no two peers can loop. chatd wants, from a telnet client:
//! TTYPE (RFC 1091, terminal type, for colour), NAWS (RFC 1073, window width, for wrapping),
//! and CHARSET (RFC 2066, to agree on UTF-8); and offers ECHO and SGA, which put character-mode
//! clients (Windows telnet, Linux telnet once offered) into "the server echoes" mode, where the
//! session's line editor takes over. Every other option is refused, once per option and
//! direction.
//!
//! Nothing is ever sent to a client that has not shown it speaks telnet (it sent `IAC`), unless
//! the operator said the listener is for telnet clients (`telnet = true`): netcat users never
//! see negotiation bytes. `IAC IAC` is a data byte; subnegotiations are parsed for the options
//! above and skipped whole otherwise. It does not decode characters or handle lines.
//!
//! Linux telnet (inetutils, netkit) on a port other than 23 negotiates nothing and stays in its
//! old line mode with "local characters": it compares every byte *with its 8th bit stripped*
//! with the terminal's special keys and sends a telnet command instead of the byte. In UTF-8
//! text that hits continuation bytes 0x80-0x9f: `小` (e5 b0 8f) arrives as `e5 b0 IAC AO IAC DO
//! TIMING-MARK`, `ナ` (e3 83 8a) with `IAC IP` in it. A user cannot press a key in the middle of
//! a character, so a command that arrives while a UTF-8 sequence is incomplete is such a byte:
//! it is put back (the byte is the key's control character with the 8th bit set — ^C for IP,
//! ^O for AO, ^\ for BRK and ABORT, ^Z for SUSP, ^T for AYT, ^H for EC, ^U for EL, ^D for EOF)
//! and never acted on. The first command from a client also makes chatd offer its options at
//! once, BINARY among them: the client then switches to character mode and 8-bit input and
//! sends every later byte untouched. Two bytes no server can save in that first line: 0x85
//! (^E, the client's local echo toggle) is dropped by the client, and 0x9d (^], its escape key)
//! drops its user to the `telnet>` prompt; `telnet -8` avoids both (see the README).

/// Interpret As Command.
pub const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
/// Erase Line.
const EL: u8 = 248;
/// Erase Character.
const EC: u8 = 247;
/// Are You There.
const AYT: u8 = 246;
/// Abort Output.
const AO: u8 = 245;
/// Interrupt Process.
const IP: u8 = 244;
/// Break.
const BRK: u8 = 243;
/// Abort (RFC 1184).
const ABORT: u8 = 238;
/// Suspend (RFC 1184).
const SUSP: u8 = 237;
/// End of file (RFC 1184).
const EOF: u8 = 236;
const SE: u8 = 240;
/// No operation: sent to telnet clients as a keepalive.
pub const NOP: u8 = 241;

const BINARY: u8 = 0;
const ECHO: u8 = 1;
const SGA: u8 = 3;
/// Timing mark (RFC 860): answered every time it is asked for, as telnetd does.
const TIMING_MARK: u8 = 6;
const TTYPE: u8 = 24;
const NAWS: u8 = 31;
const CHARSET: u8 = 42;

const TTYPE_IS: u8 = 0;
const TTYPE_SEND: u8 = 1;
const CHARSET_REQUEST: u8 = 1;
const CHARSET_ACCEPTED: u8 = 2;
const CHARSET_REJECTED: u8 = 3;

/// Longest subnegotiation kept; longer ones are skipped (no option chatd uses needs more).
const MAX_SUBNEGOTIATION: usize = 256;

/// The character sets chatd offers in a CHARSET request, in order of preference.
const OFFERED_CHARSETS: &[u8] = b";UTF-8;GBK;BIG5;ISO-8859-1";

/// Something the client said in telnet that the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// TTYPE: the client's terminal type, as it named it.
    TerminalType(String),
    /// NAWS: the window's width and height in characters (0: unknown).
    WindowSize {
        width: u16,
        height: u16,
    },
    /// CHARSET: the client agreed to (or asked for) this character set.
    Charset(String),
    /// The client now expects the server to echo what it types (it accepted WILL ECHO).
    ServerEcho(bool),
    /// `IAC AYT`.
    AreYouThere,
    /// `IAC IP`: the user pressed the interrupt key.
    Interrupt,
    /// `IAC EC` / `IAC EL`: erase a character / the line, as the client's own keys would.
    EraseCharacter,
    EraseLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT; waiting for the option byte.
    Option(u8),
    /// Inside IAC SB … ; collecting until IAC SE.
    Subnegotiation,
    /// IAC inside a subnegotiation.
    SubnegotiationIac,
}

/// One side's view of an option (RFC 1143 without the queue bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Q {
    #[default]
    No,
    Yes,
    /// We asked to turn it on and wait for the answer. (chatd never asks to turn an option
    /// off, so RFC 1143's WANTNO state does not arise.)
    WantYes,
}

/// Telnet decoder and negotiator for one connection.
#[derive(Debug)]
pub struct Telnet {
    state: State,
    /// Options on our side (WILL/WONT) and on the client's (DO/DONT).
    us: [Q; 256],
    him: [Q; 256],
    /// Options already refused, per direction, so a client repeating a request is answered once.
    refused_will: [bool; 256],
    refused_do: [bool; 256],
    /// The client sent at least one IAC, or the listener is for telnet: telnet bytes may be sent.
    speaks_telnet: bool,
    /// The client itself sent at least one IAC.
    heard_iac: bool,
    /// Whether chatd has made its own requests yet.
    offered: bool,
    /// Whether WILL CHARSET went out. It is held back until the client itself sent `IAC`:
    /// CHARSET is option 42, a `*` on the screen of a netcat user of a `telnet = true`
    /// listener (`**** Welcome`), while the other offered options are invisible control bytes.
    charset_offered: bool,
    /// Continuation bytes still due for the UTF-8 sequence in the data (0: none open).
    utf8_due: u8,
    /// A telnet command inside a UTF-8 sequence was put back as the byte it stood for.
    repaired: bool,
    subnegotiation: Vec<u8>,
}

impl Default for Telnet {
    fn default() -> Self {
        Self::new()
    }
}

impl Telnet {
    pub fn new() -> Self {
        Telnet {
            state: State::Data,
            us: [Q::No; 256],
            him: [Q::No; 256],
            refused_will: [false; 256],
            refused_do: [false; 256],
            speaks_telnet: false,
            heard_iac: false,
            offered: false,
            charset_offered: false,
            utf8_due: 0,
            repaired: false,
            subnegotiation: Vec::new(),
        }
    }

    /// Whether the client has shown that it speaks telnet (or is assumed to).
    pub fn spoke_telnet(&self) -> bool {
        self.speaks_telnet
    }

    /// Whether the server echoes what the client types (the client agreed to WILL ECHO).
    pub fn server_echoes(&self) -> bool {
        self.us[ECHO as usize] == Q::Yes
    }

    /// Asks the client to stop echoing what it types (chatd "will echo", and shows nothing):
    /// for a password typed on a client that echoes itself. Returns the bytes to send; none
    /// when chatd echoes already or has asked.
    pub fn offer_echo(&mut self) -> Vec<u8> {
        if self.us[ECHO as usize] != Q::No {
            return Vec::new();
        }
        self.us[ECHO as usize] = Q::WantYes;
        vec![IAC, WILL, ECHO]
    }

    /// Gives echoing back to the client (after the password an [`offer_echo`] was for).
    /// Returns the bytes to send.
    ///
    /// [`offer_echo`]: Telnet::offer_echo
    pub fn withdraw_echo(&mut self) -> Vec<u8> {
        if self.us[ECHO as usize] == Q::No {
            return Vec::new();
        }
        self.us[ECHO as usize] = Q::No;
        vec![IAC, WONT, ECHO]
    }

    /// Whether the client's input showed a line-mode telnet client's mangling: a telnet
    /// command arrived inside a UTF-8 sequence (and was put back), or the client speaks telnet
    /// but has not (yet) agreed to character mode or 8-bit input.
    pub fn mangles_input(&self) -> bool {
        self.repaired
            || (self.heard_iac
                && self.us[ECHO as usize] != Q::Yes
                && self.him[BINARY as usize] != Q::Yes)
    }

    /// Starts negotiating at once, for a listener whose clients are known to speak telnet:
    /// returns the bytes to send. CHARSET waits for the client's first telnet byte.
    pub fn start(&mut self) -> Vec<u8> {
        self.speaks_telnet = true;
        let mut reply = Vec::new();
        self.offer(&mut reply, false);
        reply
    }

    /// chatd's own requests, made once: echo and suppress-go-ahead from us (character mode);
    /// terminal type, window size and 8-bit input (BINARY) from the client; and, once the
    /// client has sent telnet itself (`heard`), the character set.
    fn offer(&mut self, reply: &mut Vec<u8>, heard: bool) {
        if !self.offered {
            self.offered = true;
            for option in [ECHO, SGA] {
                if self.us[option as usize] == Q::No {
                    self.us[option as usize] = Q::WantYes;
                    reply.extend_from_slice(&[IAC, WILL, option]);
                }
            }
            for option in [SGA, TTYPE, NAWS, BINARY] {
                if self.him[option as usize] == Q::No {
                    self.him[option as usize] = Q::WantYes;
                    reply.extend_from_slice(&[IAC, DO, option]);
                }
            }
        }
        if heard && !self.charset_offered {
            self.charset_offered = true;
            if self.us[CHARSET as usize] == Q::No {
                self.us[CHARSET as usize] = Q::WantYes;
                reply.extend_from_slice(&[IAC, WILL, CHARSET]);
            }
        }
    }

    /// A data byte: kept, and followed through UTF-8 so that a command arriving inside a
    /// sequence is known for a mangled byte.
    fn data_byte(&mut self, byte: u8, data: &mut Vec<u8>) {
        self.utf8_due = match byte {
            0x80..=0xbf => self.utf8_due.saturating_sub(1),
            0xc2..=0xdf => 1,
            0xe0..=0xef => 2,
            0xf0..=0xf4 => 3,
            _ => 0,
        };
        data.push(byte);
    }

    /// Decodes `input`: data bytes are appended to `data`, bytes to send back to `reply`, and
    /// what the session must act on to `signals`.
    pub fn decode(
        &mut self,
        input: &[u8],
        data: &mut Vec<u8>,
        reply: &mut Vec<u8>,
        signals: &mut Vec<Signal>,
    ) {
        for &byte in input {
            self.state = match (self.state, byte) {
                (State::Data, IAC) => {
                    self.speaks_telnet = true;
                    self.heard_iac = true;
                    State::Command
                }
                (State::Data, _) => {
                    self.data_byte(byte, data);
                    State::Data
                }
                (State::Command, IAC) => {
                    self.data_byte(IAC, data);
                    State::Data
                }
                (State::Command, WILL | WONT | DO | DONT) => State::Option(byte),
                (State::Command, SB) => {
                    self.subnegotiation.clear();
                    State::Subnegotiation
                }
                (State::Command, command) => {
                    // Any command shows a telnet client: offer character mode and 8-bit input
                    // now, before it mangles more of what its user types.
                    self.offer(reply, true);
                    match mangled_byte(command) {
                        Some(original) if self.utf8_due > 0 => {
                            self.repaired = true;
                            self.data_byte(original, data);
                        }
                        _ => match command {
                            AYT => signals.push(Signal::AreYouThere),
                            IP => signals.push(Signal::Interrupt),
                            EC => signals.push(Signal::EraseCharacter),
                            EL => signals.push(Signal::EraseLine),
                            // NOP, GA, BRK, DM, AO, ABORT, SUSP, EOF: nothing to do for a chat.
                            _ => {}
                        },
                    }
                    State::Data
                }
                (State::Option(verb), option) => {
                    self.offer(reply, true);
                    self.negotiate(verb, option, reply, signals);
                    State::Data
                }
                (State::Subnegotiation, IAC) => State::SubnegotiationIac,
                (State::Subnegotiation, _) => {
                    self.collect(byte);
                    State::Subnegotiation
                }
                (State::SubnegotiationIac, SE) => {
                    self.subnegotiated(reply, signals);
                    State::Data
                }
                (State::SubnegotiationIac, IAC) => {
                    self.collect(IAC);
                    State::Subnegotiation
                }
                // RFC 855: anything else after IAC inside SB ends it improperly; skip.
                (State::SubnegotiationIac, _) => State::Subnegotiation,
            };
        }
    }

    fn collect(&mut self, byte: u8) {
        if self.subnegotiation.len() < MAX_SUBNEGOTIATION {
            self.subnegotiation.push(byte);
        }
    }

    /// The client offered (WILL/WONT) or asked for (DO/DONT) `option`.
    fn negotiate(&mut self, verb: u8, option: u8, reply: &mut Vec<u8>, signals: &mut Vec<Signal>) {
        if (verb, option) == (DO, TIMING_MARK) {
            // Line-mode telnet asks after IP or AO and discards what it receives until the
            // answer: answer every time (telnetd does the same), without turning anything on.
            reply.extend_from_slice(&[IAC, WILL, TIMING_MARK]);
            return;
        }
        let slot = option as usize;
        match verb {
            WILL => match self.him[slot] {
                Q::Yes => {}
                Q::WantYes => {
                    self.him[slot] = Q::Yes;
                    self.enabled_by_him(option, reply);
                }
                Q::No if matches!(option, SGA | TTYPE | NAWS | CHARSET | BINARY) => {
                    self.him[slot] = Q::Yes;
                    reply.extend_from_slice(&[IAC, DO, option]);
                    self.enabled_by_him(option, reply);
                }
                Q::No if !self.refused_will[slot] => {
                    self.refused_will[slot] = true;
                    reply.extend_from_slice(&[IAC, DONT, option]);
                }
                Q::No => {}
            },
            WONT => match self.him[slot] {
                Q::Yes => {
                    self.him[slot] = Q::No;
                    reply.extend_from_slice(&[IAC, DONT, option]);
                }
                Q::WantYes => self.him[slot] = Q::No,
                Q::No => {}
            },
            DO => match self.us[slot] {
                Q::Yes => {}
                Q::WantYes => {
                    self.us[slot] = Q::Yes;
                    self.enabled_by_us(option, reply, signals);
                }
                Q::No if matches!(option, ECHO | SGA | CHARSET | BINARY) => {
                    self.us[slot] = Q::Yes;
                    reply.extend_from_slice(&[IAC, WILL, option]);
                    self.enabled_by_us(option, reply, signals);
                }
                Q::No if !self.refused_do[slot] => {
                    self.refused_do[slot] = true;
                    reply.extend_from_slice(&[IAC, WONT, option]);
                }
                Q::No => {}
            },
            DONT => {
                let was = self.us[slot];
                match was {
                    Q::Yes => {
                        self.us[slot] = Q::No;
                        reply.extend_from_slice(&[IAC, WONT, option]);
                    }
                    Q::WantYes => self.us[slot] = Q::No,
                    Q::No => {}
                }
                if option == ECHO && was == Q::Yes {
                    signals.push(Signal::ServerEcho(false));
                }
            }
            _ => {}
        }
    }

    /// The client turned on one of its options that chatd wants. (NAWS sends by itself; a
    /// client's CHARSET comes with a REQUEST of its own.)
    fn enabled_by_him(&mut self, option: u8, reply: &mut Vec<u8>) {
        if option == TTYPE {
            reply.extend_from_slice(&[IAC, SB, TTYPE, TTYPE_SEND, IAC, SE]);
        }
    }

    /// The client agreed to one of chatd's options.
    fn enabled_by_us(&mut self, option: u8, reply: &mut Vec<u8>, signals: &mut Vec<Signal>) {
        match option {
            ECHO => signals.push(Signal::ServerEcho(true)),
            CHARSET => {
                reply.extend_from_slice(&[IAC, SB, CHARSET, CHARSET_REQUEST]);
                reply.extend_from_slice(OFFERED_CHARSETS);
                reply.extend_from_slice(&[IAC, SE]);
            }
            _ => {}
        }
    }

    /// A whole subnegotiation (without IAC SB and IAC SE) arrived.
    fn subnegotiated(&mut self, reply: &mut Vec<u8>, signals: &mut Vec<Signal>) {
        let mut body = std::mem::take(&mut self.subnegotiation);
        match body.as_slice() {
            [TTYPE, TTYPE_IS, name @ ..] if self.him[TTYPE as usize] == Q::Yes => {
                signals.push(Signal::TerminalType(printable(name)));
            }
            [NAWS, w1, w0, h1, h0] if self.him[NAWS as usize] == Q::Yes => {
                signals.push(Signal::WindowSize {
                    width: u16::from_be_bytes([*w1, *w0]),
                    height: u16::from_be_bytes([*h1, *h0]),
                });
            }
            [CHARSET, CHARSET_ACCEPTED, name @ ..] => {
                signals.push(Signal::Charset(printable(name)));
            }
            [CHARSET, CHARSET_REJECTED, ..] => {}
            [CHARSET, CHARSET_REQUEST, list @ ..] => {
                // The client offers: take the first one chatd knows, preferring UTF-8.
                let offered = parse_charset_list(list);
                let pick = offered
                    .iter()
                    .find(|name| name.eq_ignore_ascii_case("utf-8"))
                    .or_else(|| offered.iter().find(|name| crate::session::charset::known(name)));
                match pick {
                    Some(name) => {
                        reply.extend_from_slice(&[IAC, SB, CHARSET, CHARSET_ACCEPTED]);
                        reply.extend_from_slice(name.as_bytes());
                        reply.extend_from_slice(&[IAC, SE]);
                        signals.push(Signal::Charset(name.clone()));
                    }
                    None => reply.extend_from_slice(&[IAC, SB, CHARSET, CHARSET_REJECTED, IAC, SE]),
                }
            }
            _ => {}
        }
        // Keep the allocation for the next one.
        body.clear();
        self.subnegotiation = body;
    }
}

/// The byte a line-mode telnet client replaced by `command`: the control character of the
/// terminal key it maps to that command, with the 8th bit set that the client stripped before
/// comparing (inetutils' and netkit's defaults).
fn mangled_byte(command: u8) -> Option<u8> {
    let key = match command {
        IP => 0x03,          // ^C
        AO => 0x0f,          // ^O
        BRK | ABORT => 0x1c, // ^\ (BRK in the "kludge" line mode, ABORT otherwise)
        SUSP => 0x1a,        // ^Z
        AYT => 0x14,         // ^T
        EC => 0x08,          // ^H (^?, the usual erase key, is 0xff: never in UTF-8)
        EL => 0x15,          // ^U
        EOF => 0x04,         // ^D
        _ => return None,
    };
    Some(key | 0x80)
}

/// A name from a subnegotiation, reduced to printable ASCII.
fn printable(bytes: &[u8]) -> String {
    bytes.iter().filter(|b| b.is_ascii_graphic()).map(|&b| char::from(b)).take(64).collect()
}

/// RFC 2066: a REQUEST is a separator byte followed by names separated by it, optionally
/// preceded by "[TTABLE]" and a version byte (a translation table; not supported).
fn parse_charset_list(list: &[u8]) -> Vec<String> {
    let list = match list.strip_prefix(b"[TTABLE]") {
        Some(rest) => rest.get(1..).unwrap_or_default(),
        None => list,
    };
    let Some((&separator, names)) = list.split_first() else { return Vec::new() };
    names.split(|&b| b == separator).map(printable).filter(|name| !name.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Decoded {
        data: Vec<u8>,
        reply: Vec<u8>,
        signals: Vec<Signal>,
    }

    fn feed(telnet: &mut Telnet, input: &[u8]) -> Decoded {
        let mut out = Decoded { data: Vec::new(), reply: Vec::new(), signals: Vec::new() };
        telnet.decode(input, &mut out.data, &mut out.reply, &mut out.signals);
        out
    }

    fn decode(input: &[u8]) -> Decoded {
        feed(&mut Telnet::new(), input)
    }

    /// chatd's opening requests on a `telnet = true` listener: CHARSET (a visible `*`) waits.
    const START: [u8; 18] = [
        IAC, WILL, ECHO, IAC, WILL, SGA, IAC, DO, SGA, IAC, DO, TTYPE, IAC, DO, NAWS, IAC, DO,
        BINARY,
    ];

    /// chatd's opening requests, sent once a client has shown it speaks telnet.
    fn offer() -> Vec<u8> {
        let mut offer = START.to_vec();
        offer.extend_from_slice(&[IAC, WILL, CHARSET]);
        offer
    }

    /// A negotiator on a `telnet = true` listener whose client has sent its first command.
    fn started() -> Telnet {
        let mut telnet = Telnet::new();
        assert_eq!(telnet.start(), START.to_vec());
        assert_eq!(feed(&mut telnet, &[IAC, NOP]).reply, vec![IAC, WILL, CHARSET]);
        telnet
    }

    #[test]
    fn plain_bytes_pass_through_and_nothing_is_sent() {
        let out = decode(b"hello\r\n");
        assert_eq!((out.data, out.reply), (b"hello\r\n".to_vec(), vec![]));
        assert!(!Telnet::new().spoke_telnet());
    }

    #[test]
    fn doubled_iac_is_a_data_byte() {
        assert_eq!(decode(&[b'a', IAC, IAC, b'b']).data, vec![b'a', IAC, b'b']);
    }

    #[test]
    fn a_telnet_client_gets_chatds_offer_then_answers() {
        let out = decode(&[IAC, WILL, TTYPE]);
        let mut expected = offer();
        // TTYPE was already asked for (DO), so the client's WILL is the answer: ask for the name.
        expected.extend_from_slice(&[IAC, SB, TTYPE, TTYPE_SEND, IAC, SE]);
        assert_eq!(out.reply, expected);
    }

    #[test]
    fn unknown_options_are_refused_once_and_never_loop() {
        let mut telnet = started();
        let out =
            feed(&mut telnet, &[IAC, WILL, 99, IAC, DO, 98, IAC, WILL, 99, IAC, DO, 98, b'x']);
        assert_eq!(out.data, b"x");
        assert_eq!(out.reply, vec![IAC, DONT, 99, IAC, WONT, 98]);
    }

    #[test]
    fn agreeing_to_what_was_asked_sends_nothing_more() {
        let mut telnet = started();
        let out =
            feed(&mut telnet, &[IAC, DO, ECHO, IAC, DO, SGA, IAC, WILL, SGA, IAC, WILL, NAWS]);
        assert_eq!(out.reply, Vec::<u8>::new());
        assert_eq!(out.signals, vec![Signal::ServerEcho(true)]);
        assert!(telnet.server_echoes());
        // Asking again for what is already on changes nothing and is not answered.
        let again = feed(&mut telnet, &[IAC, DO, ECHO, IAC, WILL, NAWS]);
        assert_eq!((again.reply, again.signals), (vec![], vec![]));
        // Turning echo off is acknowledged once.
        let off = feed(&mut telnet, &[IAC, DONT, ECHO, IAC, DONT, ECHO]);
        assert_eq!(off.reply, vec![IAC, WONT, ECHO]);
        assert_eq!(off.signals, vec![Signal::ServerEcho(false)]);
        assert!(!telnet.server_echoes());
    }

    #[test]
    fn refusals_of_chatds_offer_are_accepted_silently() {
        let mut telnet = started();
        let out = feed(&mut telnet, &[IAC, DONT, ECHO, IAC, WONT, TTYPE, IAC, WONT, NAWS]);
        assert_eq!(out.reply, Vec::<u8>::new());
        assert!(!telnet.server_echoes());
    }

    #[test]
    fn terminal_type_window_size_and_charset_are_reported() {
        let mut telnet = started();
        let mut input = vec![IAC, WILL, TTYPE, IAC, WILL, NAWS, IAC, DO, CHARSET];
        input.extend_from_slice(&[IAC, SB, TTYPE, TTYPE_IS]);
        input.extend_from_slice(b"XTERM-256COLOR");
        input.extend_from_slice(&[IAC, SE, IAC, SB, NAWS, 0, 100, 0, 40, IAC, SE]);
        input.extend_from_slice(&[IAC, SB, CHARSET, CHARSET_ACCEPTED]);
        input.extend_from_slice(b"UTF-8");
        input.extend_from_slice(&[IAC, SE]);
        let out = feed(&mut telnet, &input);
        assert_eq!(
            out.signals,
            vec![
                Signal::TerminalType("XTERM-256COLOR".into()),
                Signal::WindowSize { width: 100, height: 40 },
                Signal::Charset("UTF-8".into()),
            ]
        );
        // Accepting CHARSET makes chatd send its request.
        let mut request =
            vec![IAC, SB, TTYPE, TTYPE_SEND, IAC, SE, IAC, SB, CHARSET, CHARSET_REQUEST];
        request.extend_from_slice(OFFERED_CHARSETS);
        request.extend_from_slice(&[IAC, SE]);
        assert_eq!(out.reply, request);
    }

    #[test]
    fn a_window_width_of_255_arrives_doubled() {
        let mut telnet = started();
        let out = feed(&mut telnet, &[IAC, WILL, NAWS, IAC, SB, NAWS, 0, IAC, IAC, 0, 24, IAC, SE]);
        assert_eq!(out.signals, vec![Signal::WindowSize { width: 255, height: 24 }]);
    }

    #[test]
    fn a_clients_charset_request_is_answered() {
        let mut telnet = started();
        let mut input = vec![IAC, WILL, CHARSET, IAC, SB, CHARSET, CHARSET_REQUEST];
        input.extend_from_slice(b" GBK ISO-8859-1");
        input.extend_from_slice(&[IAC, SE]);
        let out = feed(&mut telnet, &input);
        let mut expected = vec![IAC, DO, CHARSET, IAC, SB, CHARSET, CHARSET_ACCEPTED];
        expected.extend_from_slice(b"GBK");
        expected.extend_from_slice(&[IAC, SE]);
        assert_eq!(out.reply, expected);
        assert_eq!(out.signals, vec![Signal::Charset("GBK".into())]);
        let mut unknown = vec![IAC, SB, CHARSET, CHARSET_REQUEST];
        unknown.extend_from_slice(b";KOI8-Q");
        unknown.extend_from_slice(&[IAC, SE]);
        assert_eq!(
            feed(&mut telnet, &unknown).reply,
            vec![IAC, SB, CHARSET, CHARSET_REJECTED, IAC, SE]
        );
    }

    #[test]
    fn commands_become_signals() {
        let out = decode(&[IAC, AYT, IAC, IP, IAC, EC, IAC, EL, IAC, NOP]);
        assert_eq!(
            out.signals,
            vec![Signal::AreYouThere, Signal::Interrupt, Signal::EraseCharacter, Signal::EraseLine]
        );
    }

    #[test]
    fn an_unknown_subnegotiation_is_skipped_whole() {
        let input = [b'a', IAC, SB, 77, 0, b'x', IAC, IAC, b't', IAC, SE, b'b'];
        assert_eq!(decode(&input).data, b"ab");
    }

    #[test]
    fn a_command_split_across_reads_is_decoded() {
        let mut telnet = started();
        let mut data = Vec::new();
        let mut reply = Vec::new();
        let mut signals = Vec::new();
        telnet.decode(&[b'a', IAC], &mut data, &mut reply, &mut signals);
        telnet.decode(&[WILL], &mut data, &mut reply, &mut signals);
        telnet.decode(&[77, b'b'], &mut data, &mut reply, &mut signals);
        assert_eq!((data, reply), (b"ab".to_vec(), vec![IAC, DONT, 77]));
    }

    /// What Debian 12's telnet (inetutils 2.4, line mode, local characters) really sent for a
    /// nickname `小明`: `小` is e5 b0 8f, and 0x8f & 0x7f is ^O, its "abort output" key.
    const XIAOMING_FROM_TELNET: &[u8] =
        &[0xe5, 0xb0, IAC, AO, IAC, DO, TIMING_MARK, 0xe6, 0x98, 0x8e, b'\r', b'\n'];

    #[test]
    fn a_command_inside_a_utf8_sequence_is_the_byte_the_client_mangled() {
        let mut telnet = Telnet::new();
        let out = feed(&mut telnet, XIAOMING_FROM_TELNET);
        assert_eq!(String::from_utf8_lossy(&out.data), "小明\r\n");
        assert_eq!(out.signals, vec![]);
        // The first command brings chatd's offer (character mode, 8-bit input) at once, and
        // the timing mark the client waits for (it discards output until then) is answered.
        let mut expected = offer();
        expected.extend_from_slice(&[IAC, WILL, TIMING_MARK]);
        assert_eq!(out.reply, expected);
        assert!(telnet.mangles_input());
    }

    #[test]
    fn an_interrupt_inside_kana_is_text_not_a_quit() {
        // `こんにちは カタカナ` as the client sent it: ナ (e3 83 8a) carries ^C | 0x80.
        let mut input = "こんにちは カタカ".as_bytes().to_vec();
        input.extend_from_slice(&[0xe3, IAC, IP, IAC, DO, TIMING_MARK, 0x8a, b'\r', b'\n']);
        let out = decode(&input);
        assert_eq!(String::from_utf8_lossy(&out.data), "こんにちは カタカナ\r\n");
        assert_eq!(out.signals, vec![], "no Interrupt");
    }

    #[test]
    fn every_key_the_client_maps_is_put_back() {
        // U+4E00 + k is e4 b8 (0x80 + k): one character per continuation byte 0x80-0x9c, as
        // inetutils telnet sent them (0x85, ^E, its echo toggle, it drops; see the README).
        let wire: &[(u8, &[u8])] = &[
            (0x83, &[IAC, IP, IAC, DO, TIMING_MARK]),
            (0x8f, &[IAC, AO, IAC, DO, TIMING_MARK]),
            (0x9a, &[IAC, SUSP, IAC, DO, TIMING_MARK]),
            (0x9c, &[IAC, BRK, IAC, DO, TIMING_MARK]),
        ];
        let mut input = Vec::new();
        let mut text = String::new();
        for k in (0x80u8..=0x9c).filter(|&k| k != 0x85) {
            input.extend_from_slice(&[0xe4, 0xb8]);
            match wire.iter().find(|(byte, _)| *byte == k) {
                Some((_, sent)) => input.extend_from_slice(sent),
                None => input.push(k),
            }
            text.push(char::from_u32(0x4e00 + u32::from(k - 0x80)).unwrap_or('?'));
        }
        let out = decode(&input);
        assert_eq!(String::from_utf8(out.data), Ok(text));
        assert_eq!(out.signals, vec![]);
        // The other mappings, in other clients' modes: ABORT, AYT, EC (^H), EL, EOF.
        for (command, byte) in [(ABORT, 0x9c), (AYT, 0x94), (EC, 0x88), (EL, 0x95), (EOF, 0x84)] {
            let out = decode(&[0xc3, IAC, command]);
            assert_eq!((out.data, out.signals), (vec![0xc3, byte], vec![]), "command {command}");
        }
    }

    #[test]
    fn commands_outside_a_sequence_keep_their_meaning() {
        let out = decode(&[0xe4, 0xb8, 0x80, IAC, IP, b'a', IAC, EL]);
        assert_eq!(out.data, "一a".as_bytes());
        assert_eq!(out.signals, vec![Signal::Interrupt, Signal::EraseLine]);
        assert!(!Telnet::new().mangles_input());
        // A `telnet = true` listener assumes telnet; a netcat user there mangles nothing.
        let mut assumed = Telnet::new();
        assumed.start();
        assert!(!assumed.mangles_input());
    }

    #[test]
    fn an_eight_bit_client_in_character_mode_does_not_mangle() {
        let mut telnet = Telnet::new();
        feed(&mut telnet, &[IAC, WILL, TTYPE]);
        assert!(telnet.mangles_input(), "line mode until it agrees");
        let out = feed(&mut telnet, &[IAC, WILL, BINARY, IAC, DO, BINARY]);
        assert_eq!(out.reply, vec![IAC, WILL, BINARY]);
        assert!(!telnet.mangles_input());
    }

    proptest! {
        #[test]
        fn data_never_grows_and_replies_stay_bounded(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let out = decode(&input);
            prop_assert!(out.data.len() <= input.len());
            // Each option is answered at most a few times per direction, plus the offer and
            // one answer per subnegotiation.
            prop_assert!(out.reply.len() <= offer().len() + 3 * input.len() + 4 * 256 * 3 + input.len() / 4 * 16);
        }

        #[test]
        fn data_bytes_without_iac_pass_unchanged(input in proptest::collection::vec(0u8..255, 0..512)) {
            let out = decode(&input);
            prop_assert_eq!(out.data, input);
            prop_assert!(out.reply.is_empty());
        }
    }
}
