#!/usr/bin/env bash
# Regenerates crates/postern/link-order.txt: the functions a relay and a client run from start-up
# to an idle, connected state, recorded with valgrind's callgrind from a release build. The
# release link then lays them out together (crates/postern/build.rs), which keeps the idle
# processes' resident code small. Rerun it after large changes or dependency upgrades; names
# that went away are skipped by the linker, so a stale file only costs memory, never correctness.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends valgrind
fi
cargo build --release -p postern
bin="$PWD/target/release/postern"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # file pattern seconds
    for _ in $(seq 1 $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}
ctrl=$(free_port) http=$(free_port) admin=$(free_port) origin=$(free_port)
python3 -m http.server "$origin" --bind 127.0.0.1 >/dev/null 2>&1 &

cg() { exec valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$1.cg" "${@:2}"; }
cg relay "$bin" server --control-addr "127.0.0.1:$ctrl" --http-addr "127.0.0.1:$http" --https-addr off \
    --admin-addr "127.0.0.1:$admin" --tcp-ports 0 --state-dir "$work/state" --log warn >"$work/relay.log" 2>&1 &
relay=$!
wait_for "$work/relay.log" "agents connect to" 120
cat >"$work/client.toml" <<TOML
server = "localhost:$ctrl"
ca = "$work/state/ca.pem"
client_id = "order"
local_host = "127.0.0.1"
[[tunnel]]
kind = "tcp"
port = $origin
[[tunnel]]
kind = "http"
port = $origin
TOML
POSTERN_LOG=warn cg client "$bin" start --config "$work/client.toml" >"$work/client.log" 2>&1 &
client=$!
wait_for "$work/client.log" "http://order-" 120
# Idle and connected: heartbeats, the admin listener answering a probe.
"$bin" healthcheck "127.0.0.1:$admin" >/dev/null
sleep 3
kill -INT "$client"; wait "$client" || true
kill -INT "$relay"; wait "$relay" || true

# Every Rust function either process ran (v0 names, see .cargo/config.toml), first seen first.
out=crates/postern/link-order.txt
cat "$work/relay.cg" "$work/client.cg" | sed -nE 's/^c?fn=\([0-9]+\) ((_R|_ZN)[^ ]*)$/\1/p' | awk '!seen[$0]++' >"$out"
echo "$(wc -l <"$out") functions in $out; relink with: cargo build --release -p postern"
