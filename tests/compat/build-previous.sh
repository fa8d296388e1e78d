#!/usr/bin/env bash
# Builds chatd as of an earlier commit for the compatibility tests (tests/compat), and prints
# the binary's path on stdout. The commit is named in a file of tests/compat, given as the
# argument: PREVIOUS (the default: the previous session protocol) or RELEASE (the last
# release, whose running daemon a package upgrade must take over).
#
# The source of each is a detached git worktree in target/previous/<file>/src; the builds share
# target/previous/target (what the commits have in common is compiled once), and the binary is
# copied to target/previous/<file>/chatd. Idempotent: a binary built from that commit is reused
# at once. A lock (flock on target/previous/lock) makes a second caller wait for the first one's
# build instead of building beside it. The commit must be in this repository's history (a git
# clone has it); if it is not, this fails saying so.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
name="${1:-PREVIOUS}"
case "$name" in
  PREVIOUS | RELEASE) ;;
  *) echo "build-previous.sh: no such commit file: $name (PREVIOUS or RELEASE)" >&2; exit 2 ;;
esac
wanted="$(grep -v '^#' "$root/tests/compat/$name" | grep -m1 . | tr -d '[:space:]')"
out="$root/target/previous"
src="$out/$name/src"
bin="$out/$name/chatd"
stamp="$out/$name/built-from"

mkdir -p "$out/$name"
exec 9>"$out/lock"
flock 9

if ! commit="$(git -C "$root" rev-parse --verify --quiet "$wanted^{commit}")"; then
  echo "build-previous.sh: commit $wanted (tests/compat/$name) is not in the history of" \
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
cp "$out/target/debug/chatd" "$bin.new"
mv "$bin.new" "$bin"
echo "$commit" >"$stamp"
echo "$bin"
