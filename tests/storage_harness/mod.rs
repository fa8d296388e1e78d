//! The test PostgreSQL itself (`util::postgres`), before any behaviour test leans on it: it
//! starts, a chatd running as `nobody` could reach it, several run at once, and it leaves
//! nothing running.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::util::postgres::{Cluster, is_running};

#[test]
fn a_test_server_answers_and_leaves_nothing_running() {
    let cluster = Cluster::start();
    assert_eq!(cluster.psql("SELECT 1"), "1");
    assert!(cluster.url().starts_with("postgres://chatd@/chatd?host=/"), "{}", cluster.url());
    let processes = cluster.processes();
    assert!(!processes.is_empty(), "no server process found");
    drop(cluster);
    let left: Vec<i32> = processes.into_iter().filter(|&pid| is_running(pid)).collect();
    assert!(left.is_empty(), "still running after the drop: {left:?}");
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: connects as nobody, as chatd does")]
fn servers_started_at_once_are_apart_and_reachable_as_nobody() {
    crate::util::assert_root_as_built();
    let starting: Vec<_> = (0..3).map(|_| std::thread::spawn(Cluster::start)).collect();
    let clusters: Vec<Cluster> =
        starting.into_iter().map(|start| start.join().expect("a server started")).collect();
    for (at, cluster) in clusters.iter().enumerate() {
        cluster.psql(&format!("CREATE TABLE mine (n int); INSERT INTO mine VALUES ({at})"));
    }
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("user nobody");
    for (at, cluster) in clusters.iter().enumerate() {
        let output = Command::new(cluster.bin().join("psql"))
            .arg("-h")
            .arg(cluster.socket_dir())
            .args(["-U", "chatd", "-d", "chatd", "-X", "-A", "-t", "-c", "SELECT n FROM mine"])
            .current_dir("/")
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .output()
            .expect("run psql");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "psql as nobody: {stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), at.to_string());
    }
}
