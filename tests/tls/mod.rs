//! TLS listeners, driven by real clients: a rustls client in the test, `openssl s_client`,
//! `socat`, `telnet-ssl` and `gnutls-cli`; the self-signed certificate, its fingerprint where
//! users and operators see it, the certificate swap on SIGHUP, and what a client that does
//! not speak TLS gets.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::util::{Client, Daemon, PATIENCE, Spawned};

/// The settings every test here starts from: one TLS listener on a loopback port.
const TLS_LISTENER: &str = "tls_listen = [\"127.0.0.1:0\"]\n";

/// The port of the daemon's TLS listener, from its log.
fn tls_port(daemon: &Daemon) -> u16 {
    let line = daemon.wait_for_log("listening for TLS on 127.0.0.1:");
    line.rsplit(':').next().and_then(|port| port.trim().parse().ok()).expect("a TLS port")
}

/// The self-signed certificate the daemon keeps in its state directory.
fn self_signed(daemon: &Daemon) -> PathBuf {
    daemon.runtime.path().join("state").join("tls-cert.pem")
}

/// The fingerprint the daemon logged (the `count`-th time).
fn logged_fingerprint(daemon: &Daemon, count: usize) -> String {
    let line = daemon.wait_for_log_count("TLS certificate SHA-256 ", count);
    let after = line.split("TLS certificate SHA-256 ").nth(1).expect("fingerprint");
    after.split(' ').next().expect("fingerprint").to_string()
}

/// A client over TLS, trusting `trusted`, reading lines as [`Client`] does.
struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
    seen: Vec<String>,
}

impl TlsClient {
    fn connect(port: u16, trusted: &[&Path]) -> TlsClient {
        let mut roots = RootCertStore::empty();
        for path in trusted {
            roots.add(CertificateDer::from_pem_file(path).expect("certificate")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("name");
        let tls = ClientConnection::new(Arc::new(config), name).expect("client");
        let socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
        TlsClient { reader: BufReader::new(StreamOwned::new(tls, socket)), seen: Vec::new() }
    }

    /// The certificate the server presented (after the first line arrived).
    fn server_certificate(&self) -> Vec<u8> {
        let tls = &self.reader.get_ref().conn;
        tls.peer_certificates().and_then(|chain| chain.first()).expect("a certificate").to_vec()
    }

    fn send(&mut self, line: &str) {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes()).expect("send");
        stream.flush().expect("flush");
    }

    /// The next line, telnet negotiation taken out.
    fn next_line(&mut self) -> String {
        let mut raw = Vec::new();
        match self.reader.read_until(b'\n', &mut raw) {
            Ok(n) if n > 0 => {}
            other => panic!("no line over TLS ({other:?}); seen:\n{}", self.seen.join("\n")),
        }
        while let Some(at) = raw.windows(2).position(|w| w[0] == 255 && w[1] >= 251) {
            raw.drain(at..(at + 3).min(raw.len()));
        }
        let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
        self.seen.push(line.clone());
        line
    }

    /// Reads until `expected`; returns the lines before it.
    fn expect(&mut self, expected: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let line = self.next_line();
            if line == expected {
                return before;
            }
            before.push(line);
        }
    }

    fn login(port: u16, trusted: &[&Path], nick: &str) -> TlsClient {
        let mut client = TlsClient::connect(port, trusted);
        client.expect("*** Please choose a nickname (1-24 letters, digits or _-[]{}|^`\\):");
        client.send(nick);
        client.expect(&format!("*** {nick} has joined lobby"));
        client
    }
}

#[test]
fn a_tls_client_chats_with_a_plain_one_and_both_see_the_same_lines() {
    let daemon = Daemon::start_with_config(TLS_LISTENER);
    let port = tls_port(&daemon);
    let fingerprint = logged_fingerprint(&daemon, 1);
    let cert = self_signed(&daemon);
    assert!(
        daemon
            .wait_for_log("TLS certificate SHA-256 ")
            .ends_with(&format!("(self-signed, made now in {})", cert.display())),
        "{:?}",
        daemon.log()
    );
    let mut plain = daemon.connect();
    let greeting = plain.expect_prefix("*** Please choose a nickname");
    let notice = format!(
        "*** For an encrypted connection use TLS on port {port} (certificate SHA-256 {fingerprint})"
    );
    assert!(plain.seen.contains(&notice), "{:?} lacks {notice}", plain.seen);
    plain.send("bob");
    plain.expect("*** bob has joined lobby");

    let mut tls = TlsClient::connect(port, &[&cert]);
    let tls_greeting = tls.expect(&greeting);
    assert!(!tls_greeting.iter().any(|line| line.contains("For an encrypted")), "{tls_greeting:?}");
    tls.send("alice");
    tls.expect("*** alice has joined lobby");
    plain.expect("*** alice has joined lobby");
    plain.send("hello from plain");
    tls.expect("<bob> hello from plain");
    tls.send("héllo from TLS");
    plain.expect("<alice> héllo from TLS");

    tls.send("/who");
    tls.expect("*** In lobby (2): alice (tls), bob");
    plain.send("/whois alice");
    let whois = plain.expect_prefix("*** alice is in lobby, connected for ");
    assert!(whois.ends_with(", over TLS"), "{whois}");
    plain.send("/whois bob");
    let whois = plain.expect_prefix("*** bob is in lobby");
    assert!(!whois.contains("TLS"), "{whois}");

    let who = String::from_utf8(daemon.chatctl(&["who"]).stdout).expect("utf-8");
    let header = who.lines().next().expect("header");
    assert!(header.contains("TLS") && header.contains("ACCOUNT"), "{who}");
    let row = |nick: &str| who.lines().find(|l| l.starts_with(nick)).expect("row").to_string();
    assert!(row("alice").contains(" yes "), "{who}");
    assert!(!row("bob").contains(" yes "), "{who}");
    let status = String::from_utf8(daemon.chatctl(&["status"]).stdout).expect("utf-8");
    let tls_row = status.lines().find(|line| line.starts_with("tls ")).expect("a tls row");
    assert!(tls_row.contains(&fingerprint) && tls_row.contains(", expires 20"), "{status}");
}

