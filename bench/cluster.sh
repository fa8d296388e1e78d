#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md "Cluster (#18)": two chat nodes (a and b) on one Redis and
# one PostgreSQL on loopback, beside one standalone chatd (no [cluster]) on the same database.
# Interleaved (standalone, cluster, standalone, cluster, ...; REPS repetitions, default 3),
# medians:
# - latency (open loop, RATE lines/s from one sender to N-1 receivers): standalone; cluster
#   with the sender on a and the receivers on b; cluster with everyone on a (a node shows its
#   own room's lines only when it reads them back from the stream);
# - throughput (closed loop, fan-out): SENDERS senders and RECEIVERS receivers: standalone,
#   cluster a -> b, cluster all on a; with the CPU of node a's broker threads (loop, Redis
#   writer, Redis reader, store) over the cluster's a -> b runs;
# - Redis itself: redis-cli --latency and redis-benchmark (PING, XADD) on one connection, and
#   node a's round trip as `chatctl status` reports it after the runs.
# Results: target/bench-18/results.jsonl, target/bench-18/table.md (logs and configs there
# too). Needs root (chatd drops to nobody; initdb runs as postgres), redis-server and
# PostgreSQL from Debian, python3.
#   REPS=1 SECONDS_RUN=3 bash bench/cluster.sh      # a quick look
#   PROFILE=1 bash bench/cluster.sh                 # plus perf record -a of the last standalone
#                                                 # and cluster a -> b fan-out, by process
set -euo pipefail
cd "$(dirname "$0")/.."
for program in redis-server redis-cli redis-benchmark python3 runuser; do
  command -v "$program" >/dev/null || { echo "cluster.sh: needs $program" >&2; exit 2; }
done
pg_bin=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -1 | xargs -r dirname)
[ -n "$pg_bin" ] || { echo "cluster.sh: needs PostgreSQL (apt-get install postgresql)" >&2; exit 2; }
cargo build --release --locked --bin chatd --bin chatd-bench --bin chatctl >&2
bench=target/release/chatd-bench
out=$(pwd)/target/bench-18
rm -rf "$out" && mkdir -p "$out" && chmod 777 "$out"
results=$out/results.jsonl
reps=${REPS:-3}; seconds=${SECONDS_RUN:-10}; rate=${RATE:-50}; listeners=${LISTENERS:-50}
senders=${SENDERS:-50}; receivers=${RECEIVERS:-50}; window=${WINDOW:-8}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

