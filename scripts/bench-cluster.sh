#!/usr/bin/env bash
# Benchmarks a ring growth (N-1 -> N nodes) on a cluster that looks like production: every node in its own
# network namespace behind its own shaped link, with its own filesystem. Prints figures and ratios; it is
# not a pass/fail test.
#
# Each node is a network namespace with a veth pair to a bridge that lives in a namespace of its own
# (addresses from the benchmarking range 198.18.0.0/15; nothing is routed out of the namespaces, the root
# namespace is untouched). Both ends of every node's link are shaped with `tc qdisc ... tbf` (default
# 1gbit; netem is not available on these kernels). The client runs in its own namespace on an unshaped
# link. Every node's whisper store is its own loop-mounted ext4 image with its journal (or a tmpfs).
#
# The same data is laid out three times, once per run, by the (N-1)-node ring (`bucky ring locate`, carbon_ch, one
# replica): METRICS files of 1m:1d and METRICS/40 of 10s:1d,1m:30d,5m:1y, copies of two templates whose archives are
# full of random values (data that compresses would not load the links). Then the daemons start with the N-node ring
# and the rebalance is timed end to end: bucky-agent + `bucky rebalance --delete` (this workspace's dist build, as
# packaged), the same with `--offload` (the new node's agent fetches the files from the sources itself: only names
# and verdicts pass through the client), then Go buckyd + `bucky rebalance -delete -f` 0.6.0 (go-graphite; -f as
# buckyd's list must be fresh). Page caches are dropped before each run. Afterwards the stores are counted: every
# metric once, the moved ones on the new node. The link floor is the bytes that must reach the new node divided by
# its link rate. Memory: the client's peak RSS (/usr/bin/time), each daemon's peak (VmHWM) and its idle RSS (VmRSS
# once started, before the rebalance).
#
# Needs: root, `ip` (netns, veth, bridge), `tc` (tbf), loop devices, mkfs.ext4 (unless --tmpfs), python3,
# the Go peers in .peers/bin/gg (../shared/peers/build.sh), the dist build (built here: Cargo.toml's profile.dist).
#
# Usage: scripts/bench-cluster.sh [--nodes N] [--rate RATE] [--metrics M] [--tmpfs] [--only bucky|offload|go]
#   --nodes N     nodes after the growth (default 4; the data starts on the first N-1)
#   --rate RATE   every node link's tbf rate, in tc's spelling (default 1gbit; e.g. 100mbit)
#   --metrics M   1m:1d metrics (default 20000); M/40 of 10s:1d,1m:30d,5m:1y besides (default 500)
#   --tmpfs       stores on tmpfs instead of loop-mounted ext4 images
#   --only TOOL   run one tool only: bucky, offload (bucky with --offload: the new node's agent fetches the
#                 files from the sources itself), go
# Env: BENCH_WORKERS (-w of both clients, default 5: both tools' default), BENCH_BUCKY_ARGS (more flags
#      for both bucky runs, split on spaces: e.g. "--inflight-mib 2"), CARGO_TARGET_DIR, BUCKY_PEERS
#      (default .peers), BENCH_LOGS (a directory: the clients' stdout and stderr and the daemons' log are kept
#      there).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=4
RATE=1gbit
METRICS=20000
TMPFS=0
ONLY=""
while [ $# -gt 0 ]; do
    case $1 in
    --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
    --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
    --metrics) METRICS=${2:?--metrics needs a value}; shift 2 ;;
    --tmpfs) TMPFS=1; shift ;;
    --only) ONLY=${2:?--only needs bucky, offload or go}; shift 2 ;;
    *) echo "bench-cluster: unknown argument $1 (see the usage in the script's header)" >&2; exit 2 ;;
    esac
done
die() { echo "bench-cluster: $*" >&2; exit 1; }
if ! [[ $NODES =~ ^[0-9]+$ ]] || [ "$NODES" -lt 2 ] || [ "$NODES" -gt 200 ]; then
    die "--nodes must be 2..200, not $NODES"
