//! A cluster across network namespaces (issue #18, root only): a controller namespace `r`
//! running Redis (with a password) and PostgreSQL (over TCP, with a password), and two chat
//! namespaces `a` and `b`, each running one chatd, linked to `r` by veth pairs with addresses
//! from 198.18.0.0/15. Node a is cut off from the controller by an nft drop rule inside its
//! namespace for longer than the Redis read timeout, then healed, while one user on each node
//! says numbered lines at a steady pace. Every client, on both nodes, is checked against the
//! delivery contract of docs/CLUSTER.md: nothing twice, its own node's lines all there and in
//! order, the other node's lines all there (queued during the partition, delivered after), the
//! node's users told once that contact was lost and once that it is back, nobody
//! disconnected, and one order everywhere for what was said before the partition.
//!
//! Everything runs inside the namespaces, clients included: a client's socket is made by a
//! thread that entered the node's namespace (`setns` changes only the calling thread), and is
//! then read and written from anywhere. Every process is started by the test and killed by
//! the guards below, panic or not; the namespaces go last, and the test checks at its end
//! that neither a namespace nor a process of its own is left.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::util::{self, Daemon};

/// The controller's address on the link to node a, and node a's.
const R_FOR_A: &str = "198.18.0.1";
const A_ADDRESS: &str = "198.18.0.2";
/// The controller's address on the link to node b, and node b's.
const R_FOR_B: &str = "198.18.1.1";
const B_ADDRESS: &str = "198.18.1.2";
const REDIS_PORT: u16 = 6379;
const POSTGRES_PORT: u16 = 5432;

/// One line every 50 ms from each sender: 20 lines a second each.
const PACE: Duration = Duration::from_millis(50);
/// Lines each sender says before the partition, and after contact is back.
const BEFORE: usize = 40;
const AFTER: usize = 40;
/// How long node a is cut off: longer than the Redis read timeout (5 s), shorter than the
/// node lapse (15 s), so node a notices and node b does not take it for gone.
const PARTITION: Duration = Duration::from_secs(8);
/// How long a start (a server answering) or the end (every line delivered) may take.
const PATIENCE: Duration = Duration::from_secs(30);
/// Lines said this long before the partition began are out of its reach: they must be in
/// one order everywhere.
const CLEAR_OF_PARTITION: Duration = Duration::from_secs(1);
/// After the last line arrived everywhere, how long the clients are still watched for a late
/// copy (a write the partition held back, retransmitted by TCP after the heal).
const QUIET: Duration = Duration::from_secs(2);

const LOST: &str = "*** Lost contact with the other servers; local chat goes on";
const BACK: &str = "*** Contact with the other servers is back";
const MISSED: &str = "*** Some lines from other servers were missed";

#[test]
fn a_partitioned_node_keeps_local_chat_and_every_line_arrives_once_after_the_heal() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, veth links, nft rules): run it as root, \
         as CI does (it is not skipped for lack of it)"
    );
    for program in ["/usr/sbin/ip", "/usr/sbin/nft", "/usr/bin/redis-server", "/usr/sbin/runuser"] {
        assert!(
            Path::new(program).exists(),
            "this test needs {program} (apt-get install iproute2 nftables redis-server util-linux)"
        );
    }
    let started = Instant::now();
    let prefix = format!("chatd-{}", std::process::id());
    let names = [format!("{prefix}-r"), format!("{prefix}-a"), format!("{prefix}-b")];
    let mut ours = Vec::new();
    {
        let scenario = Scenario::start(&names);
        eprintln!(
            "netns: three namespaces, Redis, PostgreSQL and two nodes up in {:?}",
            started.elapsed()
        );
        let outcome = scenario.run();
        outcome.check(&scenario);
        ours.extend(scenario.processes());
        // The scenario's guards go here, in order: clients, nodes, Redis, PostgreSQL, and
        // the namespaces last.
    }
    let listed = command_output(Command::new("ip").args(["netns", "list"]));
    for name in &names {
        assert!(
            !listed.split_whitespace().any(|listed| listed == name),
            "namespace {name} is still there:\n{listed}"
        );
    }
    let left: Vec<i32> = ours
        .iter()
        .copied()
        .filter(|&pid| util::process_state(pid).is_some_and(|s| s != 'Z'))
        .collect();
    assert!(left.is_empty(), "processes of the test still running: {left:?}");
    eprintln!("netns: the whole test took {:?}; no namespace or process left", started.elapsed());
}

