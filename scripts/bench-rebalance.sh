#!/usr/bin/env bash
# Benchmarks the bucky CLI (release build). Prints figures and ratios; it is not a pass/fail test.
#
#  1. Rebalance, in rounds (default 3): N metrics (default 5,000, schema 1m:1d, 1440 points each) are
#     written on one agent outside the ring; `cp -r` of them plus one final `sync` is timed; they are
#     copied into a fresh 3-agent ring with `bucky rebalance` (read, heal into the replica, which answers
#     with the replica as read back from disk, verify every point; by the batch), then moved into another
#     fresh ring with `bucky rebalance --delete` (the same, then delete each source with If-Match), each
#     timed end to end (list, plan, copy, verify[, delete]). Each rebalance is compared with its own
#     round's cp; the end gives medians and ranges. On ext4 without a journal (this VM's disk) creating
#     inodes costs more for a minute or more after many deletions, as the allocator skips recently freed
#     inodes: so nothing is deleted between the timed steps of a round (cp's copies and the rings are kept
#     until the end), and each round after the first waits BENCH_SETTLE seconds (default 65) after the
#     previous round's move. Wait a minute between two runs of this script for the same reason. The move
#     still pays for its own deletions, as it would on a real node, so it is also compared with `cp -r`
#     then `rm -r` of the originals (each + sync), timed at the end of the round after the same settle. On
#     a filesystem mounted with `discard` (this VM's), freeing a deleted file's blocks waits for the disk
#     to discard them, which is most of what the move costs more than the copy here. The agents make new files
#     durable by group commit: concurrent heals share their flushes, so throughput grows with the heals in
#     flight (-w per source node, --io-concurrency per agent).
#  2. Listing: peak RSS of the client listing M names (default 1,000,000 empty .wsp files served by one
#     agent: streamed straight through), and of the same tree served by two agents (two lists merged
#     without duplicates), measured with /usr/bin/time.
#
# Usage: scripts/bench-rebalance.sh [N_METRICS] [M_NAMES] (M_NAMES 0 skips the listing part)
# Env: BENCH_TREE (the M-file tree, kept between runs; shared with scripts/bench-agent.sh),
#      BENCH_WORKERS (bucky -w, default 5), BENCH_BATCH (bucky --batch, default 32), CARGO_TARGET_DIR,
#      BENCH_PERF (a file: profile each rebalance system-wide with perf record into FILE.copyR and
#      FILE.moveR; BENCH_PERF_ARGS adds flags),
#      BENCH_ROUNDS (default 3), BENCH_SETTLE (default 65), BENCH_KINDS (default "copy move"; "move" alone
#      moves files never copied), BENCH_AGENT_LOG (the agents' RUST_LOG, their log kept in
#      /tmp/bench-agents.log; e.g. "warn,bucky_agent::store::commit=trace" logs every group commit),
#      BENCH_AGENT_ARGS (more bucky-agent flags, e.g. "--flush fsync"), BENCH_MV_BASELINE (default 1: also
#      time cp -r + rm -r, the baseline of a move, after a settle; 0 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-5000}
M=${2:-1000000}
WORKERS=${BENCH_WORKERS:-5}   # bucky's defaults
ROUNDS=${BENCH_ROUNDS:-3}
KINDS=${BENCH_KINDS:-copy move}
SETTLE=${BENCH_SETTLE:-65}
MV_BASELINE=${BENCH_MV_BASELINE:-1}
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
    [ -n "${BENCH_AGENT_LOG:-}" ] && cp "$WORK/agents.log" /tmp/bench-agents.log
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

say "building the release binaries"
cargo build --quiet --release --bin bucky --bin bucky-agent

# Loopback addresses of this run and one port free on all of them.
IPS=(127.0.77.1 127.0.77.2 127.0.77.3 127.0.77.4)
PORT=$(free_port "${IPS[@]}")

start_agent() { # ip prefix ring...
    local ip=$1 prefix=$2; shift 2
    mkdir -p "$prefix"
    # shellcheck disable=SC2086 # BENCH_AGENT_ARGS is a list of flags
    RUST_LOG=${BENCH_AGENT_LOG:-warn} "$AGENT" -b "$ip:$PORT" -n "$ip" -p "$prefix" ${BENCH_AGENT_ARGS:-} "$@" \
        2>>"$WORK/agents.log" &
    PIDS+=($!)
    for _ in $(seq 200); do
        curl -sf "http://$ip:$PORT/hashring" >/dev/null 2>&1 && return 0
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ip:$PORT/hashring', timeout=1)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "agent on $ip did not start" >&2; cat "$WORK/agents.log" >&2; exit 1
}

