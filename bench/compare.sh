#!/usr/bin/env bash
# Runs chatd, the floor of its shape (chatd-floor, bench/floor/main.rs) and ngircd side by side
# on loopback, interleaved (chatd, floor, ngircd, chatd, floor, ngircd, ...; three repetitions),
# and prints each figure's median for the three with the ratios chatd/floor and chatd/ngircd.
# Results: target/bench/results.jsonl (one JSON line per run) and target/bench/table.md.
# Needs root (chatd drops to nobody; ngircd to 65534) and ngircd (apt-get install ngircd).
#   bash bench/compare.sh            # the full comparison (about 10-15 minutes)
#   QUICK=1 bash bench/compare.sh    # smaller N, one repetition, for a quick look
#   SCALE=1 bash bench/compare.sh    # also 10,000 clients at once
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ngircd >/dev/null || { echo "compare.sh: needs ngircd (apt-get install ngircd)" >&2; exit 2; }
cargo build --release --locked --bin chatd --bin chatd-bench --bin chatd-floor >&2
bench=target/release/chatd-bench
out=$(pwd)/target/bench
rm -rf "$out" && mkdir -p "$out" && chmod 777 "$out"
results=$out/results.jsonl
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

chatd_port=$((24000 + RANDOM % 1000)); irc_port=$((chatd_port + 1000)); floor_port=$((chatd_port + 2000))
{ cat bench/chatd.toml; echo "state_dir = \"$out/state\""; } > "$out/chatd.toml"
sed -e "s/@PORT@/$irc_port/" -e "s|@DIR@|$out|" bench/ngircd.conf > "$out/ngircd.conf"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
target/release/chatd --config "$out/chatd.toml" --listen "127.0.0.1:$chatd_port" \
  --runtime-dir "$out/run" --log stderr 2>"$out/chatd.log" &
chatd_pid=$!; pids+=("$chatd_pid")
ngircd -n -f "$out/ngircd.conf" >"$out/ngircd.log" 2>&1 &
ngircd_pid=$!; pids+=("$ngircd_pid")
# The floor puts itself in a process group of its own and ends it on SIGTERM.
target/release/chatd-floor --listen "127.0.0.1:$floor_port" 2>"$out/floor.log" &
floor_pid=$!; pids+=("$floor_pid")
for port in "$chatd_port" "$irc_port" "$floor_port"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

# A run that fails (the server dropped clients, say) is reported and recorded, and the
# comparison goes on.
record_failure() { echo "{\"scenario\":\"$2\",\"server\":\"$1\",\"failed\":true}" >> "$results"; }
chatd() { "$bench" "$@" --addr "127.0.0.1:$chatd_port" --pid "$chatd_pid" --server chatd --json "$results" \
  || { echo "chatd failed: $*" >&2; record_failure chatd "$*"; }; }
floor() { "$bench" "$@" --addr "127.0.0.1:$floor_port" --pid "$floor_pid" --server floor --json "$results" \
  || { echo "floor failed: $*" >&2; record_failure floor "$*"; }; }
ircd() { "$bench" "$@" --addr "127.0.0.1:$irc_port" --pid "$ngircd_pid" --server ngircd \
  --protocol irc --oper bench:bench --json "$results" \
  || { echo "ngircd failed: $*" >&2; record_failure ngircd "$*"; }; }

if [ -n "${QUICK:-}" ]; then
  reps=1; small=100; big=1000; n=200; seconds=3; scale=2000
else
  reps=3; small=100; big=5000; n=1000; seconds=10; scale=10000