fi
if ! [[ $METRICS =~ ^[0-9]+$ ]] || [ "$METRICS" -lt 1 ]; then die "--metrics must be a positive count, not $METRICS"; fi
[[ $RATE =~ ^[0-9]+(bit|kbit|mbit|gbit)$ ]] || die "--rate must be like 1gbit or 100mbit, not $RATE"
case $ONLY in "" | bucky | offload | go) ;; *) die "--only must be bucky, offload or go, not $ONLY" ;; esac
BIG=$((METRICS / 40))
WORKERS=${BENCH_WORKERS:-5}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BUCKY=$TARGET/dist/bucky
AGENT=$TARGET/dist/bucky-agent
PEERS=${BUCKY_PEERS:-$PWD/.peers}
GO_BUCKYD=$PEERS/bin/gg/buckyd
GO_BUCKY=$PEERS/bin/gg/bucky

# The extra needs, each checked with a one-line error before anything is changed.
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tc, loop devices and mounts)"
command -v ip >/dev/null || die "needs iproute2's ip (network namespaces, veth, bridge)"
command -v tc >/dev/null || die "needs iproute2's tc (tbf link shaping)"
command -v python3 >/dev/null || die "needs python3"
if [ "$TMPFS" = 0 ]; then
    command -v mkfs.ext4 >/dev/null || die "needs mkfs.ext4 (or --tmpfs)"
    command -v losetup >/dev/null || die "needs losetup (or --tmpfs)"
    losetup -f >/dev/null 2>&1 || die "needs a free loop device (modprobe loop; or --tmpfs)"
fi
if { [ -z "$ONLY" ] || [ "$ONLY" = go ]; } && { [ ! -x "$GO_BUCKYD" ] || [ ! -x "$GO_BUCKY" ]; }; then
    die "needs Go buckyd and bucky 0.6.0 in $PEERS/bin/gg (../shared/peers/build.sh $PEERS; or --only bucky)"
fi

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

