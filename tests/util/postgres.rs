//! PostgreSQL for the behaviour tests: a throwaway server of the test's own, in a temporary
//! directory, on a Unix socket that a chatd running as `nobody` can reach; [`Cluster::url`]
//! is what goes in `database = "..."`. Several start at once without meeting (each has its
//! own directory, socket and data); dropping one stops it and kills what is left of it. A
//! machine without PostgreSQL fails the test, saying what to install.
//!
//! The server itself is the one the store's unit tests use (`src/store/test_cluster.rs`,
//! `cfg(test)` code of the library, which this test binary cannot see): this file includes
//! it, so that there is one way to run a test server, and adds nothing of its own.

#[path = "../../src/store/test_cluster.rs"]
mod cluster;

pub use cluster::{Cluster, is_running, postgres_bin};
