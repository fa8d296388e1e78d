//! The broker's side of `control.sock`: who may use it, and the answer to each operator
//! request (`chatctl`).
//!
//! The socket (bound by `master::listen`) is mode 0666 on purpose: access is decided here, from
//! the caller's credentials (SO_PEERCRED, SO_PEERGROUPS), so that a refused caller gets a clear
//! answer and the refusal is logged. Allowed: root, the daemon's own user, and members of the
//! admin group.
//!
//! Any local user can connect, so a connection costs the broker nothing until it is known to
//! be an operator's: access is decided at accept, before a byte is read. A stranger gets its
//! `Denied` in one non-blocking write and is closed at once, so it never holds a descriptor or
//! a buffer; refusals are logged once per [`REFUSAL_LOG_WINDOW`] (then counted). Operators'
//! connections are capped ([`access::CONNECTIONS_PER_UID`] per uid,
//! [`access::CONNECTIONS_TOTAL`] in all, root apart: it has its own share beyond the total, so
//! that it keeps a way in whatever others hold). A request may declare at most
//! `MAX_REQUEST_LEN` bytes and must arrive whole within [`client::REQUEST_TIMEOUT`]; the answer
//! must be written within [`client::CONTROL_TIMEOUT`]. One connection carries one request and
//! its reply. Requests never block the broker: the only ones that wait are `reload`, whose
//! answer comes from the master over its link, and changes to the moderation state, whose
//! answer waits for the state file.
//!
//! This file accepts, reads, answers and expires the connections; its parts are
//! [`access`] (who may connect, how many), [`accounts`] (`chatctl accounts`), [`admin`] (the same
//! commands from a chat connection, `/admin`), [`client`] (one connection: its request, reply and
//! deadlines), [`commands`] (the answer to each request) and [`state_writer`] (changes to the
//! moderation state, in force once saved). It must not block the broker's loop.

mod access;
mod accounts;
mod admin;
mod client;
mod commands;
mod state_writer;

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event as MioEvent;
use mio::net::UnixStream;
use mio::{Interest, Token};

use super::Broker;
use crate::logging::{self, LogThrottle};
use crate::moderation::StateWriter;
use crate::proto::codec;
use crate::proto::control::{CONTROL_VERSION, ControlReply};
use crate::sys;
pub use access::Access;
use access::{Busy, CONNECTIONS_PER_UID};
pub use client::ControlClient;
use client::Unreadable;
pub(super) use state_writer::FROM_CLUSTER;
use state_writer::{Saving, check_state_dir};

/// Refusals of one kind are logged once per window, then counted in one summary line.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(60);

/// The broker's bookkeeping for operators beyond their connections, and the state writer.
pub struct Operators {
    /// Refused connections (strangers, too many at once): logged once per window.
    refusals: LogThrottle,
    /// Operators' changes to the moderation state on their way to disk.
    saving: Saving,
}

impl Operators {
    /// Sets up the state writer for `state_path`, waking the loop with `waker` after each
    /// write, and says at warning level if the state directory is not writable.
    pub fn new(waker: Arc<mio::Waker>, state_path: &Path) -> Operators {
        check_state_dir(state_path);
        let writer = StateWriter::new(state_path.to_path_buf(), move || {
            let _ = waker.wake();
        });
        Operators { refusals: LogThrottle::new(REFUSAL_LOG_WINDOW), saving: Saving::new(writer) }
    }
}

impl Broker {
    /// The next moment the control side must act without I/O: a connection's deadline, or a
    /// summary of refusals.
    pub(in crate::broker) fn control_deadline(&self) -> Option<Instant> {
        let connections = self.controls.values().map(|client| client.deadline).min();
        [connections, self.operators.refusals.next_due()].into_iter().flatten().min()
    }

