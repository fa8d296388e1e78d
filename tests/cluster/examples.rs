//! The example files of `packaging/cluster/` do what docs/CLUSTER.md says: the node's
//! settings pass `chatd --check-config`, and Debian's redis-server takes the `redis.conf`
//! fragment (moved to loopback and a port of the test's own), lets the ACL user `chatd` run
//! what a node runs on chatd's keys, and nothing else.

use std::process::Command;

use super::redis::free_port;
use super::redis::{Connection, Reply};
use crate::util::{PATIENCE, Spawned};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/cluster");

#[test]
fn the_example_node_settings_are_valid() {
    let output = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--check-config", &format!("{EXAMPLES}/chatd.toml")])
        .output()
        .expect("run chatd --check-config");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_example_redis_conf_lets_the_chatd_user_do_its_work_and_no_more() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = free_port();
    let password = format!("{:032x}", fastrand::u128(..));
    let example = std::fs::read_to_string(format!("{EXAMPLES}/redis.conf")).expect("redis.conf");
    assert!(example.lines().any(|l| l == "protected-mode yes"), "{example}");
    assert!(!example.lines().any(|l| l.starts_with("bind") && l.contains("0.0.0.0")));
    // The operator's edits, and the test's: loopback, a port of its own, no files kept.
    let mut config: String = example
        .lines()
        .map(|line| match line {
            l if l.starts_with("bind ") => "bind 127.0.0.1".to_string(),
            l if l.starts_with("port ") => format!("port {port}"),
            l if l.starts_with("appendonly ") => "appendonly no".to_string(),
            l => l.replace("PASSWORD", &password),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir_path = dir.path().display();
    config.push_str(&format!("\nsave \"\"\ndir {dir_path}\nlogfile {dir_path}/redis.log\n"));
    let file = dir.path().join("redis.conf");
    std::fs::write(&file, config).expect("write redis.conf");
    let server = Spawned::spawn(Command::new("redis-server").arg(&file));
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut chatd = loop {
        if let Ok(mut connection) = Connection::open(port)
            && connection.call(&["AUTH", "chatd", &password]).is_ok_and(|r| r.text() == "OK")
        {
            break connection;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not take the example: {}",
            std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let script = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 30000)";
    let allowed: &[&[&str]] = &[
        &["SELECT", "0"],
        &["CLIENT", "SETNAME", "chatd-a"],
        &["TIME"],
        &["XADD", "chatd:stream", "MAXLEN", "~", "10000", "*", "v", "1", "n", "a", "e", "x"],
        &["XREAD", "COUNT", "100", "BLOCK", "10", "STREAMS", "chatd:stream", "0-0"],
        &["XINFO", "STREAM", "chatd:stream"],
        &["XRANGE", "chatd:stream", "-", "+", "COUNT", "1"],
        &["SET", "chatd:nick:alice", "a", "NX", "PX", "30000"],
        &["PEXPIRE", "chatd:nick:alice", "30000"],
        &["HSET", "chatd:roster:a", "alice", "x"],
        &["HSET", "chatd:nodes", "a", "1"],
        &["HGETALL", "chatd:nodes"],
        &["EVAL", script, "1", "chatd:nick:bob", "a"],
        &["MULTI"],
        &["XADD", "chatd:stream", "*", "v", "1", "n", "a", "e", "y"],
        &["HDEL", "chatd:roster:a", "alice"],
        &["EXEC"],
    ];
    for command in allowed {
        let reply = chatd.call(command).expect("a reply");
        assert!(!reply.is_error(), "{command:?} refused: {reply:?}");
    }
    let refused: &[&[&str]] = &[
        &["SET", "other:key", "x"],
        &["EVAL", script, "1", "other:key", "a"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "requirepass"],
        &["KEYS", "*"],
    ];
    for command in refused {
        let reply = chatd.call(command).expect("a reply");
        assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("NOPERM")),
            "{command:?}: {reply:?}"
        );
    }
    // The default user is off: a password alone (no user name) gets nobody in.
    let mut anonymous = Connection::open(port).expect("connect");
    assert!(anonymous.call(&["AUTH", &password]).expect("a reply").is_error());
    assert!(anonymous.call(&["PING"]).expect("a reply").is_error(), "PING without a user");
    drop(server);
}
