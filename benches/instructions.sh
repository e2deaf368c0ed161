#!/usr/bin/env bash
# Instructions per byte of a relay and a client moving data through a TCP tunnel, counted by
# valgrind's callgrind: repeatable where wall-clock figures on a shared machine are not, so a
# refactor or a tuning change can be checked for regressions to about 1 %.
#
# Usage: benches/instructions.sh [MB] BIN [BIN...]    (default 256 MB, each BIN a postern binary)
# For each binary it runs a relay and a `postern tcp` client under callgrind, sends MB megabytes
# with iperf3 through the tunnel, and prints the instructions each process executed, less those
# of an idle run (start-up and handshake), per MB. Needs valgrind and iperf3 (apt).
# With MINT set (for example MINT="--volume 1000TB/month"), the client holds a token minted with
# those flags, so the cost of a quota shows against the same binary without MINT.
set -euo pipefail
mb=256
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then mb=$1; shift; fi
[ "$#" -gt 0 ] || { echo "usage: $0 [MB] BIN [BIN...]" >&2; exit 2; }
for tool in valgrind iperf3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install $tool)" >&2; exit 2; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done; echo "no '$2' in $1" >&2; exit 1; }

# Prints "relay_instructions agent_instructions" for a transfer of $2 MB with binary $1.
count() {
    local bin=$1 size=$2 work ctrl ip rp ap port
    work=$(mktemp -d)
    ctrl=$(free_port) ip=$(free_port)
    iperf3 -s -p "$ip" -1 >/dev/null 2>&1 &
    valgrind --tool=callgrind --callgrind-out-file="$work/relay.cg" "$bin" server --control-addr "127.0.0.1:$ctrl" \
        --http-addr off --https-addr off --admin-addr off --tcp-ports 0 --state-dir "$work" --log warn \
        >"$work/relay.out" 2>/dev/null &
    rp=$!
    wait_for "$work/relay.out" "agents connect"
    local token=""
    if [ -n "${MINT:-}" ]; then
        # shellcheck disable=SC2086 # MINT is a list of flags
        token=$("$bin" token mint --state-dir "$work" --subject bench $MINT)
    fi
    POSTERN_TOKEN="$token" POSTERN_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/agent.cg" "$bin" tcp "$ip" \
        --server "localhost:$ctrl" --ca "$work/ca.pem" --local-host 127.0.0.1 >"$work/agent.out" 2>/dev/null &
    ap=$!
    wait_for "$work/agent.out" "tcp://"
    port=$(grep -o 'tcp://[^ ]*' "$work/agent.out" | head -1 | sed 's/.*://')
    if [ "$size" -gt 0 ]; then iperf3 -c 127.0.0.1 -p "$port" -n "${size}M" >/dev/null; else iperf3 -c 127.0.0.1 -p "$port" -n 1K >/dev/null; fi
    sleep 1
    kill -INT "$ap"; sleep 2; kill -INT "$rp"; wait "$ap" "$rp" 2>/dev/null || true
    echo "$(awk '/^summary:/ {print $2}' "$work/relay.cg") $(awk '/^summary:/ {print $2}' "$work/agent.cg")"
    rm -rf "$work"
}

for bin in "$@"; do
    read -r r0 a0 < <(count "$bin" 0)
    read -r r1 a1 < <(count "$bin" "$mb")
    echo "$bin: relay $(( (r1 - r0) / mb )) instructions/MB, client $(( (a1 - a0) / mb )) instructions/MB (${mb} MB)"
done
