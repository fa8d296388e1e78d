//! A client on a TLS listener: [`TlsTransport`], the session's [`ClientTransport`] over one
//! rustls server connection on the client's non-blocking TCP stream.
//!
//! It owns the TLS records: the handshake, decrypting what the client sends, encrypting what
//! the session queued, alerts and close_notify. rustls is driven by hand (`read_tls`,
//! `process_new_packets`, `write_tls`), never through its blocking `Stream` wrappers, which can
//! deadlock on a non-blocking socket whose both directions are full. Output waits as plaintext
//! in the session's bounded queue and is encrypted only as the socket takes it: what is
//! encrypted must be sent (record numbers cannot skip), so a client that fell behind can
//! still have its backlog dropped. It does not interpret the plaintext (telnet and lines
//! are the session's) and decides nothing about disconnecting: it reports.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::transport::{self, ClientTransport, SniffedHttp};
use crate::outbuf::{OutBuf, Overflow};

/// The most plaintext handed to rustls at once: one TLS record's worth, so that what waits
/// encrypted (and can no longer be dropped) stays small.
const RECORD: usize = 16 * 1024;

/// A TLS connection to one client.
pub struct TlsTransport {
    stream: TcpStream,
    tls: ServerConnection,
    /// Plaintext the session queued and rustls has not taken yet.
    out: OutBuf,
    telnet: bool,
    /// The socket said end of stream (rustls knows it too, and its reader reports it).
    ended: bool,
}

impl TlsTransport {
    /// Starts the server side of a handshake on `stream`; `send_queue_bytes`, `keepalive` and
    /// `telnet` as for the plain transport.
    pub fn new(
        stream: TcpStream,
        settings: Arc<ServerConfig>,
        send_queue_bytes: usize,
        keepalive: Duration,
        telnet: bool,
    ) -> Result<TlsTransport, rustls::Error> {
        let mut tls = ServerConnection::new(settings)?;
        tls.set_buffer_limit(Some(send_queue_bytes));
        transport::tune_socket(&stream, send_queue_bytes, keepalive);
        Ok(TlsTransport { stream, tls, out: OutBuf::new(send_queue_bytes), telnet, ended: false })
    }

    /// Reads what the socket has into rustls and processes it, until decrypted bytes wait,
    /// the client has ended, or the socket would block (then `WouldBlock`). Stopping while
    /// plaintext waits matters: rustls refuses to read records past a full plaintext buffer.
    /// On a TLS error, the alert rustls prepared is sent before the error is reported.
    fn receive(&mut self) -> io::Result<()> {
        loop {
            match self.tls.read_tls(&mut self.stream) {
                Ok(0) => self.ended = true,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(err) => {
                    let _ = self.tls.write_tls(&mut self.stream);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, err));
                }
            };
            // Handshake answers leave at once; they are not the session's queue.
            self.send_records()?;
            if self.ended || state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                return Ok(());
            }
        }
    }

    /// Writes the records rustls holds, as far as the socket takes them; returns whether it
    /// took them all.
    fn send_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }
}

impl ClientTransport for TlsTransport {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.stream
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The peer closed the TCP connection without close_notify: openssl s_client,
                // socat and telnet-ssl users do that all the time. An ordinary end here.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            self.receive()?;
        }
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.out.push(bytes)
    }

    fn queued(&self) -> usize {
        // Records rustls still holds count as one byte: the session waits for them too.
        self.out.len() + usize::from(self.tls.wants_write())
    }

    fn flush(&mut self) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if !self.send_records()? || self.tls.is_handshaking() || self.out.is_empty() {
                return Ok(taken);
            }
            let before = self.out.len();
            let mut writer = RecordSized { tls: &mut self.tls, room: RECORD };
            self.out.write_to(&mut writer)?;
            taken += before - self.out.len();
        }
    }

    fn discard_output(&mut self) {
        self.out = OutBuf::new(0);
    }

    fn drop_backlog(&mut self) {
        self.out = OutBuf::new(self.out.limit());
    }

    fn close(&mut self, drain_until: Option<Instant>) {
        self.tls.send_close_notify();
        let _ = self.send_records();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        if let Some(deadline) = drain_until {
            transport::drain_until_closed(&mut self.stream, deadline);
        }
    }

    fn is_telnet(&self) -> bool {
        self.telnet
    }

    fn is_tls(&self) -> bool {
        true
    }

    fn handshake(&mut self) -> io::Result<bool> {
        if self.tls.is_handshaking() {
            match self.receive() {
                Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
                _ => {}
            }
        }
        if self.tls.is_handshaking() && self.ended {
            let closed = "the client closed the connection during the handshake";
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, closed));
        }
        Ok(!self.tls.is_handshaking())
    }

    fn sniff_http(&self) -> Option<SniffedHttp> {
        None
    }

    fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |addr| addr.port())
    }
}

/// Hands plaintext to rustls for encryption, at most `room` bytes, then says it would block:
/// [`OutBuf::write_to`] then takes one record's worth from the queue.
struct RecordSized<'a> {
    tls: &'a mut ServerConnection,
    room: usize,
}

impl Write for RecordSized<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(self.room);
        let taken = self.tls.writer().write(&bytes[..n])?;
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.room -= taken;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