base=$((28000 + RANDOM % 1000))
redis_port=$base; port_a=$((base + 1000)); port_b=$((base + 1001)); port_one=$((base + 1002))
password=$(openssl rand -hex 16 2>/dev/null || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
pg_dir=$(mktemp -d /tmp/chatd-bench-pg-XXXXXX)

# Everything started here is its own process group (setsid), stopped in this order.
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
  redis-cli -p "$redis_port" --no-auth-warning -a "$password" shutdown nosave >/dev/null 2>&1
  [ -n "${redis_pid:-}" ] && kill -KILL -- "-$redis_pid" 2>/dev/null
  if [ -f "$pg_dir/data/postmaster.pid" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  wait 2>/dev/null
  rm -rf "$pg_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "cluster.sh: nothing listens on port $1" >&2; exit 1
}

# PostgreSQL: a cluster of its own, reachable only through the socket in $pg_dir (as
# src/store/test_cluster.rs makes it), one database chatd owned by the superuser chatd.
chown postgres:postgres "$pg_dir" && chmod 755 "$pg_dir"
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -U chatd -E UTF8 --locale=C --no-sync \
  --auth=trust >"$out/initdb.log" 2>&1
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" \
  -o "-k '$pg_dir' -c listen_addresses='' -c fsync=off -c full_page_writes=off" -w -t 30 start >&2
"$pg_bin/createdb" -h "$pg_dir" -U chatd chatd
database="postgres://chatd@/chatd?host=$pg_dir"

setsid redis-server --port "$redis_port" --bind 127.0.0.1 --requirepass "$password" \
  --save '' --appendonly no --dir "$out" >"$out/redis.log" 2>&1 &
redis_pid=$!
wait_port "$redis_port"
rcli() { redis-cli -p "$redis_port" --no-auth-warning -a "$password" "$@"; }

# start_chatd NAME PORT [NODE]: writes $out/NAME/chatd.toml and starts the release chatd;
# sets pid_NAME (the master's).
start_chatd() {
  local name=$1 port=$2 node=${3:-}
  mkdir -p "$out/$name"
  {
    cat bench/chatd.toml
    echo "state_dir = \"$out/$name/state\""
    echo "database = \"$database\""
    echo "tls_listen = []"
    echo "web_listen = []"
    if [ -n "$node" ]; then
      echo "[cluster]"
      echo "redis = \"redis://:$password@127.0.0.1:$redis_port/0\""
      echo "node = \"$node\""
    fi
  } > "$out/$name/chatd.toml"
  setsid target/release/chatd --config "$out/$name/chatd.toml" --listen "127.0.0.1:$port" \
    --runtime-dir "$out/$name/run" --log stderr 2>"$out/$name/chatd.log" &
  pids+=("$!")
  printf -v "pid_$name" %s "$!"
  wait_port "$port"
}
start_chatd one "$port_one"
start_chatd a "$port_a" a
start_chatd b "$port_b" b
for node in a b; do
  for _ in $(seq 100); do grep -q "cluster: connected to Redis as node $node" "$out/$node/chatd.log" && break; sleep 0.1; done
done

# Until the previous run's sessions are gone from every daemon (only the broker is left under
# each master), so that each run measures its own clients.
quiet() {
  local pid
  for pid in "${pids[@]}"; do
    for _ in $(seq 300); do
      [ "$(pgrep -P "$pid" | wc -l)" -le 1 ] && break
      sleep 0.1
    done
  done
}
record_failure() { echo "{\"scenario\":\"$2\",\"server\":\"$1\",\"failed\":true}" >> "$results"; }
# run SERVER PID ADDR [RECEIVE_ADDR] -- ARGS...
run() {
  local server=$1 pid=$2 addr=$3; shift 3
  local receive=()
  if [ "$1" != "--" ]; then receive=(--receive-addr "$1"); shift; fi
  shift
  "$bench" "$@" --addr "$addr" "${receive[@]}" --pid "$pid" --server "$server" --json "$results" >/dev/null \
    || { echo "cluster.sh: $server failed: $*" >&2; record_failure "$server" "$*"; }
  quiet
}
# CPU seconds so far of each thread of both nodes' brokers (by node and thread name) and of
# redis-server (all its threads), as "label seconds" lines.
cpu_snapshot() {
  local node broker task
  for node in a b; do
    broker=$(cat "$out/$node/run/broker.pid")
    for task in /proc/"$broker"/task/*; do
      echo "$node:$(cat "$task/comm") $(awk '{print $1 / 1e9}' "$task/schedstat")"
    done
  done
  for task in /proc/"$redis_pid"/task/*; do
    echo "redis-server $(awk '{print $1 / 1e9}' "$task/schedstat")"
  done
}

# profile NAME: (PROFILE=1, perf installed) records the whole machine during the middle of
# the next run's measured window, in the background, with the processes then running (for
# report_profile: CPU samples by daemon and role, everything else by name).
profile() {
  [ -n "${PROFILE:-}" ] && command -v perf >/dev/null || return 0
  (
    sleep 3
    ps -eL -o lwp=,pid=,ppid=,comm= > "$out/ps-$1.txt"
    perf record -a -q -F 499 -o "$out/perf-$1.data" -- sleep $((seconds > 6 ? seconds - 4 : 2))
  ) >/dev/null 2>&1 &
  profiling=$!
}
report_profile() {
  local data name
  for data in "$out"/perf-*.data; do
    [ -f "$data" ] || continue
    name=$(basename "$data" .data); name=${name#perf-}
    echo; echo "perf record -a during the $name fan-out (share of all samples, both cores):"; echo
    perf report -i "$data" --sort pid --stdio 2>/dev/null \
      | python3 bench/cluster_profile.py "$out/ps-$name.txt" one="$pid_one" a="$pid_a" b="$pid_b" \
        redis="$redis_pid" postgres="$(head -1 "$pg_dir/data/postmaster.pid")"
  done
}

latency=(rate -n $((listeners + 1)) --senders 1 --rate "$rate" --seconds "$seconds")
throughput=(fanout -n $((senders + receivers)) --senders "$senders" --window "$window" --seconds "$seconds")
A=127.0.0.1:$port_a; B=127.0.0.1:$port_b; ONE=127.0.0.1:$port_one
for rep in $(seq "$reps"); do
  echo "== repetition $rep (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  run standalone "$pid_one" "$ONE" -- "${latency[@]}"
  run cluster-a-b "$pid_a" "$A" "$B" -- "${latency[@]}"
  run cluster-a-a "$pid_a" "$A" -- "${latency[@]}"
  # The round trip of node a's last entry at light load (the leaves that end the run).
  target/release/chatctl --runtime-dir "$out/a/run" status > "$out/chatctl-status-a-light-$rep.txt" 2>&1 || true
  [ "$rep" = "$reps" ] && profile standalone
  run standalone "$pid_one" "$ONE" -- "${throughput[@]}"
  [ -n "${profiling:-}" ] && wait "$profiling"
  [ "$rep" = "$reps" ] && profile cluster-a-b
  cpu_snapshot > "$out/cpu-before-$rep"
  run cluster-a-b "$pid_a" "$A" "$B" -- "${throughput[@]}"
  cpu_snapshot > "$out/cpu-after-$rep"
  [ -n "${profiling:-}" ] && wait "$profiling"
  run cluster-a-a "$pid_a" "$A" -- "${throughput[@]}"
done
rcli --latency --csv -i 5 > "$out/redis-latency.csv" 2>&1 || true
redis-benchmark -h 127.0.0.1 -p "$redis_port" -a "$password" -c 1 -n 20000 -q -t ping \
  > "$out/redis-ping.txt" 2>&1 || true
redis-benchmark -h 127.0.0.1 -p "$redis_port" -a "$password" -c 1 -n 20000 -q \
  XADD chatd:bench-only MAXLEN '~' 10000 '*' v 1 n x e 0123456789012345678901234567890123456789 \
  > "$out/redis-xadd.txt" 2>&1 || true
rcli DEL chatd:bench-only >/dev/null || true
target/release/chatctl --runtime-dir "$out/a/run" status > "$out/chatctl-status-a.txt" 2>&1 || true
rcli INFO commandstats > "$out/redis-commandstats.txt" 2>&1 || true

python3 - "$out" "$reps" "$rate" "$listeners" "$senders" "$receivers" "$window" > "$out/table.md" <<'PY'
import glob, json, os, re, statistics, sys
out, reps, rate, listeners, senders, receivers, window = sys.argv[1:]
runs = [json.loads(l) for l in open(os.path.join(out, "results.jsonl")) if l.strip()]
def median(server, scenario, key):
    values = [r[key] for r in runs if r.get("server") == server
              and r.get("scenario", "").startswith(scenario) and key in r]
    return statistics.median(values) if values else float("nan")
def spread(server, scenario, key):
    values = sorted(r[key] for r in runs if r.get("server") == server
                    and r.get("scenario", "").startswith(scenario) and key in r)
    return f"{values[0]:.3g}–{values[-1]:.3g}" if values else "–"
servers = ["standalone", "cluster-a-b", "cluster-a-a"]
print(f"Medians of {reps} repetitions (range in brackets for the cluster a -> b).\n")
print("| figure | standalone | cluster a -> b | cluster a -> a | a->b minus standalone | a->a minus standalone |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
rows = [
    (f"latency, 1 sender at {rate} lines/s, {listeners} receivers: p50 (ms)", "rate", "latency_p50_ms"),
    ("latency p99 (ms)", "rate", "latency_p99_ms"),
    ("latency max (ms)", "rate", "latency_max_ms"),
    (f"fan-out, {senders} senders x {receivers} receivers, window {window}: lines/s", "fanout", "messages_per_second"),
    ("fan-out: deliveries/s", "fanout", "deliveries_per_second"),
    ("fan-out: latency p50 (ms)", "fanout", "latency_p50_ms"),
    ("fan-out: latency p99 (ms)", "fanout", "latency_p99_ms"),
    ("fan-out: broker loop CPU per line (µs)", "fanout", "broker_cpu_per_message_us"),
    ("fan-out: machine CPU (% of one core)", "fanout", "machine_cpu_percent"),
    ("fan-out: machine CPU per delivery, generator excluded (µs)", "fanout", "machine_cpu_per_delivery_us"),
    ("fan-out: load generator CPU (% of one core)", "fanout", "generator_cpu_percent"),
    ("lost (sum over the runs)", "", "lost"),
]
for name, scenario, key in rows:
    if key == "lost":
        cells = [sum(r.get("lost", 0) for r in runs if r.get("server") == s) for s in servers]
        print(f"| {name} | " + " | ".join(str(c) for c in cells) + " | | |")
        continue
    values = [median(s, scenario, key) for s in servers]
    diff = [values[1] - values[0], values[2] - values[0]]
    ab = f"{values[1]:.3g} ({spread('cluster-a-b', scenario, key)})"
    print(f"| {name} | {values[0]:.3g} | {ab} | {values[2]:.3g} | {diff[0]:+.3g} | {diff[1]:+.3g} |")
failed = [r for r in runs if r.get("failed")]
if failed:
    print(f"\n{len(failed)} run(s) failed: " + "; ".join(f"{r['server']} {r['scenario']}" for r in failed))
# The brokers' threads and Redis over the a -> b throughput runs: CPU over the whole run
# (connecting, warm-up and drain included) per line measured, so a little high.
ab_fanout = [r for r in runs if r.get("server") == "cluster-a-b"
             and r.get("scenario", "").startswith("fanout") and "messages_sent" in r]
totals = {}
def read(path):
    d = {}
    for line in open(path):
        name, seconds = line.rsplit(" ", 1)
        d[name] = d.get(name, 0.0) + float(seconds)
    return d
for index, before in enumerate(sorted(glob.glob(os.path.join(out, "cpu-before-*")))):
    if index >= len(ab_fanout):
        break
    b, a = read(before), read(before.replace("before", "after"))
    lines = max(ab_fanout[index]["messages_sent"], 1)
    for name in a:
        totals.setdefault(name, []).append((a[name] - b.get(name, 0.0), (a[name] - b.get(name, 0.0)) / lines * 1e6))
if totals:
    print("\nCPU over each whole a -> b fan-out run (median over the repetitions; the brokers' threads")
    print("by name, `chatd` being the broker's loop; per line: over the lines of the measured window):\n")
    print("| process:thread | CPU s | µs per line |")
    print("| --- | ---: | ---: |")
    for name, values in sorted(totals.items()):
        print(f"| {name} | {statistics.median(v[0] for v in values):.2f} | {statistics.median(v[1] for v in values):.1f} |")
def text(name):
    try:
        return open(os.path.join(out, name)).read().strip()
    except OSError:
        return "(not measured)"
print("\nRedis on loopback, one connection:\n")
def finals(name):
    lines = re.split(r"[\r\n]+", text(name))
    return "; ".join(l.strip() for l in lines if "requests per second" in l) or text(name)
latency = text("redis-latency.csv").splitlines()[-1].split(",")
if len(latency) == 4:
    latency = f"min {latency[0]}, max {latency[1]}, avg {latency[2]} ms over {latency[3]} samples"
print(f"- `redis-cli --latency -i 5`: {latency}")
print(f"- `redis-benchmark -c 1 -t ping`: {finals('redis-ping.txt')}")
print(f"- `redis-benchmark -c 1 XADD ... MAXLEN ~ 10000` (a 40-byte field): {finals('redis-xadd.txt')}")
def cluster_rows(name):
    status = text(name)
    rows = [l for l in status.splitlines() if re.search(r"cluster", l, re.I)]
    return "\n".join(rows) if rows else status
print("\n`chatctl status` on node a (its cluster row), after the latency runs of each repetition")
print("(the last entry then is one of the leaves that end a run) and after everything:\n")
print("```")
for light in sorted(glob.glob(os.path.join(out, "chatctl-status-a-light-*.txt"))):
    print(cluster_rows(os.path.basename(light)))
print(cluster_rows("chatctl-status-a.txt"))
print("```")
PY
report_profile >> "$out/table.md"
cat "$out/table.md"
