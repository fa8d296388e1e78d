//! What the load generator measures besides messages: memory (PSS) and CPU of a process tree
//! from /proc, its own CPU, percentiles, and the comparison report over JSON lines.

use std::collections::BTreeMap;
use std::fs;

use serde_json::{Map, Value};

/// Pids of `root` and all its descendants.
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_field(pid, 4).and_then(|f| f.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    tree
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// Proportional set size of one process, in KiB (0 if it cannot be read).
pub fn pss_kib(pid: i32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by the processes in `pids`.
pub fn cpu_seconds(pids: &[i32]) -> f64 {
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let total: u64 = pids
        .iter()
        .map(|&pid| {
            let field = |n| stat_field(pid, n).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            field(14) + field(15)
        })
        .sum();
    total as f64 / ticks as f64
}

/// The broker in a server's process tree `tree` (rooted at `root`): the process whose name
/// says broker (the floor's), or else the one child of the root that still has the root's
/// command line (chatd's broker keeps the master's; its sessions retitle themselves
/// `chatd: NICK@ROOM`). None for a server of one process, or when it is not clear.
pub fn broker_of(root: i32, tree: &[i32]) -> Option<i32> {
    let children = || tree.iter().copied().filter(|&pid| pid != root);
    let comm = |pid| fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if let Some(pid) = children().find(|&pid| comm(pid).contains("broker")) {
        return Some(pid);
    }
    let cmdline = |pid| fs::read(format!("/proc/{pid}/cmdline")).ok();
    let root_line = cmdline(root)?;
    let parent = root.to_string();
    let mut untitled = children().filter(|&pid| {
        stat_field(pid, 4).as_deref() == Some(parent.as_str())
            && cmdline(pid).as_ref() == Some(&root_line)
    });
    match (untitled.next(), untitled.next()) {
        (Some(pid), None) => Some(pid),
        _ => None,
    }
}

/// CPU seconds (user + system) of one single-threaded process, to the nanosecond from the
/// scheduler (/proc/PID/schedstat); from /proc/PID/stat's clock ticks where that is missing.
/// A broker's share of a few seconds' run is a few clock ticks: too coarse for those.
pub fn process_cpu_seconds(pid: i32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| cpu_seconds(&[pid]), |ns| ns as f64 / 1e9)
}

/// Busy CPU seconds of the whole machine so far (every CPU, all but idle and iowait), from
/// /proc/stat. Per-process accounting misses much of the kernel time a thousand briefly
/// running processes cause; the machine's total does not.
pub fn machine_busy_seconds() -> f64 {
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let values: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 =
        values.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy as f64 / ticks as f64
}

/// This process's CPU seconds (user + system).
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let time = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        time(usage.user_time()) + time(usage.system_time())
    })
}

