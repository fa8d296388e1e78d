//! A smoke run of the benchmark (N=50, 3 s), so that the load generator cannot rot. It checks
//! that the figures are there and that nothing was lost; it asserts no timing: performance
//! targets are checked by `bench/compare.sh`, not by tests.

use std::process::Command;

use serde_json::Value;

use crate::util::Daemon;

fn bench(daemon: &Daemon, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .args(args)
        .args(["--addr", &format!("127.0.0.1:{}", daemon.port)])
        .args(["--pid", &daemon.pid().to_string()])
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
