//! The TLS transport against a rustls client on the other end of a loopback connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;

/// The client end: a rustls client over a non-blocking socket.
struct Peer {
    tls: ClientConnection,
    socket: StdTcpStream,
    /// Decrypted, not yet looked at.
    received: Vec<u8>,
}

impl Peer {
    /// Sends what the client has, then reads and processes what arrived.
    fn exchange(&mut self) {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("client write: {err}"),
            }
        }
        loop {
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => break,
                Ok(_) => {
                    self.tls.process_new_packets().expect("the server speaks TLS");
                    let _ = self.tls.reader().read_to_end(&mut self.received);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("client read: {err}"),
            }
        }
    }

    /// What the client has decrypted so far.
    fn plaintext(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.received)
    }
}

/// Runs `step` until it says done, for at most five seconds.
fn until(what: &str, mut step: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !step() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A loopback connection, the server side as a TLS transport (queue limit `limit`) with a
/// fresh self-signed certificate, and the raw client socket.
fn server(
    limit: usize,
) -> (TlsTransport, StdTcpStream, CertificateDer<'static>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let identity = crate::master::tls::self_signed(dir.path(), None).expect("certificate");
    let cert_path = dir.path().join(crate::config::SELF_SIGNED_CERT);
    let cert = rustls::pki_types::pem::PemObject::from_pem_file(&cert_path).expect("cert");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = StdTcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    accepted.set_nonblocking(true).expect("nonblocking");
    client.set_nonblocking(true).expect("nonblocking");
    let transport = TlsTransport::new(
        TcpStream::from_std(accepted),
        identity.settings,
        limit,
        Duration::from_secs(60),
        true,
    )
    .expect("server connection");
    (transport, client, cert, dir)
}

fn client(socket: StdTcpStream, cert: CertificateDer<'static>) -> Peer {
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let tls = ClientConnection::new(Arc::new(config), name).expect("client");
    Peer { tls, socket, received: Vec::new() }
}

fn handshake(transport: &mut TlsTransport, peer: &mut Peer) {
    until("the handshake", || {
        peer.exchange();
        transport.handshake().expect("handshake") && !peer.tls.is_handshaking()
    });
}

/// Reads from the transport until `want` bytes came.
fn read_all(transport: &mut TlsTransport, peer: &mut Peer, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    until("the client's bytes", || {
        peer.exchange();
        match transport.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("read: {err}"),
        }
        got.len() >= want
    });
    got
}

#[test]
fn a_handshake_then_lines_both_ways_then_close_notify() {
    let (mut transport, socket, cert, _dir) = server(4096);
    let mut peer = client(socket, cert);
    assert!(transport.is_tls() && transport.is_telnet());
    assert_eq!(transport.sniff_http(), None);
    assert!(!transport.handshake().expect("nothing yet"), "the client has not spoken");
    handshake(&mut transport, &mut peer);
    peer.tls.writer().write_all(b"hello\r\n").expect("client write");
    assert_eq!(read_all(&mut transport, &mut peer, 7), b"hello\r\n");
    transport.queue(b"*** hi\r\n").expect("room");
    until("the answer", || {
        transport.flush().expect("flush");
        peer.exchange();
        transport.queued() == 0
    });
    let mut got = Vec::new();
    until("the answer to arrive", || {
        peer.exchange();
        got.extend(peer.plaintext());
        got.len() >= 8
    });
    assert_eq!(got, b"*** hi\r\n");
    transport.close(None);
    until("close_notify", || {
        peer.exchange();
        matches!(peer.tls.reader().read(&mut [0u8; 8]), Ok(0))
    });
}

#[test]
fn records_that_arrive_a_byte_at_a_time_make_the_same_connection() {
    let (mut transport, socket, cert, _dir) = server(4096);
    let mut peer = client(socket, cert);
    let trickle = |peer: &mut Peer, transport: &mut TlsTransport| {
        let mut records = Vec::new();
        while peer.tls.wants_write() {
            peer.tls.write_tls(&mut records).expect("records");
        }
        for byte in records {
            peer.socket.write_all(&[byte]).expect("one byte");
            let _ = transport.handshake();
        }
    };
    until("the handshake, a byte at a time", || {
        trickle(&mut peer, &mut transport);
        peer.exchange();
        transport.handshake().expect("handshake") && !peer.tls.is_handshaking()
    });
    peer.tls.writer().write_all(b"one byte at a time\r\n").expect("client write");
    trickle(&mut peer, &mut transport);
    assert_eq!(read_all(&mut transport, &mut peer, 20), b"one byte at a time\r\n");
}

#[test]
fn the_queue_refuses_past_its_limit_and_what_it_took_arrives_whole() {
    let (mut transport, socket, cert, _dir) = server(50_000);
    let mut peer = client(socket, cert);
    handshake(&mut transport, &mut peer);
    let line = [b'x'; 10_000];
    for _ in 0..5 {
        transport.queue(&line).expect("room");
    }
    assert!(transport.queue(b"y").is_err(), "the queue is full");
    assert_eq!(transport.queued(), 50_000);
    let mut got = Vec::new();
    until("the queue to drain", || {
        transport.flush().expect("flush");
        peer.exchange();
        got.extend(peer.plaintext());
        got.len() >= 50_000
    });
    assert_eq!(got.len(), 50_000);
    assert_eq!(transport.queued(), 0);
    transport.queue(b"more").expect("room again");
    transport.drop_backlog();
    assert_eq!(transport.queued(), 0, "a backlog not yet encrypted can be dropped");
    transport.discard_output();
    assert!(transport.queue(b"z").is_err());
}

#[test]
fn a_client_that_closes_without_close_notify_is_an_ordinary_end() {
    let (mut transport, socket, cert, _dir) = server(4096);
    let mut peer = client(socket, cert);
    handshake(&mut transport, &mut peer);
    drop(peer);
    let mut buf = [0u8; 16];
    until("the end", || match transport.read(&mut buf) {
        Ok(n) => {
            assert_eq!(n, 0);
            true
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => false,
        Err(err) => panic!("an end without close_notify is no error: {err}"),
    });
}

#[test]
fn plain_text_fails_the_handshake_and_gets_an_alert() {
    let (mut transport, mut socket, _cert, _dir) = server(4096);
    socket.write_all(b"hello, is this chatd?\r\n").expect("write");
    let mut failed = None;
    until("the handshake to fail", || match transport.handshake() {
        Ok(_) => false,
        Err(err) => {
            failed = Some(err);
            true
        }
    });
    assert_eq!(failed.map(|err| err.kind()), Some(io::ErrorKind::InvalidData));
    let mut alert = [0u8; 16];
    let mut n = 0;
    until("the alert", || match socket.read(&mut alert) {
        Ok(read) => {
            n = read;
            true
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => false,
        Err(err) => panic!("read: {err}"),
    });
    assert!(n >= 7, "a whole alert record");
    assert_eq!(alert[0], 0x15, "content type alert");
}
