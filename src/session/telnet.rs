//! The telnet layer of a client connection: separates data bytes from telnet commands.
//!
//! Owns the byte-level protocol state (RFC 854/855). chatd asks for no options, so the rule
//! for negotiation is the simplest one RFC 1143 allows: every option stays off. A `WILL` is
//! answered `DONT` and a `DO` is answered `WONT`, once per option and direction, so a confused
//! client cannot start a negotiation loop. Nothing is ever sent to a client that did not send
//! `IAC` first, so netcat users never see negotiation bytes. Subnegotiations are skipped whole.

/// Interpret As Command.
pub const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;
/// No operation: sent to telnet clients as a keepalive.
pub const NOP: u8 = 241;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT; waiting for the option byte.
    Option(u8),
    /// Inside IAC SB … ; skipping until IAC SE.
    Subnegotiation,
    /// IAC inside a subnegotiation.
    SubnegotiationIac,
}

/// Telnet decoder for one connection.
#[derive(Debug)]
pub struct Telnet {
    state: State,
    /// Options already refused, per direction, so each is answered at most once.
    refused_will: [bool; 256],
    refused_do: [bool; 256],
    /// The client sent at least one IAC: it speaks telnet, so telnet bytes may be sent to it.
    spoke_telnet: bool,
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
            refused_will: [false; 256],
            refused_do: [false; 256],
            spoke_telnet: false,
        }
    }

    /// Whether the client has shown that it speaks telnet.
    pub fn spoke_telnet(&self) -> bool {
        self.spoke_telnet
    }

    /// Decodes `input`: data bytes are appended to `data`, negotiation answers to `reply`.
    pub fn decode(&mut self, input: &[u8], data: &mut Vec<u8>, reply: &mut Vec<u8>) {
        for &byte in input {
            self.state = match (self.state, byte) {
                (State::Data, IAC) => {
                    self.spoke_telnet = true;
                    State::Command
                }
                (State::Data, _) => {
                    data.push(byte);
                    State::Data
                }
                (State::Command, IAC) => {
                    data.push(IAC);
                    State::Data
                }
                (State::Command, WILL | WONT | DO | DONT) => State::Option(byte),
                (State::Command, SB) => State::Subnegotiation,
                // NOP, AYT, IP, GA and the rest: nothing to do for a line-mode chat yet.
                (State::Command, _) => State::Data,
                (State::Option(verb), option) => {
                    self.answer(verb, option, reply);
                    State::Data
                }
                (State::Subnegotiation, IAC) => State::SubnegotiationIac,
                (State::Subnegotiation, _) => State::Subnegotiation,
                (State::SubnegotiationIac, SE) => State::Data,
                (State::SubnegotiationIac, _) => State::Subnegotiation,
            };
        }
    }

    fn answer(&mut self, verb: u8, option: u8, reply: &mut Vec<u8>) {
        let slot = option as usize;
        match verb {
            WILL if !self.refused_will[slot] => {
                self.refused_will[slot] = true;
                reply.extend_from_slice(&[IAC, DONT, option]);
            }
            DO if !self.refused_do[slot] => {
                self.refused_do[slot] = true;
                reply.extend_from_slice(&[IAC, WONT, option]);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut telnet = Telnet::new();
        let (mut data, mut reply) = (Vec::new(), Vec::new());
        telnet.decode(input, &mut data, &mut reply);
        (data, reply)
    }

    #[test]
    fn plain_bytes_pass_through_and_nothing_is_sent() {
        assert_eq!(decode(b"hello\r\n"), (b"hello\r\n".to_vec(), vec![]));
    }

    #[test]
    fn doubled_iac_is_a_data_byte() {
        assert_eq!(decode(&[b'a', IAC, IAC, b'b']).0, vec![b'a', IAC, b'b']);
    }

    #[test]
    fn options_are_refused_once() {
        let (data, reply) = decode(&[IAC, WILL, 24, IAC, DO, 1, IAC, WILL, 24, b'x']);
        assert_eq!(data, b"x");
        assert_eq!(reply, vec![IAC, DONT, 24, IAC, WONT, 1]);
    }

    #[test]
    fn wont_and_dont_need_no_answer() {
        assert_eq!(decode(&[IAC, WONT, 3, IAC, DONT, 3]).1, Vec::<u8>::new());
    }

    #[test]
    fn subnegotiation_is_skipped_whole() {
        let input = [b'a', IAC, SB, 24, 0, b'x', IAC, IAC, b't', IAC, SE, b'b'];
        assert_eq!(decode(&input).0, b"ab");
    }

    #[test]
    fn a_command_split_across_reads_is_decoded() {
        let mut telnet = Telnet::new();
        let (mut data, mut reply) = (Vec::new(), Vec::new());
        telnet.decode(&[b'a', IAC], &mut data, &mut reply);
        telnet.decode(&[WILL], &mut data, &mut reply);
        telnet.decode(&[31, b'b'], &mut data, &mut reply);
        assert_eq!((data, reply), (b"ab".to_vec(), vec![IAC, DONT, 31]));
    }

    proptest! {
        #[test]
        fn data_never_grows_and_replies_stay_bounded(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (data, reply) = decode(&input);
            prop_assert!(data.len() <= input.len());
            prop_assert!(reply.len() <= 2 * 256 * 3);
        }
    }
}
