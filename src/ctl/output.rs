//! How chatctl prints answers: aligned tables for people, JSON for scripts, and the
//! Prometheus text exposition format for monitoring. Pure functions of the reply.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use crate::moderation::{Ban, Mute};
use crate::proto::control::{
    ClusterStatus, ControlReply, Counted, RoomRow, Status, StoreStatus, StoredRow, UserRow,
};
use crate::text::{age, columns};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Prometheus,
}

/// The text for one reply, ending in a newline.
pub fn render(reply: &ControlReply, format: Format) -> String {
    match format {
        Format::Json => json(reply),
        Format::Prometheus => match reply {
            ControlReply::Status(status) => prometheus(status),
            other => human(other),
        },
        Format::Human => human(reply),
    }
}

fn json(reply: &ControlReply) -> String {
    let value = match reply {
        ControlReply::Status(status) => serde_json::to_value(status),
        ControlReply::Users(users) => serde_json::to_value(users),
        ControlReply::Rooms(rooms) => serde_json::to_value(rooms),
        ControlReply::Bans(bans) => serde_json::to_value(bans),
        ControlReply::Mutes(mutes) => serde_json::to_value(mutes),
        ControlReply::Motd(motd) => Ok(json!({ "motd": motd })),
        ControlReply::Done(message) => Ok(json!({ "ok": true, "message": message })),
        ControlReply::Failed(message) | ControlReply::Denied(message) => {
            Ok(json!({ "ok": false, "error": message }))
        }
        ControlReply::VersionMismatch { broker } => {
            Ok(json!({ "ok": false, "error": version_mismatch(*broker) }))
        }
        ControlReply::Stored(rows) => Ok(serde_json::Value::Array(
            rows.iter()
                .map(|row| {
                    json!({
                        "id": row.id,
                        "at": row.at,
                        "time": utc(row.at),
                        "from": row.from,
                        "action": row.action,
                        "text": row.text,
                    })
                })
                .collect(),
        )),
        ControlReply::BackedUp { bytes } => Ok(json!({ "ok": true, "bytes": bytes })),
        ControlReply::Accounts(rows) => serde_json::to_value(rows),
    };
    match value.and_then(|value| serde_json::to_string_pretty(&value)) {
        Ok(text) => format!("{text}\n"),
        Err(err) => format!("{{\"ok\": false, \"error\": \"cannot encode the answer: {err}\"}}\n"),
    }
}

pub(super) fn version_mismatch(broker: u32) -> String {
    format!(
        "chatd speaks control protocol {broker}, this chatctl {}; use the chatctl installed with chatd",
        crate::proto::control::CONTROL_VERSION
    )
}

fn human(reply: &ControlReply) -> String {
    match reply {
        ControlReply::Status(status) => human_status(status),
        ControlReply::Users(users) => users_table(users),
        ControlReply::Rooms(rooms) => rooms_table(rooms),
        ControlReply::Bans(bans) => bans_table(bans),
        ControlReply::Mutes(mutes) => mutes_table(mutes),
        ControlReply::Motd(Some(motd)) => format!("{motd}\n"),
        ControlReply::Motd(None) => "no message of the day is set\n".to_string(),
        ControlReply::Done(message)
        | ControlReply::Failed(message)
        | ControlReply::Denied(message) => {
            format!("{message}\n")
        }
        ControlReply::VersionMismatch { broker } => format!("{}\n", version_mismatch(*broker)),
        ControlReply::Stored(rows) => stored_lines(rows),
        ControlReply::BackedUp { bytes } => format!("backed up ({bytes} bytes)\n"),
        ControlReply::Accounts(rows) => super::accounts::table(rows),
    }
}

/// A Unix time as RFC 3339 in UTC, to the second.
fn utc(at: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
        .to_string()
}

/// `chatctl history`: a line per stored line, as it was shown, with its time in UTC.
fn stored_lines(rows: &[StoredRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let (before, after) = if row.action { ("* ", " ") } else { ("<", "> ") };
        let _ = writeln!(out, "{} {before}{}{after}{}", utc(row.at), row.from, row.text);
    }
    out
}

