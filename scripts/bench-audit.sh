#!/usr/bin/env bash
# Benchmarks `bucky audit` and `bucky repair` (release build). Prints figures; it is not a pass/fail test.
#
#  1. Audit of replicas that agree: a 2-agent ring with replication 2 (every metric on both), N metrics
#     per schema, the same file on both agents. For each schema — 1m:1d (17,308 bytes) and
#     10s:1d,1m:30d,5m:1y (1.9 MB) — `bucky audit --json` is timed and its bytes on the wire per copy
#     compared with the file's size (target ≤ 1 %); then the same comparison done by fetching every copy
#     whole (`bucky tar -s` of each agent, which reads every file over HTTP, uncompressed on loopback),
#     timed and its bytes counted.
#  2. Repair against rebalance, schema 1m:1d, N metrics, one copy to create per metric: `bucky repair` of
#     a ring whose second replica holds nothing (audit included), and `bucky rebalance` of the same files
#     from an agent outside a 1-node ring into that node (one copy each, verified).
#
# Usage: scripts/bench-audit.sh [N_SMALL] [N_LARGE]   (defaults 2000 and 100)
# Env: CARGO_TARGET_DIR, BENCH_WORKERS (bucky -w, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

N_SMALL=${1:-2000}
N_LARGE=${2:-100}
WORKERS=${BENCH_WORKERS:-5}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BUCKY=$TARGET/release/bucky
AGENT=$TARGET/release/bucky-agent
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    stop_agents
    rm -rf "$WORK"
}
stop_agents() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

say "building the release binaries"
cargo build --quiet --release --bin bucky --bin bucky-agent

A=127.0.78.1
B=127.0.78.2
PORT=$(free_port "$A" "$B")
export BUCKY_NO_PROGRESS=1

start_agent() { # ip dir replicas ring...
    local ip=$1 dir=$2 replicas=$3
    shift 3
    "$AGENT" -b "$ip:$PORT" -n "$ip" -p "$dir" --hash carbon_ch --replicas "$replicas" "$@" \
        >>"$WORK/agents.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        curl -sf "http://$ip:$PORT/hashring" >/dev/null 2>&1 && return
        sleep 0.1
    done
    say "agent $ip did not start"; exit 1
}

# N copies of one file with `points` points written, as bench.<tag>.mK in 100 directories, below $dir.
make_metrics() { # dir tag n schema...
    local dir=$1 tag=$2 n=$3
    shift 3
    local template=$WORK/template-$tag.wsp
    if [ ! -f "$template" ]; then
        "$BUCKY" whisper create "$template" "$@" >/dev/null
        local t0
        t0=$(( $(date +%s) / 60 * 60 ))
        python3 -c "
import sys
t0 = int(sys.argv[1])
for k in range(1, 1440):
    print(t0 - k * 60, k % 97)
" "$t0" | "$BUCKY" whisper update "$template" >/dev/null
    fi
    python3 - "$dir" "$tag" "$n" "$template" <<'EOF'
import os, shutil, sys
root, tag, n, template = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
for k in range(n):
    d = os.path.join(root, "bench", tag, "d%02d" % (k % 100))
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(template, os.path.join(d, "m%d.wsp" % k))
EOF
}

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# ---- 1. audit ---------------------------------------------------------------------------------------------
for spec in "small $N_SMALL 1m:1d" "large $N_LARGE 10s:1d 1m:30d 5m:1y"; do
    # shellcheck disable=SC2086 # a spec is words: split on purpose
    set -- $spec
    tag=$1 n=$2
    shift 2
    rm -rf "$WORK/a" "$WORK/b"
    mkdir -p "$WORK/a" "$WORK/b"
    say "audit: $n metrics of $* on two replicas"
    make_metrics "$WORK/a" "$tag" "$n" "$@"
    cp -r "$WORK/a/bench" "$WORK/b/"
    size=$(stat -c %s "$WORK/template-$tag.wsp")
    start_agent "$A" "$WORK/a" 2 "$A" "$B"
    start_agent "$B" "$WORK/b" 2 "$A" "$B"
    t0=$(now)
    report=$("$BUCKY" audit -h "$A:$PORT" -w "$WORKERS" -f --json)
    t1=$(now)
    copies=$(echo "$report" | json_field '["copies"]')
    wire=$(echo "$report" | json_field '["wire_bytes"]')
    healthy=$(echo "$report" | json_field '["healthy"]')
    audit_s=$(secs "$t0" "$t1")
    t0=$(now)
    tar_a=$("$BUCKY" tar -h "$A:$PORT" -s -w "$WORKERS" 2>/dev/null | wc -c)
    tar_b=$("$BUCKY" tar -h "$B:$PORT" -s -w "$WORKERS" 2>/dev/null | wc -c)
    t1=$(now)
    fetch_s=$(secs "$t0" "$t1")
    echo "audit $tag ($*, file $size bytes): $n metrics, $healthy healthy, $copies copies"
    echo "  digests:     $audit_s s, $(calc "f'{$n / $audit_s:.0f}'") metrics/s, $(calc "f'{$wire / $copies:.1f}'") bytes per copy on the wire = $(calc "f'{100 * $wire / $copies / $size:.3f}'") % of the file"
    echo "  whole files: $fetch_s s, $(calc "f'{$n / $fetch_s:.0f}'") metrics/s, $(calc "f'{($tar_a + $tar_b) / $copies:.0f}'") bytes per copy (tar of each agent)"
    stop_agents
done

# ---- 2. repair vs rebalance -----------------------------------------------------------------------------
n=$N_SMALL
rm -rf "$WORK/a" "$WORK/b"
mkdir -p "$WORK/a" "$WORK/b"
make_metrics "$WORK/a" small "$n" 1m:1d
say "repair: $n metrics of 1m:1d held by one of their two replicas"
start_agent "$A" "$WORK/a" 2 "$A" "$B"
start_agent "$B" "$WORK/b" 2 "$A" "$B"
t0=$(now)
summary=$("$BUCKY" repair -h "$A:$PORT" -w "$WORKERS" -f --json)
t1=$(now)
repair_s=$(secs "$t0" "$t1")
created=$(echo "$summary" | json_field '["replicas_created"]')
stop_agents
rm -rf "$WORK/b"
mkdir -p "$WORK/b"
say "rebalance: the same $n files from an agent outside a 1-node ring into that node"
start_agent "$A" "$WORK/a" 1 "$B"
start_agent "$B" "$WORK/b" 1 "$B"
t0=$(now)
summary=$("$BUCKY" rebalance -h "$B:$PORT" -w "$WORKERS" -f --json "$A:$PORT")
t1=$(now)
rebalance_s=$(secs "$t0" "$t1")
moved=$(echo "$summary" | json_field '["moved"]')
echo "repair:    $created replicas created in $repair_s s (audit included): $(calc "f'{$n / $repair_s:.0f}'") metrics/s"
echo "rebalance: $moved copies in $rebalance_s s: $(calc "f'{$n / $rebalance_s:.0f}'") metrics/s"
