#!/usr/bin/env bash
# Short fuzzing run of every target (libFuzzer via cargo-fuzz). Usage: fuzz/run.sh [seconds]
# (default 30 per target). Installs cargo-fuzz if missing. cargo-fuzz needs nightly flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 enables them for this build only.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in handshake_codec hostname token; do
    echo "== fuzzing $target for ${secs}s"
    cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
done
