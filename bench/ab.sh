#!/usr/bin/env bash
# Runs this tree's chatd beside an earlier build of itself (a git revision) on loopback,
# interleaved (new, old, new, old, ...; three repetitions), and prints each figure's median
# for both with the ratio new/old: the A/B check that a change did not make chatd slower.
# Results: target/bench-ab/results.jsonl and target/bench-ab/table.md.
# Needs root (chatd drops to nobody) and git; builds both revisions in release mode.
#   bash bench/ab.sh f144c95            # fan-out and rate, N=1000, 10 s, 3 repetitions
#   QUICK=1 bash bench/ab.sh f144c95    # N=200, 3 s, one repetition, for a quick look
#   REPS=5 bash bench/ab.sh f144c95     # more repetitions, when the ratio is within the noise
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:?usage: bench/ab.sh <baseline revision>}
out=$(pwd)/target/bench-ab
base_src=$out/baseline-src
rev=$(git rev-parse --short "$baseline^{commit}")

cargo build --release --locked --bin chatd --bin chatd-bench >&2
rm -rf "$out/run-"* "$out/state-"* "$out/results.jsonl" && mkdir -p "$out" && chmod 777 "$out"
# The baseline builds in a detached worktree with a target directory of its own, kept between
# runs so that comparing against the same revision again costs no second build.
if [ "$(git -C "$base_src" rev-parse --short HEAD 2>/dev/null)" != "$rev" ]; then
  git worktree remove --force "$base_src" 2>/dev/null || rm -rf "$base_src"
  git worktree add --detach "$base_src" "$rev" >&2
fi
CARGO_TARGET_DIR=$out/baseline-target cargo build --release --locked \
  --manifest-path "$base_src/Cargo.toml" --bin chatd >&2
bench=target/release/chatd-bench
results=$out/results.jsonl
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port_new=$((26000 + RANDOM % 1000)); port_old=$((port_new + 1000))
start() { # name binary port settings
  # Each build runs with its own revision's benchmark settings: an older chatd refuses
  # settings it does not know.
  { cat "$4"; echo "state_dir = \"$out/state-$1\""; } > "$out/chatd-$1.toml"
  "$2" --config "$out/chatd-$1.toml" --listen "127.0.0.1:$3" --runtime-dir "$out/run-$1" \
    --log stderr 2>"$out/chatd-$1.log" &
  pids+=("$!")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && return; sleep 0.1; done
  echo "ab.sh: chatd ($1) did not listen on port $3; see $out/chatd-$1.log" >&2; exit 1
}
start new target/release/chatd "$port_new" bench/chatd.toml; pid_new=${pids[-1]}
start old "$out/baseline-target/release/chatd" "$port_old" "$base_src/bench/chatd.toml"
pid_old=${pids[-1]}

# A run that fails is reported and recorded, and the comparison goes on.
measure() { # name port pid scenario...
  local name=$1 port=$2 pid=$3; shift 3
  "$bench" "$@" --addr "127.0.0.1:$port" --pid "$pid" --server "$name" --json "$results" >/dev/null \
    || { echo "$name failed: $*" >&2; echo "{\"scenario\":\"$*\",\"server\":\"$name\",\"failed\":true}" >> "$results"; }
}
if [ -n "${QUICK:-}" ]; then reps=1; n=200; seconds=3; else reps=3; n=1000; seconds=10; fi
reps=${REPS:-$reps}
scenarios=(
  "fanout -n $n --senders 1 --window 8 --seconds $seconds"
  "fanout -n $n --senders 10 --window 8 --seconds $seconds"
  "rate -n $n --rate 50 --seconds $seconds"
)
for rep in $(seq "$reps"); do
  for scenario in "${scenarios[@]}"; do
    echo "repetition $rep: $scenario" >&2
    # shellcheck disable=SC2086
    measure chatd "$port_new" "$pid_new" $scenario
    # shellcheck disable=SC2086
    measure "chatd-$rev" "$port_old" "$pid_old" $scenario
  done
done
{
  echo "## chatd ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')) beside chatd $rev ($(date -u +%Y-%m-%d), $(nproc) cores)"
  echo
  "$bench" report --ours chatd --theirs "chatd-$rev" "$results"
} | tee "$out/table.md"
