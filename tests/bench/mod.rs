//! A smoke run of the benchmark (N=50, 3 s), so that the load generator cannot rot. It checks
//! that the figures are there and that nothing was lost; it asserts no timing: performance
//! targets are checked by `bench/compare.sh`, not by tests.

use std::process::Command;

use serde_json::Value;

use nix::sys::signal::Signal;

use crate::util::{Daemon, Spawned, process_state, processes_in_group, wait_until};

fn bench(daemon: &Daemon, args: &[&str]) -> Value {
    bench_against(daemon.port, daemon.pid(), args)
}

/// Runs `chatd-bench ARGS` against the server on `port` whose master is `pid`.
fn bench_against(port: u16, pid: i32, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .args(args)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--pid", &pid.to_string()])
        .output()
        .expect("run chatd-bench");
    assert!(output.status.success(), "chatd-bench: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

#[test]
fn the_benchmark_runs_against_chatd_and_reports_its_figures() {
    let daemon = Daemon::start_with_config(include_str!("../../bench/chatd.toml"));
    let fanout = bench(&daemon, &["fanout", "-n", "50", "--seconds", "3", "--window", "4"]);
    assert_eq!(fanout["clients"], 50);
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["duplicates_or_late"], 0, "{fanout}");
    assert_eq!(fanout["disconnected"], 0, "{fanout}");
    assert!(fanout["deliveries_per_second"].as_f64() > Some(0.0), "{fanout}");
    assert!(fanout["latency_p99_ms"].as_f64() >= fanout["latency_p50_ms"].as_f64(), "{fanout}");
    assert!(fanout["pss_per_client_kib"].as_f64() > Some(0.0), "{fanout}");
    assert!(fanout["floor_pss_kib"].as_u64() > Some(0), "{fanout}");
    assert_eq!(fanout["server_processes"], 52, "master, broker and 50 sessions");
    assert!(fanout["broker_cpu_per_message_us"].as_f64() > Some(0.0), "the broker found: {fanout}");

    let rate = bench(&daemon, &["rate", "-n", "50", "--rate", "50", "--seconds", "2"]);
    assert_eq!(rate["lost"], 0, "{rate}");
    assert!(rate["messages_sent"].as_u64() >= Some(90), "{rate}");

    let connect = bench(&daemon, &["connect", "-n", "50"]);
    assert!(connect["admissions_per_second"].as_f64() > Some(0.0), "{connect}");

    let results = daemon.runtime.path().join("results.jsonl");
    let lines: Vec<String> = [&fanout, &rate, &connect].iter().map(|v| v.to_string()).collect();
    std::fs::write(&results, lines.join("\n")).expect("write results");
    let report = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .arg("report")
        .arg(&results)
        .output()
        .expect("run chatd-bench report");
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(table.contains("| fanout n=50 s=1 w=4 | deliveries/s |"), "{table}");
}

/// A nickname still held when a run starts (in a suite, by the run before, whose sessions
/// have not all seen their clients close yet) is asked for again until it is free: the run
/// does not wait out its deadline for an admission that cannot come.
#[test]
fn a_nickname_in_use_when_the_benchmark_connects_is_asked_for_again() {
    let daemon = Daemon::start_with_config(include_str!("../../bench/chatd.toml"));
    let holder = daemon.login("b1");
    let mut bench = Spawned::spawn(Command::new(env!("CARGO_BIN_EXE_chatd-bench")).args([
        "connect",
        "-n",
        "3",
        "--addr",
        &format!("127.0.0.1:{}", daemon.port),
    ]));
    bench.wait_for_log("the nickname b1 is in use; asking again");
    drop(holder);
    assert!(bench.wait_exit().success(), "{:?}", bench.whole_log());
}

/// The floor (`chatd-floor`, bench/floor/main.rs) serves the load generator as chatd does:
/// it starts, every client is admitted, every line reaches every client once.
#[test]
fn the_benchmark_drives_web_clients_over_websockets() {
    let config =
        format!("{}web_listen = [\"127.0.0.1:0\"]\n", include_str!("../../bench/chatd.toml"));
    let daemon = Daemon::start_with_config(&config);
    let line = daemon.wait_for_log("listening for web browsers on 127.0.0.1:");
    let web: u16 = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("a port");
    let one = bench_against(web, daemon.pid(), &["connect", "-n", "1", "--protocol", "web"]);
    assert!(one["pss_per_session_kib"].as_f64() > Some(0.0), "{one}");
    let connect = bench_against(web, daemon.pid(), &["connect", "-n", "20", "--protocol", "web"]);
    assert!(connect["admissions_per_second"].as_f64() > Some(0.0), "{connect}");
    let args = ["fanout", "-n", "10", "--seconds", "2", "--window", "4", "--protocol", "web"];
    let fanout = bench_against(web, daemon.pid(), &args);
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["disconnected"], 0, "{fanout}");
    assert!(fanout["deliveries_per_second"].as_f64() > Some(0.0), "{fanout}");
}

#[test]
fn the_floor_serves_the_load_generator() {
    let mut floor = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_chatd-floor")).args(["--listen", "127.0.0.1:0"]),
    );
    let line = floor.wait_for_log("listening on 127.0.0.1:");
    let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("a port");
    let args = ["fanout", "-n", "50", "--seconds", "3", "--window", "4", "--server", "floor"];
    let fanout = bench_against(port, floor.pid(), &args);
    assert_eq!(fanout["server"], "floor");
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["duplicates_or_late"], 0, "{fanout}");
    assert_eq!(fanout["gaps"], 0, "{fanout}");
    assert_eq!(fanout["disconnected"], 0, "{fanout}");
    assert!(fanout["deliveries_per_second"].as_f64() > Some(0.0), "{fanout}");
    assert_eq!(fanout["server_processes"], 52, "master, broker and 50 client processes");
    assert!(fanout["broker_cpu_per_message_us"].as_f64() > Some(0.0), "the broker found: {fanout}");

    // SIGTERM to the master ends its whole process group, as bench/compare.sh expects.
    let group = floor.pid();
    floor.signal(Signal::SIGTERM);
    floor.wait_exit();
    wait_until("every process of the floor has ended", || {
        processes_in_group(group)
            .into_iter()
            .all(|pid| matches!(process_state(pid), None | Some('Z')))
    });
}
