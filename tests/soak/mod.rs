//! A bounded soak: churn, chatting, and random `kill -9` of sessions and of the broker, then
//! checks that nothing leaked and that every line was delivered exactly once, in order, to
//! everyone who was present for it. 60 s by default; `CHATD_SOAK_SECONDS` changes that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::reliability::NO_FLOOD_CONTROL;
use crate::util::talkers::Talker;
use crate::util::{Client, Daemon, process_state, rss_kib, wait_until};

/// Clients that stay for the whole soak; their sessions are never killed.
const STABLE: usize = 5;

fn soak_duration() -> Duration {
    let seconds =
        std::env::var("CHATD_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(seconds)
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// What happened to one churn client, for the delivery check.
struct Churned {
    nick: String,
    sent: u64,
    /// Quit normally (exactly once expected) rather than killed (at most once).
    quit: bool,
}

#[test]
fn soak_with_churn_and_kills_loses_and_duplicates_nothing() {
    let daemon = Daemon::start_with_config(&format!(
        "{NO_FLOOD_CONTROL}max_clients_per_ip = 1000\npenalty_trips = 100000\n"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<(Client, String)> = (0..STABLE)
        .map(|i| {
            let nick = format!("s{i}");
            (daemon.login(&nick), nick)
        })
        .collect();
    let stable: Vec<Talker> = clients
        .into_iter()
        .map(|(client, nick)| {
            Talker::start(client, &nick, Duration::from_millis(40), Arc::clone(&stop))
        })
        .collect();
    let first_broker = daemon.broker_pid(1);
    let baseline_fds = fd_count(first_broker);
    let baseline_rss = rss_kib(first_broker);

    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut churned: Vec<Churned> = Vec::new();
    let mut brokers_killed = 0;
    let mut next_broker_kill = started + Duration::from_secs(5);
    let mut n = 0;
    while started.elapsed() < soak_duration() {
        n += 1;
        let nick = format!("c{n}");
        let mut client = daemon.login(&nick);
        let lines = rng.u64(1..4);
        for k in 1..=lines {
            client.send(&format!("{nick} {k}"));
        }
        // Wait for our own echo so that the lines reached the broker while we were present.
        client.expect(&format!("<{nick}> {nick} {lines}"));
        let quit = rng.u8(0..10) < 7;
        if quit {
            client.send("/quit");
            client.expect_closed();
        } else {
            let pid = daemon.holders_of(&client)[0];
            kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill a session");
        }
        churned.push(Churned { nick, sent: lines, quit });
        if Instant::now() >= next_broker_kill {
            brokers_killed += 1;
            let broker = daemon.broker_pid(brokers_killed);
            kill(Pid::from_raw(broker), Signal::SIGKILL).expect("kill the broker");
            daemon.broker_pid(brokers_killed + 1);
            next_broker_kill = Instant::now() + Duration::from_secs(rng.u64(5..12));
        }
    }

    // Every stable client says "done", and waits to hear everyone's.
    stop.store(true, Ordering::Relaxed);
    wait_until("every stable client heard every other's last line", || {
        stable.iter().all(|s| stable.iter().all(|other| s.heard_done_from(&other.nick)))
    });

    for receiver in &stable {
        for sender in &stable {
            receiver.assert_heard_every_line_of(sender);
        }
        let map = receiver.received.lock().expect("lock");
        for churn in &churned {
            let got = map.get(&churn.nick).cloned().unwrap_or_default();
            let want: Vec<u64> = (1..=churn.sent).collect();
            if churn.quit {
                assert_eq!(got, want, "{} heard {}'s lines wrong", receiver.nick, churn.nick);
            } else {
                assert!(
                    want.starts_with(&got),
                    "{} heard {}'s lines wrong: {got:?}",
                    receiver.nick,
                    churn.nick
                );
            }
        }
    }

    // Nothing leaked: no zombie, and the broker holds what it held with the stable clients only.
    let broker = daemon.broker_pid(brokers_killed + 1);
    wait_until("no zombie among chatd's processes", || {
        daemon.processes().iter().all(|&pid| process_state(pid) != Some('Z'))
    });
    wait_until("the broker's descriptors are back to baseline", || {
        fd_count(broker) == baseline_fds
    });
    let rss = rss_kib(broker);
    assert!(rss <= baseline_rss + 4096, "broker RSS {rss} KiB, baseline {baseline_rss} KiB");
    assert_eq!(daemon.processes().len(), 2 + STABLE, "master, broker and the stable sessions");
    assert!(
        brokers_killed >= 1 || soak_duration() < Duration::from_secs(6),
        "the broker was never killed"
    );
    eprintln!(
        "soak: {:?}, {} churn clients, {} broker kills, {} lines from stable clients",
        started.elapsed(),
        churned.len(),
        brokers_killed,
        stable.iter().map(|s| *s.sent.lock().expect("lock")).sum::<u64>()
    );
    for s in stable {
        let _ = s.writer.join();
        // The reader ends when the daemon closes the connection.
        drop(s.reader);
    }
}
