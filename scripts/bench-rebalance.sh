#!/usr/bin/env bash
# Benchmarks the bucky CLI (release build). Prints figures and ratios; it is not a pass/fail test.
#
#  1. Rebalance: N metrics (default 5,000, schema 1m:1d, 1440 points each) on one agent outside the ring,
#     copied into a fresh 3-agent ring with `bucky rebalance` (read, heal into the replica, which answers
#     with the replica as read back from disk, verify every point; by the batch), then moved into another
#     fresh ring with `bucky rebalance --delete` (the same, then delete each source with If-Match), each
#     timed end to end (list, plan, copy, verify[, delete]), next to `cp -r` of the same files plus one
#     final `sync` (the median of 3 runs). Each cp copy is removed and synced before the next run and
#     before the rebalance, so that freeing its blocks (discards on a disk mounted with them) is charged to
#     neither. The agents make new files durable by group commit: concurrent heals share their flushes, so
#     throughput grows with the heals in flight (-w per source node, --io-concurrency per agent).
#  2. Listing: peak RSS of the client listing M names (default 1,000,000 empty .wsp files served by one
#     agent: streamed straight through), and of the same tree served by two agents (two lists merged
#     without duplicates), measured with /usr/bin/time.
#
# Usage: scripts/bench-rebalance.sh [N_METRICS] [M_NAMES]
# Env: BENCH_TREE (the M-file tree, kept between runs; shared with scripts/bench-agent.sh),
#      BENCH_WORKERS (bucky -w, default 5), BENCH_BATCH (bucky --batch, default 32), CARGO_TARGET_DIR,
#      BENCH_PERF (a file: profile the rebalance system-wide with perf record; BENCH_PERF_ARGS adds flags),
#      BENCH_SETTLE (seconds to wait between the cp baseline and the rebalances: on ext4 without a journal,
#      creating inodes right after many deletions costs more, as the allocator skips recently freed ones).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-5000}
M=${2:-1000000}
WORKERS=${BENCH_WORKERS:-5}   # bucky's defaults
BATCH=${BENCH_BATCH:-32}
TREE=${BENCH_TREE:-${TMPDIR:-/tmp}/bucky-bench-tree-$M}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BUCKY=$TARGET/release/bucky
AGENT=$TARGET/release/bucky-agent
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '==> %s\n' "$*" >&2; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

say "building the release binaries"
cargo build --quiet --release --bin bucky --bin bucky-agent

# Loopback addresses of this run and one port free on all of them.
IPS=(127.0.77.1 127.0.77.2 127.0.77.3 127.0.77.4)
PORT=$(python3 - "${IPS[@]}" <<'EOF'
import socket, sys
for _ in range(100):
    s = socket.socket(); s.bind((sys.argv[1], 0)); port = s.getsockname()[1]; s.close()
    ok = True
    for ip in sys.argv[1:]:
        t = socket.socket()
        try: t.bind((ip, port))
        except OSError: ok = False
        finally: t.close()
    if ok:
        print(port); break
EOF
)

start_agent() { # ip prefix ring...
    local ip=$1 prefix=$2; shift 2
    mkdir -p "$prefix"
    RUST_LOG=warn "$AGENT" -b "$ip:$PORT" -n "$ip" -p "$prefix" "$@" 2>>"$WORK/agents.log" &
    PIDS+=($!)
    for _ in $(seq 200); do
        curl -sf "http://$ip:$PORT/hashring" >/dev/null 2>&1 && return 0
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ip:$PORT/hashring', timeout=1)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "agent on $ip did not start" >&2; cat "$WORK/agents.log" >&2; exit 1
}

say "creating $N metrics (1m:1d, 1440 points) on the source node"
SRC=$WORK/src/whisper
mkdir -p "$SRC"
"$BUCKY" whisper create "$WORK/template.wsp" 1m:1d >/dev/null
python3 - "$WORK/template.wsp" <<'EOF' | "$BUCKY" whisper update "$WORK/template.wsp" >/dev/null
import time, sys
now = int(time.time()) // 60 * 60
for k in range(1440):
    print(now - k * 60, k % 97)
EOF
python3 - "$WORK/template.wsp" "$SRC" "$N" <<'EOF'
import os, sys
template, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(template, "rb").read()
for i in range(n):
    d = os.path.join(root, "bench", f"host{i % 50:02d}", "cpu")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"m{i:05d}.wsp"), "wb") as f:
        f.write(data)
EOF
BYTES=$(du -sb "$SRC" | cut -f1)
sync

say "cp -r baseline: 3 runs of cp -r + sync"
CP_RUNS=()
for _ in 1 2 3; do
    t0=$(now); cp -r "$SRC" "$WORK/cp-copy"; sync; t1=$(now)
    CP_RUNS+=("$(calc "round($t1 - $t0, 3)")")
    rm -rf "$WORK/cp-copy"; sync
done
CP_SECS=$(printf '%s\n' "${CP_RUNS[@]}" | sort -n | sed -n 2p)
if [ "${BENCH_SETTLE:-0}" != 0 ]; then
    say "waiting ${BENCH_SETTLE} s"
    sleep "$BENCH_SETTLE"
fi

cpu_of_agents() { # user+system seconds of every agent so far
    local total=0 pid
    for pid in "${PIDS[@]}"; do
        total=$(calc "$total + sum(int(x) for x in open('/proc/$pid/stat').read().rsplit(')', 1)[1].split()[11:13]) / $(getconf CLK_TCK)")
    done
    echo "$total"
}