/// Everything the test started, in the order it goes at the end (fields drop in order).
struct Scenario {
    clients: Vec<Watcher>,
    a: Daemon,
    b: Daemon,
    redis: NsRedis,
    /// Only dropped (it stops the server); the nodes have its URL.
    _postgres: NsPostgres,
    namespaces: Namespaces,
}

impl Scenario {
    fn start(names: &[String; 3]) -> Scenario {
        let namespaces = Namespaces::create(names);
        let (postgres, redis) = thread::scope(|scope| {
            let postgres = scope.spawn(|| NsPostgres::start(&namespaces));
            let redis = NsRedis::start(&namespaces);
            (postgres.join().expect("PostgreSQL started"), redis)
        });
        let (a, b) = thread::scope(|scope| {
            let a = scope.spawn(|| start_node(&namespaces, &postgres, &redis, 'a'));
            let b = start_node(&namespaces, &postgres, &redis, 'b');
            (a.join().expect("node a started"), b)
        });
        a.wait_for_log("cluster: connected to Redis as node a");
        b.wait_for_log("cluster: connected to Redis as node b");
        let mut clients: Vec<Watcher> = Vec::new();
        for (nick, node) in [("carol", 'a'), ("dave", 'b'), ("alice", 'a'), ("bob", 'b')] {
            let daemon = if node == 'a' { &a } else { &b };
            let client = Watcher::login(namespaces.name(node), daemon.port, nick, node);
            // Everyone before it sees it arrive, on its node or the other: every node knows
            // every member before the first line.
            let joined = format!("*** {nick} has joined lobby");
            for earlier in &clients {
                earlier.wait_for(&joined, util::PATIENCE);
            }
            clients.push(client);
        }
        Scenario { clients, a, b, redis, _postgres: postgres, namespaces }
    }

    fn client(&self, nick: &str) -> &Watcher {
        self.clients.iter().find(|client| client.nick == nick).expect("a client of the test")
    }

    /// alice (on a) and bob (on b) say numbered lines at a steady pace; node a is cut off
    /// from the controller after [`BEFORE`] lines each and healed [`PARTITION`] later; [`AFTER`]
    /// more lines each once contact is back; then every client gets everything.
    fn run(&self) -> Outcome {
        let mut heartbeats = self.redis.connection(&self.namespaces);
        let start = Instant::now() + Duration::from_millis(20);
        let alice = Sender::spawn(self.client("alice"), "a", start);
        let bob = Sender::spawn(self.client("bob"), "b", start);
        let _halt = Halt([Arc::clone(&alice.limit), Arc::clone(&bob.limit)]);
        wait_for("both senders to say their first lines", PATIENCE, || {
            alice.count() >= BEFORE && bob.count() >= BEFORE
        });
        // Right after a heartbeat of node a, so that the partition and the reconnection fit
        // well inside the node lapse (15 s) however the heartbeats fall.
        let beat = |connection: &mut redis::Connection| -> Option<String> {
            redis::cmd("HGET").arg("chatd:nodes").arg("a").query(connection).ok().flatten()
        };
        let last_beat = beat(&mut heartbeats);
        wait_for("a heartbeat of node a in Redis", Duration::from_secs(10), || {
            beat(&mut heartbeats) != last_beat
        });
        let cut_at = Instant::now();
        self.namespaces.nft(
            'a',
            &format!(
                "add table inet part; \
                 add chain inet part out {{ type filter hook output priority 0; }}; \
                 add rule inet part out ip daddr {R_FOR_A} drop; \
                 add chain inet part in {{ type filter hook input priority 0; }}; \
                 add rule inet part in ip saddr {R_FOR_A} drop"
            ),
        );
        let cut_done = Instant::now();
        let sent_at_cut = (alice.count(), bob.count());
        thread::sleep(PARTITION.saturating_sub(cut_done - cut_at));
        let heal_at = Instant::now();
        self.namespaces.nft('a', "delete table inet part");
        let sent_at_heal = (alice.count(), bob.count());
        for nick in ["alice", "carol"] {
            self.client(nick).wait_for(BACK, PATIENCE);
        }
        let back_seen = Instant::now();
        alice.stop_after(alice.count() + AFTER);
        bob.stop_after(bob.count() + AFTER);
        let alice_sent = alice.join();
        let bob_sent = bob.join();
        let finished_sending = Instant::now();
        let expected =
            [format!("<alice> a {}", alice_sent.len()), format!("<bob> b {}", bob_sent.len())];
        let deadline = Instant::now() + PATIENCE;
        for client in &self.clients {
            for last in &expected {
                client.wait_for(last, deadline.saturating_duration_since(Instant::now()));
            }
        }
        let all_arrived = Instant::now();
        // Not a wait for readiness: the window in which a late copy would show.
        thread::sleep(QUIET);
        Outcome {
            alice_sent,
            bob_sent,
            cut_at,
            heal_at,
            sent_at_cut,
            sent_at_heal,
            back_seen,
            finished_sending,
            all_arrived,
        }
    }

