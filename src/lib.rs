//! chatd: a chat daemon for telnet and netcat clients.
//!
//! # Layout
//!
//! Three process roles, each a module that never imports another role:
//!
//! - [`master`]: binds the listeners, forks the [`broker`] and one session child per
//!   connection, handles signals and reaps children. No threads, ever.
//! - [`broker`]: one process owning all room state ([`broker::room`] is the pure logic), serving
//!   `broker.sock`.
//! - [`session`]: one process per client: telnet bytes, lines, commands, rendering.
//!
//! What the roles share:
//!
//! - [`proto`]: the messages between sessions and the broker, and [`proto::codec`], the frame
//!   format (the only place bincode is named);
//! - [`channel`]: a framed non-blocking channel over a Unix stream; [`outbuf`]: a bounded
//!   output queue;
//! - [`names`] (valid nicknames and rooms) and [`text`] (cleaning user text);
//! - [`modes`]: the entry points of the deployment modes (standalone, `chatd broker`,
//!   `chatd inetd`);
//! - [`moderation`]: bans, mutes and the message of the day, persisted by the broker and read
//!   by the master at accept;
//! - [`sys`] (fork, signal dispositions, peer credentials, process titles: the only
//!   `unsafe`), [`signals`] (signalfd for children), [`logging`], [`config`] and [`cli`].
//!
//! And one program besides the daemon: [`ctl`] is `chatctl`, the operator's command, which
//! speaks [`proto::control`] over the broker's `control.sock`.
//!
//! Data flows one way: client bytes → `session::telnet` → `session::line` →
//! `session::command` → `proto::codec` → `channel` → `broker` → `broker::room` → encoded once →
//! every member's `channel` → `session::render` → client.

pub mod broker;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod logging;
pub mod master;
pub mod moderation;
pub mod modes;
pub mod names;
pub mod outbuf;
pub mod proto;
pub mod session;
pub mod signals;
pub mod sys;
pub mod text;