/// The `q` quantile (0..=1) of sorted samples.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The figures of one run that the report compares, with whether bigger is better.
const FIGURES: &[(&str, &str, bool)] = &[
    ("admissions_per_second", "admissions/s", true),
    ("admission_p50_ms", "admission p50 (ms)", false),
    ("admission_p99_ms", "admission p99 (ms)", false),
    ("messages_per_second", "messages/s", true),
    ("deliveries_per_second", "deliveries/s", true),
    ("latency_p50_ms", "latency p50 (ms)", false),
    ("latency_p90_ms", "latency p90 (ms)", false),
    ("latency_p99_ms", "latency p99 (ms)", false),
    ("latency_max_ms", "latency max (ms)", false),
    ("lost", "lost", false),
    ("disconnected", "clients disconnected by the server", false),
    ("pss_per_client_kib", "PSS per client (KiB)", false),
    ("floor_pss_kib", "PSS of a minimal forked process (KiB)", false),
    ("server_cpu_per_delivery_us", "server CPU per delivery (µs)", false),
    ("broker_cpu_per_message_us", "broker CPU per broadcast (µs)", false),
    ("machine_cpu_per_delivery_us", "machine CPU per delivery, generator excluded (µs)", false),
    ("generator_cpu_percent", "load generator CPU (%)", false),
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn format(value: f64) -> String {
    if value.is_nan() {
        "–".into()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A Markdown table: one row per scenario and figure, server `ours` beside the servers it is
/// compared with (`compared`: the floor and ngircd, or an earlier build of chatd; medians over
/// the repetitions), and the ratio of ours to each of them.
pub fn report(lines: &[Value], ours: &str, compared: &[&str]) -> String {
    // scenario -> server -> figure -> values
    let mut runs: BTreeMap<String, BTreeMap<String, BTreeMap<&str, Vec<f64>>>> = BTreeMap::new();
    for line in lines {
        let (Some(scenario), Some(server)) = (line["scenario"].as_str(), line["server"].as_str())
        else {
            continue;
        };
        let figures =
            runs.entry(scenario.to_string()).or_default().entry(server.into()).or_default();
        for (key, _, _) in FIGURES {
            if let Some(value) = line[*key].as_f64() {
                figures.entry(key).or_default().push(value);
            }
        }
    }
    let mut out = format!("| scenario | figure | {ours} |");
    let mut rule = String::from("| --- | --- | ---: |");
    for other in compared {
        out.push_str(&format!(" {other} |"));
        rule.push_str(" ---: |");
    }
    for other in compared {
        out.push_str(&format!(" {ours}/{other} |"));
        rule.push_str(" ---: |");
    }
    out = format!("{out}\n{rule}\n");
    for (scenario, servers) in &mut runs {
        let mut median_of = |server: &str, key: &str| {
            servers.get_mut(server).and_then(|f| f.get_mut(key)).map_or(f64::NAN, |v| median(v))
        };
        for (key, name, _) in FIGURES {
            let a = median_of(ours, key);
            let others: Vec<f64> = compared.iter().map(|other| median_of(other, key)).collect();
            if a.is_nan() && others.iter().all(|b| b.is_nan()) {
                continue;
            }
            out.push_str(&format!("| {scenario} | {name} | {} |", format(a)));
            for b in &others {
                out.push_str(&format!(" {} |", format(*b)));
            }
            for &b in &others {
                let ratio = if b.is_nan() || b == 0.0 { f64::NAN } else { a / b };
                out.push_str(&format!(" {} |", format(ratio)));
            }
            out.push('\n');
        }
    }
    out
}

/// Adds a figure to a JSON object.
pub fn put(object: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    object.insert(key.to_string(), value.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_medians() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), 51);
        assert_eq!(quantile(&samples, 0.99), 99);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }

    /// Runs as JSON lines, as `--json` writes them.
    fn runs(lines: &[&str]) -> Vec<Value> {
        lines.iter().map(|l| serde_json::from_str(l).expect("json")).collect()
    }

    #[test]
    fn the_report_puts_medians_side_by_side() {
        let lines = runs(&[
            r#"{"scenario":"fanout","server":"chatd","deliveries_per_second":100.0}"#,
            r#"{"scenario":"fanout","server":"chatd","deliveries_per_second":300.0}"#,
            r#"{"scenario":"fanout","server":"chatd","deliveries_per_second":200.0}"#,
            r#"{"scenario":"fanout","server":"ngircd","deliveries_per_second":100.0}"#,
        ]);
        let table = report(&lines, "chatd", &["ngircd"]);
        assert!(table.contains("| fanout | deliveries/s | 200 | 100 | 2.00 |"), "{table}");
        let reversed = report(&lines, "ngircd", &["chatd"]);
        assert!(reversed.contains("| fanout | deliveries/s | 100 | 200 | 0.50 |"), "{reversed}");
    }

    #[test]
    fn the_report_shows_the_floor_between_ours_and_theirs() {
        let lines = runs(&[
            r#"{"scenario":"fanout","server":"chatd","deliveries_per_second":200.0}"#,
            r#"{"scenario":"fanout","server":"floor","deliveries_per_second":400.0}"#,
            r#"{"scenario":"fanout","server":"ngircd","deliveries_per_second":100.0}"#,
            r#"{"scenario":"fanout","server":"floor","broker_cpu_per_message_us":3.0}"#,
        ]);
        let table = report(&lines, "chatd", &["floor", "ngircd"]);
        assert!(table.starts_with("| scenario | figure | chatd | floor | ngircd | chatd/floor | chatd/ngircd |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n"), "{table}");
        assert!(
            table.contains("| fanout | deliveries/s | 200 | 400 | 100 | 0.50 | 2.00 |"),
            "{table}"
        );
        // A figure only the floor has still gets its row.
        assert!(
            table.contains("| fanout | broker CPU per broadcast (µs) | – | 3.00 | – | – | – |"),
            "{table}"
        );
    }
}