    /// Every process of the test's now: those in its namespaces and the nodes' groups.
    fn processes(&self) -> Vec<i32> {
        let mut pids: Vec<i32> =
            self.namespaces.names.iter().flat_map(|name| namespace_pids(name)).collect();
        pids.extend(self.a.processes());
        pids.extend(self.b.processes());
        pids.push(self.redis.child.id() as i32);
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// What the run measured, for the checks.
struct Outcome {
    /// When each numbered line was written to chatd (line n at index n - 1).
    alice_sent: Vec<Instant>,
    bob_sent: Vec<Instant>,
    cut_at: Instant,
    heal_at: Instant,
    /// Lines each had said when the drop rule went in, and when it went out.
    sent_at_cut: (usize, usize),
    sent_at_heal: (usize, usize),
    back_seen: Instant,
    finished_sending: Instant,
    all_arrived: Instant,
}

impl Outcome {
    fn check(&self, scenario: &Scenario) {
        let since_cut = |at: Instant| at.saturating_duration_since(self.cut_at);
        let since_heal = |at: Instant| at.saturating_duration_since(self.heal_at);
        eprintln!(
            "netns: sent alice {} and bob {} lines; at the cut {:?}, at the heal {:?}; \
             partition {:?}",
            self.alice_sent.len(),
            self.bob_sent.len(),
            self.sent_at_cut,
            self.sent_at_heal,
            self.heal_at - self.cut_at
        );
        let mut failures: Vec<String> = Vec::new();
        let mut clear_orders: Vec<(String, Vec<(char, usize)>)> = Vec::new();
        for client in &scenario.clients {
            let lines = client.lines();
            let text = |line: &str| lines.iter().filter(|(_, l)| l == line).count();
            let lost: Vec<Instant> =
                lines.iter().filter(|(_, l)| l == LOST).map(|(at, _)| *at).collect();
            let back: Vec<Instant> =
                lines.iter().filter(|(_, l)| l.starts_with(BACK)).map(|(at, _)| *at).collect();
            let mut failed =
                |why: String| failures.push(format!("{} (on {}): {why}", client.nick, client.node));
            // The numbered lines, in the order shown.
            let numbered: Vec<(Instant, char, usize)> = lines
                .iter()
                .filter_map(|(at, line)| {
                    let (sender, n) = numbered(line)?;
                    Some((*at, sender, n))
                })
                .collect();
            for (sender, sent) in [('a', &self.alice_sent), ('b', &self.bob_sent)] {
                let shown: Vec<usize> =
                    numbered.iter().filter(|(_, s, _)| *s == sender).map(|(_, _, n)| *n).collect();
                let mut counts = vec![0usize; sent.len() + 1];
                let mut unknown = Vec::new();
                for &n in &shown {
                    match counts.get_mut(n) {
                        Some(count) if n > 0 => *count += 1,
                        _ => unknown.push(n),
                    }
                }
                let twice: Vec<usize> = (1..=sent.len()).filter(|&n| counts[n] > 1).collect();
                let missing: Vec<usize> = (1..=sent.len()).filter(|&n| counts[n] == 0).collect();
                let out_of_order: Vec<(usize, usize)> =
                    shown.windows(2).filter(|w| w[1] <= w[0]).map(|w| (w[0], w[1])).collect();
                let whose = if sender == 'a' { "alice" } else { "bob" };
                let local = sender == client.node;
                if !twice.is_empty() {
                    failed(format!("{whose}'s lines shown twice: {}", ranges(&twice)));
                }
                if !missing.is_empty() {
                    failed(format!("{whose}'s lines missing: {}", ranges(&missing)));
                }
                if !unknown.is_empty() {
                    failed(format!("{whose}'s lines never said: {}", ranges(&unknown)));
                }
                if !out_of_order.is_empty() {
                    let which = if local { "its own node's" } else { "the other node's" };
                    failed(format!(
                        "{whose}'s lines ({which}) out of the order said: {:?} (pairs shown in this order)",
                        &out_of_order[..out_of_order.len().min(10)]
                    ));
                }
            }
            // Notices.
            if client.node == 'a' {
                if lost.len() != 1 || back.len() != 1 || text(BACK) != 1 {
                    failed(format!(
                        "told {} time(s) that contact was lost and {} time(s) that it is back ({:?})",
                        lost.len(),
                        back.len(),
                        lines
                            .iter()
                            .filter(|(_, l)| l.starts_with(BACK))
                            .map(|(_, l)| l)
                            .collect::<Vec<_>>()
                    ));
                } else if lost[0] > back[0] {
                    failed("told contact is back before it was lost".into());
                } else {
                    let local_during: usize = numbered
                        .iter()
                        .filter(|(at, s, _)| *s == 'a' && *at > lost[0] && *at < back[0])
                        .count();
                    eprintln!(
                        "netns: {} on a: lost contact {:?} after the cut, back {:?} after the \
                         heal; {local_during} of alice's lines shown while cut off",
                        client.nick,
                        since_cut(lost[0]),
                        since_heal(back[0])
                    );
                    if local_during == 0 {
                        failed(
                            "no local line shown while contact was lost: local chat did not go on"
                                .into(),
                        );
                    }
                }
            } else if !lost.is_empty() || !back.is_empty() {
                failed(format!(
                    "on the node that kept contact, told {} time(s) it was lost and {} time(s) it is back",
                    lost.len(),
                    back.len()
                ));
            }
            if text(MISSED) != 0 {
                failed("told lines were missed, with a stream far from trimmed".into());
            }
            let left: Vec<&String> =
                lines.iter().map(|(_, l)| l).filter(|l| l.contains(" has left")).collect();
            if !left.is_empty() {
                failed(format!("saw members leave: {left:?}"));
            }
            if client.closed.load(Ordering::SeqCst) {
                failed("was disconnected".into());
            }
            // The other node's lines said in the partition: when the last one arrived.
            let (remote, remote_sent) =
                if client.node == 'a' { ('b', &self.bob_sent) } else { ('a', &self.alice_sent) };
            let in_partition = |n: usize| {
                remote_sent.get(n - 1).is_some_and(|at| *at >= self.cut_at && *at < self.heal_at)
            };
            let last_partition_line = numbered
                .iter()
                .filter(|(_, s, n)| *s == remote && in_partition(*n))
                .map(|(at, _, _)| *at)
                .max();
            eprintln!(
                "netns: {} on {}: {} lines, {} numbered; the other node's partition-time lines \
                 all in {:?} after the heal",
                client.nick,
                client.node,
                lines.len(),
                numbered.len(),
                last_partition_line.map(since_heal)
            );
            // Lines said well before the cut: one order everywhere.
            let clear = |sender: char, n: usize| {
                let sent = if sender == 'a' { &self.alice_sent } else { &self.bob_sent };
                sent.get(n - 1).is_some_and(|at| *at + CLEAR_OF_PARTITION <= self.cut_at)
            };
            let mut seen_clear = std::collections::HashSet::new();
            let order: Vec<(char, usize)> = numbered
                .iter()
                .filter(|(_, s, n)| clear(*s, *n) && seen_clear.insert((*s, *n)))
                .map(|(_, s, n)| (*s, *n))
                .collect();
            clear_orders.push((client.nick.clone(), order));
        }
        let (first_nick, first) = &clear_orders[0];
        eprintln!(
            "netns: {} lines said before the partition compared across the four clients",
            first.len()
        );
        for (nick, order) in &clear_orders[1..] {
            if order != first {
                let at = order
                    .iter()
                    .zip(first)
                    .position(|(x, y)| x != y)
                    .unwrap_or(order.len().min(first.len()));
                failures.push(format!(
                    "{nick} and {first_nick} saw the lines said before the partition in different orders, from #{at}: {:?} vs {:?}",
                    &order[at..order.len().min(at + 6)],
                    &first[at..first.len().min(at + 6)]
                ));
            }
        }
        eprintln!(
            "netns: contact back on a's clients {:?} after the heal; the last line said {:?} \
             after that; every line everywhere {:?} after the last was said",
            since_heal(self.back_seen),
            self.finished_sending.saturating_duration_since(self.back_seen),
            self.all_arrived.saturating_duration_since(self.finished_sending)
        );
        for (daemon, node) in [(&scenario.a, 'a'), (&scenario.b, 'b')] {
            let cluster: Vec<String> =
                daemon.log().into_iter().filter(|line| line.contains("cluster")).collect();
            eprintln!("netns: node {node}'s cluster log:\n  {}", cluster.join("\n  "));
        }
        if !failures.is_empty() {
            // Each line with when it came, in seconds from the cut (negative: before).
            let from_cut = |at: Instant| match at.checked_duration_since(self.cut_at) {
                Some(after) => after.as_secs_f64(),
                None => -self.cut_at.duration_since(at).as_secs_f64(),
            };
            for client in &scenario.clients {
                let lines: Vec<String> = client
                    .lines()
                    .into_iter()
                    .map(|(at, line)| format!("{:+8.3} {line}", from_cut(at)))
                    .collect();
                eprintln!(
                    "netns: {} saw (seconds from the cut):\n  {}",
                    client.nick,
                    lines.join("\n  ")
                );
            }
            panic!("the delivery contract was broken:\n{}", failures.join("\n"));
        }
    }
}

/// `[1, 2, 3, 7]` as `1..=3, 7`.
fn ranges(numbers: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut at = 0;
    while at < numbers.len() {
        let mut end = at;
        while end + 1 < numbers.len() && numbers[end + 1] == numbers[end] + 1 {
            end += 1;
        }
        parts.push(match end > at {
            true => format!("{}..={} ({})", numbers[at], numbers[end], end - at + 1),
            false => numbers[at].to_string(),
        });
        at = end + 1;
    }
    parts.join(", ")
}

/// `<alice> a 12` is ('a', 12), `<bob> b 3` is ('b', 3).
fn numbered(line: &str) -> Option<(char, usize)> {
    if let Some(n) = line.strip_prefix("<alice> a ") {
        return Some(('a', n.parse().ok()?));
    }
    let n = line.strip_prefix("<bob> b ")?;
    Some(('b', n.parse().ok()?))
}

/// One chatd in the node's namespace, on its loopback, with the controller's services.
fn start_node(
    namespaces: &Namespaces,
    postgres: &NsPostgres,
    redis: &NsRedis,
    node: char,
) -> Daemon {
    let controller = if node == 'a' { R_FOR_A } else { R_FOR_B };
    let config = format!(
        "database = \"{database}\"\n\
         tls_listen = []\n\
         web_listen = []\n\
         flood_burst = 200\n\
         flood_lines_per_second = 100.0\n\
         [cluster]\n\
         redis = \"redis://:{password}@{controller}:{REDIS_PORT}/0\"\n\
         node = \"{node}\"\n",
        database = postgres.url(controller),
        password = redis.password,
    );
    let launcher = ["ip", "netns", "exec", namespaces.name(node)];
    Daemon::start_on_through(Arc::new(util::runtime_dir()), &launcher, &config)
}

/// The three namespaces (`r`, `a`, `b`), linked r<->a and r<->b; deleted at drop, after
/// whatever still runs in them is killed.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(names: &[String; 3]) -> Namespaces {
        let mut namespaces = Namespaces { names: Vec::new() };
        for name in names {
            run(Command::new("ip").args(["netns", "add", name]));
            namespaces.names.push(name.clone());
        }
        let [r, a, b] = names;
        for (ns, script) in [
            (
                r,
                format!(
                    "link set dev lo up\n\
                     link add ra type veth peer name ar netns {a}\n\
                     link add rb type veth peer name br netns {b}\n\
                     addr add {R_FOR_A}/24 dev ra\n\
                     addr add {R_FOR_B}/24 dev rb\n\
                     link set dev ra up\n\
                     link set dev rb up\n"
                ),
            ),
            (
                a,
                format!("link set dev lo up\naddr add {A_ADDRESS}/24 dev ar\nlink set dev ar up\n"),
            ),
            (
                b,
                format!("link set dev lo up\naddr add {B_ADDRESS}/24 dev br\nlink set dev br up\n"),
            ),
        ] {
            let mut ip = Command::new("ip");
            ip.args(["-n", ns, "-batch", "-"]);
            run_with_input(&mut ip, &script);
        }
        namespaces
    }