/// The `cluster` row of `chatctl status`: this node, its contact with Redis, every node
/// with the age of its heartbeat, and the stream's figures.
fn cluster_row(cluster: &ClusterStatus) -> String {
    let contact = match (&cluster.lost, cluster.connected) {
        (_, true) => "in contact".to_string(),
        (Some(why), false) => format!("out of contact ({why})"),
        (None, false) => "connecting".to_string(),
    };
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| {
            let age = node.heartbeat_age_ms as f64 / 1000.0;
            match node.name == cluster.node {
                true => format!("{} (this one, heartbeat {age:.1} s ago)", node.name),
                false => {
                    format!("{} ({} member(s), heartbeat {age:.1} s ago)", node.name, node.members)
                }
            }
        })
        .collect();
    let mut text = format!(
        "node {}, {contact}; nodes: {}; stream at {}, round trip {:.1} ms (max {:.1}); {} published, {} read, {} skipped; {} queued",
        cluster.node,
        if nodes.is_empty() { "none seen yet".to_string() } else { nodes.join(", ") },
        if cluster.last_id.is_empty() { "-" } else { &cluster.last_id },
        cluster.round_trip_ms_last,
        cluster.round_trip_ms_max,
        cluster.published,
        cluster.read,
        cluster.skipped,
        cluster.queued,
    );
    if cluster.dropped > 0 {
        let _ = write!(text, ", {} dropped (too many waited)", cluster.dropped);
    }
    if cluster.lost_episodes > 0 {
        let _ = write!(text, "; contact lost {} time(s)", cluster.lost_episodes);
    }
    text
}

/// The `store` row of `chatctl status`.
fn store_row(store: Option<&StoreStatus>) -> String {
    let Some(store) = store else {
        return "none (history_days = 0: history is kept in memory only)".to_string();
    };
    let mut text = format!(
        "{} {}, {}, {} lines waiting, last write {:.1} ms (longest {:.1} ms)",
        store.kind,
        store.location,
        bytes(store.bytes),
        store.waiting_lines,
        store.write_ms_last,
        store.write_ms_max
    );
    if store.dropped_lines > 0 {
        let _ = write!(text, ", {} lines not stored (too many waited)", store.dropped_lines);
    }
    if store.dropped_account_changes > 0 {
        let changes = store.dropped_account_changes;
        let _ = write!(text, ", {changes} account changes not stored (too many waited)");
    }
    if let Some(why) = &store.failing {
        text = format!("failing ({why}); {text}");
    }
    text
}

fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{count} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn counted(list: &[Counted]) -> String {
    if list.is_empty() {
        return "none".to_string();
    }
    list.iter().map(|c| format!("{} {}", c.reason, c.count)).collect::<Vec<_>>().join(", ")
}

/// Sessions forked by an earlier generation than the master's: `none`, or how many, by code.
fn older_code(master: &crate::proto::control::MasterFigures) -> String {
    let older: Vec<_> =
        master.sessions_by_code.iter().filter(|code| code.generation < master.generation).collect();
    if older.is_empty() {
        return "none".into();
    }
    let total: u64 = older.iter().map(|code| code.sessions).sum();
    let each: Vec<String> = older
        .iter()
        .map(|code| {
            format!("generation {}, chatd {}: {}", code.generation, code.version, code.sessions)
        })
        .collect();
    format!("{total} session(s) ({})", each.join("; "))
}

