#!/usr/bin/env bash
# Runs the live-cluster proof (real carbon-cache, carbon-c-relay and bucky-agent on loopback).
#   scripts/live.sh           the CI scenarios: grow + rebalance under traffic, kill -9, flock, hostile input
#   scripts/live.sh --soak    scenario 1 with >= 1,000,000 points (BUCKY_SOAK_METRICS metrics, default 5000)
#   scripts/live.sh --soak go-carbon   the same with go-carbon on every node and the throttled rebalance
# Needs the peers: run scripts/test.sh once first (it installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
export BUCKY_ORACLE_PYTHON="${BUCKY_ORACLE_PYTHON:-$PWD/.venv/bin/python}"
if [ "${1:-}" = "--soak" ]; then
    if [ "${2:-}" = "go-carbon" ]; then
        export BUCKY_PEERS="${BUCKY_PEERS:-$PWD/.peers}"
        exec cargo test --release -p bucky-e2e --test e2e live_soak_go_carbon -- --ignored --nocapture
    fi
    exec cargo test --release -p bucky-e2e --test e2e live_soak -- --ignored --exact --nocapture
fi
exec cargo test -p bucky-e2e --test e2e live_ -- --nocapture
