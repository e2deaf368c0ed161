#!/usr/bin/env bash
# The soak test (ignored in the normal suite): 100k short connections and 1k WebSocket
# sessions through one relay, in release mode, printing fd and RSS figures.
# SOAK_CONNECTIONS and SOAK_WEBSOCKETS override the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p postern-e2e --test soak -- --ignored --nocapture 2>&1 | grep -E "^SOAK|test result|panicked|assert"
