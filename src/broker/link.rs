//! What a connection on `broker.sock` is, and the broker's side of the master's link.
//!
//! Owns:
//! - [`PeerChannel`]: a connection before its greeting, a session's, or the master's link, each
//!   typed by direction (`crate::channel`), and how a greeting turns the first into one of the
//!   others;
//! - the master's link: taking a master's greeting (on the socket pair this broker inherited,
//!   or on `broker.sock` while no master is linked), its frames (figures, vouches, the answer
//!   to a reload), asking it to reload or stop, and forgetting it when it closes.
//!
//! It must not serve sessions (that is `dispatch` and `room`) nor answer operators (`control`,
//! which asks through `Broker::tell_master`).

use std::io;
use std::os::fd::BorrowedFd;

use log::{error, info, warn};
use mio::net::UnixStream;

use super::room::MemberId;
use super::{Broker, Vouch};
use crate::channel::{
    BrokerToMaster, BrokerToSession, BrokerToUngreeted, Frames, ReadOutcome, SendError,
};
use crate::outbuf::Overflow;
use crate::proto::codec::CodecError;
use crate::proto::control::MasterFigures;
use crate::proto::master::{MasterEvent, MasterHello, MasterRequest, UpgradeAnswer};
use crate::proto::{Event, Greeting, LeaveReason, PROTOCOL_VERSION, Request};

/// The broker's end of one connection on `broker.sock` (or of the inherited socket pair).
#[derive(Debug)]
pub(super) enum PeerChannel {
    /// Nothing read yet but part of its greeting.
    Ungreeted(BrokerToUngreeted),
    /// A session, greeted.
    Session(BrokerToSession),
    /// The master's link, greeted.
    Master(BrokerToMaster),
}

/// A frame read from a peer, by what the connection is.
#[derive(Debug)]
pub(super) enum Incoming {
    Greeting(Greeting),
    /// A first frame that is no greeting but a session's request: a session that skipped its
    /// hello. (Anything else that does not decode is a [`CodecError`].)
    RequestBeforeGreeting,
    Request(Request),
    Master(MasterRequest),
}

impl PeerChannel {
    pub(super) fn new(stream: UnixStream, max_queued: usize) -> Self {
        PeerChannel::Ungreeted(BrokerToUngreeted::new(stream, max_queued))
    }

    pub(super) fn is_master(&self) -> bool {
        matches!(self, PeerChannel::Master(_))
    }

    /// The same connection, greeted by a session; a greeted one is left as it is.
    pub(super) fn into_session(self) -> Self {
        match self {
            PeerChannel::Ungreeted(channel) => PeerChannel::Session(channel.into_session()),
            greeted => greeted,
        }
    }

    /// The same connection, greeted by the master; a greeted one is left as it is.
    fn into_master(self) -> Self {
        match self {
            PeerChannel::Ungreeted(channel) => PeerChannel::Master(channel.into_master()),
            greeted => greeted,
        }
    }

    pub(super) fn stream_mut(&mut self) -> &mut UnixStream {
        match self {
            PeerChannel::Ungreeted(channel) => channel.stream_mut(),
            PeerChannel::Session(channel) => channel.stream_mut(),
            PeerChannel::Master(channel) => channel.stream_mut(),
        }
    }

    pub(super) fn read_some(&mut self) -> io::Result<ReadOutcome> {
        match self {
            PeerChannel::Ungreeted(channel) => channel.read_some(),
            PeerChannel::Session(channel) => channel.read_some(),
            PeerChannel::Master(channel) => channel.read_some(),
        }
    }

    pub(super) fn flush(&mut self) -> io::Result<bool> {
        match self {
            PeerChannel::Ungreeted(channel) => channel.flush(),
            PeerChannel::Session(channel) => channel.flush(),
            PeerChannel::Master(channel) => channel.flush(),
        }
    }

    /// The next whole frame read, decoded as what this connection carries.
    pub(super) fn next_incoming(&mut self) -> Result<Option<Incoming>, CodecError> {
        match self {
            PeerChannel::Ungreeted(channel) => match channel.next_message() {
                Ok(greeting) => Ok(greeting.map(Incoming::Greeting)),
                Err(_) if channel.next_is_request() => Ok(Some(Incoming::RequestBeforeGreeting)),
                Err(err) => Err(err),
            },
            PeerChannel::Session(channel) => Ok(channel.next_message()?.map(Incoming::Request)),
            PeerChannel::Master(channel) => Ok(channel.next_message()?.map(Incoming::Master)),
        }
    }

