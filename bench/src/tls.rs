//! The load generator's TLS clients (`--tls CERT`): a rustls client connection per client,
//! driven by hand over its non-blocking socket like the daemon's own TLS sessions are, so that
//! a connect run over TLS measures the handshake each admission costs.
//!
//! It owns the client side of TLS only: what the bench reads and writes stays plaintext lines.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The client settings every TLS client of a run starts from.
pub struct TlsClients {
    config: Arc<ClientConfig>,
}

impl TlsClients {
    /// Clients that trust `cert` (the daemon's certificate, e.g. its self-signed
    /// state_dir/tls-cert.pem) for the name `localhost`.
    pub fn trusting(cert: &Path) -> io::Result<TlsClients> {
        let cert = CertificateDer::from_pem_file(cert).map_err(io::Error::other)?;
        let mut roots = RootCertStore::empty();
        roots.add(cert).map_err(io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClients { config: Arc::new(config) })
    }

    /// A new connection's TLS client, its handshake not started.
    pub fn start(&self) -> io::Result<ClientConnection> {
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        ClientConnection::new(Arc::clone(&self.config), name).map_err(io::Error::other)
    }
}

/// Reads plaintext into `buf`: what rustls has decrypted, else what the socket brings
/// (`WouldBlock` when it has nothing, `Ok(0)` at the end).
pub fn read(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        if tls.read_tls(stream)? == 0 {
            return Ok(0);
        }
        tls.process_new_packets().map_err(io::Error::other)?;
        // Handshake messages answer at once.
        send(tls, stream)?;
    }
}

/// Hands `out` to rustls and writes its records as far as the socket takes them.
pub fn write(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if !out.is_empty() {
        tls.writer().write_all(out)?;
        out.clear();
    }
    send(tls, stream)
}

fn send(tls: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
