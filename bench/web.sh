#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md "Web clients (#19)", on one chatd with a plain and a web
# listener, interleaved, REPS repetitions (default 3):
# - the PSS of one idle logged-in client's session process (/proc/PID/smaps_rollup), a telnet
#   client beside a WebSocket one (chatd-bench connect -n 1: pss_per_session_kib);
# - the connect rate of N clients (default 500, 64 at once): TCP connect, nickname, admitted,
#   on the telnet listener beside the web listener (HTTP upgrade to /ws, then the nickname).
# Results: target/bench-19/results.jsonl and target/bench-19/table.md. Needs root (chatd drops
# to nobody) and python3.
#   bash bench/web.sh            # REPS=1 N=200 for a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin chatd --bin chatd-bench >&2
bench=target/release/chatd-bench
out=$(pwd)/target/bench-19
rm -rf "$out" && mkdir -p "$out" && chmod 777 "$out"
results=$out/results.jsonl
reps=${REPS:-3}; n=${N:-500}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
plain=$((27000 + RANDOM % 1000)); web=$((plain + 1000)); second=$web
# shellcheck source=bench/one_chatd.sh
. bench/one_chatd.sh
start_one_chatd "web_listen = [\"127.0.0.1:$web\"]"
run() { "$bench" "$@" --pid "$pid" --json "$results" >&2; }
# Until the previous run's sessions are gone (only the broker is left under the master), so
# that each run measures its own clients.
quiet() {
  for _ in $(seq 300); do
    [ "$(pgrep -P "$pid" | wc -l)" -le 1 ] && return 0
    sleep 0.1
  done
  echo "web.sh: sessions of the last run still there" >&2
}
for rep in $(seq "$reps"); do
  echo "== repetition $rep" >&2
  run connect -n 1 --addr "127.0.0.1:$plain" --server telnet-idle; quiet
  run connect -n 1 --addr "127.0.0.1:$web" --protocol web --server web-idle; quiet
  run connect -n "$n" --addr "127.0.0.1:$plain" --server telnet; quiet
  run connect -n "$n" --addr "127.0.0.1:$web" --protocol web --server web; quiet
done
python3 - "$results" > "$out/table.md" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def median(server, key):
    values = [r[key] for r in runs if r.get("server") == server and key in r]
    return statistics.median(values) if values else float("nan")
print("| figure (median) | telnet | web | web/telnet |")
print("| --- | ---: | ---: | ---: |")
rows = [
    ("PSS of one idle session, KiB", "telnet-idle", "web-idle", "pss_per_session_kib"),
    ("connect: admissions/s", "telnet", "web", "admissions_per_second"),
    ("connect: admission p50, ms", "telnet", "web", "admission_p50_ms"),
    ("connect: admission p99, ms", "telnet", "web", "admission_p99_ms"),
    ("connect: PSS per session at N, KiB", "telnet", "web", "pss_per_session_kib"),
]
for name, telnet, web, key in rows:
    a, b = median(telnet, key), median(web, key)
    print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
PY
cat "$out/table.md"
