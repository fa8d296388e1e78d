//! Frames on the broker socket: a 4-byte big-endian payload length, then a bincode payload.
//!
//! This is the only module that names `bincode` (pinned at 2.0.1; the project is unmaintained, so
//! it stays behind this one door). It owns the byte layout and nothing else: no I/O, no buffers
//! that outlive a call. `channel` feeds it bytes; it answers "here is a message", "not a whole
//! frame yet" or "this peer is speaking garbage".
//!
//! Rules:
//! - the declared length is checked against [`MAX_FRAME_LEN`] *before* anything is allocated or
//!   waited for, so a hostile header costs nothing;
//! - an incomplete frame is not an error (`Ok(None)`);
//! - a payload must decode to exactly one message that uses every byte of the frame.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// Largest payload a peer may declare. Big enough for a `/who` of ten thousand members.
pub const MAX_FRAME_LEN: usize = 1 << 20;

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_LEN>,
> = bincode::config::standard().with_limit::<MAX_FRAME_LEN>();

/// Why bytes could not be turned into a frame, or a message into bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame declares {declared} bytes, more than the limit of {MAX_FRAME_LEN}")]
    TooLarge { declared: usize },
    #[error("frame declares an empty payload")]
    Empty,
    #[error("undecodable frame payload: {0}")]
    Undecodable(String),
    #[error("frame payload has {0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("cannot encode message: {0}")]
    Unencodable(String),
}

/// Appends one frame holding `message` to `out`. On error `out` is left as it was.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let written = match bincode::serde::encode_into_std_write(message, out, CONFIG) {
        Ok(written) => written,
        Err(err) => {
            out.truncate(start);
            return Err(CodecError::Unencodable(err.to_string()));
        }
    };
    if written > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(CodecError::TooLarge { declared: written });
    }
    let header = u32::try_from(written).map_err(|_| CodecError::TooLarge { declared: written })?;
    out[start..start + HEADER_LEN].copy_from_slice(&header.to_be_bytes());
    Ok(())
}

/// Encodes one message as a stand-alone frame.
pub fn frame<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_frame(message, &mut out)?;
    Ok(out)
}

/// The payload length a header declares, checked against the limit.
///
/// Returns `Ok(None)` while fewer than [`HEADER_LEN`] bytes are available.
pub fn declared_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut bytes = [0; HEADER_LEN];
    bytes.copy_from_slice(header);
    let declared = u32::from_be_bytes(bytes) as usize;
    if declared > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge { declared });
    }
    if declared == 0 {
        return Err(CodecError::Empty);
    }
    Ok(Some(declared))
}