# The source node's files: N copies of one 1m:1d file (1440 points) in 50 host directories.
"$BUCKY" whisper create "$WORK/template.wsp" 1m:1d >/dev/null
python3 - "$WORK/template.wsp" <<'EOF' | "$BUCKY" whisper update "$WORK/template.wsp" >/dev/null
import time, sys
now = int(time.time()) // 60 * 60
for k in range(1440):
    print(now - k * 60, k % 97)
EOF
make_source() { # dir
    python3 - "$WORK/template.wsp" "$1" "$N" <<'EOF'
import os, sys
template, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(template, "rb").read()
for i in range(n):
    d = os.path.join(root, "bench", f"host{i % 50:02d}", "cpu")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"m{i:05d}.wsp"), "wb") as f:
        f.write(data)
EOF
    sync
}

cpu_of_agents() { # user+system seconds of every agent so far
    local total=0 pid
    for pid in "${PIDS[@]}"; do
        total=$(calc "$total + sum(int(x) for x in open('/proc/$pid/stat').read().rsplit(')', 1)[1].split()[11:13]) / $(getconf CLK_TCK)")
    done
    echo "$total"
}

# One rebalance of round R's source into 3 fresh ring agents: `rebalance_run copy R` (heal + verify,
# sources kept: the same work as cp) or `rebalance_run move R` (--delete: each source deleted after
# verification). Prints its figures and appends "R kind seconds" to $WORK/results.
rebalance_run() {
    local kind=$1 round=$2 flags=()
    [ "$kind" = move ] && flags=(--delete)
    say "round $round, rebalance ($kind): $N metrics from ${IPS[3]} into a fresh 3-node ring (-w $WORKERS --batch $BATCH ${flags[*]})"
    local ring=("${IPS[0]}" "${IPS[1]}" "${IPS[2]}") i
    for i in 0 1 2; do start_agent "${IPS[$i]}" "$WORK/$kind$round.$i/whisper" "${ring[@]}"; done
    start_agent "${IPS[3]}" "$WORK/src$round/whisper" "${IPS[3]}"
    local cpu0 perf_pid="" t0 t1
    cpu0=$(cpu_of_agents)
    if [ -n "${BENCH_PERF:-}" ]; then # system-wide profile into $BENCH_PERF.$kind$round (perf report -i)
        # shellcheck disable=SC2086 # BENCH_PERF_ARGS is a list of flags
        perf record -a -e cpu-clock ${BENCH_PERF_ARGS:-} -o "$BENCH_PERF.$kind$round" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
    fi
    t0=$(now)
    BUCKY_NO_PROGRESS=1 /usr/bin/time -f "%U %S" -o "$WORK/client-cpu" "$BUCKY" rebalance -h "${IPS[0]}:$PORT" \
        "${flags[@]}" -w "$WORKERS" --batch "$BATCH" -j "${IPS[3]}:$PORT" >"$WORK/summary.json"
    t1=$(now)
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    local agents_cpu client_cpu secs
    agents_cpu=$(calc "round($(cpu_of_agents) - $cpu0, 2)")
    client_cpu=$(awk '{print $1 + $2}' "$WORK/client-cpu")
    secs=$(calc "round($t1 - $t0, 3)")
    echo "$round $kind $secs" >>"$WORK/results"
    python3 - "$WORK/summary.json" "$kind" "$N" "$BYTES" "$secs" "$client_cpu" "$agents_cpu" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
kind, n, size, reb = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
client_cpu, agents_cpu = float(sys.argv[6]), float(sys.argv[7])
assert s["errors"] == 0 and s["moved"] == n and s["deleted"] == (n if kind == "move" else 0), s
mb = size / 1e6
what = "copy, verify, delete" if kind == "move" else "copy, verify; sources kept"
print(f"  rebalance ({kind}): {reb:.2f} s (whole command: list, plan, {what}): {n / reb:,.0f} metrics/s, "
      f"{mb / reb:.1f} MB/s; {s['points_verified']:,} points verified")
print(f"    CPU: client {client_cpu:.2f} s, 4 agents {agents_cpu:.2f} s: {1e6 * (client_cpu + agents_cpu) / n:.0f} µs "
      f"a metric ({100 * (client_cpu + agents_cpu) / reb:.0f} % of one core over the run)")
EOF
    for i in "${PIDS[@]}"; do kill "$i" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

# Rounds of: a fresh source, `cp -r` of it + sync, a copy and a move of it. Each rebalance is compared
# with its own round's cp, timed a few seconds before it: this VM's disk has fast and slow spells.
# Nothing is deleted between the timed steps (cp's copies and the rings are kept until the end), so no
# step pays for another's deletions; the move pays for its own.
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    if [ "$round" -gt 1 ] && [ "$SETTLE" != 0 ]; then
        say "waiting $SETTLE s: the last move's deletions would slow this round's creates"
        sleep "$SETTLE"
    fi
    say "round $round: creating $N metrics (1m:1d, 1440 points) on the source node"
    make_source "$WORK/src$round/whisper"
    BYTES=$(du -sb "$WORK/src$round/whisper" | cut -f1)
    say "round $round: cp -r + sync"
    t0=$(now); cp -r "$WORK/src$round/whisper" "$WORK/cp$round"; sync; t1=$(now)
    secs=$(calc "round($t1 - $t0, 3)")
    echo "$round cp $secs" >>"$WORK/results"
    printf 'round %s: cp -r + sync: %.2f s, %.1f MB/s\n' "$round" "$secs" "$(calc "$BYTES / 1e6 / $secs")"
    for kind in $KINDS; do rebalance_run "$kind" "$round"; done
    if [ "$MV_BASELINE" != 0 ]; then
        # The move's own baseline: cp -r + sync, then rm -r of the originals + sync (a move between
        # filesystems), after the same settle, as the move started with no recent deletion.
        [ "$SETTLE" != 0 ] && { say "waiting $SETTLE s before cp -r + rm -r"; sleep "$SETTLE"; }
        say "round $round: cp -r + sync + rm -r + sync"
        t0=$(now); cp -r "$WORK/cp$round" "$WORK/mv$round"; sync; rm -r "$WORK/cp$round"; sync; t1=$(now)
        secs=$(calc "round($t1 - $t0, 3)")
        echo "$round cprm $secs" >>"$WORK/results"
        printf '  cp -r + sync + rm -r + sync: %.2f s, %.1f MB/s\n' "$secs" "$(calc "$BYTES / 1e6 / $secs")"
    fi
done
python3 - "$WORK/results" "$N" "$BYTES" "$WORKERS" "$BATCH" <<'EOF'
import collections, statistics, sys
n, mb = int(sys.argv[2]), int(sys.argv[3]) / 1e6
secs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, kind, t = line.split()
    secs[kind][r] = float(t)
print(f"\n{n} metrics, {mb:.1f} MB; bucky -w {sys.argv[4]} --batch {sys.argv[5]}; {len(secs['cp'])} rounds "
      f"(median, min–max):")
def spread(xs, fmt):
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"
print(f"  cp -r + sync        {spread(list(secs['cp'].values()), lambda x: f'{x:.2f} s')}")
for kind in ("copy", "move"):
    if kind not in secs:
        continue
    times = list(secs[kind].values())
    ratios = [100 * secs["cp"][r] / t for r, t in secs[kind].items()]
    print(f"  rebalance ({kind}) {spread(times, lambda x: f'{x:.2f} s')}, {spread([n / t for t in times], lambda x: f'{x:,.0f}')}"
          f" metrics/s, {spread([mb / t for t in times], lambda x: f'{x:.1f}')} MB/s")
    print(f"    % of its round's cp -r bytes/s: {spread(ratios, lambda x: f'{x:.0f} %')}")
if "cprm" in secs:
    print(f"  cp -r + rm -r       {spread(list(secs['cprm'].values()), lambda x: f'{x:.2f} s')}")
    if "move" in secs:
        ratios = [100 * secs["cprm"][r] / t for r, t in secs["move"].items() if r in secs["cprm"]]
        print(f"    rebalance (move), % of its round's cp -r + rm -r bytes/s: {spread(ratios, lambda x: f'{x:.0f} %')}")
EOF
[ "$M" = 0 ] && exit 0 # M_NAMES=0: no listing benchmark

ensure_tree "$TREE" "$M"

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
