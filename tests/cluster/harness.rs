//! Two chat nodes on one test PostgreSQL and one test Redis, each node a whole daemon with its
//! own runtime and state directories and ports.

use crate::util::postgres::Cluster;
use crate::util::{self, Client, Daemon};

use super::redis::Redis;

/// Settings for tests whose senders say many lines at once: flood control would delay them
/// by seconds, which is not what they measure.
pub const FAST_SENDERS: &str = "flood_burst = 200\n";

/// Which of the two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

/// One PostgreSQL, one Redis, and chat nodes "a" and "b" on them. Dropped in this order:
/// the daemons first, then Redis, then PostgreSQL.
pub struct TwoNodes {
    pub a: Daemon,
    pub b: Daemon,
    pub redis: Redis,
    /// Kept running for the nodes; a test may look inside.
    #[allow(dead_code, reason = "no test looks inside yet")]
    pub postgres: Cluster,
}

impl TwoNodes {
    /// Both nodes, each connected to Redis (`cluster: connected to Redis as node N`).
    pub fn start() -> TwoNodes {
        Self::start_with("")
    }

    /// [`start`](Self::start) with more top-level settings (`key = value` lines) for both.
    pub fn start_with(extra: &str) -> TwoNodes {
        let nodes = Self::start_without_waiting(extra);
        nodes.wait_connected();
        nodes
    }

    /// Both nodes started (listening), without waiting for them to reach Redis.
    pub fn start_without_waiting(extra: &str) -> TwoNodes {
        let (postgres, redis) = std::thread::scope(|scope| {
            let postgres = scope.spawn(Cluster::start);
            let redis = Redis::start();
            (postgres.join().expect("PostgreSQL started"), redis)
        });
        let url = redis.url();
        Self::start_nodes(postgres, redis, &url, &url, extra)
    }

    /// Node a given the Redis URL `url_for_a` makes (a wrong password, ...), node b the right
    /// one; waits for b only.
    pub fn start_with_redis_url(url_for_a: impl Fn(&Redis) -> String, extra: &str) -> TwoNodes {
        let postgres = Cluster::start();
        let redis = Redis::start();
        let (a, b) = (url_for_a(&redis), redis.url());
        Self::start_nodes(postgres, redis, &a, &b, extra)
    }

    /// Both nodes started while their Redis is not running yet ([`Redis::start_again`]
    /// starts it).
    pub fn start_before_redis() -> TwoNodes {
        let postgres = Cluster::start();
        let redis = Redis::not_started();
        let url = redis.url();
        Self::start_nodes(postgres, redis, &url, &url, "")
    }

    fn start_nodes(
        postgres: Cluster,
        redis: Redis,
        url_a: &str,
        url_b: &str,
        extra: &str,
    ) -> TwoNodes {
        let database = postgres.url();
        let (a, b) = std::thread::scope(|scope| {
            let a =
                scope.spawn(|| Daemon::start_with_config(&config(&database, url_a, "a", extra)));
            let b = Daemon::start_with_config(&config(&database, url_b, "b", extra));
            (a.join().expect("node a started"), b)
        });
        TwoNodes { a, b, redis, postgres }
    }

    /// Waits until both nodes say they are connected to Redis.
    pub fn wait_connected(&self) {
        self.a.wait_for_log("cluster: connected to Redis as node a");
        self.b.wait_for_log("cluster: connected to Redis as node b");
    }

    pub fn daemon(&self, node: Node) -> &Daemon {
        match node {
            Node::A => &self.a,
            Node::B => &self.b,
        }
    }

    /// Logs in each nick on its node, in turn, each seen joining lobby by everyone before it
    /// on either node (as `util::room` does on one).
    pub fn room<const N: usize>(&self, members: [(Node, &str); N]) -> [Client; N] {
        let mut clients: Vec<Client> = Vec::with_capacity(N);
        for (node, nick) in members {
            let mut earlier: Vec<&mut Client> = clients.iter_mut().collect();
            let newcomer = util::login_seen_by(self.daemon(node).port, nick, &mut earlier);
            clients.push(newcomer);
        }
        match clients.try_into() {
            Ok(clients) => clients,
            Err(_) => unreachable!("one client per nick"),
        }
    }
}

/// A node's settings: the shared PostgreSQL, the shared Redis, its name; top-level keys
/// before the `[cluster]` table, as TOML wants.
fn config(database: &str, redis: &str, node: &str, extra: &str) -> String {
    format!(
        "database = \"{database}\"\n{extra}\n[cluster]\nredis = \"{redis}\"\nnode = \"{node}\"\n"
    )
}

/// Reads lines until one names `nick` and, as a word of its own, `node`; returns it.
pub fn expect_naming(client: &mut Client, nick: &str, node: &str) -> String {
    loop {
        let Some(line) = client.next_line() else {
            panic!(
                "closed before a line naming {nick} on {node}; seen:\n{}",
                client.seen.join("\n")
            )
        };
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|word| word.trim_end_matches('.'))
            .collect();
        if words.contains(&nick) && words.contains(&node) {
            return line;
        }
    }
}

/// Reads lines until `count` of them are lines said by one of `nicks` (`<nick> ...`);
/// returns those, in the order they came.
pub fn numbered_lines(client: &mut Client, nicks: &[&str], count: usize) -> Vec<String> {
    let prefixes: Vec<String> = nicks.iter().map(|nick| format!("<{nick}> ")).collect();
    let mut said = Vec::with_capacity(count);
    while said.len() < count {
        match client.next_line() {
            Some(line) if prefixes.iter().any(|p| line.starts_with(p.as_str())) => said.push(line),
            Some(_) => {}
            None => panic!(
                "closed after {} of {count} lines; seen:\n{}",
                said.len(),
                client.seen.join("\n")
            ),
        }
    }
    said
}