# One rebalance of the source into 3 fresh ring agents: `rebalance_run copy` (heal + verify, sources kept:
# the same work as cp) or `rebalance_run move` (--delete: each source deleted after verification).
rebalance_run() {
    local kind=$1 flags=()
    [ "$kind" = move ] && flags=(--delete)
    say "rebalance ($kind): $N metrics from ${IPS[3]} into a fresh 3-node ring (-w $WORKERS --batch $BATCH ${flags[*]})"
    local ring=("${IPS[0]}" "${IPS[1]}" "${IPS[2]}") i
    for i in 0 1 2; do start_agent "${IPS[$i]}" "$WORK/$kind$i/whisper" "${ring[@]}"; done
    start_agent "${IPS[3]}" "$SRC" "${IPS[3]}"
    local cpu0 perf_pid="" t0 t1
    cpu0=$(cpu_of_agents)
    if [ -n "${BENCH_PERF:-}" ]; then # system-wide profile into $BENCH_PERF.$kind (perf report -i)
        perf record -a -e cpu-clock ${BENCH_PERF_ARGS:-} -o "$BENCH_PERF.$kind" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
    fi
    t0=$(now)
    BUCKY_NO_PROGRESS=1 /usr/bin/time -f "%U %S" -o "$WORK/client-cpu" "$BUCKY" rebalance -h "${IPS[0]}:$PORT" \
        "${flags[@]}" -w "$WORKERS" --batch "$BATCH" -j "${IPS[3]}:$PORT" >"$WORK/summary.json"
    t1=$(now)
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    local agents_cpu client_cpu
    agents_cpu=$(calc "round($(cpu_of_agents) - $cpu0, 2)")
    client_cpu=$(awk '{print $1 + $2}' "$WORK/client-cpu")
    python3 - "$WORK/summary.json" "$kind" "$N" "$BYTES" "$(calc "round($t1 - $t0, 3)")" "$CP_SECS" "$client_cpu" \
        "$agents_cpu" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
kind, n, size, reb, cp = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
client_cpu, agents_cpu = float(sys.argv[7]), float(sys.argv[8])
assert s["errors"] == 0 and s["moved"] == n and s["deleted"] == (n if kind == "move" else 0), s
mb = size / 1e6
what = "copy, verify, delete" if kind == "move" else "copy, verify; sources kept"
print(f"rebalance ({kind}): {n} metrics, {mb:.1f} MB in {reb:.2f} s (whole command: list, plan, {what})")
print(f"  {n / reb:,.0f} metrics/s, {mb / reb:.1f} MB/s; engine only: {s['metrics_per_second']:,.0f} metrics/s, "
      f"{s['bytes_per_second'] / 1e6:.1f} MB/s; {s['points_verified']:,} points verified")
print(f"  CPU: client {client_cpu:.2f} s, 4 agents {agents_cpu:.2f} s: {1e6 * (client_cpu + agents_cpu) / n:.0f} µs a "
      f"metric ({100 * (client_cpu + agents_cpu) / reb:.0f} % of one core over the run)")
print(f"  ratio: {100 * (mb / reb) / (mb / cp):.0f} % of cp -r's bytes/s")
EOF
    for i in "${PIDS[@]}"; do kill "$i" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

python3 - "$N" "$BYTES" "$CP_SECS" "${CP_RUNS[*]}" "$WORKERS" "$BATCH" <<'EOF'
import sys
n, mb, cp, runs = int(sys.argv[1]), int(sys.argv[2]) / 1e6, float(sys.argv[3]), sys.argv[4].split()
print(f"cp -r: {n} files, {mb:.1f} MB in {cp:.2f} s: {n / cp:,.0f} files/s, {mb / cp:.1f} MB/s "
      f"(cp -r + sync, median of {' / '.join(runs)} s); bucky -w {sys.argv[5]} --batch {sys.argv[6]}:")
EOF
rebalance_run copy
rebalance_run move

if [ ! -f "$TREE/.complete" ]; then
    say "creating $M empty .wsp files in $TREE (once; kept for later runs)"
    rm -rf "$TREE"
    python3 scripts/make-tree.py "$TREE" "$M"
    touch "$TREE/.complete"
fi

say "listing $M names: one agent (streamed), then two agents on the same tree (merged)"
start_agent "${IPS[0]}" "$TREE" "${IPS[0]}"
rss() { # label, command...
    local label=$1; shift
    local t0 t1
    t0=$(now)
    /usr/bin/time -f "%M" -o "$WORK/rss" "$@" >"$WORK/list.out"
    t1=$(now)
    printf '%s: %s names in %.2f s, client peak RSS %.1f MB\n' "$label" "$(wc -l <"$WORK/list.out")" \
        "$(calc "$t1 - $t0")" "$(calc "$(cat "$WORK/rss") / 1024")"
}
# The first listing waits for the agent's scan (202); run it once untimed.
BUCKY_NO_PROGRESS=1 "$BUCKY" list -h "${IPS[0]}:$PORT" >/dev/null
rss "list, 1 agent " env BUCKY_NO_PROGRESS=1 "$BUCKY" list -h "${IPS[0]}:$PORT"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
start_agent "${IPS[0]}" "$TREE" "${IPS[0]}" "${IPS[1]}"
start_agent "${IPS[1]}" "$TREE" "${IPS[0]}" "${IPS[1]}"
BUCKY_NO_PROGRESS=1 "$BUCKY" list -h "${IPS[0]}:$PORT" >/dev/null
rss "list, 2 agents" env BUCKY_NO_PROGRESS=1 "$BUCKY" list -h "${IPS[0]}:$PORT"
rss "inconsistent  " env BUCKY_NO_PROGRESS=1 "$BUCKY" inconsistent -h "${IPS[0]}:$PORT"