    pub(in crate::broker) fn accept_controls(&mut self) {
        loop {
            let mut stream = match self.control.accept() {
                Ok((stream, _)) => {
                    if let Some(failures) = self.control_accept_trouble.succeeded(Instant::now()) {
                        info!("accepting operators again after {failures} failed attempts");
                    }
                    stream
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // EMFILE and friends: every retry is another readiness event; say it once.
                    if self.control_accept_trouble.failed(Instant::now()) {
                        error!(
                            "cannot accept an operator's connection: {err} (said once; the \
                             recovery is logged)"
                        );
                    }
                    return;
                }
            };
            // Decided before anything is read or registered: a refused caller costs one write.
            let pid = sys::peer_pid(&stream).unwrap_or(0);
            let uid = match sys::peer_uid(&stream) {
                Ok(uid) => uid,
                Err(err) => {
                    warn!("refused an operator connection: cannot read its credentials: {err}");
                    continue;
                }
            };
            if !self.access.allows(&stream, uid) {
                let denial = self.access.denial();
                refuse(&mut stream, &ControlReply::Denied(denial));
                if self.operators.refusals.allow("stranger", Instant::now()) {
                    info!(
                        target: logging::NOTICE,
                        "refused an operator connection from uid {uid} (pid {pid}): not root, the daemon's user or in the admin group"
                    );
                }
                continue;
            }
            let open = self.controls.values().map(|client| client.uid);
            if let Err(Busy { of_uid, others }) = access::room_for(uid, open) {
                let why = format!(
                    "chatd is busy: too many operator connections are open (at most {CONNECTIONS_PER_UID} per user); try again"
                );
                refuse(&mut stream, &ControlReply::Denied(why));
                if self.operators.refusals.allow("busy", Instant::now()) {
                    warn!(
                        "refused an operator connection from uid {uid} (pid {pid}): {of_uid} of its own and {others} in all are open"
                    );
                }
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if let Err(err) = self.poll.registry().register(
                &mut stream,
                Token(id as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                error!("cannot watch an operator's connection: {err}");
                continue;
            }
            let client = ControlClient::new(stream, pid, uid, Instant::now());
            self.controls.insert(id, client);
        }
    }

    pub(in crate::broker) fn serve_control(&mut self, id: u64, event: &MioEvent) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_control(id);
        }
        self.flush_control(id);
    }

    fn read_control(&mut self, id: u64) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        if client.asked {
            return;
        }
        let frame = match client.read_request() {
            Ok(None) => return,
            Ok(Some(frame)) => frame,
            Err(Unreadable::Closed) => {
                debug!("operator connection from pid {} closed before a request", client.pid);
                self.close_control(id);
                return;
            }
            Err(Unreadable::Garbage(why)) => {
                warn!("operator connection from pid {} (uid {}): {why}", client.pid, client.uid);
                self.close_control(id);
                return;
            }
        };
        client.took_request(Instant::now());
        let (pid, uid) = (client.pid, client.uid);
        let reply = if frame.version != CONTROL_VERSION {
            Some(ControlReply::VersionMismatch { broker: CONTROL_VERSION })
        } else {
            debug!("operator uid {uid} (pid {pid}): {:?}", frame.request);
            self.answer(id, frame.request)
        };
        if let Some(reply) = reply {
            self.reply(id, &reply);
        }
    }

    /// Queues the one reply of an operator's connection; it closes once written.
    pub(super) fn reply(&mut self, id: u64, reply: &ControlReply) {
        let Some(client) = self.controls.get_mut(&id) else {
            // Or a member's `/admin` (the ids are one sequence), if it is still here.
            if self.peers.contains(id) {
                self.deliver(vec![admin::admin_reply(id, reply.clone())]);
            }
            return;
        };
        if let Err(err) = client.queue_reply(reply) {
            error!("cannot answer an operator: {err}");
            self.close_control(id);
            return;
        }
        self.flush_control(id);
    }

    fn flush_control(&mut self, id: u64) {
        let Some(client) = self.controls.get_mut(&id) else { return };
        match client.write_reply() {
            Ok(true) if client.answered => self.close_control(id),
            Ok(_) => {}
            Err(_) => self.close_control(id),
        }
    }

    fn close_control(&mut self, id: u64) {
        if let Some(mut client) = self.controls.remove(&id) {
            let _ = self.poll.registry().deregister(client.stream_mut());
        }
        self.pending_reloads.retain(|&waiting| waiting != id);
        self.pending_upgrades.retain(|&waiting| waiting != id);
        self.operators.saving.waiting.retain(|(waiting, _)| *waiting != id);
    }

    /// Closes connections past their deadline and writes the refusal summaries that are due.
    pub(in crate::broker) fn expire_controls(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .controls
            .iter()
            .filter(|(_, client)| client.is_overdue(now))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(client) = self.controls.get(&id)
                && self.operators.refusals.allow("silent", now)
            {
                let what = client.overdue_because();
                info!(
                    "closed an operator connection from pid {} (uid {}): {what}",
                    client.pid, client.uid
                );
            }
            self.close_control(id);
        }
        for (kind, count) in self.operators.refusals.summaries(now) {
            info!(
                target: logging::NOTICE,
                "{count} more operator connections turned away ({kind}) in the last {} s",
                REFUSAL_LOG_WINDOW.as_secs()
            );
        }
    }
}

/// Answers a refused connection in one non-blocking write (a fresh socket's buffer takes the
/// small frame); the caller then drops it, without having read what it sent.
fn refuse(stream: &mut UnixStream, reply: &ControlReply) {
    if let Ok(frame) = codec::frame(reply) {
        let _ = stream.write(&frame);
    }
}
