//! In-place upgrade (#20): `chatctl upgrade` and SIGUSR2 execute a new binary in place of the
//! master (same pid) and then replace the broker, while clients chat throughout; and what
//! happens when the new binary is missing, fails its pre-flight, or dies right after the exec.
//!
//! The binaries: the one under test, a byte-identical copy at another path, and
//! chatd-next (tests/bin/chatd_next.rs: another version string), each copied into the test's own directory
//! under the name `chatd` (chatd knows its processes by that name).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::control::{fails, json, ok, wait_for_status};
use crate::reliability::NO_FLOOD_CONTROL;
use crate::util::talkers::{Talker, crowd};
use crate::util::{Client, Daemon, login_on, parent_of, process_state, runtime_dir, wait_until};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NEXT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+next");
const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// The crowd of the load tests, all from 127.0.0.1; the address's quota leaves room for two
/// more, so that the one after them shows whether the upgraded master still counts the crowd.
const CROWD: usize = 50;
const QUOTA_LEFT: usize = 2;
const LIMIT_REFUSAL: &str = "*** Too many connections from your address; please try again later.";

/// Room for the crowd and two more per address; the connections made during an upgrade (from
/// 127.0.0.2) may all wait at the nickname prompt at once; refusals are no trips.
fn load_settings() -> String {
    format!(
        "{NO_FLOOD_CONTROL}max_clients_per_ip = {}\nmax_startups_per_ip = 20\n\
         max_startups = \"100:30:200\"\npenalty_trips = 1000\n",
        CROWD + QUOTA_LEFT
    )
}

/// The test's own directory of binaries to upgrade to, which the daemon (as nobody) can reach.
struct Binaries {
    dir: tempfile::TempDir,
}

impl Binaries {
    fn new() -> Binaries {
        Binaries { dir: runtime_dir() }
    }

    /// `DIR/SUB/chatd`, its directory made.
    fn path(&self, sub: &str) -> PathBuf {
        let dir = self.dir.path().join(sub);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir.join("chatd")
    }

    /// A byte-identical copy of the binary under test.
    fn copy(&self) -> PathBuf {
        let path = self.path("copy");
        std::fs::copy(CHATD, &path).expect("copy chatd");
        path
    }

    /// chatd-next (tests/bin/chatd_next.rs), whose version is `NEXT_VERSION`.
    fn next(&self) -> PathBuf {
        let path = self.path("next");
        std::fs::copy(env!("CARGO_BIN_EXE_chatd-next"), &path).expect("copy chatd-next");
        path
    }

    /// A shell script named chatd.
    fn script(&self, sub: &str, body: &str) -> PathBuf {
        let path = self.path(sub);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write the script");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&path, mode).expect("chmod the script");
        path
    }
}

/// Clients chatting in rooms on threads of their own ([`Talker`]) until [`Chat::finish`].
struct Chat {
    talkers: Vec<(Talker, String)>,
    stop: Arc<AtomicBool>,
}

impl Chat {
    /// Logs in `total` clients over `rooms` (see [`crowd`]), then starts them talking, each a
    /// line every `pace`.
    fn start(daemon: &Daemon, total: usize, rooms: &[&str], pace: Duration) -> Chat {
        let stop = Arc::new(AtomicBool::new(false));
        let talkers = crowd(daemon.port, total, rooms)
            .into_iter()
            .map(|(client, nick, room)| {
                (Talker::start(client, &nick, pace, Arc::clone(&stop)), room.to_string())
            })
            .collect();
        let chat = Chat { talkers, stop };
        // Everyone's first line comes after every notice of the crowd's logins and joins, which
        // are not what the test listens for.
        wait_until("everyone heard the first line of everyone in their room", || {
            chat.talkers.iter().all(|(listener, room)| {
                members(&chat.talkers, room).all(|(speaker, _)| {
                    listener.received.lock().expect("lock").contains_key(&speaker.nick)
                })
            })
        });
        for (talker, _) in &chat.talkers {
            talker.notices.lock().expect("lock").clear();
        }
        chat
    }