    /// Queues one event for a session, with `fds` attached (a ring handover). The master's link
    /// takes no events.
    pub(super) fn send_event(
        &mut self,
        event: &Event,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        match self {
            PeerChannel::Session(channel) if fds.is_empty() => channel.send(event),
            PeerChannel::Session(channel) => channel.send_with_fds(event, fds),
            PeerChannel::Ungreeted(channel) => channel.send(event),
            PeerChannel::Master(_) => Ok(()),
        }
    }

    /// Queues events encoded once for many peers. The master's link takes no events: nothing
    /// is queued for it (no room has it as a member, and the broker's goodbye is the sessions').
    pub(super) fn send_encoded(&mut self, frames: &Frames<Event>) -> Result<(), Overflow> {
        match self {
            PeerChannel::Ungreeted(channel) => channel.send_encoded(frames),
            PeerChannel::Session(channel) => channel.send_encoded(frames),
            PeerChannel::Master(_) => Ok(()),
        }
    }
}

impl Broker {
    /// Turns `id`'s connection into a session's, once its greeting was accepted.
    pub(super) fn greeted_as_session(&mut self, id: MemberId) {
        self.peers.change_channel(id, PeerChannel::into_session);
    }

    /// A peer whose first frame was not a greeting this broker takes: it is dropped.
    pub(super) fn refuse_first_frame(&mut self, id: MemberId) -> bool {
        let pid = self.peers.get(id).map_or(0, |peer| peer.pid);
        warn!("dropping session pid {pid}: first frame was not Hello");
        self.peers.doom(id, LeaveReason::ConnectionLost);
        false
    }

    /// The master's greeting: taken on the inherited socket pair, and on `broker.sock` only
    /// while no master's link is alive (a replacement master adopting this broker).
    pub(super) fn greet_master(&mut self, id: MemberId, hello: MasterHello) -> bool {
        let inherited = self.inherited_link == Some(id);
        if !inherited && self.master_link_alive() {
            let pid = self.peers.get(id).map_or(0, |peer| peer.pid);
            warn!(
                "refused a MasterHello on broker.sock from pid {pid}: the master's link is alive"
            );
            self.peers.doom(id, LeaveReason::ConnectionLost);
            return false;
        }
        if hello.version != PROTOCOL_VERSION {
            return self.refuse_first_frame(id);
        }
        if !self.peers.change_channel(id, PeerChannel::into_master) {
            return false;
        }
        if let Some(old) = self.master.replace(id) {
            self.peers.doom(old, LeaveReason::ConnectionLost);
        }
        let MasterHello { pid, started_at, .. } = hello;
        self.master_figures = Some(MasterFigures { pid, started_at, ..Default::default() });
        if inherited {
            info!("master pid {pid} linked");
        } else {
            info!("master pid {pid} linked through broker.sock (adopting this broker)");
        }
        true
    }

    /// Whether the master's link (the inherited one, even before it said `MasterHello`, or an
    /// adopting master's) is open. A master that died a moment ago may have closed it without
    /// the loop having seen it yet: it is read to the end first.
    pub(super) fn master_link_alive(&mut self) -> bool {
        let Some(link) = self.inherited_link.or(self.master) else {
            return false;
        };
        self.read_from(link, true);
        self.peers.contains(link) && !self.peers.is_doomed(link)
    }

    /// Frames on the master's link.
    pub(super) fn handle_master(&mut self, request: MasterRequest) -> bool {
        match request {
            MasterRequest::Figures(figures) => self.master_figures = Some(figures),
            MasterRequest::Reloaded { error } => self.reloaded(error),
            MasterRequest::Upgrade(answer) => self.upgrade_answered(answer),
            MasterRequest::Vouch { identity, peer, connected_at } => {
                let vouch = Vouch { peer: peer.chars().take(64).collect(), connected_at };
                match self.identities.get(&identity).and_then(|&id| self.peers.get_mut(id)) {
                    Some(session) => {
                        session.client = vouch.peer;
                        session.connected_at = vouch.connected_at;
                    }
                    None => self.vouches.insert(identity, vouch),
                }
            }
        }
        true
    }

    /// Queues `event` on the master's link. False if no master is linked. A link whose queue
    /// is full is dropped as too slow, as any peer's would be.
    pub(super) fn tell_master(&mut self, event: &MasterEvent) {
        let Some(id) = self.master else { return };
        self.peers.queue_with(id, |channel| match channel {
            PeerChannel::Master(link) => match link.send(event) {
                Ok(()) => Ok(()),
                Err(SendError::Overflow { source, .. }) => Err(source),
                Err(SendError::Codec { source, .. }) => {
                    error!("cannot encode a frame for the master: {source}");
                    Ok(())
                }
                // Descriptors never go to the master.
                Err(err) => {
                    error!("cannot queue a frame for the master: {err}");
                    Ok(())
                }
            },
            _ => Ok(()),
        });
        self.count_too_slow();
    }

