//! A bounded soak: churn, chatting, and random `kill -9` of sessions and of the broker, then
//! checks that nothing leaked and that every line was delivered exactly once, in order, to
//! everyone who was present for it. 60 s by default; `CHATD_SOAK_SECONDS` changes that.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::reliability::NO_FLOOD_CONTROL;
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

/// Numbered lines received by one stable client: sender nick → numbers, in arrival order.
type Received = Arc<Mutex<HashMap<String, Vec<u64>>>>;

/// A stable client: a writer thread that says "NICK N" every few milliseconds and a reader
/// thread that records every numbered line it hears.
struct Stable {
    nick: String,
    sent: Arc<Mutex<u64>>,
    received: Received,
    writer: thread::JoinHandle<()>,
    reader: thread::JoinHandle<()>,
}

/// Starts the threads of a logged-in stable client. All stable clients log in before any
/// starts talking, so that no numbered line is read ahead by the login helper and lost here.
fn start_stable(client: Client, nick: &str, stop: Arc<AtomicBool>) -> Stable {
    let stream = client.stream;
    let mut write_half = stream.try_clone().expect("clone");
    let sent = Arc::new(Mutex::new(0u64));
    let received: Received = Arc::default();
    let writer = {
        let sent = Arc::clone(&sent);
        let nick = nick.to_string();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut count = sent.lock().expect("lock");
                *count += 1;
                if write_half.write_all(format!("{nick} {}\r\n", *count).as_bytes()).is_err() {
                    return;
                }
                drop(count);
                thread::sleep(Duration::from_millis(40));
            }
            let _ = write_half.write_all(format!("done {nick}\r\n").as_bytes());
        })
    };
    let reader = {
        let received = Arc::clone(&received);
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = line.trim_end();
                // "<nick> nick N" is a numbered line; "<x> done x" ends x's stream.
                let Some(rest) = text.strip_prefix('<') else { continue };
                let Some((from, said)) = rest.split_once("> ") else { continue };
                let mut map = received.lock().expect("lock");
                if let Some(number) =
                    said.strip_prefix(&format!("{from} ")).and_then(|n| n.parse().ok())
                {
                    map.entry(from.to_string()).or_default().push(number);
                } else if said == format!("done {from}") {
                    map.entry(format!("done {from}")).or_default().push(0);
                }
            }
        })
    };
    Stable { nick: nick.to_string(), sent, received, writer, reader }
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
    let stable: Vec<Stable> = clients
        .into_iter()
        .map(|(client, nick)| start_stable(client, &nick, Arc::clone(&stop)))
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
        stable.iter().all(|s| {
            let map = s.received.lock().expect("lock");
            stable.iter().all(|other| map.contains_key(&format!("done {}", other.nick)))
        })
    });

    for receiver in &stable {
        let map = receiver.received.lock().expect("lock");
        for sender in &stable {
            let sent = *sender.sent.lock().expect("lock");
            let got = map.get(&sender.nick).cloned().unwrap_or_default();
            let want: Vec<u64> = (1..=sent).collect();
            assert!(
                got == want,
                "{} heard {} lines of {} (of {sent}); first difference at {:?}",
                receiver.nick,
                got.len(),
                sender.nick,
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
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
