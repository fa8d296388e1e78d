//! Compatibility with earlier versions.
//!
//! Sessions forked before an in-place upgrade keep running their old code, so this version's
//! broker must serve the previous session protocol (`proto::OLDEST_SESSION_PROTOCOL`) as well
//! as its own. The old sessions here are real: chatd built at the commit named in `PREVIOUS`
//! (by `build-previous.sh`, which `.ci/run` calls before the tests and [`previous_chatd`] calls
//! when it has not been). That binary cannot upgrade itself in place, so its sessions come
//! from an old daemon whose master is killed and replaced by this version's, which replaces
//! the old broker with its own.
//!
//! A package upgrade runs this version's `chatctl upgrade` against the last release's running
//! daemon (the commit named in `RELEASE`, built the same way), whose control protocol is older.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use chatd::proto::control::CONTROL_VERSION;
use chatd::proto::{Event, Failure, Greeting, OLDEST_SESSION_PROTOCOL, PROTOCOL_VERSION, codec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{
    Client, Daemon, PATIENCE, login_seen_by, process_state, processes_in_group, runtime_dir,
    wait_until,
};

/// What a session prints when the broker it talks to was replaced and it resumed.
const RESUMED: &str = "*** The chat service restarted; you are still in lobby.";

/// The previous version's chatd (tests/compat/PREVIOUS), built once per test run.
fn previous_chatd() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| built("PREVIOUS"))
}

/// The last release's chatd (tests/compat/RELEASE), built once per test run.
fn release_chatd() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| built("RELEASE"))
}

/// chatd as of the commit the file `name` of tests/compat names (the script reuses a build of
/// the same commit at once, and makes a second caller wait for the first one's build).
fn built(name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/build-previous.sh");
    let output = Command::new(script)
        .arg(name)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {script} {name}: {err}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Never skipped: without the earlier version, nothing here is tested.
    assert!(
        output.status.success(),
        "{script} could not build the {name} chatd ({}):\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let binary = PathBuf::from(stdout.trim());
    assert!(binary.is_file(), "{script} printed {stdout:?}, which is no file:\n{stderr}");
    binary
}

/// The binary a process runs.
fn program_of(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|err| panic!("/proc/{pid}/exe: {err}"))
}

/// Asserts that the session serving `client` on `daemon` runs `binary`.
fn served_by(daemon: &Daemon, client: &Client, binary: &Path) {
    let holders = daemon.holders_of(client);
    assert_eq!(holders.len(), 1, "one session holds the connection: {holders:?}");
    let binary = binary.canonicalize().expect("the binary's path");
    assert_eq!(program_of(holders[0]), binary, "the session (pid {}) runs", holders[0]);
}

/// A client in the scenario and what it said.
struct Chatter {
    nick: &'static str,
    client: Client,
    said: u32,
}

/// Every chat line said, as its listeners see it, and who was in the room to see it.
#[derive(Default)]
struct Transcript {
    lines: Vec<(String, Vec<&'static str>)>,
}

impl Transcript {
    /// Everyone says two numbered lines; each waits until it has seen everyone's (its own
    /// included), in any order, as sessions reach the broker in any order. A chatter reads no
    /// further than that: the next wait finds everything after.
    fn round(&mut self, chatters: &mut [&mut Chatter]) {
        let present: Vec<&'static str> = chatters.iter().map(|c| c.nick).collect();
        let mut expected = Vec::new();
        for chatter in chatters.iter_mut() {
            for _ in 0..2 {
                chatter.said += 1;
                let text = format!("line {} of {}", chatter.said, chatter.nick);
                chatter.client.send(&text);
                expected.push(format!("<{}> {text}", chatter.nick));
            }
        }
        let wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
        for chatter in chatters.iter_mut() {
            chatter.client.expect_all(&wanted);
        }
        self.lines.extend(expected.into_iter().map(|line| (line, present.clone())));
    }

