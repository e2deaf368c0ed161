#!/usr/bin/env bash
# A bounded fuzzing run of every target (libFuzzer via cargo-fuzz), from the seeds committed in
# fuzz/corpus/<target>/. Usage: fuzz/run.sh [seconds per target] (default 30). tests/run.sh runs
# it in CI. New inputs go to a scratch directory, so the committed seeds stay as they are; a
# crash fails the run, prints the fuzzer's report and leaves the input in
# fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run <target> <file>`).
#
# cargo-fuzz needs nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them for this
# build only. It is installed into target/tools if missing (never committed).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
tools="$(cd .. && pwd)/target/tools"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    [ -x "$tools/bin/cargo-fuzz" ] || cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
    export PATH="$tools/bin:$PATH"
fi
export RUSTC_BOOTSTRAP=1
targets=(handshake_codec hostname token bore_codec http_route mint_request)
cargo fuzz build
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "$scratch/$target"
    log="$scratch/$target.log"
    if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target FAILED" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)"
done