    /// The namespace of `node` ('r', 'a' or 'b').
    fn name(&self, node: char) -> &str {
        let at = match node {
            'r' => 0,
            'a' => 1,
            'b' => 2,
            _ => unreachable!("no node {node}"),
        };
        &self.names[at]
    }

    /// `ip netns exec NS PROGRAM`, to add arguments to.
    fn exec(&self, node: char, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.name(node), program]);
        command
    }

    /// Runs an nft script in `node`'s namespace.
    fn nft(&self, node: char, script: &str) {
        run(self.exec(node, "nft").arg(script));
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let pids = namespace_pids(name);
                if pids.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in pids {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The processes in namespace `name` (`ip netns pids`).
fn namespace_pids(name: &str) -> Vec<i32> {
    let output = Command::new("ip").args(["netns", "pids", name]).output();
    let Ok(output) = output else { return Vec::new() };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .filter(|&pid| util::process_state(pid).is_some_and(|state| state != 'Z'))
        .collect()
}

/// Runs `f` on a thread of its own that entered the network namespace `name` first: what
/// it opens (sockets) stays in that namespace, and may be used from any thread after.
fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    unsafe extern "C" {
        /// glibc's `setns(2)`.
        fn setns(fd: i32, nstype: i32) -> i32;
    }
    const CLONE_NEWNET: i32 = 0x4000_0000;
    let path = format!("/run/netns/{name}");
    let namespace = File::open(&path).unwrap_or_else(|err| panic!("open {path}: {err}"));
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns takes a descriptor this thread keeps open for the call and a
                // namespace type; it changes only this thread's network namespace, and this
                // thread ends with `f`.
                let status = unsafe { setns(namespace.as_raw_fd(), CLONE_NEWNET) };
                assert_eq!(status, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Redis in the controller's namespace, on both of its addresses, with a password.
struct NsRedis {
    child: Child,
    password: String,
    _dir: tempfile::TempDir,
}

impl NsRedis {
    fn start(namespaces: &Namespaces) -> NsRedis {
        let dir =
            tempfile::Builder::new().prefix("chatd-netns-redis-").tempdir().expect("temp dir");
        let password = random_hex();
        let child = namespaces
            .exec('r', "redis-server")
            .args(["--port", &REDIS_PORT.to_string(), "--bind", R_FOR_A, R_FOR_B])
            .args(["--requirepass", &password, "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("run redis-server");
        let mut redis = NsRedis { child, password, _dir: dir };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited ({status}):\n{}", redis.log());
            }
            if redis.try_connection(namespaces).is_some() {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "Redis did not answer within {PATIENCE:?}:\n{}",
                redis.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// A connection from inside the controller's namespace that answered `PING`.
    fn try_connection(&self, namespaces: &Namespaces) -> Option<redis::Connection> {
        let url = format!("redis://:{}@{R_FOR_A}:{REDIS_PORT}/0", self.password);
        in_namespace(namespaces.name('r'), || {
            let client = redis::Client::open(url).ok()?;
            let mut connection = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
            let pong: String = redis::cmd("PING").query(&mut connection).ok()?;
            (pong == "PONG").then_some(connection)
        })
    }

    fn connection(&self, namespaces: &Namespaces) -> redis::Connection {
        self.try_connection(namespaces)
            .unwrap_or_else(|| panic!("no connection to Redis:\n{}", self.log()))
    }
}

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PostgreSQL in the controller's namespace, listening on its two addresses; the chat
/// nodes log in with a password (SCRAM), the test's own tools through the Unix socket.
struct NsPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    password: String,
}

impl NsPostgres {
    fn start(namespaces: &Namespaces) -> NsPostgres {
        let bin = crate::util::postgres::postgres_bin();
        let dir = tempfile::Builder::new().prefix("chatd-netns-pg-").tempdir().expect("temp dir");
        let owner = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no user `postgres`: install the `postgresql` package"));
        nix::unistd::chown(dir.path(), Some(owner.uid), Some(owner.gid))
            .expect("chown to postgres");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let postgres = NsPostgres { dir, bin, password: random_hex() };
        let password_file = postgres.dir.path().join("password");
        std::fs::write(&password_file, &postgres.password).expect("write the password file");
        let data = postgres.dir.path().join("data");
        run(postgres
            .as_postgres(&mut Command::new("runuser"), "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "chatd", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", password_file.display())));
        let _ = std::fs::remove_file(&password_file);
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))
            .expect("pg_hba.conf");
        for node in [A_ADDRESS, B_ADDRESS] {
            writeln!(hba, "host chatd chatd {node}/32 scram-sha-256").expect("write pg_hba.conf");
        }
        drop(hba);
        let options = format!(
            "-k '{}' -c listen_addresses='{R_FOR_A},{R_FOR_B}' -c port={POSTGRES_PORT} -c fsync=off -c full_page_writes=off",
            postgres.dir.path().display()
        );
        run(postgres
            .as_postgres(&mut namespaces.exec('r', "runuser"), "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(postgres.dir.path().join("server.log"))
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "30", "start"]));
        run(Command::new(postgres.bin.join("createdb"))
            .arg("-h")
            .arg(postgres.dir.path())
            .args(["-U", "chatd", "chatd"]));
        postgres
    }

    /// `command` (`runuser`, perhaps under `ip netns exec`) running PostgreSQL's `program`
    /// as the `postgres` user.
    fn as_postgres<'c>(&self, command: &'c mut Command, program: &str) -> &'c mut Command {
        command.args(["-u", "postgres", "--"]).arg(self.bin.join(program))
    }

    /// What a node that reaches the controller at `address` puts in `database = "..."`.
    fn url(&self, address: &str) -> String {
        format!("postgres://chatd:{}@{address}:{POSTGRES_PORT}/chatd", self.password)
    }
}