    /// Asserts that each chatter saw every line said while it was there exactly once, and no
    /// line twice.
    fn assert_once_each(&self, chatters: &[&Chatter]) {
        for chatter in chatters {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for line in &chatter.client.seen {
                *counts.entry(line.as_str()).or_default() += 1;
            }
            for (line, present) in &self.lines {
                let wanted = usize::from(present.contains(&chatter.nick));
                let got = counts.get(line.as_str()).copied().unwrap_or(0);
                assert_eq!(
                    got,
                    wanted,
                    "{} saw {line:?} {got} times; all it saw:\n{}",
                    chatter.nick,
                    chatter.client.seen.join("\n")
                );
            }
        }
    }
}

#[test]
fn sessions_of_the_previous_version_are_served_by_this_versions_brokers() {
    let previous = previous_chatd();
    let ours = Path::new(env!("CARGO_BIN_EXE_chatd"));
    let runtime = Arc::new(runtime_dir());
    let mut old = Daemon::start_program(previous, Arc::clone(&runtime), "", "127.0.0.1:0");
    let listen = format!("127.0.0.1:{}", old.port);
    let [alice, bob, carol] = old.room(["alice", "bob", "carol"]);
    for client in [&alice, &bob, &carol] {
        served_by(&old, client, previous);
    }
    let [mut alice, mut bob, mut carol] = [("alice", alice), ("bob", bob), ("carol", carol)]
        .map(|(nick, client)| Chatter { nick, client, said: 0 });
    let mut transcript = Transcript::default();
    transcript.round(&mut [&mut alice, &mut bob, &mut carol]);

    // The old master dies; its broker and sessions carry on without it.
    let old_broker = old.broker_pid(1);
    old.signal(Signal::SIGKILL);
    old.wait_exit();
    transcript.round(&mut [&mut alice, &mut bob, &mut carol]);

    // This version's master on the same runtime directory and address: the orphaned broker
    // speaks another protocol on the master's link, so it is replaced by ours, and the old
    // sessions resume with it, speaking their own protocol.
    let mut new = Daemon::start_program(ours, Arc::clone(&runtime), "", &listen);
    assert_eq!(new.port, old.port);
    new.wait_for_log(&format!(
        "the adopted broker (pid {old_broker}) speaks another protocol; replacing it with this version's"
    ));
    let new_broker = new.broker_pid(1);
    for chatter in [&mut alice, &mut bob, &mut carol] {
        chatter.client.expect(RESUMED);
    }
    wait_until("the old broker is gone", || process_state(old_broker).is_none());
    transcript.round(&mut [&mut alice, &mut bob, &mut carol]);

    // A session of this version, forked by the new master, and the old ones chat both ways.
    let dave = {
        let mut old_ones = [&mut alice.client, &mut bob.client, &mut carol.client];
        login_seen_by(new.port, "dave", &mut old_ones)
    };
    served_by(&new, &dave, ours);
    for chatter in [&alice, &bob, &carol] {
        served_by(&old, &chatter.client, previous);
    }
    let mut dave = Chatter { nick: "dave", client: dave, said: 0 };
    transcript.round(&mut [&mut alice, &mut bob, &mut carol, &mut dave]);

    // Our broker dies: the master starts another, and every session resumes with it.
    kill(Pid::from_raw(new_broker), Signal::SIGKILL).expect("kill the new broker");
    new.broker_pid(2);
    for chatter in [&mut alice, &mut bob, &mut carol, &mut dave] {
        chatter.client.expect(RESUMED);
    }
    transcript.round(&mut [&mut alice, &mut bob, &mut carol, &mut dave]);

    // Stopping the new master stops everyone, the old master's orphans included.
    new.signal(Signal::SIGTERM);
    for chatter in [&mut alice, &mut bob, &mut carol, &mut dave] {
        let rest = chatter.client.expect_closed();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("*** The server is shutting down. Goodbye."),
            "{}: {rest:?}",
            chatter.nick
        );
    }
    assert!(new.wait_exit().success());
    let (old_group, new_group) = (old.pid(), new.pid());
    wait_until("every process is gone and reaped", || {
        processes_in_group(old_group).is_empty() && processes_in_group(new_group).is_empty()
    });

    // Nobody was disconnected before the end: the old clients resumed twice, dave once, and
    // nothing else interrupted them.
    for (chatter, resumed) in [(&alice, 2), (&bob, 2), (&carol, 2), (&dave, 1)] {
        let seen = &chatter.client.seen;
        let notices = seen.iter().filter(|line| *line == RESUMED).count();
        assert_eq!(
            notices,
            resumed,
            "{}'s resumptions; it saw:\n{}",
            chatter.nick,
            seen.join("\n")
        );
    }
    transcript.assert_once_each(&[&alice, &bob, &carol, &dave]);
}

