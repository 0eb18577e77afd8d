#!/usr/bin/env bash
# Runs the live-cluster proof (real carbon-cache, carbon-c-relay and bucky-agent on loopback).
#   scripts/live.sh           the CI scenarios: grow + rebalance under traffic, kill -9, flock, hostile input
#   scripts/live.sh --soak    scenario 1 with >= 1,000,000 points (BUCKY_SOAK_METRICS metrics, default 5000)
# Needs the peers: run scripts/test.sh once first (it installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
export BUCKY_ORACLE_PYTHON="${BUCKY_ORACLE_PYTHON:-$PWD/.venv/bin/python}"
if [ "${1:-}" = "--soak" ]; then
    exec cargo test --release -p bucky-e2e --test e2e live_soak -- --ignored --nocapture
fi
exec cargo test -p bucky-e2e --test e2e live_ -- --nocapture
