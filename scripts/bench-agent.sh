#!/usr/bin/env bash
# Benchmarks bucky-agent (release build). Prints figures and ratios; it is not a pass/fail test.
#
#  1. Listing: the first full metric list of a tree of N .wsp files (default 1,000,000 empty files in
#     100 x 100 directories), from starting the agent to the last byte of `GET /metrics`, next to
#     `find TREE -name '*.wsp' | wc -l` on the same (page-cached) tree; then a forced rescan; and the
#     agent's RSS with the list cached (VmRSS / VmHWM from /proc).
#  2. Throughput: GET and POST-heal of 17 KB metrics (1m:1d) with 16 concurrent clients over loopback,
#     next to cat(1) of the same files (the `bench_http` example), with precise and coalesced heal writes.
#
# Usage: scripts/bench-agent.sh [N_FILES] [HTTP_FILES]   (HTTP_FILES 0 skips the throughput part)
# Env: BENCH_ROUNDS (runs per timing, best kept; default 5), BENCH_TREE (tree directory, kept between runs; default $TMPDIR/bucky-bench-tree-N),
#      CARGO_TARGET_DIR (as for cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
HTTP_FILES=${2:-4000}
TREE=${BENCH_TREE:-${TMPDIR:-/tmp}/bucky-bench-tree-$N}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/bucky-agent
WORK=$(mktemp -d)
AGENT_PID=
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

say "building the release agent and bench_http"
cargo build --quiet --release -p bucky-agent --bin bucky-agent --example bench_http

ensure_tree "$TREE" "$N"

say "warming the page cache"
find "$TREE" -name '*.wsp' | wc -l >/dev/null

# The best of several runs on both sides: a shared machine makes single timings noisy.
ROUNDS=${BENCH_ROUNDS:-5}
best() { python3 -c "print(min(float(x) for x in '$*'.split()))"; }
find_times=
for _ in $(seq "$ROUNDS"); do
    t0=$(now)
    found=$(find "$TREE" -name '*.wsp' | wc -l)
    find_times="$find_times $(secs "$t0" "$(now)")"
done
best_find=$(best "$find_times")

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Waits until the list is ready, then fetches it with curl into $WORK/list.json. Readiness is polled
# from one process over one kept-alive connection with `list=[]` (an empty intersection: 200 as soon as
# the list is ready, with no body to speak of); spawning curl every few milliseconds would steal a good
# part of a 2-core machine from the agent. With "force", first asks for a rescan.
fetch_list() {
    python3 - "$PORT" "${1:-}" <<'EOF'
import http.client, sys, time
port, force = int(sys.argv[1]), sys.argv[2] == "force"
conn = None
while True:
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("GET", "/metrics?force=1" if force else "/metrics?list=%5B%5D")
        response = conn.getresponse()
        response.read()
        force = False
        if response.status == 200:
            break
    except OSError:
        conn = None
    time.sleep(0.005)
EOF
    curl -sf -o "$WORK/list.json" "http://127.0.0.1:$PORT/metrics"
}

say "first full list through the agent"
t0=$(now)
"$BIN" -b "127.0.0.1:$PORT" -n 127.0.0.1 -p "$TREE" 127.0.0.1 2>"$WORK/agent.log" &
AGENT_PID=$!
fetch_list
first=$(secs "$t0" "$(now)")
listed=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/list.json")
list_mb=$(python3 -c "import os; print(f'{os.path.getsize(\"$WORK/list.json\") / 1e6:.1f}')")

say "forced rescans"
rescan_times=
for _ in $(seq "$ROUNDS"); do
    t0=$(now)
    fetch_list force
    rescan_times="$rescan_times $(secs "$t0" "$(now)")"
done
rescan=$(best "$rescan_times")

say "cached list"
t0=$(now)
fetch_list
cached=$(secs "$t0" "$(now)")

rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=

echo
echo "== listing: $N files in $(find "$TREE" -mindepth 1 -type d | wc -l) directories, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "find -name '*.wsp' | wc -l (best of $ROUNDS):   ${best_find} s  ($found files; runs:$find_times)"
echo "agent first full list (start to last byte): ${first} s  ($listed names, $list_mb MB of JSON)"
echo "agent forced rescan + list (best of $ROUNDS):   ${rescan} s  (runs:$rescan_times)"
echo "agent cached list:                          ${cached} s"
python3 -c "print(f'ratio first list / find: {$first / $best_find:.2f}x (target <= 1.5x); rescan / find: {$rescan / $best_find:.2f}x')"
python3 -c "print(f'agent RSS with {$listed} names cached: {$rss_kb / 1024:.0f} MiB (peak {$hwm_kb / 1024:.0f} MiB; target < 300 MB)')"
[ "$listed" = "$found" ] || echo "WARNING: the agent listed $listed names, find found $found files"

[ "$HTTP_FILES" -gt 0 ] || exit 0
echo
echo "== throughput: precise heal writes (default)"
BENCH_TMP=$WORK "$TARGET/release/examples/bench_http" "$HTTP_FILES"
echo
echo "== throughput: --coalesce-writes"
BENCH_COALESCE=1 BENCH_TMP=$WORK "$TARGET/release/examples/bench_http" "$HTTP_FILES"
