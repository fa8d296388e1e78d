//! The systemd notify protocol, with the test playing systemd (PID 1 here is not systemd): a
//! datagram `NOTIFY_SOCKET` that receives `READY=1` and the listeners chatd stores
//! (`FDSTORE=1` with SCM_RIGHTS), then a second chatd started with those sockets as
//! `LISTEN_FDS`, as `Restart=on-failure` does after a crash.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, getsockname, recvmsg};

use crate::util::{Client, Daemon, PATIENCE, Spawned, login_seen_by, runtime_dir, wait_until};

/// One notify datagram: its text and the descriptors it carried.
struct Notice {
    text: String,
    fds: Vec<OwnedFd>,
}

fn receive(socket: &UnixDatagram) -> Notice {
    let mut buffer = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut buffer)];
    let message =
        recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .expect("a notify datagram within the patience");
    let mut fds = Vec::new();
    for cmsg in message.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: SCM_RIGHTS just gave this process these descriptors; nothing else owns them.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let length = message.bytes;
    Notice { text: String::from_utf8_lossy(&buffer[..length]).into_owned(), fds }
}

#[test]
fn a_restarted_master_gets_its_stored_listener_back_and_adopts_the_broker() {
    let harness = runtime_dir();
    let notify_path = harness.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    // chatd says READY=1 after dropping root, as systemd's own socket allows (0777).
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(&notify_path, mode).expect("chmod the notify socket");
    let notify_env = notify_path.to_str().expect("a UTF-8 temp path").to_string();
    let mut first = Daemon::start_with_env("", &[("NOTIFY_SOCKET", &notify_env)]);

    // Until READY=1: the store message comes first (the master stores once it has bound).
    let mut stored: Option<(OwnedFd, String)> = None;
    loop {
        let notice = receive(&notify);
        if notice.text.lines().any(|line| line == "FDSTORE=1") {
            let name = notice
                .text
                .lines()
                .find_map(|line| line.strip_prefix("FDNAME="))
                .expect("FDNAME with FDSTORE")
                .to_string();
            let mut fds = notice.fds;
            assert_eq!(fds.len(), 1, "one plain listener: {:?}", notice.text);
            stored = Some((fds.remove(0), name));
        }
        if notice.text.lines().any(|line| line == "READY=1") {
            break;
        }
    }
    let (listener, name) = stored.expect("FDSTORE=1 before READY=1");
    assert_eq!(name, "plain");
    let address: SockaddrStorage = getsockname(listener.as_raw_fd()).expect("getsockname");
    let port = address.as_sockaddr_in().expect("an IPv4 listener").port();
    assert_eq!(port, first.port, "the stored socket is the daemon's listener");

    let [mut alice, mut bob] = first.room(["alice", "bob"]);
    let old_broker = first.broker_pid(1);
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    alice.send("the master is gone");
    bob.expect("<alice> the master is gone");

    // No master: carol's connection waits in the backlog of the socket the harness holds.
    let mut carol = Client::connect(port);

    // Restart=on-failure: the stored socket as fd 3, LISTEN_PID the new process's own pid.
    let runtime = first.runtime.path();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_chatd"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--runtime-dir")
        .arg(runtime.join("run"))
        .arg("--log")
        .arg("stderr")
        .arg("--config")
        .arg(runtime.join("chatd.toml"))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", &name)
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET");
    let stored_fd = listener.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if stored_fd == 3 {
                // dup2 onto itself would keep close-on-exec set.
                if nix::libc::fcntl(3, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if nix::libc::dup2(stored_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut second = Spawned::spawn(&mut command);
    second.wait_for_log("using 1 listening socket(s) from systemd");
    second.wait_for_log(&format!("adopting broker pid {old_broker}"));
    second.wait_for_log(&format!("listening on 127.0.0.1:{port}"));
    assert!(
        !second.log().iter().any(|line| line.contains("Address already in use")),
        "{}",
        second.log().join("\n")
    );

    // Carol, who connected while no master ran, is served and chats with those who never left.
    carol.expect_prefix("*** Please choose a nickname");
    carol.send("carol");
    carol.expect("*** You are now known as carol. Type /help for commands.");
    carol.expect("*** carol has joined lobby");
    alice.expect("*** carol has joined lobby");
    bob.expect("*** carol has joined lobby");
    carol.send("hello from the backlog");
    alice.expect("<carol> hello from the backlog");
    alice.send("welcome, carol");
    carol.expect("<alice> welcome, carol");
    let mut dave = login_seen_by(port, "dave", &mut [&mut alice, &mut bob, &mut carol]);
    dave.send("me too");
    bob.expect("<dave> me too");

    // Stopping the second master stops everyone, the first master's orphans included.
    drop(listener);
    second.signal(Signal::SIGTERM);
    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        let rest = client.expect_closed();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("*** The server is shutting down. Goodbye."),
            "{rest:?}"
        );
    }
    assert!(second.wait_exit().success());
    // It saw the adopted broker end (not its child: no SIGCHLD tells it), rather than waiting
    // out the grace and killing what it took for a survivor.
    let log = second.whole_log();
    assert!(log.iter().any(|line| line.contains("all children gone; exiting")), "{log:#?}");
    let orphans = first.pid();
    wait_until("the orphans are gone", || crate::util::processes_in_group(orphans).is_empty());
}
