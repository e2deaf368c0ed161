#!/usr/bin/env bash
# The side-by-side benchmark in one command: installs nginx, iperf3 and wrk (apt) and the peers
# bore and rathole (cargo install, into target/peers, never committed), builds postern in
# release mode, then runs benches/e2e.py. Arguments go to e2e.py: --rounds N --seconds S --write.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
peers="${PEERS_DIR:-$PWD/target/peers}"
if [ ! -x "$peers/bin/bore" ] || [ ! -x "$peers/bin/rathole" ]; then
    cargo install bore-cli rathole --root "$peers"
fi
cargo build --release -p postern
exec python3 benches/e2e.py --peers "$peers" "$@"