/// Decodes the first frame in `buf`.
///
/// Returns the message and the number of bytes it used, or `Ok(None)` if `buf` does not yet
/// hold a whole frame.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, CodecError> {
    let Some(len) = declared_len(buf)? else {
        return Ok(None);
    };
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let (message, used) = bincode::serde::decode_from_slice(payload, CONFIG)
        .map_err(|err| CodecError::Undecodable(err.to_string()))?;
    if used != len {
        return Err(CodecError::TrailingBytes(len - used));
    }
    Ok(Some((message, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Event, Failure, LeaveReason, Request, RoomInfo};
    use proptest::prelude::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(message: &T) {
        let bytes = frame(message).expect("encodes");
        let (back, used) = decode_frame::<T>(&bytes).expect("decodes").expect("whole frame");
        assert_eq!(&back, message);
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame::<T>(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    /// Fixes the wire bytes of one frame: if this test fails, the wire format changed, and
    /// `PROTOCOL_VERSION` must change with it.
    #[test]
    fn hello_frame_has_fixed_bytes() {
        let hello = Request::Hello { version: 5, peer: "[::1]:2".to_string(), connected_at: 300 };
        let bytes = frame(&hello).expect("encodes");
        let expected: Vec<u8> = vec![
            0, 0, 0, 13, // payload length, big-endian
            0,  // variant 0: Hello
            5,  // version 5 (varint)
            7, b'[', b':', b':', b'1', b']', b':', b'2', // peer: length 7, bytes
            251, 44, 1, // connected_at 300: varint marker 251 then u16 little-endian
        ];
        assert_eq!(bytes, expected, "\nexpected: {expected:?}\n     got: {bytes:?}");
    }

    #[test]
    fn oversize_header_is_refused_before_the_payload_arrives() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_frame::<Request>(&header),
            Err(CodecError::TooLarge { declared: MAX_FRAME_LEN + 1 })
        );
    }

    #[test]
    fn empty_payload_is_refused() {
        assert_eq!(decode_frame::<Request>(&[0, 0, 0, 0]), Err(CodecError::Empty));
    }

    #[test]
    fn garbage_payload_is_undecodable() {
        let bytes = [0, 0, 0, 3, 200, 200, 200];
        assert!(matches!(decode_frame::<Request>(&bytes), Err(CodecError::Undecodable(_))));
    }

    #[test]
    fn trailing_bytes_in_a_frame_are_refused() {
        let mut bytes = frame(&Request::Who).expect("encodes");
        bytes.push(0);
        bytes[3] += 1;
        assert_eq!(decode_frame::<Request>(&bytes), Err(CodecError::TrailingBytes(1)));
    }

    #[test]
    fn frames_follow_each_other_in_one_buffer() {
        let mut buf = Vec::new();
        encode_frame(&Request::Who, &mut buf).expect("encodes");
        encode_frame(&Request::Rooms, &mut buf).expect("encodes");
        let (first, used) = decode_frame::<Request>(&buf).expect("ok").expect("whole");
        assert_eq!(first, Request::Who);
        let (second, _) = decode_frame::<Request>(&buf[used..]).expect("ok").expect("whole");
        assert_eq!(second, Request::Rooms);
    }

    fn any_text() -> impl Strategy<Value = String> {
        ".{0,64}"
    }

    fn any_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u32>(), any_text(), any::<u64>()).prop_map(|(version, peer, connected_at)| {
                Request::Hello { version, peer, connected_at }
            }),
            (any::<u64>(), any_text(), any::<u64>()).prop_map(|(identity, peer, connected_at)| {
                Request::Vouch { identity, peer, connected_at }
            }),
            any_text().prop_map(|nick| Request::Login { nick }),
            (any::<u64>(), any_text()).prop_map(|(seq, text)| Request::Say { seq, text }),
            (any::<u64>(), any_text()).prop_map(|(seq, text)| Request::Act { seq, text }),
            any_text().prop_map(|nick| Request::ChangeNick { nick }),
            any_text().prop_map(|room| Request::Join { room }),
            Just(Request::Who),
            Just(Request::Rooms),
            proptest::option::of(any_text()).prop_map(|text| Request::Topic { text }),
            (any::<u64>(), any_text(), any_text()).prop_map(|(seq, to, text)| Request::Private {
                seq,
                to,
                text
            }),
            (any_text(), any_text(), proptest::option::of(any_text()))
                .prop_map(|(nick, room, topic)| Request::Resume { nick, room, topic }),
            proptest::option::of(any_text()).prop_map(|reason| Request::Quit { reason }),
            (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(version, pid, started_at)| {
                Request::MasterHello { version, pid, started_at }
            }),
            proptest::option::of(any_text()).prop_map(|error| Request::Reloaded { error }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(received, sent)| Request::Traffic { received, sent }),
            any_text().prop_map(|reason| Request::Away { reason }),
            Just(Request::Back),
        ]
    }

    fn any_reason() -> impl Strategy<Value = LeaveReason> {
        prop_oneof![
            proptest::option::of(any_text()).prop_map(LeaveReason::Quit),
            Just(LeaveReason::ConnectionLost),
            any_text().prop_map(LeaveReason::JoinedOther),
            Just(LeaveReason::TooSlow),
            proptest::option::of(any_text()).prop_map(LeaveReason::Kicked),
        ]
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (any::<u32>(), any::<u64>(), any::<u64>())
                .prop_map(|(version, sender, broker)| Event::Welcome { version, sender, broker }),
            any_reason().prop_map(|reason| Event::Dropped { reason }),
            any::<u64>().prop_map(|seq| Event::Failed(Failure::OutOfSequence { seq })),
            any_text().prop_map(|nick| Event::LoggedIn { nick }),
            (any_text(), any::<u64>(), any::<u64>(), any_text())
                .prop_map(|(from, sender, seq, text)| Event::Chat { from, sender, seq, text }),
            (any_text(), any::<u64>(), any::<u64>(), any_text())
                .prop_map(|(from, sender, seq, text)| Event::Action { from, sender, seq, text }),
            (any_text(), any_text()).prop_map(|(nick, room)| Event::Joined { nick, room }),
            (any_text(), any_text(), any_reason()).prop_map(|(nick, room, reason)| Event::Left {
                nick,
                room,
                reason
            }),
            (any_text(), any_text()).prop_map(|(old, new)| Event::NickChanged { old, new }),
            (any_text(), proptest::option::of(any_text()))
                .prop_map(|(room, text)| Event::Topic { room, text }),
            (any_text(), proptest::collection::vec(any_text(), 0..8)).prop_map(|(room, nicks)| {
                Event::Members { room, away: nicks.clone(), idle: vec![0; nicks.len()], nicks }
            }),
            proptest::collection::vec((any_text(), any::<u32>()), 0..8).prop_map(|rows| {
                Event::RoomList {
                    rooms: rows
                        .into_iter()
                        .map(|(name, members)| RoomInfo { name, members })
                        .collect(),
                }
            }),
            (any::<u32>(), any::<u32>()).prop_map(|(broker, session)| Event::Failed(
                Failure::VersionMismatch { broker, session }
            )),
            any_text().prop_map(|nick| Event::Failed(Failure::NickInUse(nick))),
            proptest::option::of(any_text()).prop_map(|reason| Event::Kicked { reason }),
            any_text().prop_map(|text| Event::Announcement { text }),
            proptest::option::of(any_text()).prop_map(|reason| Event::Away { reason }),
            (any_text(), any_text()).prop_map(|(nick, reason)| Event::IsAway { nick, reason }),
            proptest::collection::vec(any_text(), 0..4).prop_map(|lines| Event::Motd { lines }),
            (any_text(), any_text(), any_text()).prop_map(|(room, by, text)| Event::TopicChanged {
                room,
                by,
                text
            }),
            (any_text(), any::<u64>(), any::<u64>(), any_text())
                .prop_map(|(from, sender, seq, text)| Event::Private { from, sender, seq, text }),
            (any::<u64>(), any_text(), any_text()).prop_map(|(seq, to, text)| Event::PrivateSent {
                seq,
                to,
                text
            }),
            (any_text(), any_text()).prop_map(|(nick, room)| Event::Resumed { nick, room }),
            (any::<u64>(), any_text())
                .prop_map(|(seq, why)| Event::Rejected { seq, failure: Failure::InvalidText(why) }),
            (any_text(), any_text())
                .prop_map(|(nick, why)| Event::Failed(Failure::InvalidNick { nick, why })),
            Just(Event::Failed(Failure::NotLoggedIn)),
            Just(Event::Shutdown),
        ]
    }

    proptest! {
        #[test]
        fn every_request_round_trips(request in any_request()) {
            round_trip(&request);
        }

        #[test]
        fn every_event_round_trips(event in any_event()) {
            round_trip(&event);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Event>(&bytes);
        }
    }
}
