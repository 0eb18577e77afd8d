#!/usr/bin/env bash
# Throughput and memory of bucky-pickle-relay on loopback: N concurrent Rust senders write carbon-framed
# protocol-2 pickles (batches of 500, like carbon's client) to the real release binary, which forwards
# plaintext to a Rust sink that counts lines; the relay's RSS is sampled; SIGTERM at the end must flush
# every line. Prints metrics/s, peak RSS and the load average (the machine may be shared: note it).
#
#   scripts/bench-pickle-relay.sh [--senders 4] [--batch 500] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p bucky-pickle-relay --bin bucky-pickle-relay --example bench
TARGET="${CARGO_TARGET_DIR:-target}"
echo "cores: $(nproc)   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
exec "$TARGET/release/examples/bench" --relay-bin "$TARGET/release/bucky-pickle-relay" "$@"
