#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md "TLS and accounts (#17)": connect rate and PSS per client
# over TLS beside plain on one chatd, and a room's fan-out with and without 50 parallel logins
# with passwords (the default Argon2id cost), interleaved, REPS repetitions (default 3).
# Results: target/bench-17/results.jsonl. Needs root (chatd drops to nobody) and python3.
#   bash bench/accounts_tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin chatd --bin chatd-bench >&2
bench=target/release/chatd-bench
out=$(pwd)/target/bench-17
rm -rf "$out" && mkdir -p "$out" && chmod 777 "$out"
results=$out/results.jsonl
reps=${REPS:-3}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
plain=$((26000 + RANDOM % 1000)); tls=$((plain + 1000)); second=$tls
# shellcheck source=bench/one_chatd.sh
. bench/one_chatd.sh
start_one_chatd "tls_listen = [\"127.0.0.1:$tls\"]"
cert=$out/state/tls-cert.pem
run() { "$bench" "$@" --pid "$pid" --json "$results" >&2; }
python3 bench/login_storm.py register "$plain" 25 "correct horse battery" >&2
for rep in $(seq "$reps"); do
  echo "== repetition $rep" >&2
  run connect -n 500 --addr "127.0.0.1:$plain" --server plain
  run connect -n 500 --addr "127.0.0.1:$tls" --tls "$cert" --server tls
  # The connect runs' sessions end after their clients close: their nicks are free again.
  sleep 3
  run fanout -n 200 --senders 1 --window 8 --seconds 10 --addr "127.0.0.1:$plain" --server quiet
  # The same fan-out while 50 clients log in at once, round after round, for its 10 s.
  python3 bench/login_storm.py login "$plain" 25 "correct horse battery" 50 8 > "$out/storm-$rep.txt" &
  storm=$!
  run fanout -n 200 --senders 1 --window 8 --seconds 10 --addr "127.0.0.1:$plain" --server logins
  wait "$storm"; cat "$out/storm-$rep.txt" >&2
done
"$bench" report "$results" 2>/dev/null || cat "$results"
