//! The web client in a real browser: Debian's chromium driven by selenium (`browser.py`, in a
//! venv this test makes under `target/web-venv`), against the real binary. The script drives
//! the browser; this side owns the daemon and a telnet user (a raw socket, `bob`), and does
//! what the script asks of them over the script's stdin and stdout: one request per line
//! (`chatd> VERB ARGUMENT`), answered `ok [JSON]` or the test fails here.
//!
//! What it shows: a browser user and a telnet user chat both ways (lines, `/me`, private
//! lines, the same nick colour), system lines carry the `system` class, a broker killed -9
//! and a dropped socket leave no duplicate and no gap on the page (30 lines said while it was
//! away, more than a newcomer's history, all come once), an administrator kicks the
//! telnet user from the dashboard and the room sees it, and a non-administrator gets no
//! dashboard. Screenshots go to `target/web-screenshots/`; `CHATD_UPDATE_GENERATED=1` copies
//! them to `docs/screenshots/`. Without chromium the test fails, saying how to install it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::accounts::{FAST, OTHER_PASSWORD, PASSWORD, register};
use crate::util::{Client, Daemon, wait_until};

const SELENIUM: &str = "selenium==4.51.0";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest the script may stay silent: each of its waits is at most 15 s, and starting
/// chromium takes a few.
const SCRIPT_SILENCE: Duration = Duration::from_secs(60);

/// `target/` of this build: the test binary is `target/debug/deps/daemon-HASH`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target/ above target/debug/deps").to_path_buf()
}

/// The venv with selenium, made once and kept across runs (a marker file says it is complete).
fn selenium_python() -> PathBuf {
    let venv = target_dir().join("web-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!(".{SELENIUM}"));
    if marker.exists() && python.exists() {
        return python;
    }
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(
        made.is_ok_and(|status| status.success()),
        "`python3 -m venv {}` failed: the browser test needs python3 with venv \
         (apt-get install python3-venv; .ci/run installs it)",
        venv.display()
    );
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", SELENIUM])
        .status();
    assert!(
        installed.is_ok_and(|status| status.success()),
        "`pip install {SELENIUM}` into {} failed: the browser test needs selenium from PyPI",
        venv.display()
    );
    std::fs::write(&marker, "").expect("write the venv's marker");
    python
}

/// The browser script as a process group of its own (chromedriver and chromium are its
/// children), killed whole when the test ends however it ends.
struct Script {
    child: Child,
}

impl Drop for Script {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The port of the daemon's web listener, from its log.
fn web_port(daemon: &Daemon) -> u16 {
    let line = daemon.wait_for_log("listening for web browsers on 127.0.0.1:");
    line.rsplit(':')
        .next()
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// Registers `nick` with `password` from a telnet session, then quits it.
fn register_account(daemon: &Daemon, nick: &str, password: &str, observer: &mut Client) {
    let mut client = daemon.login_seen_by(nick, &mut [observer]);
    register(&mut client, nick, password);
    client.send("/quit");
    client.expect_closed();
    observer.expect(&format!("*** {nick} has left (quit)"));
}

/// Reads lines of `bob` until one contains `needle`; returns it (escape codes and all).
fn bob_sees(bob: &mut Client, needle: &str) -> String {
    loop {
        match bob.next_line() {
            Some(line) if line.contains(needle) => return line,
            Some(_) => {}
            None => {
                panic!("bob's connection closed before {needle:?}; seen:\n{}", bob.seen.join("\n"))
            }
        }
    }
}

#[test]
fn a_browser_user_and_a_telnet_user_chat_and_an_admin_kicks_from_the_dashboard() {
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "the browser test needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium \
         chromium-driver (.ci/run installs them)"
    );
    let python = selenium_python();
    // bob says 30 lines at once while the page is away (a burst flood control lets through).
    let daemon = Daemon::start_with_config(&format!(
        "{FAST}flood_burst = 40\nweb_listen = [\"127.0.0.1:0\"]\n"
    ));
    let port = web_port(&daemon);
    let mut bob = daemon.login("bob");
    register_account(&daemon, "oper", PASSWORD, &mut bob);
    register_account(&daemon, "carol", OTHER_PASSWORD, &mut bob);
    let granted = daemon.chatctl(&["accounts", "grant", "oper", "admin"]);
    assert!(granted.status.success(), "grant: {}", String::from_utf8_lossy(&granted.stderr));

    let shots = target_dir().join("web-screenshots");
    std::fs::create_dir_all(&shots).expect("mkdir web-screenshots");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/browser.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["--admin", "oper", "--admin-password", PASSWORD])
        .args(["--user", "carol", "--user-password", OTHER_PASSWORD])
        .arg("--screenshots")
        .arg(&shots)
        .env("SE_AVOID_STATS", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("start {script}: {err}"));
    let mut to_script = child.stdin.take().expect("script stdin");
    let from_script = child.stdout.take().expect("script stdout");
    let mut script_process = Script { child };
    let (lines, requests) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from_script).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    loop {
        let line = match requests.recv_timeout(SCRIPT_SILENCE) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the browser script said nothing for {SCRIPT_SILENCE:?}")
            }
        };
        let Some(request) = line.strip_prefix("chatd> ") else {
            println!("browser.py: {line}");
            continue;
        };
        let (verb, argument) = request.split_once(' ').unwrap_or((request, ""));
        let answer = match verb {
            "bob-say" => {
                bob.send(argument);
                String::new()
            }
            "bob-expect" => serde_json::to_string(&bob_sees(&mut bob, argument)).expect("json"),
            "bob-closed" => {
                let rest = bob.expect_closed();
                serde_json::to_string(&rest).expect("json")
            }
            "kill-broker" => {
                let broker = daemon.broker_pid(1);
                kill(Pid::from_raw(broker), Signal::SIGKILL).expect("kill the broker");
                daemon.broker_pid(2);
                // bob's session is back with the new broker once it says so.
                bob_sees(&mut bob, "*** The chat service restarted");
                String::new()
            }
            other => panic!("the browser script asked for {other:?}"),
        };
        writeln!(to_script, "ok {answer}").expect("answer the browser script");
        to_script.flush().expect("answer the browser script");
    }
    let status = script_process.child.wait().expect("wait for the browser script");
    assert!(status.success(), "the browser script failed ({status}); its errors are above");

    for name in ["chat.png", "admin.png"] {
        let shot = shots.join(name);
        wait_until(&format!("{} exists", shot.display()), || shot.exists());
        if std::env::var_os("CHATD_UPDATE_GENERATED").is_some() {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::create_dir_all(&docs).expect("mkdir docs/screenshots");
            std::fs::copy(&shot, docs.join(name)).expect("copy the screenshot to docs/");
        }
    }
    // The dashboard's kick was carried out by the broker, with the actor in its log.
    daemon.wait_for_log("admin oper (from 127.0.0.1:");
    daemon.wait_for_log("asks: kick bob (from the dashboard)");
}