    /// Stops the talk, waits until everyone heard the last line of everyone in their room, and
    /// asserts that every line arrived once, in order, at every member of its room; that no
    /// connection closed; and that nobody heard a notice but the service's restart and
    /// `also` (nobody left, nobody joined).
    fn finish(self, also: &[String]) {
        self.stop.store(true, Ordering::Relaxed);
        let talkers = &self.talkers;
        wait_until("everyone heard the last line of everyone in their room", || {
            talkers.iter().all(|(listener, room)| {
                members(talkers, room).all(|(speaker, _)| listener.heard_done_from(&speaker.nick))
            })
        });
        for (listener, room) in talkers {
            assert!(!listener.closed.load(Ordering::Relaxed), "{} was disconnected", listener.nick);
            for (speaker, _) in members(talkers, room) {
                listener.assert_heard_every_line_of(speaker);
            }
            let restarted = format!("*** The chat service restarted; you are still in {room}.");
            let notices = listener.notices.lock().expect("lock");
            let unexpected: Vec<&String> =
                notices.iter().filter(|n| **n != restarted && !also.contains(n)).collect();
            assert!(unexpected.is_empty(), "{} heard {unexpected:?}", listener.nick);
        }
        for (talker, _) in self.talkers {
            let _ = talker.writer.join();
            // The reader ends when the daemon closes the connection.
            drop(talker.reader);
        }
    }
}

/// The talkers in `room`.
fn members<'a>(
    talkers: &'a [(Talker, String)],
    room: &'a str,
) -> impl Iterator<Item = &'a (Talker, String)> {
    talkers.iter().filter(move |(_, r)| r == room)
}

/// The master's children that are zombies (died, not reaped).
fn zombie_children(master: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_of(pid) == Some(master) && process_state(pid) == Some('Z'))
        .collect()
}

/// Asserts that the process is alive (not gone, not a zombie).
fn assert_alive(pid: i32, what: &str) {
    let state = process_state(pid);
    assert!(!matches!(state, None | Some('Z')), "{what} (pid {pid}) is not running: {state:?}");
}

/// A chatd under load: the crowd chatting, plus the clients connected during upgrades.
struct Load {
    daemon: Daemon,
    chat: Chat,
    /// Connected (from 127.0.0.2) while an upgrade ran, then logged in; they stay.
    window: Vec<Client>,
}

impl Load {
    fn start() -> Load {
        let daemon = Daemon::start_with_config(&load_settings());
        let chat = Chat::start(&daemon, CROWD, &["rust", "tea", "dev"], Duration::from_millis(100));
        Load { daemon, chat, window: Vec::new() }
    }

    /// The master's figures, once they count every client the test holds.
    fn settled_status(&self) -> Value {
        let connections = (CROWD + self.window.len()) as u64;
        wait_for_status(&self.daemon, &format!("the master counts {connections} clients"), |s| {
            s["master"]["connections"] == connections
        })
    }

    /// What a client from 127.0.0.1 is told once the crowd and two more fill the address's
    /// quota. The two then leave, and the master counts them gone.
    fn refusal_beyond_the_limit(&self) -> String {
        let mut two: Vec<Client> = (0..QUOTA_LEFT).map(|_| self.daemon.connect()).collect();
        for client in &mut two {
            client.expect_prefix("*** Please choose a nickname");
        }
        let mut third = self.daemon.connect();
        let line = third.next_line().expect("the server says why");
        assert!(third.is_closed(), "the refused client was not disconnected");
        drop(two);
        self.settled_status();
        line
    }

