//! Connections on `broker.sock`: accepting them, deciding who may stay (the daemon's uid or
//! root, by SO_PEERCRED) and who the caller is (its sender id), watching them, and reading
//! their frames, which it hands one by one to dispatch ([`Broker::handle`]).
//!
//! It must not interpret requests (that is dispatch's) nor write to peers (that is the
//! fan-out engine's, [`super::peers`]). It never blocks: the listener and every stream are
//! non-blocking, and a read takes one bounded chunk at a time.

use std::io;
use std::time::Instant;

use log::{debug, error, info, warn};
use mio::net::UnixStream;
use mio::{Interest, Token};

use super::link::{Incoming, PeerChannel};
use super::peers::Peer;
use super::room::MemberId;
use super::{ANONYMOUS_SENDER, Broker};
use crate::channel::ReadOutcome;
use crate::proto::LeaveReason;
use crate::sys;

impl Broker {
    pub(super) fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(failures) = self.accept_trouble.succeeded(Instant::now()) {
                        info!("broker accepting sessions again after {failures} failed attempts");
                    }
                    self.admit(stream)
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // EMFILE and friends: the connection stays in the backlog; the next
                    // readiness event retries. Every new session is such an event: say it once.
                    if self.accept_trouble.failed(Instant::now()) {
                        error!(
                            "broker cannot accept a session: {err}; sessions wait until it \
                             recovers (said once; the recovery is logged)"
                        );
                    }
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        match sys::peer_uid(&stream) {
            // Root may always connect: it can do everything the daemon can anyway.
            Ok(uid) if uid == self.uid || uid == 0 => {}
            Ok(uid) => {
                warn!(
                    "refused a broker connection from uid {uid}: only uid {} (and root) may connect",
                    self.uid
                );
                return;
            }
            Err(err) => {
                warn!("refused a broker connection: cannot read its credentials: {err}");
                return;
            }
        }
        let pid = sys::peer_pid(&stream).unwrap_or(0);
        let identity = match sys::process_identity(pid) {
            Ok(identity) => identity,
            Err(err) => {
                // Its lines are still told apart from everyone else's; only a broker restart
                // may show a few of them twice.
                info!(
                    "cannot tell who broker peer pid {pid} is ({err}); it gets a sender id of its own"
                );
                sys::random_u64() | ANONYMOUS_SENDER
            }
        };
        self.add_peer(stream, pid, identity);
    }

    /// Watches a new connection; returns its id, or `None` if it cannot be watched.
    pub(super) fn add_peer(
        &mut self,
        mut stream: UnixStream,
        pid: i32,
        identity: u64,
    ) -> Option<MemberId> {
        let id = self.next_id;
        self.next_id += 1;
        let token = Token(id as usize);
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot watch broker peer pid {pid}: {err}");
            return None;
        }
        let channel = PeerChannel::new(stream, self.queue_bytes);
        let peer = Peer::new(channel, pid, identity, crate::clock::unix_now(), Instant::now());
        self.peers.insert(id, peer);
        Some(id)
    }

    /// Reads what `id` sent. `to_the_end`: the poller saw the peer close or fail, so read until
    /// the socket says so even after a short read.
    pub(super) fn read_from(&mut self, id: MemberId, to_the_end: bool) {
        loop {
            let Some(peer) = self.peers.get_mut(id) else {
                return;
            };
            let outcome = match peer.channel.read_some() {
                Ok(outcome) => outcome,
                Err(err) => {
                    info!("session pid {} ({}) read error: {err}", peer.pid, peer.client);
                    self.peers.doom(id, LeaveReason::ConnectionLost);
                    return;
                }
            };
            match outcome {
                ReadOutcome::WouldBlock => return,
                ReadOutcome::Closed { mid_frame } => {
                    if mid_frame {
                        warn!("session pid {} ({}) vanished mid-frame", peer.pid, peer.client);
                    } else {
                        debug!("session pid {} ({}) closed", peer.pid, peer.client);
                    }
                    self.peers.doom(id, LeaveReason::ConnectionLost);
                    return;
                }
                ReadOutcome::Data { drained } => {
                    if !self.handle_frames(id) || (drained && !to_the_end) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles every whole frame read from `id`. Returns false if the peer is gone.
    fn handle_frames(&mut self, id: MemberId) -> bool {
        loop {
            let Some(peer) = self.peers.get_mut(id) else {
                return false;
            };
            let incoming = match peer.channel.next_incoming() {
                Ok(Some(incoming)) => incoming,
                Ok(None) => return true,
                Err(err) => {
                    warn!("dropping session pid {} ({}): {err}", peer.pid, peer.client);
                    self.stats.drop_for("bad_frame");
                    self.peers.doom(id, LeaveReason::ConnectionLost);
                    return false;
                }
            };
            let alive = match incoming {
                Incoming::Greeting(greeting) => self.greet(id, greeting),
                Incoming::RequestBeforeGreeting => self.refuse_first_frame(id),
                Incoming::Request(request) => self.handle(id, request),
                Incoming::Master(request) => self.handle_master(request),
            };
            if !alive {
                return false;
            }
        }
    }
}
