//! chatd: a chat daemon for telnet and netcat clients.
//!
//! # Layout
//!
//! Three process roles, each a module that never imports another; [`modes`], the composition
//! root, is the only module that names all three, and hands the master its children's entry
//! points ([`master::Roles`]).
//!
//! - [`master`]: binds the listeners, forks the broker and one session child per connection,
//!   handles signals and reaps children. No threads, ever. `mod.rs` is the loop, accept and
//!   shutdown; `children` forks and reaps; `supervision` is the restart and crash-loop
//!   arithmetic (pure); `link` is its side of the link to the broker; `admission` (pure),
//!   `listen`, `privileges`, `repair` and `settings` the rest.
//! - [`broker`]: one process owning all room state, serving `broker.sock` and `control.sock`.
//!   `mod.rs` is the loop; `connections` accepts and reads; `dispatch` applies requests to
//!   `room` (pure); `peers` is the fan-out engine (a room's broadcast once to its ring, one
//!   session's events to its socket, in order); `rings` keeps each room's ring; `link` is what
//!   a connection is and the master's link; `control` serves operators; `stats` counts;
//!   `remembered` is a bounded memory of sessions by sender id; `storage` (the loop's side),
//!   `store_thread` (the database thread, the one place a [`store`] is called) and `history`
//!   (what the store's answers mean for rooms, members and operators) keep what rooms said.
//! - [`session`]: one process per client. `mod.rs` is the loop; `transport` is the client's
//!   stream (`ClientTransport`; plain TCP today); `input` takes bytes through `telnet`,
//!   `line`/`editor`, `charset` and `command` to `dispatch` (pure: command → action);
//!   `events` takes the broker's events (its socket, and its room's ring through `feed`)
//!   through `state` (pure: the event state machine) to `output`, `render` and `terminal`
//!   (a chat line without allocating); `link` is the broker connection; `flood` (the token
//!   bucket), `http` (a browser on the chat port), `help` and `error` the rest.
//!
//! What the roles share:
//!
//! - [`proto`]: the messages between the processes (`Request`/`Event` for sessions,
//!   [`proto::master`] for the master's link, [`proto::control`] for operators,
//!   [`proto::report`] for the admission datagram, [`proto::broadcast`] for a room ring's
//!   records) and [`proto::codec`], the frame format (the only place bincode is named);
//! - [`ring`]: a room's broadcast ring, a sealed memfd the broker writes and sessions map
//!   read-only, with its eventfd doorbell; [`fd_passing`]: descriptors over a Unix socket;
//! - [`channel`]: a framed non-blocking channel over a Unix stream, typed by direction
//!   (`Channel<Tx, Rx>`); [`outbuf`]: a bounded output queue;
//! - [`names`] (valid nicknames and rooms) and [`text`] (cleaning user text);
//! - [`moderation`]: bans, mutes and the message of the day, persisted by the broker and read
//!   by the master at accept;
//! - [`store`]: what rooms said, on disk — the interface, SQLite and PostgreSQL, the search
//!   tokens; used by the broker's database thread only (never the master or a session);
//! - [`sandbox`]: the Landlock ruleset a session applies to itself once it has connected to
//!   the broker (no state directory, database or key files afterwards);
//! - [`clock`] (the wall clock), [`sys`] (fork, signal dispositions, peer credentials, process
//!   titles; with [`ring`]'s mapping and [`fd_passing`]'s control messages, the only unsafe
//!   code; callers write why each call is sound, `// SAFETY:`), [`signals`] (signalfd for children), [`logging`], [`config`]
//!   and [`cli`]. (In test builds, `alloc_count`, a counting global allocator, is unsafe code
//!   too: unit tests pin how many allocations a path makes.)
//!
//! And one program besides the daemon: [`ctl`] is `chatctl`, the operator's command, which
//! speaks [`proto::control`] over the broker's `control.sock`.
//!
//! Data flows one way: client bytes → `session::transport` → `session::input` (`telnet`,
//! `line`, `command`) → `session::dispatch` → `channel` → `broker::connections` →
//! `broker::dispatch` → `broker::room` → `broker::peers` (encoded once, appended once to the
//! room's ring) → every member's `session::feed` → `session::events` → `session::state` →
//! `session::output` (`render`, `terminal`) → the transport → client. docs/ARCHITECTURE.md has the picture.

pub mod accounts;
#[cfg(test)]
mod alloc_count;
pub mod broker;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod fd_passing;
pub mod logging;
pub mod master;
pub mod moderation;
pub mod modes;
pub mod names;
pub mod outbuf;
pub mod program;
pub mod proto;
pub mod release;
pub mod ring;
pub mod sandbox;
pub mod session;
pub mod signals;
pub mod store;
pub mod sys;
pub mod text;