impl Drop for NsPostgres {
    /// Stops the server at once; whatever is left of it dies with the namespace.
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A chat client in a node's namespace; a thread reads everything it is sent, with the
/// moment each line came.
struct Watcher {
    nick: String,
    node: char,
    stream: TcpStream,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The server closed the connection (or it failed) before the test did.
    closed: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Watcher {
    fn login(namespace: &str, port: u16, nick: &str, node: char) -> Watcher {
        let stream = in_namespace(namespace, || TcpStream::connect(("127.0.0.1", port)))
            .unwrap_or_else(|err| panic!("connect to node {node}: {err}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let reader = {
            let stream = stream.try_clone().expect("clone the stream");
            let (lines, closed) = (Arc::clone(&lines), Arc::clone(&closed));
            thread::spawn(move || read_lines(stream, &lines, &closed))
        };
        let mut client =
            Watcher { nick: nick.to_string(), node, stream, lines, closed, reader: Some(reader) };
        client.wait_for_prefix("*** Please choose a nickname", util::PATIENCE);
        client.send(nick);
        client.wait_for(&format!("*** {nick} has joined lobby"), util::PATIENCE);
        client
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(format!("{line}\r\n").as_bytes()).expect("send to chatd");
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().expect("lines").clone()
    }

    fn wait_for(&self, line: &str, patience: Duration) {
        self.wait_for_match(line, patience, |seen| seen == line);
    }

    fn wait_for_prefix(&self, prefix: &str, patience: Duration) {
        self.wait_for_match(prefix, patience, |seen| seen.starts_with(prefix));
    }

    fn wait_for_match(&self, what: &str, patience: Duration, matches: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + patience;
        loop {
            if self.lines.lock().expect("lines").iter().any(|(_, seen)| matches(seen)) {
                return;
            }
            if Instant::now() > deadline || self.closed.load(Ordering::SeqCst) {
                let seen: Vec<String> = self.lines().into_iter().map(|(_, l)| l).collect();
                panic!(
                    "{} (on {}) did not see {what:?} within {patience:?}{}; seen:\n{}",
                    self.nick,
                    self.node,
                    if self.closed.load(Ordering::SeqCst) { " (disconnected)" } else { "" },
                    seen.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads lines until the connection ends; each goes into `lines` without its line end (and
/// without telnet commands or a bell).
fn read_lines(stream: TcpStream, lines: &Mutex<Vec<(Instant, String)>>, closed: &AtomicBool) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while raw.last().is_some_and(|&byte| matches!(byte, b'\n' | b'\r' | 0x07)) {
                    raw.pop();
                }
                while let Some(at) = raw.windows(2).position(|w| w[0] == 255 && w[1] >= 251) {
                    raw.drain(at..(at + 3).min(raw.len()));
                }
                let line = String::from_utf8_lossy(&raw).into_owned();
                lines.lock().expect("lines").push((Instant::now(), line));
            }
        }
    }
    closed.store(true, Ordering::SeqCst);
}

/// A thread saying `PREFIX 1`, `PREFIX 2`, ... on a client's connection, one every [`PACE`]
/// from `start`, until told to stop after some number of lines.
struct Sender {
    sent: Arc<Mutex<Vec<Instant>>>,
    limit: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl Sender {
    fn spawn(client: &Watcher, prefix: &'static str, start: Instant) -> Sender {
        let mut stream = client.stream.try_clone().expect("clone the stream");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let limit = Arc::new(AtomicUsize::new(usize::MAX));
        let thread = {
            let (sent, limit) = (Arc::clone(&sent), Arc::clone(&limit));
            thread::spawn(move || {
                for n in 1.. {
                    if n > limit.load(Ordering::SeqCst) {
                        break;
                    }
                    let due = start + PACE * (n as u32 - 1);
                    thread::sleep(due.saturating_duration_since(Instant::now()));
                    if stream.write_all(format!("{prefix} {n}\r\n").as_bytes()).is_err() {
                        break;
                    }
                    sent.lock().expect("sent").push(Instant::now());
                }
            })
        };
        Sender { sent, limit, thread }
    }

    fn count(&self) -> usize {
        self.sent.lock().expect("sent").len()
    }

    fn stop_after(&self, lines: usize) {
        self.limit.store(lines, Ordering::SeqCst);
    }

    /// Waits for the last line; returns when each was said.
    fn join(self) -> Vec<Instant> {
        self.thread.join().expect("a sender");
        self.sent.lock().expect("sent").clone()
    }
}

/// Stops the senders when the test ends early (a panic).
struct Halt([Arc<AtomicUsize>; 2]);

impl Drop for Halt {
    fn drop(&mut self) {
        for limit in &self.0 {
            limit.store(0, Ordering::SeqCst);
        }
    }
}

fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "waited {patience:?} for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `command`; fails the test with what it said if it fails.
fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    check(command, output)
}

fn run_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    check(command, output)
}

fn check(command: &Command, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn command_output(command: &mut Command) -> String {
    String::from_utf8_lossy(&run(command).stdout).into_owned()
}

/// 32 hex digits from the kernel's random source.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