#[test]
fn the_self_signed_certificate_is_kept_across_a_restart() {
    let first = Daemon::start_with_config(TLS_LISTENER);
    let made = logged_fingerprint(&first, 1);
    let key = first.runtime.path().join("state").join("tls-key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key is the daemon's alone");
    let runtime = Arc::clone(&first.runtime);
    drop(first);
    let second = Daemon::start_on(runtime, TLS_LISTENER);
    assert_eq!(logged_fingerprint(&second, 1), made);
    let line = second.wait_for_log("TLS certificate SHA-256 ");
    assert!(line.contains("(self-signed, kept in "), "{line}");
    let mut client = TlsClient::login(tls_port(&second), &[&self_signed(&second)], "alice");
    client.send("/who");
    client.expect("*** In lobby (1): alice (tls)");
}

/// A certificate for `localhost` and its key, made with rcgen, written as `NAME.pem` and
/// `NAME.key` in `dir` (readable by the daemon's user, which re-reads them on reload).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).expect("write certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).expect("certificate").to_vec()
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_keeps_it_when_the_pair_is_broken() {
    let dir = crate::util::runtime_dir();
    let (a_cert, a_key) = certificate(dir.path(), "a");
    let (b_cert, b_key) = certificate(dir.path(), "b");
    let (live_cert, live_key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&a_cert, &live_cert).expect("copy");
    std::fs::copy(&a_key, &live_key).expect("copy");
    let config = format!(
        "{TLS_LISTENER}tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        live_cert.display(),
        live_key.display()
    );
    let daemon = Daemon::start_with_config(&config);
    let port = tls_port(&daemon);
    let line = daemon.wait_for_log("TLS certificate SHA-256 ");
    assert!(line.ends_with(&format!("({})", live_cert.display())), "{line}");
    let trusted: [&Path; 2] = [&a_cert, &b_cert];
    let mut old = TlsClient::login(port, &trusted, "alice");
    assert_eq!(old.server_certificate(), der(&a_cert));

    std::fs::copy(&b_cert, &live_cert).expect("copy");
    std::fs::copy(&b_key, &live_key).expect("copy");
    daemon.signal(Signal::SIGHUP);
    logged_fingerprint(&daemon, 2);
    let mut new = TlsClient::login(port, &trusted, "bob");
    assert_eq!(new.server_certificate(), der(&b_cert), "a new connection gets B");
    old.expect("*** bob has joined lobby");
    old.send("still here");
    new.expect("<alice> still here");
    let serial = serial_of(&b_cert);
    assert!(serial.starts_with("serial="), "{serial}");
    assert_eq!(serial_seen_by_openssl(port), serial);

    // A's key beside B's certificate: refused, B stays.
    std::fs::copy(&a_key, &live_key).expect("copy");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log(": error: TLS certificate not changed: ");
    let after = TlsClient::login(port, &trusted, "carol");
    assert_eq!(after.server_certificate(), der(&b_cert));
    assert_eq!(daemon.log().iter().filter(|l| l.contains("TLS certificate SHA-256")).count(), 2);
}

/// The serial number of the certificate `openssl s_client` is shown on `port`.
fn serial_seen_by_openssl(port: u16) -> String {
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&shown.stdout).trim().to_string()
}

fn serial_of(cert: &Path) -> String {
    let shown = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&shown.stdout).trim().to_string()
}