TAG=bc$$
WORK=$(mktemp -d)
NETNS=()  # namespaces made
MOUNTS=() # mount points mounted
LOOPS=()  # loop devices attached
PIDS=()   # daemons running
cleanup() {
    set +e
    local pid m l ns
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
    for l in "${LOOPS[@]}"; do losetup -d "$l"; done
    # Deleting a namespace deletes the veth ends in it, and with them their peers and the bridge.
    for ns in "${NETNS[@]}"; do ip netns del "$ns"; done
    if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$WORK"/{out,err}.* "$WORK/daemons.log" "$BENCH_LOGS"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building the binaries as shipped (profile dist, link-time optimised: minutes)"
cargo build --quiet --profile dist --bin bucky --bin bucky-agent

# The network: a bridge in namespace $TAG-br; node i (0-based) at 198.18.0.(i+1) in namespace $TAG-i;
# the client at 198.18.0.250 in $TAG-cli.
BRNS=$TAG-br
CLINS=$TAG-cli
IPS=()
for i in $(seq 0 $((NODES - 1))); do IPS+=("198.18.0.$((i + 1))"); done
PORT=4242 # Go bucky assumes every buckyd listens on the seed's port
add_ns() { ip netns add "$1"; NETNS+=("$1"); ip -n "$1" link set lo up; }
link() { # namespace address shape(0|1) index
    local ns=$1 addr=$2 shape=$3 idx=$4
    ip link add "${TAG}h$idx" type veth peer name "${TAG}n$idx"
    ip link set "${TAG}h$idx" netns "$BRNS"
    ip link set "${TAG}n$idx" netns "$ns"
    ip -n "$ns" link set "${TAG}n$idx" name eth0
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$BRNS" link set "${TAG}h$idx" master br0 up
    if [ "$shape" = 1 ]; then # both directions: the node's egress and the bridge's egress towards the node
        tc -n "$ns" qdisc add dev eth0 root tbf rate "$RATE" burst 1mb latency 50ms ||
            die "tc tbf failed on $ns (needs the sch_tbf qdisc)"
        tc -n "$BRNS" qdisc add dev "${TAG}h$idx" root tbf rate "$RATE" burst 1mb latency 50ms ||
            die "tc tbf failed on $BRNS"
    fi
}
say "network: $NODES node namespaces + client, a bridge, links shaped to $RATE (tbf)"
add_ns "$BRNS" || die "ip netns add failed (needs network namespace support)"
ip -n "$BRNS" link add br0 type bridge
ip -n "$BRNS" link set br0 up
add_ns "$CLINS"
link "$CLINS" 198.18.0.250 0 c
for i in $(seq 0 $((NODES - 1))); do
    add_ns "$TAG-$i"
    link "$TAG-$i" "${IPS[$i]}" 1 "$i"
done
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The data: two templates, then where each metric lives on the old ring and on the new one.
# Every archive full of random values, as real metrics are: a file of zeros or of a repeating pattern would
# shrink on the wire (both tools compress), and the link would never be the bottleneck.
say "templates: 1m:1d and 10s:1d,1m:30d,5m:1y, every archive full of random values"
"$BUCKY" whisper create "$WORK/small.wsp" 1m:1d >/dev/null
"$BUCKY" whisper create "$WORK/big.wsp" 10s:1d,1m:30d,5m:1y >/dev/null
fill() { # file step:seconds...: oldest first, so each archive keeps its own points
    python3 - "$@" <<'EOF' | "$BUCKY" whisper update "$1" >/dev/null
import random, sys, time
now = int(time.time())
random.seed(20)
for spec in reversed(sys.argv[2:]):
    step, span = map(int, spec.split(":"))
    for t in range(now - span + step, now, step):
        print(t // step * step, random.uniform(0, 1e6))
EOF
}
fill "$WORK/small.wsp" 60:86400
fill "$WORK/big.wsp" 10:86400 60:2592000 300:31536000
python3 - "$METRICS" "$BIG" >"$WORK/names" <<'EOF'
import sys
n, big = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    print(f"bench.host{i % 50:02d}.cpu.m{i:05d}\tsmall")
for i in range(big):
    print(f"bench.big.host{i % 10:02d}.m{i:04d}\tbig")
EOF
cut -f1 "$WORK/names" | "$BUCKY" ring locate --hash carbon_ch "${IPS[@]:0:$((NODES - 1))}" >"$WORK/old"
cut -f1 "$WORK/names" | "$BUCKY" ring locate --hash carbon_ch "${IPS[@]}" >"$WORK/new"
read -r MOVED MOVED_BYTES TOTAL_BYTES < <(python3 - "$WORK" <<'EOF'
import os, sys
w = sys.argv[1]
kind = dict(l.split("\t") for l in open(f"{w}/names").read().splitlines())
size = {k: os.path.getsize(f"{w}/{k}.wsp") for k in ("small", "big")}
old = dict(l.split("\t") for l in open(f"{w}/old").read().splitlines())
new = dict(l.split("\t") for l in open(f"{w}/new").read().splitlines())
moved = [m for m in kind if old[m] != new[m]]
print(len(moved), sum(size[kind[m]] for m in moved), sum(size[kind[m]] for m in kind))
EOF
)
RATE_BPS=$(python3 - "$RATE" <<'EOF'
import re, sys
n, unit = re.fullmatch(r"(\d+)(\w+)", sys.argv[1]).groups()
print(int(n) * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[unit] / 8)
EOF
)
FLOOR=$(calc "$MOVED_BYTES / $RATE_BPS")
say "$METRICS + $BIG metrics, $(calc "round($TOTAL_BYTES / 1e6, 1)") MB; growth $((NODES - 1)) -> $NODES nodes moves $MOVED ($(calc "round($MOVED_BYTES / 1e6, 1)") MB): link floor $(calc "round($FLOOR, 2)") s"

# Fresh stores for every node: $WORK/store$i mounted (ext4 image with journal, or tmpfs), the old ring's
# share of the data written into nodes 0..N-2.
IMG_MB=$(calc "int($TOTAL_BYTES * 0.7 / 1e6) + 256")
make_stores() {
    local i dev
    for i in $(seq 0 $((NODES - 1))); do
        mkdir -p "$WORK/store$i"
        if [ "$TMPFS" = 1 ]; then
            mount -t tmpfs -o "size=${IMG_MB}m" tmpfs "$WORK/store$i"
        else
            rm -f "$WORK/img$i"
            truncate -s "${IMG_MB}M" "$WORK/img$i"
            mkfs.ext4 -q -F "$WORK/img$i" # with its journal (ext4's default)
            dev=$(losetup -f --show "$WORK/img$i")
            LOOPS+=("$dev")
            mount "$dev" "$WORK/store$i"
        fi
        MOUNTS+=("$WORK/store$i")
    done
    python3 - "$WORK" "${IPS[@]:0:$((NODES - 1))}" <<'EOF'
import os, sys
w, ips = sys.argv[1], sys.argv[2:]
data = {k: open(f"{w}/{k}.wsp", "rb").read() for k in ("small", "big")}
kind = dict(l.split("\t") for l in open(f"{w}/names").read().splitlines())
for line in open(f"{w}/old").read().splitlines():
    name, node = line.split("\t")
    path = os.path.join(w, f"store{ips.index(node)}", *name.split(".")) + ".wsp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data[kind[name]])
EOF
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
drop_stores() {
    local m l
    for m in "${MOUNTS[@]}"; do umount "$m"; done
    MOUNTS=()
    for l in "${LOOPS[@]}"; do losetup -d "$l"; done
    LOOPS=()
    rm -f "$WORK"/img*
}

# The agents run with the allocator settings the unit file ships (Environment=MALLOC_*), as in production.
mapfile -t AGENT_ENV < <(sed -n 's/^Environment=\(MALLOC_[A-Z_]*=[0-9]*\)$/\1/p' dist/systemd/bucky-agent.service)

start_daemons() { # bucky|offload|go
    local i
    for i in $(seq 0 $((NODES - 1))); do
        if [ "$1" != go ]; then
            # Not through in_ns: a backgrounded function would be a subshell, and $! its pid.
            ip netns exec "$TAG-$i" env RUST_LOG=warn "${AGENT_ENV[@]}" "$AGENT" -b "${IPS[$i]}:$PORT" -n "${IPS[$i]}" -p "$WORK/store$i" \
                --hash carbon "${IPS[@]}" 2>>"$WORK/daemons.log" &
        else
            ip netns exec "$TAG-$i" "$GO_BUCKYD" -b "${IPS[$i]}:$PORT" -n "${IPS[$i]}" -p "$WORK/store$i" -pprof "" -hash carbon \
                "${IPS[@]}" >>"$WORK/daemons.log" 2>&1 &
        fi
        PIDS+=($!) # ip netns exec (and env) exec the daemon: the same pid
    done
    for i in $(seq 0 $((NODES - 1))); do
        in_ns "$CLINS" python3 - "http://${IPS[$i]}:$PORT/hashring" <<'EOF' || die "$1 daemon on ${IPS[$i]} did not start (see below)$(tail -5 "$WORK/daemons.log")"
import sys, time, urllib.request
for _ in range(400):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1); sys.exit(0)
    except Exception:
        time.sleep(0.05)
sys.exit(1)
EOF
    done
}
proc_cpu() { # user+system seconds of pid $1
    python3 -c "import os; f = open('/proc/$1/stat').read().rsplit(')', 1)[1].split(); print((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))"
}
# Bytes received so far on the new node's link and on the client's: "NEW CLIENT".
wire() {
    echo "$(ip netns exec "$TAG-$((NODES - 1))" cat /sys/class/net/eth0/statistics/rx_bytes)" \
        "$(ip netns exec "$CLINS" cat /sys/class/net/eth0/statistics/rx_bytes)"
}
proc_hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; } # kB
proc_rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; } # kB

