//! Logging to a real syslog daemon: `rsyslogd` in the foreground with a private socket and
//! files, and the packaged fail2ban filter run over what it wrote.

use std::path::Path;
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{Client, Spawned, fail2ban_regex, free_port, room, runtime_dir, wait_until};

/// rsyslogd writing `messages` (facility.severity program[pid] message) and `traditional`
/// (the classic file format) in `dir`, reading from `dir/log.sock`.
fn rsyslogd(dir: &Path) -> Spawned {
    let d = dir.display();
    let config = format!(
        r#"global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/log.sock" CreatePath="on" UseSpecialParser="off")
template(name="chatd" type="string" string="%syslogfacility-text%.%syslogseverity-text% %programname%[%procid%] %msg%\n")
*.* action(type="omfile" file="{d}/messages" template="chatd")
*.* action(type="omfile" file="{d}/traditional" template="RSYSLOG_TraditionalFileFormat")
"#
    );
    std::fs::write(dir.join("rsyslog.conf"), config).expect("write rsyslog.conf");
    let rsyslog = Spawned::spawn(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid")),
    );
    wait_until("rsyslogd listens", || dir.join("log.sock").exists());
    rsyslog
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for a line in `file` containing every one of `parts`, and returns it.
fn wait_for_line(file: &Path, parts: &[&str]) -> String {
    let mut found = String::new();
    wait_until(&format!("a syslog line with {parts:?}"), || {
        found = read(file)
            .lines()
            .find(|line| parts.iter().all(|p| line.contains(p)))
            .unwrap_or("")
            .to_string();
        !found.is_empty()
    });
    found
}

fn run_session_against_syslog(format: &str) {
    let dir = runtime_dir();
    let _rsyslog = rsyslogd(dir.path());
    let port = free_port();
    let config = dir.path().join("chatd.toml");
    let socket = dir.path().join("log.sock");
    std::fs::write(
        &config,
        format!(
            "log = \"syslog\"\nsyslog_socket = \"{}\"\nsyslog_format = \"{format}\"\nmax_clients = 2\nstate_dir = \"{}\"\n",
            socket.display(),
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let chatd = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .arg("--runtime-dir")
            .arg(dir.path().join("run")),
    );
    let messages = dir.path().join("messages");
    let master = chatd.pid().to_string();
    wait_for_line(
        &messages,
        &["daemon.info chatd[", &master, &format!("listening on 127.0.0.1:{port}")],
    );

    let [mut alice, mut bob] = room(port, ["alice", "bob"]);
    alice.send("a secret nobody may log");
    bob.expect("<alice> a secret nobody may log");
    // A refusal (notice) and a crash (err).
    let mut refused = Client::connect(port);
    refused.expect_prefix("*** The server is full");
    let line =
        wait_for_line(&messages, &["daemon.notice chatd[", "refused 127.0.0.1:", "server full"]);
    assert!(line.contains(&format!("[{master}]")), "refusals come from the master: {line}");
    let login_line = wait_for_line(&messages, &["daemon.info chatd[", "logged in as alice"]);
    assert!(
        !login_line.contains(&format!("[{master}]")),
        "a session logs with its own pid: {login_line}"
    );
    let session: i32 = login_line
        .split('[')
        .nth(1)
        .and_then(|rest| rest.split(']').next()?.parse().ok())
        .expect("pid");
    kill(Pid::from_raw(session), Signal::SIGKILL).expect("kill alice's session");
    wait_for_line(
        &messages,
        &["daemon.err chatd[", &master, &format!("session pid {session}"), "killed by SIGKILL"],
    );
    bob.send("/quit");
    wait_for_line(
        &messages,
        &["daemon.info chatd[", "bob (127.0.0.1:", "disconnected after", "quit"],
    );
    let everything = read(&messages);
    assert!(!everything.contains("secret"), "message contents reached the log:\n{everything}");

    // The packaged fail2ban filter finds the refused address.
    let found = fail2ban_regex(&dir.path().join("traditional").to_string_lossy());
    assert_eq!(found, ["127.0.0.1"], "what fail2ban found");
}

#[test]
fn rfc3164_syslog_gets_facility_severity_ident_and_each_process_pid() {
    run_session_against_syslog("rfc3164");
}

#[test]
fn rfc5424_syslog_gets_facility_severity_ident_and_each_process_pid() {
    run_session_against_syslog("rfc5424");
}

#[test]
fn under_the_journal_stderr_lines_carry_sd_daemon_priority_prefixes() {
    // systemd sets JOURNAL_STREAM when standard error is connected to the journal.
    let daemon =
        crate::util::Daemon::start_with_env("max_clients = 1\n", &[("JOURNAL_STREAM", "8:12345")]);
    let _alice = daemon.login("alice");
    let mut refused = Client::connect(daemon.port);
    refused.expect_prefix("*** The server is full");
    let listening = daemon.wait_for_log("listening on 127.0.0.1:");
    assert!(listening.starts_with("<6>listening on"), "{listening}");
    let refusal = daemon.wait_for_log("refused 127.0.0.1:");
    assert!(refusal.starts_with("<5>refused"), "notice is priority 5: {refusal}");
    for line in daemon.log() {
        assert!(
            line.starts_with('<') && line.as_bytes().get(2) == Some(&b'>'),
            "no prefix: {line}"
        );
    }
}
