# Sourced by the bench scripts that measure one chatd with a second listener beside the plain
# one (accounts_tls.sh: TLS, web.sh: web): writes $out/chatd.toml (bench/chatd.toml, the state
# in $out, and the extra line given), starts the release chatd on 127.0.0.1:$plain with its log
# in $out/chatd.log, stops it when the script exits, and waits until both ports accept.
# Sets pid (the master's). Needs out, plain and second (the other port) set.
#   start_one_chatd 'tls_listen = ["127.0.0.1:PORT"]'
start_one_chatd() {
  { cat bench/chatd.toml; echo "state_dir = \"$out/state\""; echo "$1"; } > "$out/chatd.toml"
  target/release/chatd --config "$out/chatd.toml" --listen "127.0.0.1:$plain" \
    --runtime-dir "$out/run" --log stderr 2>"$out/chatd.log" &
  pid=$!
  trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  for port in "$plain" "$second"; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  done
}