# One timed growth with tool $1; its figures go to $WORK/result.$1 (a JSON line).
run_tool() {
    local tool=$1 i cpu0=() cpu1=() idle=() hwm=() t0 t1 rc wire0 wire1
    say "$tool: laying out the data on $((NODES - 1)) nodes"
    make_stores
    start_daemons "$tool"
    # Idle: every daemon answered /hashring; a moment for what it starts by itself (bucky-agent's first
    # walk of its store, buckyd's) before the rebalance asks for anything.
    sleep 2
    for i in $(seq 0 $((NODES - 1))); do
        cpu0+=("$(proc_cpu "${PIDS[$i]}")")
        idle+=("$(proc_rss "${PIDS[$i]}")")
    done
    wire0=$(wire)
    say "$tool: rebalance onto $NODES nodes (-w $WORKERS${BENCH_BUCKY_ARGS:+ $BENCH_BUCKY_ARGS})"
    t0=$(now)
    set +e
    if [ "$tool" != go ]; then
        local offload=() extra=()
        [ "$tool" = bucky ] || offload=(--offload)
        read -r -a extra <<<"${BENCH_BUCKY_ARGS:-}"
        BUCKY_NO_PROGRESS=1 in_ns "$CLINS" /usr/bin/time -f "%U %S %M" -o "$WORK/client.$tool" "$BUCKY" rebalance \
            -h "${IPS[0]}:$PORT" --delete -w "$WORKERS" "${offload[@]}" "${extra[@]}" >"$WORK/out.$tool" 2>"$WORK/err.$tool"
    else
        in_ns "$CLINS" /usr/bin/time -f "%U %S %M" -o "$WORK/client.$tool" "$GO_BUCKY" rebalance \
            -h "${IPS[0]}:$PORT" -delete -f -w "$WORKERS" >"$WORK/out.$tool" 2>"$WORK/err.$tool"
    fi
    rc=$?
    set -e
    t1=$(now)
    wire1=$(wire)
    [ "$rc" = 0 ] || say "$tool: the rebalance exited $rc: $(tail -3 "$WORK/err.$tool")"
    for i in $(seq 0 $((NODES - 1))); do
        cpu1+=("$(proc_cpu "${PIDS[$i]}")")
        hwm+=("$(proc_hwm "${PIDS[$i]}")")
    done
    for i in "${PIDS[@]}"; do kill "$i" 2>/dev/null || true; done
    for i in "${PIDS[@]}"; do wait "$i" 2>/dev/null || true; done
    PIDS=()
    python3 - "$WORK" "$tool" "$rc" "$(calc "$t1 - $t0")" "$(cat "$WORK/client.$tool")" "${cpu0[*]}" "${cpu1[*]}" \
        "${hwm[*]}" "${idle[*]}" "$wire0" "$wire1" "${IPS[@]}" >"$WORK/result.$tool" <<'EOF'
import json, os, sys
w, tool, rc, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
client, cpu0, cpu1, hwm, idle = (a.split() for a in sys.argv[5:10])
ips = sys.argv[12:]
new = dict(l.split("\t") for l in open(f"{w}/new").read().splitlines())
# Where every metric is now: each once, on its new ring home.
seen = {}
for i, ip in enumerate(ips):
    root = os.path.join(w, f"store{i}")
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".wsp"):
                name = ".".join(os.path.relpath(os.path.join(d, f[:-4]), root).split(os.sep))
                seen.setdefault(name, []).append(ip)
