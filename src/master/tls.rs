//! The daemon's TLS identity: the certificate its TLS listeners present and the rustls server
//! settings every TLS session child inherits.
//!
//! Owns reading the operator's certificate and key (`tls_cert`/`tls_key`, PEM), making and
//! keeping the self-signed certificate in `state_dir` when none is configured, the rustls
//! [`ServerConfig`] (ring provider, no session resumption: each connection is its own
//! process, so a cache or ticket key would serve nobody), and what operators see of it (the
//! fingerprint, the source, the expiry). The master builds it before dropping privileges and
//! again on reload; children get the `Arc` copy-on-write through `fork`. It must not do any
//! connection's I/O (that is `session::tls`) and decides nothing about listeners.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::info;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::privileges::RunAs;
use crate::config::{Config, SELF_SIGNED_CERT, SELF_SIGNED_KEY};
use crate::proto::control::TlsStatus;

/// The rustls settings a TLS session starts from: shared by every connection forked while
/// they are in force.
pub type TlsSettings = Arc<ServerConfig>;

/// How long the self-signed certificate is valid.
const SELF_SIGNED_YEARS: i32 = 10;

/// Why no TLS identity could be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the certificate in {path} cannot be parsed: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("{cert} and {key} do not go together: {source}")]
    Pair { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("cannot make a self-signed certificate: {0}")]
    Make(rcgen::Error),
    #[error("cannot keep the self-signed certificate in {path}: {source}")]
    Keep { path: PathBuf, source: io::Error },
    #[error("cannot start a TLS connection: {0}")]
    Session(rustls::Error),
}

/// A certificate ready to serve, and what operators are told about it.
#[derive(Clone)]
pub struct TlsIdentity {
    pub settings: TlsSettings,
    pub status: TlsStatus,
    /// The PEM it was built from, handed to the image an in-place upgrade executes.
    pub pem: Arc<PemPair>,
}

/// A certificate chain and its key, as PEM. The key is wiped when the last copy goes.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PemPair {
    pub cert: Vec<u8>,
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").field("cert_bytes", &self.cert.len()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").field("status", &self.status).finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The start-up (and reload) line: `TLS certificate SHA-256 AB:CD:... (SOURCE)`.
    pub fn log(&self) {
        info!("TLS certificate SHA-256 {} ({})", self.status.fingerprint, self.status.source);
    }

    /// The line the plain port's greeting carries, for a TLS listener on `port`.
    pub fn plain_greeting_notice(&self, port: u16) -> String {
        format!(
            "For an encrypted connection use TLS on port {port} (certificate SHA-256 {})",
            self.status.fingerprint
        )
    }
}

/// Reads the configured certificate and key, or (neither configured) the self-signed pair in
/// `state_dir`, making it first if it is not there. `owner` is who the daemon runs as after
/// dropping privileges: a key made now is given to that user, so that a reload can read it.
pub fn load(config: &Config, owner: Option<&RunAs>) -> Result<TlsIdentity, TlsError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => from_files(cert, key, cert.display().to_string()),
        _ => self_signed(&config.state_dir, owner),
    }
}

/// The identity in the self-signed files in `state_dir`, if both are there (inetd sessions,
/// which never make one); `None` otherwise.
pub fn kept_self_signed(state_dir: &Path) -> Option<Result<TlsIdentity, TlsError>> {
    let (cert, key) = (state_dir.join(SELF_SIGNED_CERT), state_dir.join(SELF_SIGNED_KEY));
    (cert.is_file() && key.is_file()).then(|| {
        let source = format!("self-signed, kept in {}", cert.display());
        from_files(&cert, &key, source)
    })
}

/// The self-signed pair in `state_dir`, made now if it is not there.
pub(crate) fn self_signed(
    state_dir: &Path,
    owner: Option<&RunAs>,
) -> Result<TlsIdentity, TlsError> {
    if let Some(kept) = kept_self_signed(state_dir) {
        return kept;
    }
    let cert = state_dir.join(SELF_SIGNED_CERT);
    let key = state_dir.join(SELF_SIGNED_KEY);
    let (cert_pem, key_pem) = make_self_signed().map_err(TlsError::Make)?;
    // The key first: a certificate without its key is never left behind as "kept".
    write_owned(&key, key_pem.as_bytes(), 0o600, owner)?;
    write_owned(&cert, cert_pem.as_bytes(), 0o644, owner)?;
    from_files(&cert, &key, format!("self-signed, made now in {}", cert.display()))
}