fn human_status(s: &Status) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<12} {value}");
    };
    row("chatd", format!("{} (protocol {})", s.version, s.protocol));
    match &s.master {
        Some(master) => {
            let mut text =
                format!("pid {}, up {}", master.pid, age(s.now.saturating_sub(master.started_at)));
            if master.generation > 0 {
                text += &format!(", generation {} (chatd {})", master.generation, master.version);
            }
            if master.upgraded_at > 0 {
                text +=
                    &format!(", upgraded {} ago", age(s.now.saturating_sub(master.upgraded_at)));
            }
            row("master", text);
            if !master.binary.is_empty() {
                row("binary", master.binary.clone());
            }
            row("older code", older_code(master));
            if let Some(failure) = &master.upgrade_failure {
                row("upgrade", format!("failed: {failure}"));
            }
        }
        None => {
            row("master", "not linked (stopped, starting, or chatd runs as `chatd broker`)".into())
        }
    }
    row(
        "broker",
        format!("pid {}, up {}", s.broker_pid, age(s.now.saturating_sub(s.broker_started_at))),
    );
    if let Some(master) = &s.master {
        row(
            "connections",
            format!("{} ({} accepted since start)", master.connections, master.accepted),
        );
    }
    row("users", format!("{} in {} room(s), {} session(s) linked", s.users, s.rooms, s.sessions));
    row(
        "messages",
        format!(
            "{:.1}/s, deliveries {:.1}/s over the last minute; {} and {} in total",
            s.messages_per_second, s.deliveries_per_second, s.messages, s.deliveries
        ),
    );
    row("traffic", format!("{} in, {} out", bytes(s.bytes_received), bytes(s.bytes_sent)));
    row("drops", counted(&s.drops));
    if let Some(master) = &s.master {
        row("refusals", counted(&master.refusals));
        row(
            "failures",
            format!(
                "{} session crash(es), {} broker restart(s)",
                master.child_crashes, master.broker_restarts
            ),
        );
    }
    row("moderation", format!("{} ban(s), {} mute(s)", s.bans, s.mutes));
    row("store", store_row(s.store.as_ref()));
    if let Some(cluster) = &s.cluster {
        row("cluster", cluster_row(cluster));
    }
    if let Some(accounts) = s.accounts {
        row("accounts", format!("{accounts} registered"));
    }
    if let Some(tls) = s.master.as_ref().and_then(|master| master.tls.as_ref()) {
        let expires = crate::sys::local_date_time(tls.not_after);
        let date = expires.split(' ').next().unwrap_or_default();
        row("tls", format!("{} ({}), expires {date}", tls.fingerprint, tls.source));
    }
    out
}

/// Left-aligned columns, two spaces apart, measured in terminal columns (a CJK nick takes two
/// per character, as the session's renderer counts them), not in characters.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| columns(h)).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(columns(cell));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, &width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(columns(cell)) + 2));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn users_table(users: &[UserRow]) -> String {
    // A cluster's `who` says which node each user is on.
    let clustered = users.iter().any(|u| u.node.is_some());
    let rows = users
        .iter()
        .map(|u| {
            let mut row = vec![u.nick.clone(), u.room.clone()];
            if clustered {
                row.push(u.node.clone().unwrap_or_default());
            }
            row.extend([
                u.peer.clone(),
                u.pid.to_string(),
                age(u.connected_seconds),
                age(u.idle_seconds),
                yes_no(u.tls),
                yes_no(u.registered),
                state(u),
            ]);
            row
        })
        .collect();
    let mut header = vec!["NICK", "ROOM"];
    if clustered {
        header.push("NODE");
    }
    header.extend(["ADDRESS", "PID", "CONNECTED", "IDLE", "TLS", "ACCOUNT", "STATE"]);
    table(&header, rows)
}

fn yes_no(on: bool) -> String {
    if on { "yes" } else { "no" }.to_string()
}

/// The last column of `who`: away (with the reason) and muted.
fn state(user: &UserRow) -> String {
    let mut parts = Vec::new();
    if let Some(reason) = &user.away {
        parts.push(format!("away: {reason}"));
    }
    if user.muted {
        parts.push("muted".to_string());
    }
    parts.join(", ")
}

fn rooms_table(rooms: &[RoomRow]) -> String {
    let rows = rooms
        .iter()
        .map(|r| vec![r.name.clone(), r.members.to_string(), r.topic.clone().unwrap_or_default()])
        .collect();
    table(&["ROOM", "USERS", "TOPIC"], rows)
}

