#!/usr/bin/env bash
# Builds chatd as of the commit named in tests/compat/PREVIOUS (the previous session protocol)
# for the compatibility tests (tests/compat), and prints the binary's path on stdout.
#
# The source is a detached git worktree in target/previous/src, the build goes to
# target/previous/target. Idempotent: a binary built from that commit is reused at once. A lock
# (flock on target/previous/lock) makes a second caller wait for the first one's build instead
# of building beside it. The commit must be in this repository's history (a git clone has it);
# if it is not, this fails saying so.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
wanted="$(grep -v '^#' "$root/tests/compat/PREVIOUS" | grep -m1 . | tr -d '[:space:]')"
out="$root/target/previous"
src="$out/src"
bin="$out/target/debug/chatd"
stamp="$out/built-from"

mkdir -p "$out"
exec 9>"$out/lock"
flock 9

if ! commit="$(git -C "$root" rev-parse --verify --quiet "$wanted^{commit}")"; then
  echo "build-previous.sh: commit $wanted (tests/compat/PREVIOUS) is not in the history of" \
    "$root; the compatibility tests need it: use a git clone with its full history" \
    "(not a tarball, not --depth)" >&2
  exit 1
fi
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$commit" ]; then
  echo "$bin"
  exit 0
fi
rm -f "$stamp"
if [ -e "$src/.git" ]; then
  git -C "$src" checkout --quiet --force --detach "$commit"
else
  rm -rf "$src"
  # --force: a worktree registered there before and deleted since (cargo clean) is taken over.
  git -C "$root" worktree add --quiet --force --detach "$src" "$commit"
fi
# Cargo's output goes to stderr: stdout is the path alone.
(cd "$src" && cargo build --locked --bin chatd --target-dir "$out/target") >&2
echo "$commit" >"$stamp"
echo "$bin"
