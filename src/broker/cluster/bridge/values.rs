//! Reading Redis replies without trusting their shape: each helper says `None` for a value
//! that is not what was hoped, so that nothing in Redis (which anyone who can reach it may
//! write) can make a thread panic.

use redis::Value;

/// An array's items (RESP2 arrays, and RESP3 sets).
pub fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// A string's bytes.
pub fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// A string that is UTF-8.
pub fn text(value: &Value) -> Option<String> {
    bytes(value).and_then(|bytes| std::str::from_utf8(bytes).ok()).map(str::to_string)
}

/// An integer, or a string of one.
pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(number) => Some(*number),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}
