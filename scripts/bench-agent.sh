#!/usr/bin/env bash
# Benchmarks bucky-agent (release build). Prints figures and ratios; it is not a pass/fail test.
#
#  1. Listing: the first full metric list of a tree of N .wsp files (default 1,000,000 empty files in
#     100 x 100 directories), from starting the agent to the last byte of `GET /metrics`, next to
#     `find TREE -name '*.wsp' | wc -l` on the same (page-cached) tree; then a forced rescan; and the
#     agent's RSS with the list cached (VmRSS / VmHWM from /proc).
#     With go-carbon ($BUCKY_PEERS/bin/go-carbon, else .peers/bin/go-carbon): go-carbon 0.17.1 scans the
#     same tree once and writes its file-list-cache (v2; BENCH_FLC_VERSION=1 for v1), counted with its own
#     -print-file-list-cache, and the agent lists from it (--file-list-cache), side by side with the walk and
#     find: first list, forced re-read, the ratio to the walk, the RSS; then, as root, the first list of
#     each and find with the page cache dropped before each (BENCH_COLD=0 skips it). BENCH_FLC=0 skips it all.
#  2. Throughput: GET and POST-heal of 17 KB metrics (1m:1d) with 16 concurrent clients over loopback,
#     next to cat(1) of the same files (the `bench_http` example), with precise and coalesced heal writes,
#     and once more with the in-flight registry off (BENCH_NO_REGISTRY=1), to show what it costs.
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
GC_PID=
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    [ -n "$GC_PID" ] && kill "$GC_PID" 2>/dev/null && wait "$GC_PID" 2>/dev/null
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

# ROUNDS forced listings, each timed to the last byte of the list: prints the times, space-separated.
forced_times() {
    local t0 times=""
    for _ in $(seq "$ROUNDS"); do
        t0=$(now)
        fetch_list force
        times="$times $(secs "$t0" "$(now)")"
    done
    echo "$times"
}

say "forced rescans"
rescan_times=$(forced_times)
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

GO_CARBON=${BUCKY_PEERS:-$PWD/.peers}/bin/go-carbon
if [ "${BENCH_FLC:-1}" != 0 ] && [ -x "$GO_CARBON" ]; then
    FLC_VERSION=${BENCH_FLC_VERSION:-2}
    say "go-carbon scans the tree and writes its file-list-cache (v$FLC_VERSION)"
    GC_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '[default]\npattern = .*\nretentions = 1m:1d\n' >"$WORK/schemas.conf"
    cat >"$WORK/go-carbon.toml" <<TOML