    /// An operator's `shutdown --grace` is over: asks the master to stop the daemon (the
    /// broker included). False if no master is linked to ask.
    pub(super) fn ask_master_to_stop(&mut self) -> bool {
        if self.master.is_none() {
            return false;
        }
        info!("shutdown grace time is over; asking the master to stop");
        self.tell_master(&MasterEvent::Stop);
        self.peers.flush();
        true
    }

    /// `id` is being removed: if it was (or could have become) the master's link, the broker
    /// has no master now, and operators waiting for a reload are told.
    pub(super) fn forget_link(&mut self, id: MemberId) {
        if self.inherited_link == Some(id) {
            self.inherited_link = None;
        }
        if self.master == Some(id) {
            info!("the master's link closed");
            self.master = None;
            self.master_figures = None;
            self.reloaded(Some("the master went away before answering".into()));
            // An upgrading master closes the link as it executes the new binary: the operator
            // learns the outcome from `status` (chatctl upgrade waits for it).
            self.upgrade_answered(UpgradeAnswer::Refused(
                "the master went away before answering".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SessionHello;
    use crate::proto::codec::frame;
    use std::io::Write;

    /// A broker's end of a fresh connection, and the peer's.
    fn connection() -> (PeerChannel, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        (PeerChannel::new(UnixStream::from_std(ours), 1 << 20), theirs)
    }

    fn receive(channel: &mut PeerChannel) {
        while let ReadOutcome::Data { .. } = channel.read_some().expect("read") {}
    }

    #[test]
    fn frames_after_the_masters_greeting_are_the_masters() {
        let (mut channel, mut peer) = connection();
        let hello = MasterHello { version: PROTOCOL_VERSION, pid: 7, started_at: 1 };
        let mut bytes = frame(&Greeting::Master(hello.clone())).expect("encode");
        bytes.extend(frame(&MasterRequest::Reloaded { error: None }).expect("encode"));
        peer.write_all(&bytes).expect("write");
        receive(&mut channel);
        assert!(matches!(
            channel.next_incoming(),
            Ok(Some(Incoming::Greeting(Greeting::Master(h)))) if h == hello
        ));
        assert!(!channel.is_master());
        let mut channel = channel.into_master();
        assert!(channel.is_master());
        assert!(matches!(
            channel.next_incoming(),
            Ok(Some(Incoming::Master(MasterRequest::Reloaded { error: None })))
        ));
        // Events are not for the master: nothing is queued.
        let mut frames = Frames::new();
        frames.push(&Event::Shutdown).expect("encode");
        channel.send_encoded(&frames).expect("nothing to overflow");
        assert!(matches!(&channel, PeerChannel::Master(link) if link.queued() == 0));
    }

    #[test]
    fn frames_after_a_sessions_greeting_are_requests() {
        let (mut channel, mut peer) = connection();
        let hello = SessionHello { version: PROTOCOL_VERSION, peer: "p".into(), connected_at: 0 };
        let mut bytes = frame(&Greeting::Session(hello)).expect("encode");
        bytes.extend(frame(&Request::Who).expect("encode"));
        peer.write_all(&bytes).expect("write");
        receive(&mut channel);
        assert!(matches!(channel.next_incoming(), Ok(Some(Incoming::Greeting(_)))));
        let mut channel = channel.into_session();
        assert!(matches!(channel.next_incoming(), Ok(Some(Incoming::Request(Request::Who)))));
        // A greeted channel stays what it became.
        assert!(!channel.into_master().is_master());
    }

    #[test]
    fn a_first_frame_that_is_a_request_is_told_from_garbage() {
        let (mut channel, mut peer) = connection();
        peer.write_all(&frame(&Request::Rooms).expect("encode")).expect("write");
        receive(&mut channel);
        assert!(matches!(channel.next_incoming(), Ok(Some(Incoming::RequestBeforeGreeting))));

        let (mut channel, mut peer) = connection();
        peer.write_all(&[0, 0, 0, 3, 200, 200, 200]).expect("write");
        receive(&mut channel);
        assert!(matches!(channel.next_incoming(), Err(CodecError::Undecodable(_))));
    }
}
