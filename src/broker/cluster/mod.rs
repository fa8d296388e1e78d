#![allow(dead_code)] // The interface commit: used as the loop side lands.
//! Rooms that span hosts (`[cluster]`): this node's side of the shared Redis stream.
//!
//! Written by the loop's side; `bridge` owns the Redis threads.

pub mod bridge;
#[cfg(test)]
pub mod test_redis;

use std::time::Duration;

/// How often a node renews its heartbeat and its nicknames.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A node whose heartbeat is older than this is gone: its members leave everywhere.
pub const NODE_LAPSE: Duration = Duration::from_secs(15);