[common]
user = ""
max-cpu = 2
[whisper]
data-dir = "$TREE"
schemas-file = "$WORK/schemas.conf"
enabled = true
[udp]
enabled = false
[tcp]
enabled = false
[pickle]
enabled = false
[carbonlink]
enabled = false
[grpc]
enabled = false
[tags]
enabled = false
[carbonserver]
enabled = true
listen = "127.0.0.1:$GC_PORT"
scan-frequency = "24h"
file-list-cache = "$WORK/flc.bin"
file-list-cache-version = $FLC_VERSION
[pprof]
enabled = false
[[logging]]
logger = ""
file = "$WORK/go-carbon.log"
level = "info"
TOML
    t0=$(now)
    "$GO_CARBON" -config "$WORK/go-carbon.toml" >"$WORK/go-carbon.out" 2>&1 &
    GC_PID=$!
    # It writes a temp file and renames it into place at the end of its first scan.
    until [ -f "$WORK/flc.bin" ]; do
        kill -0 "$GC_PID" 2>/dev/null || { cat "$WORK/go-carbon.out" "$WORK/go-carbon.log"; exit 1; }
        sleep 0.2
    done
    gc_scan=$(secs "$t0" "$(now)")
    kill "$GC_PID"; wait "$GC_PID" 2>/dev/null || true; GC_PID=
    flc_wsp=$("$GO_CARBON" -print-file-list-cache "$WORK/flc.bin" | grep -c '\.wsp')
    flc_mb=$(python3 -c "import os, sys; print(f'{os.path.getsize(sys.argv[1]) / 1e6:.1f}')" "$WORK/flc.bin")

    say "first full list from the file-list-cache"
    t0=$(now)
    "$BIN" -b "127.0.0.1:$PORT" -n 127.0.0.1 -p "$TREE" --file-list-cache "$WORK/flc.bin" 127.0.0.1 \
        2>"$WORK/agent-flc.log" &
    AGENT_PID=$!
    fetch_list
    flc_first=$(secs "$t0" "$(now)")
    flc_listed=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/list.json")
    # Once built and served (rebuilds then grow it: a new list is built before the old one is freed, and
    # the allocator keeps what it freed).
    flc_rss_first_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status")
    grep -q "read from go-carbon's file-list-cache" "$WORK/agent-flc.log" \
        || { echo "the agent did not list from the file-list-cache:"; cat "$WORK/agent-flc.log"; exit 1; }

    say "forced re-reads of the file-list-cache"
    flc_times=$(forced_times)
    flc_reread=$(best "$flc_times")
    fetch_list
    flc_rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status")
    flc_hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
    # The list's build alone, inside the agent (its log): without the HTTP and JSON both paths share.
    flc_read_s=$(grep "read from go-carbon's file-list-cache" "$WORK/agent-flc.log" | tail -1 \
        | sed 's/.*seconds=\([0-9.]*\).*/\1/')
    walk_s=$(grep "metric scan complete" "$WORK/agent.log" | tail -1 | sed 's/.*seconds=\([0-9.]*\).*/\1/')
    kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=

    echo
    echo "== listing from go-carbon's file-list-cache (v$FLC_VERSION, $flc_mb MB, $flc_wsp .wsp entries by" \
        "go-carbon -print-file-list-cache; go-carbon's own scan to write it: ${gc_scan} s)"
    echo "find -name '*.wsp' | wc -l (best of $ROUNDS):          ${best_find} s"
    echo "agent walk: first list / forced rescan (best):      ${first} s / ${rescan} s"
    echo "agent file-list-cache: first list / forced re-read: ${flc_first} s / ${flc_reread} s (runs:$flc_times)"
    echo "inside the agent, the last build of the list:       walk ${walk_s} s, file-list-cache ${flc_read_s} s"
    python3 -c "print(f'ratio walk / file-list-cache: first list {$first / $flc_first:.1f}x, forced {$rescan / $flc_reread:.1f}x (target >= 5x), the build alone {$walk_s / $flc_read_s:.1f}x; file-list-cache / find: {$flc_reread / $best_find:.2f}x')"
    python3 -c "print(f'agent RSS with {$flc_listed} names cached from the file-list-cache: {$flc_rss_first_kb / 1024:.0f} MiB after the first list, {$flc_rss_kb / 1024:.0f} MiB after {$ROUNDS} forced re-reads (peak {$flc_hwm_kb / 1024:.0f} MiB; target <= 120 MB)')"
    [ "$flc_listed" = "$listed" ] || echo "WARNING: the file-list-cache gave $flc_listed names, the walk $listed"

    # Cold: what a node sees when its tree is not in the page cache (after a boot, or a tree larger than
    # its memory), where the walk reads every directory from disk and the file-list-cache is one file.
    if [ "${BENCH_COLD:-1}" != 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
        drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
        drop_caches
        t0=$(now); find "$TREE" -name '*.wsp' | wc -l >/dev/null; cold_find=$(secs "$t0" "$(now)")
        cold_first() { # agent flags...: start to the last byte of the first list, page cache dropped before
            drop_caches
            local t0
            t0=$(now)
            "$BIN" -b "127.0.0.1:$PORT" -n 127.0.0.1 -p "$TREE" "$@" 127.0.0.1 2>>"$WORK/agent-cold.log" &
            AGENT_PID=$!
            fetch_list
            secs "$t0" "$(now)"
            kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
        }
        cold_walk=$(cold_first)
        cold_flc=$(cold_first --file-list-cache "$WORK/flc.bin")
        echo "page cache dropped before each: find ${cold_find} s, agent walk ${cold_walk} s," \
            "agent file-list-cache ${cold_flc} s (first list, start to last byte)"
        cold_walk_s=$(grep "metric scan complete" "$WORK/agent-cold.log" | tail -1 | sed 's/.*seconds=\([0-9.]*\).*/\1/')
        cold_flc_s=$(grep "read from go-carbon's file-list-cache" "$WORK/agent-cold.log" | tail -1 \
            | sed 's/.*seconds=\([0-9.]*\).*/\1/')
        echo "inside the agent, cold, the build of the list:    walk ${cold_walk_s} s, file-list-cache ${cold_flc_s} s"
        python3 -c "print(f'ratio walk / file-list-cache, cold: first list {$cold_walk / $cold_flc:.1f}x (target >= 5x), the build alone {$cold_walk_s / $cold_flc_s:.1f}x')"
    else
        say "not root (or BENCH_COLD=0): the cold-cache comparison is skipped"
    fi
else
    say "go-carbon not found at $GO_CARBON (or BENCH_FLC=0): file-list-cache section skipped"
fi

[ "$HTTP_FILES" -gt 0 ] || exit 0
echo
echo "== throughput: precise heal writes (default)"
BENCH_TMP=$WORK "$TARGET/release/examples/bench_http" "$HTTP_FILES"
echo
echo "== throughput: --coalesce-writes"
BENCH_COALESCE=1 BENCH_TMP=$WORK "$TARGET/release/examples/bench_http" "$HTTP_FILES"
echo
echo "== throughput: precise heal writes, in-flight registry off (what the registry costs: compare with the first)"
BENCH_NO_REGISTRY=1 BENCH_TMP=$WORK "$TARGET/release/examples/bench_http" "$HTTP_FILES"
