//! The master's side of its link to the broker.
//!
//! Owns opening the link (on the socket pair made before the broker's fork, or through
//! `broker.sock` for a broker whose master is gone), greeting with [`MasterHello`], vouching
//! for session children, sending the figures every second, and reading what operators ask
//! through the broker (reload, stop).
//!
//! It must not decide what a lost link means for the broker's life (`link_lost` in `mod.rs`:
//! an adopted broker is replaced) nor carry out a reload or a shutdown itself (it calls the
//! master's). It never blocks: the link is non-blocking, and a link that cannot take a frame
//! is dropped and opened again with the next figures.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;

use log::{debug, info, warn};
use mio::Interest;
use mio::net::UnixStream;
use signal_hook::consts::SIGTERM;

use super::{LINK, Master, SessionChild};
use crate::channel::{Channel, MasterToBroker, ReadOutcome, SendError};
use crate::proto::PROTOCOL_VERSION;
use crate::proto::control::{CodeCount, Counted, MasterFigures};
use crate::proto::master::{MasterEvent, MasterHello, MasterRequest};

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    /// The socket could not be made non-blocking or registered with the poller.
    #[error("cannot watch its socket: {0}")]
    Watch(#[from] io::Error),
    /// The greeting or a vouch could not be queued.
    #[error("{0}")]
    Queue(#[from] SendError),
}

impl Master {
    /// Links to a broker that has no master link (an adopted broker whose link broke) through
    /// `broker.sock`. A failure is retried with the next figures.
    fn connect_link(&mut self) {
        match StdUnixStream::connect(&self.broker_socket) {
            Ok(stream) => self.open_link(stream),
            Err(err) => debug!("cannot link to the broker yet: {err}"),
        }
    }

    /// Makes `stream` (the socket pair's end, or a connection to `broker.sock`) the link: says
    /// `MasterHello` on it and vouches for every session alive (a new broker knows none).
    pub(super) fn open_link(&mut self, stream: StdUnixStream) {
        self.drop_link();
        match self.greet_on(stream) {
            Ok(channel) => {
                self.link = Some(channel);
                self.send_figures();
            }
            Err(err) => {
                warn!("cannot link to the broker: {err}");
                self.link_lost();
            }
        }
    }

    /// Watches `stream` and queues the greeting and a vouch for every live session on it.
    fn greet_on(&mut self, stream: StdUnixStream) -> Result<MasterToBroker, OpenError> {
        stream.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(stream);
        self.poll.registry().register(
            &mut stream,
            LINK,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let hello = MasterHello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            started_at: self.figures.started_at,
        };
        // Room for a vouch per session on top of the usual traffic.
        let mut channel = Channel::open(stream, (1 << 20) + self.sessions.len() * 128, &hello)?;
        for child in self.sessions.values() {
            if let Some(vouch) = vouch(child) {
                channel.send(&vouch)?;
            }
        }
        Ok(channel)
    }

    /// Tells the broker which client a session child serves, if a link is open (otherwise the
    /// next link vouches for it).
    pub(super) fn vouch_for(&mut self, child: &SessionChild) {
        let Some(request) = vouch(child) else { return };
        // Written at once: the child is about to say Hello to the broker.
        if let Some(link) = &mut self.link
            && (link.send(&request).is_err() || link.flush().is_err())
        {
            self.link_lost();
        }
    }

    pub(super) fn drop_link(&mut self) {
        if let Some(mut link) = self.link.take() {
            let _ = self.poll.registry().deregister(link.stream_mut());
        }
    }

    /// Sends the master's figures to the broker, linking first if needed.
    pub(super) fn send_figures(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        if self.link.is_none() {
            // A broker being replaced is left alone: its successor gets the link at its start.
            if self.broker.pid.is_some() && self.broker.replacing().is_none() {
                self.connect_link();
            }
            return;
        }
        let mut by_code: BTreeMap<u32, CodeCount> = BTreeMap::new();
        for child in self.sessions.values() {
            let count = by_code.entry(child.generation).or_insert_with(|| CodeCount {
                generation: child.generation,
                version: child.version.clone(),
                protocol: child.protocol,
                sessions: 0,
            });
            count.sessions += 1;
        }
        let figures = MasterFigures {
            connections: self.sessions.len() as u64,
            refusals: self
                .refusals
                .iter()
                .map(|(reason, &count)| Counted { reason: reason.clone(), count })
                .collect(),
            version: crate::release::version().to_string(),
            generation: self.generation,
            binary: self.binary.display().to_string(),
            sessions_by_code: by_code.into_values().collect(),
            ..self.figures.clone()
        };
        if let Some(link) = &mut self.link
            && (link.send(&MasterRequest::Figures(figures)).is_err() || link.flush().is_err())
        {
            self.link_lost();
        }
    }

    /// Reads what the broker sent over the link: operators' `Reload` and `Stop`.
    pub(super) fn serve_link(&mut self) {
        loop {
            let Some(link) = &mut self.link else { return };
            match link.read_some() {
                Ok(ReadOutcome::Data { .. }) => {}
                Ok(ReadOutcome::WouldBlock) => break,
                Ok(ReadOutcome::Closed { .. }) | Err(_) => {
                    debug!("the link to the broker closed");
                    self.link_lost();
                    return;
                }
            }
            loop {
                let Some(link) = &mut self.link else { return };
                match link.next_message() {
                    Ok(Some(MasterEvent::Reload)) => {
                        info!("an operator asked for a reload");
                        let error = self.reload().err();
                        if let Some(link) = &mut self.link {
                            let _ = link.send(&MasterRequest::Reloaded { error });
                        }
                    }
                    Ok(Some(MasterEvent::Upgrade { binary })) => {
                        let answer = self.upgrade(binary.map(std::path::PathBuf::from));
                        if let Some(link) = &mut self.link {
                            let _ = link.send(&MasterRequest::Upgrade(answer));
                        }
                    }
                    Ok(Some(MasterEvent::Stop)) => {
                        info!("an operator asked for a shutdown");
                        if self.shutdown.is_none() {
                            self.shutdown_on_signal(SIGTERM);
                        }
                        return;
                    }
                    Ok(None) => break,
                    Err(err) => {
                        warn!("dropping the link to the broker: {err}");
                        self.link_lost();
                        return;
                    }
                }
            }
        }
        if let Some(link) = &mut self.link
            && link.flush().is_err()
        {
            self.link_lost();
        }
    }
}

/// What the master vouches for about a session child, if it knows the child's identity.
fn vouch(child: &SessionChild) -> Option<MasterRequest> {
    Some(MasterRequest::Vouch {
        identity: child.identity?,
        peer: child.peer.to_string(),
        connected_at: child.connected_at,
    })
}
