#!/usr/bin/env bash
# Placement throughput on one core: bucky's hashring (release build) vs carbon 1.1.10's own Python
# ConsistentHashingRouter, on the same metric names and the same 12-node ring. Prints names/s and the ratio.
# A benchmark, not a test. The criterion version (ours only) is `cargo bench -p bucky-hashring`.
#
# Usage: scripts/bench-hashring.sh [NAMES]    (default 200000; env REPLICAS=N, default 1)
# Needs the venv that scripts/test.sh creates (or BUCKY_ORACLE_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-200000}"
REPLICAS="${REPLICAS:-1}"
PY="${BUCKY_ORACLE_PYTHON:-$PWD/.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "bench-hashring: no python with carbon 1.1.10 at $PY (run scripts/test.sh, or set BUCKY_ORACLE_PYTHON)" >&2
    exit 1
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Deterministic dotted names, ~34 bytes on average.
python3 - "$COUNT" > "$TMP/names" <<'EOF'
import random, sys
r = random.Random(7)
words = ['servers', 'web', 'db', 'cpu', 'load', 'requests', 'latency', 'p99', 'eth0', 'disk', 'count',
         'carbon', 'agents', 'statsd']
for _ in range(int(sys.argv[1])):
    parts = (r.choice(words) + ('%d' % r.randint(0, 999) if r.random() < 0.4 else '')
             for _ in range(r.randint(3, 7)))
    print('.'.join(parts))
EOF

NODES=()
for i in $(seq 1 12); do NODES+=("10.0.0.$(( (i + 1) / 2 )):$(( 2003 + i % 2 ))=$i"); done

cargo build --release -q -p bucky-hashring --example placement_rate
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
OURS="$TARGET/release/examples/placement_rate"

rate() { sed -n 's/.*rate=\([0-9.]*\).*/\1/p'; }

echo "names: $COUNT ($(awk '{ s += length($0) } END { printf "%.1f", s / NR }' "$TMP/names") bytes average), ring: 12 nodes, replication $REPLICAS, one core"
printf '%-15s %-7s %15s %15s %9s\n' hash router "ours names/s" "python names/s" ratio
for case in carbon_ch:carbon carbon_ch:relay fnv1a_ch:carbon fnv1a_ch:relay jump_fnv1a_ch:relay; do
    hash="${case%%:*}"
    router="${case##*:}"
    ours="$("$OURS" --hash "$hash" --router "$router" --replicas "$REPLICAS" "${NODES[@]}" < "$TMP/names" | rate)"
    if [ "$hash" = jump_fnv1a_ch ]; then
        python="n/a"   # carbon has no jump hash
        ratio="-"
    else
        python="$("$PY" tests/oracle/ring_oracle.py --bench --hash "$hash" --replicas "$REPLICAS" "${NODES[@]}" < "$TMP/names" | rate)"
        ratio="$(python3 -c "print('%.0fx' % ($ours / $python))")"
    fi
    printf '%-15s %-7s %15.0f %15s %9s\n' "$hash" "$router" "$ours" "$python" "$ratio"
done
