#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests drive
# (curl for the quick-start test, Prometheus for the scrape test, pebble for ACME, Redis for the
# cluster, Chromium and chromedriver for the dashboard's browser tests, Node.js and the npm package
# oidc-provider for the sign-in tests; PyYAML from PyPI to parse the deploy files), then runs the format check, clippy with warnings as errors, every test in the
# workspace, and a bounded run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# A real ACME CA for tests/tests/acme.rs.
command -v pebble >/dev/null 2>&1 || need+=(pebble)
# A real Redis, the directory of the cluster tests (tests/tests/cluster*.rs, crates/postern/tests/cluster.rs).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# A real browser for the dashboard (tests/tests/dashboard.rs), driven over WebDriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# A real OpenID provider (npm oidc-provider) for the sign-in tests (tests/tests/sso.rs).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing test dependencies: ${need[*]}"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi

# node-oidc-provider, pinned by tests/oidc/package-lock.json, from the npm registry.
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

python3 -c 'import yaml' >/dev/null 2>&1 || python3 -m pip install --quiet pyyaml
# The real bore client for tests/tests/bore.rs (from crates.io; never committed). If it cannot be
# installed, those tests say so and skip.
if [ ! -x target/peers/bin/bore ]; then
    cargo install bore-cli --version 0.6.0 --locked --root target/peers \
        || echo "warning: could not install bore-cli; the bore endpoint tests will skip"
fi

# A clean test build needs about 2 GB of disk; say what there is, so a full disk is easy to spot.
echo "disk free for target/: $(df -h . | awk 'NR==2 {print $4}')"
# One build per run: incremental state would only cost disk (about 2 GB for this workspace).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# Every fuzz target for a bounded time (POSTERN_FUZZ_SECONDS each, 30 by default; 0 skips),
# from the seeds in fuzz/corpus/.
fuzz_secs="${POSTERN_FUZZ_SECONDS:-30}"
if [ "$fuzz_secs" != 0 ]; then
    fuzz/run.sh "$fuzz_secs"
fi