#[test]
fn plain_text_on_the_tls_port_fails_the_handshake_and_the_daemon_carries_on() {
    let daemon = Daemon::start_with_config(TLS_LISTENER);
    let port = tls_port(&daemon);
    let mut wrong = Client::connect(port);
    wrong.send("alice");
    assert!(wrong.is_closed(), "the connection is closed");
    let failed = daemon.wait_for_log("TLS handshake with 127.0.0.1:");
    assert!(failed.contains(" failed: "), "{failed}");
    let mut alice = daemon.login("alice");
    let mut bob = TlsClient::login(port, &[&self_signed(&daemon)], "bob");
    alice.expect("*** bob has joined lobby");
    bob.send("fine");
    alice.expect("<bob> fine");
    let errors: Vec<_> = daemon.log().into_iter().filter(|l| l.contains(": error: ")).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// A TLS client program, started with pipes, logged in as `carol` through its standard input
/// and output, then made to send `line`. Returns the running program and what it printed up
/// to its join.
fn log_in_through(command: &mut Command, line: &str) -> (std::process::Child, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    for (wanted, answer) in [("Please choose a nickname", "carol"), ("carol has joined", line)] {
        loop {
            let mut text = String::new();
            match stdout.read_line(&mut text) {
                Ok(n) if n > 0 => printed.push_str(&text),
                _ => panic!("{command:?} ended before {wanted:?}; printed:\n{printed}"),
            }
            if text.contains(wanted) {
                break;
            }
        }
        writeln!(stdin, "{answer}").expect("answer");
        stdin.flush().expect("flush");
    }
    // The end of their input ends some of these clients before the line is through: the
    // pipe's write end stays open (in the child's stdin handle) until the child is killed.
    child.stdin = Some(stdin);
    (child, printed)
}

#[test]
fn openssl_socat_telnet_ssl_and_gnutls_cli_each_exchange_a_line() {
    let daemon = Daemon::start_with_config(TLS_LISTENER);
    let port = tls_port(&daemon);
    let address = format!("127.0.0.1:{port}");
    let port_text = port.to_string();
    let mut watcher = TlsClient::login(port, &[&self_signed(&daemon)], "watcher");
    let clients: Vec<(&str, Command)> = vec![
        ("openssl", {
            let mut c = Command::new("openssl");
            c.args(["s_client", "-quiet", "-connect", &address]);
            c
        }),
        ("socat", {
            let mut c = Command::new("socat");
            c.args(["-", &format!("OPENSSL:{address},verify=0")]);
            c
        }),
        ("telnet-ssl", {
            let mut c = Command::new("telnet-ssl");
            c.args(["-z", "ssl", "-z", "verify=0", "127.0.0.1", &port_text]);
            c
        }),
        ("gnutls-cli", {
            let mut c = Command::new("gnutls-cli");
            c.args(["--insecure", "-p", &port_text, "127.0.0.1"]);
            c
        }),
    ];
    for (name, mut command) in clients {
        let (mut child, printed) = log_in_through(&mut command, &format!("hello from {name}"));
        assert!(printed.contains("Welcome to chatd"), "{name}: {printed}");
        watcher.expect(&format!("<carol> hello from {name}"));
        let _ = child.kill();
        let _ = child.wait();
        watcher.expect("*** carol has left (connection lost)");
    }
}

/// `chatd broker` in `dir` (sockets in `dir/run`, settings in `config`), ready, and
/// systemd-socket-activate starting `chatd inetd --tls` on `port` for each connection.
fn inetd_over_tls(dir: &Path, config: &Path, port: u16) -> (Spawned, Spawned) {
    let common = |command: &mut Command| {
        command.args(["--log", "stderr", "--runtime-dir"]).arg(dir.join("run"));
        command.arg("--config").arg(config);
    };
    let mut broker = Command::new(CHATD);
    broker.arg("broker");
    common(&mut broker);
    let broker = Spawned::spawn(&mut broker);
    broker.wait_for_log("broker ready");
    let mut activator = Command::new("systemd-socket-activate");
    activator.args(["-l", &format!("127.0.0.1:{port}"), "--inetd", "-a", CHATD, "inetd", "--tls"]);
    common(&mut activator);
    let activator = Spawned::spawn(&mut activator);
    activator.wait_for_log("Listening on");
    (broker, activator)
}

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

#[test]
fn inetd_sessions_speak_tls_with_the_configured_certificate_and_refuse_without_one() {
    let dir = crate::util::runtime_dir();
    let (cert, key) = certificate(dir.path(), "inetd");
    let config = dir.path().join("chatd.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            state.display(),
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let port = crate::util::free_port();
    let (_broker, activator) = inetd_over_tls(dir.path(), &config, port);
    let mut alice = TlsClient::login(port, &[&cert], "alice");
    assert_eq!(alice.server_certificate(), der(&cert));
    let mut bob = TlsClient::login(port, &[&cert], "bob");
    alice.expect("*** bob has joined lobby");
    bob.send("hello through inetd over TLS");
    alice.expect("<bob> hello through inetd over TLS");
    alice.send("/who");
    alice.expect("*** In lobby (2): alice (tls), bob (tls)");
    drop(activator);

    // No certificate configured and none kept in state_dir: refused, and said why.
    let state = dir.path().join("second-state");
    std::fs::write(&config, format!("state_dir = \"{}\"\n", state.display())).expect("config");
    let port = crate::util::free_port();
    let (_broker_two, activator) = inetd_over_tls(&dir.path().join("second"), &config, port);
    let mut refused = Client::connect(port);
    assert!(refused.is_closed());
    activator.wait_for_log("chatd inetd --tls needs tls_cert and tls_key, or the self-signed");
}
