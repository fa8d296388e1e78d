//! The wall clock: Unix seconds, for what people and files see (ban expiries, "connected at",
//! timestamps, history lines).
//!
//! It owns that one reading and nothing else. Durations and deadlines are measured with
//! `Instant` by whoever needs them; pure logic (rooms, admission, supervision, flood control)
//! takes the time as an argument and never calls this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now (0 for a clock set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