fi
# The fan-out S=1 at N=small, n and big: the broker's CPU per broadcast across room sizes.
scenarios=(
  "connect -n $n"
  "fanout -n $small --senders 1 --window 8 --seconds $seconds"
  "fanout -n $n --senders 1 --window 8 --seconds $seconds"
  "fanout -n $n --senders 10 --window 8 --seconds $seconds"
  "rate -n $n --rate 50 --seconds $seconds"
)
# The big room once (ngircd's registrations of 5,000 clients take minutes, when they succeed).
big_room="fanout -n $big --senders 1 --window 8 --seconds $seconds"
for rep in $(seq "$reps"); do
  extra=(); [ "$rep" = 1 ] && extra=("$big_room")
  for scenario in "${scenarios[@]}" "${extra[@]}"; do
    echo "repetition $rep: $scenario" >&2
    # shellcheck disable=SC2086
    chatd $scenario >/dev/null
    # shellcheck disable=SC2086
    floor $scenario >/dev/null
    # shellcheck disable=SC2086
    ircd $scenario >/dev/null
  done
done
# Context switches and system calls per delivery, machine-wide (both servers and the load
# generator), counted by `perf stat -a` over a whole 10 s fan-out run. Connecting is included
# and its N^2/2 join lines are not in the denominator: that overstates both servers' figures by
# up to a fifth at N=1000. Run before the scale step: a server still shedding 10,000
# connections would be counted too.
if command -v perf >/dev/null && perf stat -a -e context-switches -- true >/dev/null 2>&1; then
  count_per_delivery() { # server-name bench-args...
    local name=$1; shift
    perf stat -a -x, -e context-switches,raw_syscalls:sys_enter -o "$out/perf-$name.csv" -- \
      "$bench" fanout -n "$n" --senders 1 --window 8 --seconds 10 "$@" > "$out/perf-$name.json" || true
    python3 - "$name" "$out/perf-$name.json" "$out/perf-$name.csv" <<'PY' || echo "| $name | not counted | |"
import csv, json, sys
name, result, counts = sys.argv[1:]
run = json.load(open(result))
deliveries = run["deliveries_per_second"] * run["seconds"]
rows = {row[2]: float(row[0]) for row in csv.reader(l for l in open(counts) if l[0].isdigit())}
print(f"| {name} | {rows['context-switches'] / deliveries:.3f} | {rows['raw_syscalls:sys_enter'] / deliveries:.3f} |")
PY
  }
  {
    echo "| fan-out n=$n s=1 w=8, machine-wide | context switches per delivery | system calls per delivery |"
    echo "| --- | ---: | ---: |"
    count_per_delivery chatd --addr "127.0.0.1:$chatd_port" --server chatd-perf
    count_per_delivery floor --addr "127.0.0.1:$floor_port" --server floor-perf
    count_per_delivery ngircd --addr "127.0.0.1:$irc_port" --server ngircd-perf --protocol irc --oper bench:bench
  } > "$out/per-delivery.md"
fi

# Scale (SCALE=1, several minutes more): every client connected at once, and broadcasts
# reaching all of them. Each login is announced to everyone already in the room, so connecting
# N clients costs N^2/2 deliveries: that, not the broadcast, is what takes the time.
if [ -n "${SCALE:-}" ]; then
  echo "scale: $scale clients" >&2
  chatd fanout -n "$scale" --senders 1 --window 1 --seconds 3 >/dev/null
  floor fanout -n "$scale" --senders 1 --window 1 --seconds 3 >/dev/null
  ircd fanout -n "$scale" --senders 1 --window 1 --seconds 3 >/dev/null
fi

# Syscalls of chatd's broker per delivery (strace slows everything: figures from this run are
# for counting, not timing).
broker=$(cat "$out/run/broker.pid")
if command -v strace >/dev/null; then
  strace -c -f -p "$broker" -o "$out/strace-broker.txt" & strace_pid=$!
  sleep 0.5
  "$bench" fanout -n "$n" --senders 1 --window 8 --seconds 3 --addr "127.0.0.1:$chatd_port" \
    --server chatd-strace > "$out/strace-run.json"
  kill -INT "$strace_pid"; wait "$strace_pid" || true
fi

{
  echo "## chatd beside its floor and ngircd ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
  echo
  "$bench" report --ours chatd --floor floor --theirs ngircd "$results"
  if [ -f "$out/per-delivery.md" ]; then echo; cat "$out/per-delivery.md"; fi
} | tee "$out/table.md"