/// An ECDSA P-256 certificate for this host's name (and `localhost`), valid for
/// [`SELF_SIGNED_YEARS`] from today: its PEM and its key's PEM.
fn make_self_signed() -> Result<(String, String), rcgen::Error> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let mut names = vec![host.clone()];
    if host != "localhost" {
        names.push("localhost".to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, host);
    let (year, month, day) = civil_date(crate::clock::unix_now());
    params.not_before = rcgen::date_time_ymd(year, month, day);
    // The 29th of February ten years on may not exist: the 28th then.
    let end_day = if month == 2 && day == 29 { 28 } else { day };
    params.not_after = rcgen::date_time_ymd(year + SELF_SIGNED_YEARS, month, end_day);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The UTC calendar date of a Unix time (the proleptic Gregorian calendar's arithmetic on
/// days since 1970-01-01).
fn civil_date(unix_seconds: u64) -> (i32, u8, u8) {
    let days = i64::try_from(unix_seconds / 86_400).unwrap_or(0) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (i32::try_from(year).unwrap_or(1970), month as u8, day as u8)
}

/// Writes `bytes` to `path` through a temporary file renamed into place, with `mode`, owned
/// by `owner` when given (the daemon, started as root, writes for its service user).
fn write_owned(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<&RunAs>,
) -> Result<(), TlsError> {
    let keep = |source| TlsError::Keep { path: path.to_path_buf(), source };
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(keep)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(keep)?;
    if let Some(owner) = owner {
        nix::unistd::chown(&temporary, Some(owner.uid), Some(owner.gid))
            .map_err(|errno| keep(errno.into()))?;
    }
    std::fs::rename(&temporary, path).map_err(keep)
}

/// Reads a PEM certificate chain and key and builds the server settings from them;
/// `source` is how operators are told where they came from.
fn from_files(cert: &Path, key: &Path, source: String) -> Result<TlsIdentity, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|err| read_error(path, rustls::pki_types::pem::Error::Io(err)))
    };
    let pem = PemPair { cert: read(cert)?, key: Zeroizing::new(read(key)?) };
    from_pem(pem, cert, key, source)
}

/// Builds the identity from a PEM pair (read from `cert` and `key`, which errors name).
fn from_pem(
    pem: PemPair,
    cert: &Path,
    key: &Path,
    source: String,
) -> Result<TlsIdentity, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| read_error(cert, source))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    };
    let not_after = not_after(leaf).map_err(|why| TlsError::Parse { path: cert.into(), why })?;
    let fingerprint = fingerprint(leaf);
    let private_key =
        PrivateKeyDer::from_pem_slice(&pem.key).map_err(|source| read_error(key, source))?;
    let settings = server_settings(chain, private_key).map_err(|source| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })?;
    let status = TlsStatus { fingerprint, source, not_after };
    Ok(TlsIdentity { settings, status, pem: Arc::new(pem) })
}

/// The identity an upgraded master was handed (`master::upgrade`): the PEM pair the previous
/// image had read, which the new one, no longer root, may not be able to read again.
pub fn from_handed_over(pem: PemPair, source: String) -> Result<TlsIdentity, TlsError> {
    let here = Path::new("(handed over by the previous image)");
    from_pem(pem, here, here, source)
}

fn read_error(path: &Path, source: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Read { path: path.to_path_buf(), source }
}

/// The rustls settings: ring (its per-process start-up is cheap, which a forked child per
/// connection needs), no client certificates, no resumption (nothing would be shared between
/// connections, each its own process). `with_single_cert` refuses a key that is not the
/// certificate's.
fn server_settings(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsSettings, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut settings = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    settings.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    settings.send_tls13_tickets = 0;
    Ok(Arc::new(settings))
}

/// SHA-256 of the certificate (DER) as `AB:CD:...`, as `openssl x509 -fingerprint -sha256`
/// prints it.
pub fn fingerprint(cert: &[u8]) -> String {
    let mut out = String::with_capacity(96);
    for (index, byte) in Sha256::digest(cert).iter().enumerate() {
        if index > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// The certificate's notAfter, in Unix seconds.
fn not_after(cert: &[u8]) -> Result<u64, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|err| err.to_string())?;
    Ok(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_follow_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(civil_date(1_796_083_200), (2026, 12, 1));
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_then_kept() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let made = self_signed(dir.path(), None).expect("made");
        assert!(made.status.source.starts_with("self-signed, made now in "));
        assert_eq!(made.status.fingerprint.len(), 32 * 3 - 1);
        let ten_years = 10 * 365 * 86_400;
        assert!(made.status.not_after >= crate::clock::unix_now() + ten_years - 86_400 * 2);
        let mode = std::fs::metadata(dir.path().join(SELF_SIGNED_KEY)).expect("key").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let kept = self_signed(dir.path(), None).expect("kept");
        assert_eq!(kept.status.fingerprint, made.status.fingerprint);
        assert!(kept.status.source.starts_with("self-signed, kept in "));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let one = tempfile::tempdir().expect("temporary directory");
        let other = tempfile::tempdir().expect("temporary directory");
        self_signed(one.path(), None).expect("made");
        self_signed(other.path(), None).expect("made");
        let cert = one.path().join(SELF_SIGNED_CERT);
        let key = other.path().join(SELF_SIGNED_KEY);
        let refused = from_files(&cert, &key, String::new()).expect_err("mismatched");
        assert!(matches!(refused, TlsError::Pair { .. }), "{refused}");
        let missing = from_files(&one.path().join("none.pem"), &key, String::new());
        assert!(matches!(missing, Err(TlsError::Read { .. })));
    }
}