fn bans_table(bans: &[Ban]) -> String {
    if bans.is_empty() {
        return "no bans\n".to_string();
    }
    let now = crate::clock::unix_now();
    let rows = bans
        .iter()
        .map(|b| {
            vec![
                b.target.to_string(),
                format!("{} ago", age(now.saturating_sub(b.since))),
                expiry(b.until, now),
                b.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["TARGET", "SET", "EXPIRES", "REASON"], rows)
}

fn mutes_table(mutes: &[Mute]) -> String {
    if mutes.is_empty() {
        return "no mutes\n".to_string();
    }
    let now = crate::clock::unix_now();
    let rows = mutes
        .iter()
        .map(|m| {
            vec![
                m.nick.clone(),
                format!("{} ago", age(now.saturating_sub(m.since))),
                expiry(m.until, now),
            ]
        })
        .collect();
    table(&["NICK", "SET", "EXPIRES"], rows)
}

/// When a ban or a mute ends, as the tables say it.
fn expiry(until: Option<u64>, now: u64) -> String {
    until.map_or("never".into(), |until| format!("in {}", age(until.saturating_sub(now))))
}

/// A label value, escaped as the exposition format asks.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family: name, type, help, and samples (labels, value).
type Metric = (&'static str, &'static str, &'static str, Vec<(String, f64)>);

fn prometheus(s: &Status) -> String {
    let one = |value: u64| vec![(String::new(), value as f64)];
    let by_reason = |list: &[Counted]| -> Vec<(String, f64)> {
        list.iter()
            .map(|c| (format!("{{reason=\"{}\"}}", label(&c.reason)), c.count as f64))
            .collect()
    };
    let build = format!("{{version=\"{}\",protocol=\"{}\"}}", label(&s.version), s.protocol);
    // (name, type, help, samples); the master's figures only while it is linked.
    let mut metrics: Vec<Metric> = vec![
        ("chatd_build_info", "gauge", "chatd's version and session protocol.", vec![(build, 1.0)]),
        (
            "chatd_broker_start_time_seconds",
            "gauge",
            "When the broker started (Unix time).",
            one(s.broker_started_at),
        ),
        ("chatd_sessions", "gauge", "Session processes linked to the broker.", one(s.sessions)),
        ("chatd_users", "gauge", "Admitted users (sessions with a nickname).", one(s.users)),
        ("chatd_rooms", "gauge", "Rooms, the default room included.", one(s.rooms)),
        (
            "chatd_messages_total",
            "counter",
            "Chat lines accepted since the broker started.",
            one(s.messages),
        ),
        (
            "chatd_deliveries_total",
            "counter",
            "Copies of chat lines queued for sessions since the broker started.",
            one(s.deliveries),
        ),
        (
            "chatd_received_bytes_total",
            "counter",
            "Bytes received from clients (reported by sessions).",
            one(s.bytes_received),
        ),
        (
            "chatd_sent_bytes_total",
            "counter",
            "Bytes sent to clients (reported by sessions).",
            one(s.bytes_sent),
        ),
        (
            "chatd_drops_total",
            "counter",
            "Sessions the broker dropped, by reason.",
            by_reason(&s.drops),
        ),
        ("chatd_bans", "gauge", "Bans in force.", one(s.bans)),
        ("chatd_mutes", "gauge", "Mutes in force.", one(s.mutes)),
    ];
    if let Some(master) = &s.master {
        metrics.extend([
            (
                "chatd_start_time_seconds",
                "gauge",
                "When the master started (Unix time).",
                one(master.started_at),
            ),
            (
                "chatd_connections",
                "gauge",
                "Connected clients (session processes).",
                one(master.connections),
            ),
            (
                "chatd_accepted_connections_total",
                "counter",
                "Connections given a session since the master started.",
                one(master.accepted),
            ),
            (
                "chatd_refusals_total",
                "counter",
                "Connections refused before fork, by reason.",
                by_reason(&master.refusals),
            ),
            (
                "chatd_child_crashes_total",
                "counter",
                "Session processes that ended by a signal or an error exit.",
                one(master.child_crashes),
            ),
            (
                "chatd_broker_restarts_total",
                "counter",
                "Times the broker died and was restarted.",
                one(master.broker_restarts),
            ),
            (
                "chatd_master_generation",
                "gauge",
                "Images the master's pid has run: 1 at start, one more per in-place upgrade.",
                one(u64::from(master.generation)),
            ),
            (
                "chatd_sessions_by_code",
                "gauge",
                "Live sessions by the code that forked them.",
                master
                    .sessions_by_code
                    .iter()
                    .map(|code| {
                        let labels = format!(
                            "{{generation=\"{}\",version=\"{}\",protocol=\"{}\"}}",
                            code.generation,
                            label(&code.version),
                            code.protocol
                        );
                        (labels, code.sessions as f64)
                    })
                    .collect(),
            ),
        ]);
    }
    if let Some(cluster) = &s.cluster {
        let node = |name: &str| format!("{{node=\"{}\"}}", label(name));
        metrics.extend([
            (
                "chatd_cluster_up",
                "gauge",
                "Whether this node is in contact with the cluster's Redis (1) or not (0).",
                vec![(node(&cluster.node), if cluster.connected { 1.0 } else { 0.0 })],
            ),
            (
                "chatd_cluster_heartbeat_age_seconds",
                "gauge",
                "Age of each node's last heartbeat, by Redis's clock.",
                cluster
                    .nodes
                    .iter()
                    .map(|n| (node(&n.name), n.heartbeat_age_ms as f64 / 1000.0))
                    .collect(),
            ),
            (
                "chatd_cluster_round_trip_seconds",
                "gauge",
                "From publishing this node's last broadcast to reading it back from the stream.",
                vec![(String::new(), cluster.round_trip_ms_last / 1000.0)],
            ),
            (
                "chatd_cluster_queued_entries",
                "gauge",
                "Entries waiting for Redis.",
                one(cluster.queued),
            ),
            (
                "chatd_cluster_dropped_entries_total",
                "counter",
                "Entries never sent because too many waited for Redis.",
                one(cluster.dropped),
            ),
            (
                "chatd_cluster_published_entries_total",
                "counter",
                "Entries this node added to the stream.",
                one(cluster.published),
            ),
            (
                "chatd_cluster_read_entries_total",
                "counter",
                "Stream entries this node read (every node's).",
                one(cluster.read),
            ),
            (
                "chatd_cluster_skipped_entries_total",
                "counter",
                "Stream entries skipped (garbage, or a newer version).",
                one(cluster.skipped),
            ),
            (
                "chatd_cluster_lost_total",
                "counter",
                "Times contact with Redis was lost.",
                one(cluster.lost_episodes),
            ),
        ]);
    }
    if let Some(store) = &s.store {
        let kind = format!("{{kind=\"{}\"}}", label(&store.kind));
        metrics.extend([
            (
                "chatd_store_up",
                "gauge",
                "Whether the store works (1) or fails (0).",
                vec![(kind, if store.failing.is_none() { 1.0 } else { 0.0 })],
            ),
            ("chatd_store_bytes", "gauge", "Bytes the database takes.", one(store.bytes)),
            (
                "chatd_store_waiting_lines",
                "gauge",
                "Lines said and not yet written to the store.",
                one(store.waiting_lines),
            ),
            (
                "chatd_store_written_lines_total",
                "counter",
                "Lines written to the store since the broker started.",
                one(store.written_lines),
            ),
            (
                "chatd_store_dropped_lines_total",
                "counter",
                "Lines not stored because too many waited.",
                one(store.dropped_lines),
            ),
        ]);
    }
    let mut out = String::new();
    for (name, kind, help, samples) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
    let histogram = &s.fanout_latency;
    let _ = writeln!(
        out,
        "# HELP chatd_fanout_latency_seconds From reading a chat line to writing it for every member of its room."
    );
    let _ = writeln!(out, "# TYPE chatd_fanout_latency_seconds histogram");
    let mut cumulative = 0;
    for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
        cumulative += count;
        let _ = writeln!(out, "chatd_fanout_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = histogram.counts.iter().sum();
    let _ = writeln!(out, "chatd_fanout_latency_seconds_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "chatd_fanout_latency_seconds_sum {}", histogram.sum_seconds);
    let _ = writeln!(out, "chatd_fanout_latency_seconds_count {total}");
    if let Some(store) = &s.store {
        let _ = writeln!(
            out,
            "# HELP chatd_store_write_seconds How long the store's writes (one transaction each) took."
        );
        let _ = writeln!(out, "# TYPE chatd_store_write_seconds summary");
        let _ = writeln!(out, "chatd_store_write_seconds_sum {}", store.write_seconds);
        let _ = writeln!(out, "chatd_store_write_seconds_count {}", store.writes);
    }
    out
}

/// Writes `text` to `path` so that readers see the old file or the new one, never a part:
/// a temporary file in the same directory, fsync, rename.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::control::{Histogram, MasterFigures};

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            protocol: 3,
            master: Some(MasterFigures {
                pid: 10,
                started_at: 1000,
                connections: 2,
                accepted: 5,
                refusals: vec![Counted { reason: "banned".into(), count: 1 }],
                child_crashes: 0,
                broker_restarts: 1,
                tls: None,
                ..MasterFigures::default()
            }),
            broker_pid: 11,
            broker_started_at: 1010,
            now: 4700,
            users: 2,
            rooms: 1,
            messages: 3,
            deliveries: 6,
            fanout_latency: Histogram {
                bounds: vec![0.001, 0.01],
                counts: vec![2, 1, 0],
                sum_seconds: 0.004,
            },
            ..Status::default()
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let text = prometheus(&status());
        assert!(text.contains("chatd_fanout_latency_seconds_bucket{le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("chatd_fanout_latency_seconds_bucket{le=\"0.01\"} 3\n"), "{text}");
        assert!(text.contains("chatd_fanout_latency_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("chatd_fanout_latency_seconds_count 3\n"), "{text}");
        assert!(text.contains("chatd_refusals_total{reason=\"banned\"} 1\n"), "{text}");
    }

    #[test]
    fn tables_align_and_status_reads_as_sentences() {
        let users = vec![UserRow {
            nick: "alice".into(),
            room: "lobby".into(),
            peer: "127.0.0.1:5000".into(),
            pid: 42,
            connected_seconds: 3725,
            idle_seconds: 5,
            away: None,
            muted: true,
            tls: false,
            registered: false,
            node: None,
        }];
        let text = users_table(&users);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("ROOM"), lines[1].find("lobby"));
        assert!(lines[1].contains("1h 2m") && lines[1].ends_with("muted"), "{text}");
        let text = human_status(&status());
        assert!(text.contains("master       pid 10, up 1h 1m"), "{text}");
        assert!(text.contains("refusals     banned 1"), "{text}");
        assert!(!text.contains("accounts"), "not loaded, or off: {text}");
        let text = human_status(&Status { accounts: Some(3), ..status() });
        assert!(text.contains("\naccounts     3 registered\n"), "{text}");
    }

    #[test]
    fn a_clusters_who_has_a_node_column() {
        let row = |nick: &str, node: &str| UserRow {
            nick: nick.into(),
            room: "lobby".into(),
            peer: "-".into(),
            pid: 0,
            connected_seconds: 5,
            idle_seconds: 5,
            away: None,
            muted: false,
            tls: false,
            registered: false,
            node: Some(node.into()),
        };
        let text = users_table(&[row("alice", "east"), row("bob", "west")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("NODE"), "{text}");
        assert_eq!(lines[0].find("NODE"), lines[2].find("west"), "{text}");
        let alone = users_table(&[UserRow { node: None, ..row("alice", "a") }]);
        assert!(!alone.contains("NODE"), "{alone}");
    }

    #[test]
    fn who_pads_by_display_width_so_cjk_nicks_keep_the_columns_straight() {
        let row = |nick: &str, room: &str| UserRow {
            nick: nick.into(),
            room: room.into(),
            peer: "127.0.0.1:5000".into(),
            pid: 42,
            connected_seconds: 5,
            idle_seconds: 5,
            away: None,
            muted: false,
            tls: false,
            registered: false,
            node: None,
        };
        let text = users_table(&[row("小明", "lobby"), row("alice", "大厅"), row("ｂｏｂ", "dev")]);
        let lines: Vec<&str> = text.lines().collect();
        // Where each column starts on screen: the display width of what comes before it.
        let at = |line: &str, needle: &str| line.find(needle).map(|byte| columns(&line[..byte]));
        assert_eq!(at(lines[1], "lobby"), at(lines[0], "ROOM"), "{text}");
        assert_eq!(at(lines[2], "大厅"), at(lines[0], "ROOM"), "{text}");
        assert_eq!(at(lines[3], "dev"), at(lines[0], "ROOM"), "{text}");
        for line in &lines[1..] {
            assert_eq!(at(line, "127.0.0.1"), at(lines[0], "ADDRESS"), "{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