lost = sum(1 for m in new if m not in seen)
extra = sum(len(v) - 1 for v in seen.values()) + sum(1 for m in seen if m not in new)
misplaced = sorted(m for m, v in seen.items() if m in new and new[m] not in v)
wire = [b - a for a, b in zip(map(int, sys.argv[10].split()), map(int, sys.argv[11].split()))]
print(json.dumps({"tool": tool, "rc": rc, "secs": secs, "client_cpu": float(client[0]) + float(client[1]),
                  "client_rss_kb": int(client[2]), "agents_cpu": sum(map(float, cpu1)) - sum(map(float, cpu0)),
                  "agents_rss_kb": list(map(int, hwm)), "agents_idle_rss_kb": list(map(int, idle)),
                  "lost": lost, "extra": extra, "misplaced": misplaced,
                  "new_node_rx": wire[0], "client_rx": wire[1]}))
EOF
    drop_stores
}

: >"$WORK/daemons.log"
for tool in bucky offload go; do
    [ -z "$ONLY" ] || [ "$ONLY" = "$tool" ] || continue
    run_tool "$tool"
done

python3 - "$WORK" "$MOVED" "$MOVED_BYTES" "$FLOOR" "$RATE" "$NODES" "$TMPFS" "$METRICS" "$BIG" "$WORKERS" <<'EOF'
import json, os, sys
w, moved, mbytes, floor, rate, nodes, tmpfs, small, big, workers = sys.argv[1:]
moved, mb, floor, nodes = int(moved), int(mbytes) / 1e6, float(floor), int(nodes)
store = "tmpfs" if tmpfs == "1" else "ext4 image (journal) per node"
print(f"\n{small} metrics 1m:1d + {big} of 10s:1d,1m:30d,5m:1y; growth {nodes - 1} -> {nodes} nodes moves {moved:,} "
      f"metrics, {mb:.1f} MB; links {rate} (tbf), stores on {store}; -w {workers}; link floor {floor:.2f} s")