    /// `chatctl upgrade [--binary binary]` under load, checked from outside: the master keeps
    /// its pid; connections made while it runs are served; a session killed during the exec is
    /// reaped; the new code shows in `chatctl status`; the address's quota still holds.
    fn upgrade(&mut self, binary: Option<&Path>, version: &str) {
        let daemon = &self.daemon;
        let master = daemon.pid();
        let before = self.settled_status();
        assert_eq!(before["master"]["pid"], master, "chatctl status shows the master's pid");
        let generation = before["master"]["generation"].as_u64().expect("a generation");
        let next = generation + 1;
        let upgrades = generation as usize;
        let old_broker = daemon.broker_pid(upgrades);
        let refusal = self.refusal_beyond_the_limit();
        assert_eq!(refusal, LIMIT_REFUSAL, "the crowd and two more fill the quota");

        let mut victim = login_on(Client::connect_from(daemon.port, [127, 0, 0, 3]), "victim");
        let victim_session = daemon.holders_of(&victim);
        assert_eq!(victim_session.len(), 1, "one process serves the victim");

        let mut args = vec!["upgrade".to_string()];
        if let Some(binary) = binary {
            args.extend(["--binary".to_string(), binary.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let chatctl = daemon
            .chatctl_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chatctl upgrade");
        // New connections at each step of the upgrade: they wait in the listen backlog.
        let mut window: Vec<Client> = Vec::new();
        let mut connect = || window.push(Client::connect_from(daemon.port, [127, 0, 0, 2]));
        connect();
        daemon.wait_for_log_count("upgrading to chatd ", upgrades);
        kill(Pid::from_raw(victim_session[0]), Signal::SIGKILL).expect("kill the victim");
        connect();
        let upgraded = daemon.wait_for_log_count("upgraded to chatd ", upgrades);
        connect();
        let replacing = daemon.wait_for_log_count("replacing the broker (pid ", upgrades);
        connect();
        let new_broker = daemon.broker_pid(upgrades + 1);
        connect();
        let output: Output = chatctl.wait_with_output().expect("chatctl upgrade");
        let said = ok(output);
        let log = || daemon.log().join("\n");

        // Its answer, and the log.
        let prefix = format!(
            "upgraded: chatd {version}, generation {next}, master pid {master} (unchanged); "
        );
        let suffix = " session(s) run older code until their clients leave\n";
        assert!(said.starts_with(&prefix) && said.ends_with(suffix), "chatctl said {said:?}");
        let older_said: u64 =
            said[prefix.len()..said.len() - suffix.len()].parse().expect("a count");
        assert!(older_said >= CROWD as u64, "chatctl said {said:?}");
        assert!(
            upgraded.contains(&format!(
                "upgraded to chatd {version} (generation {next}), master pid {master}; "
            )),
            "{upgraded}"
        );
        assert!(
            replacing
                .contains(&format!("replacing the broker (pid {old_broker}) with this version's")),
            "{replacing}"
        );
        daemon.wait_for_log_count(
            "broker replaced by a new one; exiting without disconnecting anyone",
            upgrades,
        );
        assert_ne!(new_broker, old_broker);
        wait_until("the old broker is reaped", || process_state(old_broker).is_none());

        // The same master, which reaped the session killed during the exec.
        assert_eq!(daemon.pid(), master);
        assert_alive(master, "the master");
        wait_until("the killed session is reaped", || process_state(victim_session[0]).is_none());
        assert!(victim.is_closed());
        wait_until("no zombie child of the master", || zombie_children(master).is_empty());

        // Everyone connected during the upgrade is served.
        for (n, client) in window.into_iter().enumerate() {
            self.window.push(login_on(client, &format!("w{next}x{n}")));
        }

        // chatctl status: the new version, the generation, the sessions of older code.
        let status = wait_for_status(daemon, "the new code and broker in the status", |s| {
            s["master"]["generation"] == next
                && s["master"]["version"] == version
                && s["version"] == version
                && s["broker_pid"] == new_broker
                && s["master"]["connections"] == (CROWD + self.window.len()) as u64
        });
        assert_eq!(status["master"]["pid"], master, "{status}\n{}", log());
        assert_eq!(status["master"]["binary"], CHATD, "the default binary stays the first one");
        assert_eq!(status["master"]["upgrade_failure"], Value::Null);
        let by_code = status["master"]["sessions_by_code"].as_array().cloned().unwrap_or_default();
        let sessions = |filter: &dyn Fn(u64) -> bool| -> u64 {
            by_code
                .iter()
                .filter(|row| row["generation"].as_u64().is_some_and(filter))
                .filter_map(|row| row["sessions"].as_u64())
                .sum()
        };
        assert_eq!(sessions(&|_| true), (CROWD + self.window.len()) as u64, "{status}");
        let older = sessions(&|g| g < next);
        assert!(sessions(&|g| g == 1) >= CROWD as u64, "the crowd runs generation 1: {status}");
        let human = ok(daemon.chatctl(&["status"]));
        let row = |label: &str| {
            human
                .lines()
                .find_map(|line| line.strip_prefix(label).filter(|rest| rest.starts_with(' ')))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no row {label:?} in\n{human}"))
                .to_string()
        };
        assert_eq!(
            row("chatd"),
            format!("{version} (protocol {})", chatd::proto::PROTOCOL_VERSION)
        );
        let master_row = row("master");
        assert!(
            master_row.starts_with(&format!("pid {master}, up "))
                && master_row
                    .contains(&format!(", generation {next} (chatd {version}), upgraded ")),
            "{master_row}"
        );
        assert_eq!(row("binary"), CHATD);
        let older_row = row("older code");
        assert!(older_row.starts_with(&format!("{older} session(s) (")), "{older_row}\n{status}");
        for code in
            by_code.iter().filter(|row| row["generation"].as_u64().is_some_and(|g| g < next))
        {
            let part = format!(
                "generation {}, chatd {}: {}",
                code["generation"],
                code["version"].as_str().unwrap_or_default(),
                code["sessions"]
            );
            assert!(older_row.contains(&part), "{part:?} in {older_row}");
        }

        // The quota still counts the crowd, forked by the older code.
        assert_eq!(self.refusal_beyond_the_limit(), refusal, "after the upgrade");
    }
}

#[test]
fn an_upgrade_to_the_same_binary_disconnects_nobody_and_loses_no_line() {
    let mut load = Load::start();
    load.upgrade(None, VERSION);
    load.chat.finish(&[]);
}

#[test]
fn an_upgrade_to_a_copy_at_another_path_disconnects_nobody_and_loses_no_line() {
    let binaries = Binaries::new();
    let copy = binaries.copy();
    let mut load = Load::start();
    load.upgrade(Some(&copy), VERSION);
    assert!(
        load.daemon
            .log()
            .iter()
            .any(|l| l.contains(&format!("upgrade requested (binary {})", copy.display()))),
        "the request names the copy"
    );
    load.chat.finish(&[]);
}

#[test]
fn an_upgrade_to_another_version_and_back_counts_generations_and_older_code() {
    let binaries = Binaries::new();
    let next = binaries.next();
    let mut load = Load::start();
    load.upgrade(Some(&next), NEXT_VERSION);
    load.daemon.wait_for_log(&format!(
        "upgrading to chatd {NEXT_VERSION} from {} (generation 2)",
        next.display()
    ));
    // Back to the first binary (the default), with sessions of two generations running.
    load.upgrade(None, VERSION);
    load.daemon.wait_for_log(&format!("upgrading to chatd {VERSION} from {CHATD} (generation 3)"));
    load.chat.finish(&[]);
}

/// A daemon with a few clients chatting in two rooms, for the failures.
fn small_chat(settings: &str) -> (Daemon, Chat) {
    let daemon = Daemon::start_with_config(&format!("{NO_FLOOD_CONTROL}{settings}"));
    let chat = Chat::start(&daemon, 6, &["lobby", "rust"], Duration::from_millis(20));
    (daemon, chat)
}

/// Asserts `chatctl upgrade --binary binary` is refused with `reason`, said and logged, and
/// that nothing changed: the same master, generation and broker.
fn assert_refused(daemon: &Daemon, binary: &Path, reason: &dyn Fn(&str) -> bool) {
    let master = daemon.pid();
    let broker = daemon.broker_pid(1);
    let said = fails(daemon.chatctl(&["upgrade", "--binary", &binary.display().to_string()]), 1);
    let said = said.trim_end();
    let given =
        said.strip_prefix("chatctl: upgrade refused: ").unwrap_or_else(|| panic!("{said:?}"));
    assert!(reason(given), "the reason: {said:?}");
    let logged = daemon.wait_for_log(&format!("upgrade refused: {given}"));
    assert!(logged.contains(": warn: "), "logged as a warning: {logged}");
    assert_alive(master, "the master");
    let status = json(daemon, &["status"]);
    assert_eq!(status["master"]["pid"], master);
    assert_eq!(status["master"]["generation"], 1);
    assert_eq!(status["master"]["upgrade_failure"], Value::Null, "a refusal is no failure");
    assert_eq!(status["broker_pid"], broker, "the broker was not replaced");
    assert!(!daemon.log().iter().any(|l| l.contains("upgrading to chatd")), "{:?}", daemon.log());
}

#[test]
fn an_upgrade_to_a_missing_binary_is_refused_and_changes_nothing() {
    let (daemon, chat) = small_chat("");
    let missing = Binaries::new().dir.path().join("nowhere/chatd");
    let name = missing.display().to_string();
    assert_refused(&daemon, &missing, &|reason| {
        reason.starts_with(&format!("cannot run {name}: "))
    });
    chat.finish(&[]);
}

#[test]
fn a_binary_that_fails_its_pre_flight_is_refused_with_what_it_said() {
    let (daemon, chat) = small_chat("");
    let binaries = Binaries::new();
    let complaint = "chatd: unknown setting frobnicate in the settings file";
    let failing = binaries.script("failing", &format!("echo '{complaint}' >&2\nexit 1\n"));
    let name = failing.display().to_string();
    // SPEC20 says `PATH --check-upgrade failed: LINE`; the master also names the exit status,
    // `PATH --check-upgrade failed (exit status: 1): LINE`.
    assert_refused(&daemon, &failing, &|reason| {
        reason.starts_with(&format!("{name} --check-upgrade failed"))
            && reason.ends_with(&format!(": {complaint}"))
    });
    chat.finish(&[]);
}

#[test]
fn a_binary_that_dies_after_the_exec_leaves_the_broker_serving_until_chatd_is_started_again() {
    let (mut daemon, chat) = small_chat("");
    let binaries = Binaries::new();
    // It passes the pre-flight (the real chatd answers it) and exits as soon as it is
    // executed in earnest.
    let crashing = binaries.script(
        "crashing",
        &format!(
            "for arg in \"$@\"; do\n  if [ \"$arg\" = --check-upgrade ]; then exec {CHATD} \"$@\"; fi\ndone\n\
             echo 'chatd: crashing on purpose' >&2\nexit 1\n"
        ),
    );
    let master = daemon.pid();
    let broker = daemon.broker_pid(1);
    let said = fails(daemon.chatctl(&["upgrade", "--binary", &crashing.display().to_string()]), 1);
    assert_eq!(
        said.trim_end(),
        "chatctl: upgrade failed: the master is gone (the new binary did not start); the broker \
         and the sessions carry on: start chatd again to adopt them"
    );
    daemon.wait_for_log(&format!(
        "upgrading to chatd {VERSION} from {} (generation 2)",
        crashing.display()
    ));
    assert!(!daemon.wait_exit().success(), "the new image failed");
    assert!(process_state(master).is_none(), "the master is gone");
    assert_alive(broker, "the broker");

    // Without a master, the broker serves the clients it has; an operator starts chatd again.
    let second = daemon.start_sharing_port();
    assert_eq!(second.port, daemon.port);
    second.wait_for_log(&format!("adopting broker pid {broker}"));
    let mut newcomer = second.login("newbie");
    newcomer.send("newbie 1");
    newcomer.expect_prefix("<u0> u0 ");
    wait_until("every talker heard the newcomer", || {
        chat.talkers.iter().filter(|(_, room)| room == "lobby").all(|(talker, _)| {
            talker.received.lock().expect("lock").get("newbie").is_some_and(|n| n == &[1])
        })
    });
    let status = json(&second, &["status"]);
    assert_eq!(status["broker_pid"], broker, "the broker was adopted, not replaced");
    assert_eq!(status["master"]["pid"], second.pid());
    chat.finish(&["*** newbie has joined lobby".to_string()]);
}

#[test]
fn sigusr2_upgrades_in_place_with_the_default_binary() {
    let (daemon, chat) = small_chat("");
    let master = daemon.pid();
    let broker = daemon.broker_pid(1);
    daemon.signal(Signal::SIGUSR2);
    daemon.wait_for_log(&format!("upgrade requested (binary {CHATD})"));
    daemon.wait_for_log(&format!(
        "upgraded to chatd {VERSION} (generation 2), master pid {master}; "
    ));
    let new_broker = daemon.broker_pid(2);
    assert_ne!(new_broker, broker);
    let status = wait_for_status(&daemon, "generation 2 and the new broker", |s| {
        s["master"]["generation"] == 2 && s["broker_pid"] == new_broker
    });
    assert_eq!(status["master"]["pid"], master);
    assert_alive(master, "the master");
    let mut newcomer = daemon.login("newbie");
    newcomer.send("hello");
    newcomer.expect("<newbie> hello");
    chat.finish(&["*** newbie has joined lobby".to_string()]);
}

#[test]
fn an_exec_that_fails_after_the_pre_flight_leaves_the_old_image_serving_and_upgradable() {
    let (daemon, chat) = small_chat("");
    let binaries = Binaries::new();
    // It answers the pre-flight (the real chatd does) and removes itself on the way out, so
    // that the master's `execve` of the same path fails. Its directory is one the daemon's
    // user (not the test's) may write.
    let place = binaries.path("vanishing");
    let dir = place.parent().expect("the script's directory");
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let vanishing = binaries
        .script("vanishing", &format!("{CHATD} \"$@\"\nstatus=$?\nrm -f \"$0\"\nexit $status\n"));
    let name = vanishing.display().to_string();
    let master = daemon.pid();
    let broker = daemon.broker_pid(1);
    let said = fails(daemon.chatctl(&["upgrade", "--binary", &name]), 1);
    assert_eq!(
        said.trim_end(),
        format!(
            "chatctl: upgrade failed: cannot execute {name}: No such file or directory (os error \
             2); the running chatd carries on"
        )
    );
    let logged = daemon.wait_for_log(&format!("upgrade failed: cannot execute {name}"));
    assert!(logged.contains(": error: "), "logged as an error: {logged}");
    assert_alive(master, "the master");
    let status = json(&daemon, &["status"]);
    assert_eq!(status["master"]["pid"], master);
    assert_eq!(status["master"]["generation"], 1);
    assert_eq!(status["broker_pid"], broker, "the broker was not replaced");
    // The old image took its descriptors and its signals back: the next upgrade works.
    let ok = daemon.chatctl(&["upgrade"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    daemon.wait_for_log("upgraded to chatd ");
    let status = json(&daemon, &["status"]);
    assert_eq!(status["master"]["pid"], master);
    assert_eq!(status["master"]["generation"], 2);
    assert_eq!(status["master"]["upgrade_failure"], Value::Null);
    chat.finish(&[]);
}
