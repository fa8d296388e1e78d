//! A rustls client for the behaviour tests, seen by the test as an ordinary [`Client`]: a
//! thread bridges a loopback socket pair (the test's side is the `Client`) to a TLS connection
//! to chatd, which trusts exactly one certificate, read from a file (chatd's self-signed one in
//! `state_dir`): pinned, as a user who compared its fingerprint trusts it.
//!
//! It owns the bridge and nothing else: it does not check what chatd logs, nor parse what
//! passes through. When chatd closes, the bridge closes the test's side (the `Client` sees the
//! end of the stream); when the test drops the `Client`, the bridge sends close_notify and
//! ends.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::Client;

/// Accepts exactly one certificate, as a user who checked its fingerprint does (whatever its
/// names and extensions), and checks the handshake's signatures against it.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".to_string()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration that trusts exactly the certificate in `cert_pem`.
fn trusting(cert_pem: &Path) -> Arc<rustls::ClientConfig> {
    let cert = CertificateDer::from_pem_file(cert_pem)
        .unwrap_or_else(|err| panic!("read the certificate {}: {err}", cert_pem.display()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Pinned { cert, algorithms: provider.signature_verification_algorithms };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    Arc::new(config)
}

/// Connects over TLS to chatd at `address` (as `localhost`), trusting only the certificate in
/// `cert_pem`, and returns the plain side as a [`Client`]. The handshake runs in the
/// bridge: a failed one shows as a connection the `Client` finds closed (the reason is printed).
pub fn connect_tls(address: SocketAddr, cert_pem: &Path) -> Client {
    let config = trusting(cert_pem);
    let name = ServerName::try_from("localhost").expect("a server name");
    let connection = rustls::ClientConnection::new(config, name).expect("a TLS client");
    let network = TcpStream::connect(address).expect("connect to chatd's TLS port");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let test_side =
        TcpStream::connect(listener.local_addr().expect("its address")).expect("connect");
    let (bridge_side, _) = listener.accept().expect("accept the test's side");
    std::thread::spawn(move || {
        if let Err(err) = bridge(connection, network, bridge_side) {
            eprintln!("TLS bridge to {address} ended: {err}");
        }
    });
    Client::over(test_side)
}

/// Moves bytes both ways until either side ends. Everything blocks except the polls' wake-ups.
fn bridge(
    mut tls: rustls::ClientConnection,
    mut network: TcpStream,
    mut plain: TcpStream,
) -> Result<(), String> {
    let mut buffer = vec![0u8; 16 << 10];
    let result = loop {
        while tls.wants_write() {
            if let Err(err) = tls.write_tls(&mut network) {
                break_with(&plain);
                return Err(format!("write to chatd: {err}"));
            }
        }
        let (network_ready, plain_ready) = {
            let mut fds = [
                PollFd::new(network.as_fd(), PollFlags::POLLIN),
                PollFd::new(plain.as_fd(), PollFlags::POLLIN),
            ];
            if let Err(err) = poll(&mut fds, PollTimeout::NONE) {
                break Err(format!("poll: {err}"));
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if network_ready {
            match tls.read_tls(&mut network) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => break Err(format!("read from chatd: {err}")),
            }
            if let Err(err) = tls.process_new_packets() {
                // Tell chatd why (an alert), as a real client would.
                let _ = tls.write_tls(&mut network);
                break Err(format!("TLS: {err}"));
            }
            match pass_plaintext(&mut tls, &mut plain, &mut buffer) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(err) => break Err(err),
            }
        }
        if plain_ready {
            match plain.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    tls.send_close_notify();
                    let _ = tls.write_tls(&mut network);
                    return Ok(());
                }
                Ok(n) => {
                    if let Err(err) = tls.writer().write_all(&buffer[..n]) {
                        break Err(format!("TLS write: {err}"));
                    }
                }
            }
        }
    };
    break_with(&plain);
    result
}

/// Hands what TLS decrypted to the test's side; `false` once chatd sent close_notify.
fn pass_plaintext(
    tls: &mut rustls::ClientConnection,
    plain: &mut TcpStream,
    buffer: &mut [u8],
) -> Result<bool, String> {
    loop {
        match tls.reader().read(buffer) {
            Ok(0) => return Ok(false),
            Ok(n) => plain.write_all(&buffer[..n]).map_err(|err| format!("to the test: {err}"))?,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(true),
            // chatd closed the TCP connection without close_notify (the test still reads EOF).
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(false),
            Err(err) => return Err(format!("TLS read: {err}")),
        }
    }
}

/// Ends the test's side, so that its `Client` reads the end of the stream.
fn break_with(plain: &TcpStream) {
    let _ = plain.shutdown(std::net::Shutdown::Both);
}
