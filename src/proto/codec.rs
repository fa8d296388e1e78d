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

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// Appends `message`'s payload, without a frame header, to `out` (a ring record: the ring
/// keeps its own lengths). On error `out` is left as it was.
pub fn encode_payload<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    match bincode::serde::encode_into_std_write(message, out, CONFIG) {
        Ok(_) => Ok(()),
        Err(err) => {
            out.truncate(start);
            Err(CodecError::Unencodable(err.to_string()))
        }
    }
}

/// Decodes a payload written by [`encode_payload`], borrowing strings from `payload` rather
/// than copying them. Every byte must belong to the message.
pub fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, CodecError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge { declared: payload.len() });
    }
    let (message, used) = bincode::serde::borrow_decode_from_slice(payload, CONFIG)
        .map_err(|err| CodecError::Undecodable(err.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::TrailingBytes(payload.len() - used));
    }
    Ok(message)
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
    use crate::proto::master::{MasterEvent, MasterRequest};
    use crate::proto::{Event, Failure, Greeting, Request, SessionHello};
    use proptest::prelude::*;

    /// Fixes the wire bytes of a session's greeting, which are those of every earlier
    /// version's `Hello` (variant 0, then its fields): an older session is answered with the
    /// mismatch, not dropped as garbage. If this test fails, that promise broke.
    #[test]
    fn a_session_greeting_has_the_bytes_of_earlier_hellos() {
        let hello = Greeting::Session(SessionHello {
            version: 5,
            peer: "[::1]:2".to_string(),
            connected_at: 300,
        });
        let bytes = frame(&hello).expect("encodes");
        let expected: Vec<u8> = vec![
            0, 0, 0, 13, // payload length, big-endian
            0,  // variant 0: Session (Hello before version 6)
            5,  // version 5 (varint)
            7, b'[', b':', b':', b'1', b']', b':', b'2', // peer: length 7, bytes
            251, 44, 1, // connected_at 300: varint marker 251 then u16 little-endian
        ];
        assert_eq!(bytes, expected, "\nexpected: {expected:?}\n     got: {bytes:?}");
    }

    /// Fixes the bytes of a protocol-9 session's hello, as chatd 9 (af9ddd2) encoded it: a
    /// broker of 10 serves such sessions (`OLDEST_SESSION_PROTOCOL`), which keep running
    /// across an in-place upgrade, so it must read them as they are.
    #[test]
    fn a_protocol_9_session_hello_has_the_bytes_it_had() {
        let expected: Vec<u8> = vec![
            0, 0, 0, 23, // payload length, big-endian
            0,  // variant 0: Session
            9,  // version 9 (varint)
            15, b'1', b'2', b'7', b'.', b'0', b'.', b'0', b'.', b'1', b':', b'4', b'0', b'0', b'0',
            b'0', // peer: length 15, bytes
            252, 0x00, 0xd2, 0x49, 0x6b, // connected_at 1_800_000_000: marker 252, u32 LE
        ];
        let hello = SessionHello {
            version: 9,
            peer: "127.0.0.1:40000".to_string(),
            connected_at: 1_800_000_000,
        };
        let bytes = frame(&Greeting::Session(hello.clone())).expect("encodes");
        assert_eq!(bytes, expected, "\nexpected: {expected:?}\n     got: {bytes:?}");
        let decoded = decode_frame::<Greeting>(&expected).expect("decodes");
        assert_eq!(decoded, Some((Greeting::Session(hello), expected.len())));
    }

    /// Fixes the bytes of the `Welcome` a protocol-9 session gets from a broker of 10, as
    /// chatd 9 encoded it: the session must read it to be served again.
    #[test]
    fn the_welcome_of_a_protocol_9_session_has_the_bytes_it_had() {
        let welcome = Event::Welcome { version: 9, sender: 0x0102_0304_0506_0708, broker: 300 };
        let bytes = frame(&welcome).expect("encodes");
        let expected: Vec<u8> = vec![
            0, 0, 0, 14, // payload length, big-endian
            0,  // variant 0: Welcome
            9,  // version 9
            253, 8, 7, 6, 5, 4, 3, 2, 1, // sender: marker 253, u64 LE
            251, 44, 1, // broker 300: marker 251, u16 LE
        ];
        assert_eq!(bytes, expected, "\nexpected: {expected:?}\n     got: {bytes:?}");
    }

    /// Fixes the wire bytes of the refusal an older (or newer) session gets, so that it can
    /// read it and say why it cannot go on.
    #[test]
    fn a_version_mismatch_refusal_has_fixed_bytes() {
        let refusal = Event::Failed(Failure::VersionMismatch { broker: 6, session: 5 });
        let bytes = frame(&refusal).expect("encodes");
        let expected: Vec<u8> = vec![
            0, 0, 0, 4,  // payload length, big-endian
            15, // variant 15: Failed (as in version 5)
            7,  // variant 7: VersionMismatch
            6, 5, // broker 6, session 5
        ];
        assert_eq!(bytes, expected, "\nexpected: {expected:?}\n     got: {bytes:?}");
    }

    /// Fixes the bytes of `Upgrade` and of the answers chatctl reads to it, as control
    /// protocol 4 (which brought it) encoded them: a package's new chatctl asks the running,
    /// older broker in that broker's version (`ctl::upgrade`), which must read the same request.
    #[test]
    fn the_upgrade_request_and_its_answers_have_the_bytes_of_control_protocol_4() {
        use crate::proto::control::{ControlFrame, ControlReply, ControlRequest};
        let upgrade = ControlFrame {
            version: 4,
            request: ControlRequest::Upgrade { binary: Some("/x".into()) },
        };
        let expected: Vec<u8> = vec![
            0, 0, 0, 6,  // payload length, big-endian
            4,  // control protocol 4
            17, // variant 17: Upgrade
            1, 2, b'/', b'x', // Some, the path's length and bytes
        ];
        assert_eq!(frame(&upgrade).expect("encodes"), expected);
        let answers = [
            (ControlReply::Done("ok".into()), 5),
            (ControlReply::Failed("ok".into()), 6),
            (ControlReply::Denied("ok".into()), 7),
        ];
        for (reply, variant) in answers {
            let expected: Vec<u8> = vec![0, 0, 0, 4, variant, 2, b'o', b'k'];
            assert_eq!(frame(&reply).expect("encodes"), expected, "{reply:?}");
        }
        let mismatch = ControlReply::VersionMismatch { broker: 4 };
        assert_eq!(frame(&mismatch).expect("encodes"), vec![0, 0, 0, 2, 8, 4]);
        // Status is asked first, to learn the broker's version: variant 0, no fields.
        let status = ControlFrame { version: 4, request: ControlRequest::Status };
        assert_eq!(frame(&status).expect("encodes"), vec![0, 0, 0, 2, 4, 0]);
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<Greeting>(&bytes);
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Event>(&bytes);
            let _ = decode_frame::<MasterRequest>(&bytes);
            let _ = decode_frame::<MasterEvent>(&bytes);
        }
    }
}
