//! Behaviour tests: the real `chatd` binary on a loopback port, driven by real TCP clients.
//! One binary (as ripgrep's `tests/tests.rs`): this root only names the modules.

mod accounts;
mod admission;
mod bench;
mod chat;
mod cluster;
mod cluster_netns;
mod compat;
mod control;
mod identity;
mod input;
mod limits;
mod modes;
mod packaging;
mod reliability;
mod ring;
mod sandbox;
mod soak;
mod spoofing;
mod storage;
mod storage_harness;
mod syslog;
mod systemd_notify;
mod terminals;
mod tls;
mod upgrade;
mod util;
mod web;