res = {}
for tool in ("bucky", "offload", "go"):
    p = f"{w}/result.{tool}"
    if not os.path.exists(p):
        continue
    r = res[tool] = json.load(open(p))
    label = {"bucky": "bucky-agent + bucky", "offload": "bucky-agent + bucky --offload",
             "go": "buckyd + bucky 0.6.0 (Go)"}[tool]
    s = r["secs"]
    print(f"  {label}: {s:.2f} s, {moved / s:,.0f} metrics/s, {mb / s:.1f} MB/s, {100 * floor / s:.0f} % of the link floor"
          + (f" (exit {r['rc']})" if r["rc"] else ""))
    print(f"    CPU a metric: client {1e6 * r['client_cpu'] / moved:.0f} µs, agents {1e6 * r['agents_cpu'] / moved:.0f} µs "
          f"(client {r['client_cpu']:.2f} s, agents {r['agents_cpu']:.2f} s)")
    print(f"    peak RSS: client {r['client_rss_kb'] / 1024:.1f} MB, agents "
          + ", ".join(f"{k / 1024:.1f}" for k in r["agents_rss_kb"]) + " MB (the new node last)")
    print("    idle RSS (started, before the rebalance): agents "
          + ", ".join(f"{k / 1024:.1f}" for k in r["agents_idle_rss_kb"]) + " MB")
    print(f"    on the wire: {r['new_node_rx'] / 1e6:.1f} MB into the new node ({100 * r['new_node_rx'] / 1e6 / mb:.0f} % of "
          f"the bytes moved), {r['client_rx'] / 1e6:.1f} MB into the client")
    print(f"    afterwards: {r['lost']} lost, {r['extra']} extra copies, {len(r['misplaced'])} misplaced "
          + " ".join(r["misplaced"][:3]))
for tool in ("bucky", "offload"):
    if tool in res and "go" in res:
        print(f"  {tool} / Go: {res['go']['secs'] / res[tool]['secs']:.2f}x the metrics/s")
for tool, r in res.items():
    hours = 2.3e6 / (moved / r["secs"]) / 3600
    print(f"  {tool}: 2.3 million metrics at this rate: {hours:.1f} h (Go buckytools took 21 h in production)")
EOF