/// What a package upgrade does: this version's chatctl, against the last release's running
/// daemon, whose control protocol is older. It cannot read that daemon's `status`, but asks it
/// to upgrade in that daemon's protocol, and follows the upgrade until a broker answers in its
/// own; nobody is disconnected.
#[test]
fn this_chatctl_upgrades_the_last_releases_daemon_in_place_across_control_protocols() {
    let release = release_chatd();
    let ours = Path::new(env!("CARGO_BIN_EXE_chatd"));
    let daemon = Daemon::start_program(release, Arc::new(runtime_dir()), "", "127.0.0.1:0");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    let master = daemon.pid();

    let status = daemon.chatctl(&["status"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(status.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!("chatd speaks control protocol 5, this chatctl {CONTROL_VERSION}")),
        "the release speaks an older control protocol: {said}"
    );

    let upgrade = daemon.chatctl(&["upgrade", "--binary", ours.to_str().expect("a path")]);
    let said = String::from_utf8_lossy(&upgrade.stdout);
    assert!(upgrade.status.success(), "{said}{}", String::from_utf8_lossy(&upgrade.stderr));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        said,
        format!(
            "upgraded: chatd {version}, generation 2, master pid {master}; 2 session(s) run \
             older code until their clients leave\n"
        )
    );
    daemon.wait_for_log("broker replaced by a new one; exiting without disconnecting anyone");

    // This chatctl reads the status now: the same master, this version's code.
    let status = crate::control::json(&daemon, &["status"]);
    assert_eq!(status["master"]["pid"], master, "{status}");
    assert_eq!(status["master"]["generation"], 2, "{status}");
    assert_eq!(status["version"], version, "{status}");
    assert_eq!(status["protocol"], PROTOCOL_VERSION, "{status}");

    // Nobody was disconnected: the release's sessions chat on with this version's broker.
    for client in [&alice, &bob] {
        served_by(&daemon, client, release);
    }
    alice.send("still here after the upgrade");
    bob.expect("<alice> still here after the upgrade");
    bob.send("me too");
    alice.expect("<bob> me too");
    let mutes = crate::control::ok(daemon.chatctl(&["mutes"]));
    assert_eq!(mutes, "no mutes\n", "this version's requests are served");
}

/// The first frame a session of protocol `version` sends, as every version since 6 encodes
/// it (`proto::codec` fixes these bytes): variant 0, the version, the peer, the time.
fn hello_bytes(version: u8) -> Vec<u8> {
    let mut payload = vec![0, version, 4];
    payload.extend_from_slice(b"test");
    payload.push(0); // connected_at 0
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

/// Says `hello` on a connection of its own to `broker.sock` and returns the broker's answer.
fn broker_answers(daemon: &Daemon, hello: &[u8]) -> Event {
    use std::io::{Read, Write};
    let socket = daemon.runtime_dir().join("broker.sock");
    let mut stream =
        std::os::unix::net::UnixStream::connect(&socket).expect("connect to broker.sock");
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.write_all(hello).expect("say hello");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((event, _)) = codec::decode_frame::<Event>(&buf).expect("a frame") {
            return event;
        }
        let n = stream.read(&mut chunk).expect("the broker's answer");
        assert!(n > 0, "the broker closed the connection without answering; read {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn the_broker_welcomes_each_session_in_its_own_protocol_and_refuses_the_rest() {
    assert_eq!((OLDEST_SESSION_PROTOCOL, PROTOCOL_VERSION), (9, 14), "the cases below");
    let daemon = Daemon::start();
    // The library's encoding of a hello is the one these bytes fix.
    let hello = chatd::proto::SessionHello { version: 9, peer: "test".into(), connected_at: 0 };
    assert_eq!(codec::frame(&Greeting::Session(hello)).expect("encode"), hello_bytes(9));
    for version in [9, 10, 11, 12, 13, 14] {
        match broker_answers(&daemon, &hello_bytes(version)) {
            Event::Welcome { version: welcomed, .. } => assert_eq!(welcomed, u32::from(version)),
            other => panic!("a hello of protocol {version} was answered {other:?}"),
        }
    }
    for version in [8, 15] {
        let answer = broker_answers(&daemon, &hello_bytes(version));
        let refusal =
            Event::Failed(Failure::VersionMismatch { broker: 14, session: u32::from(version) });
        assert_eq!(answer, refusal, "the answer to a hello of protocol {version}");
        daemon.wait_for_log(&format!("protocol version {version}, broker serves 9-14"));
    }
}

#[test]
fn build_previous_fails_saying_why_without_the_commit() {
    // A copy of the script outside any repository stands for a tree without the history.
    let tree = tempfile::tempdir().expect("temp dir");
    let compat = tree.path().join("tests/compat");
    std::fs::create_dir_all(&compat).expect("mkdir");
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat");
    for file in ["build-previous.sh", "PREVIOUS"] {
        std::fs::copy(format!("{here}/{file}"), compat.join(file)).expect("copy");
    }
    let output = Command::new(compat.join("build-previous.sh"))
        .env("GIT_CEILING_DIRECTORIES", tree.path().parent().expect("a parent"))
        .output()
        .expect("run the script");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(output.stdout.is_empty(), "no path printed: {:?}", output.stdout);
    assert!(stderr.contains("(tests/compat/PREVIOUS) is not in the history of"), "{stderr}");
    assert!(stderr.contains("use a git clone with its full history"), "{stderr}");
}
