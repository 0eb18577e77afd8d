# shellcheck shell=bash
# Shell helpers shared by the benchmarks (scripts/bench-agent.sh, bench-rebalance.sh, bench-audit.sh): sourced,
# never run. Expects to be sourced from the workspace root.

say() { printf '==> %s\n' "$*" >&2; }
# Wall-clock seconds, with nanoseconds.
now() { date +%s.%N; }
# A Python expression's value (floating point arithmetic the shell lacks).
calc() { python3 -c "print($1)"; }
# Seconds from $1 to $2, to the millisecond.
secs() { calc "f'{$2 - $1:.3f}'"; }

# The tree of $2 empty .wsp files in 100 x 100 directories at $1, created once and kept between runs
# (both benchmarks use the same one, BENCH_TREE).
ensure_tree() { # dir count
    if [ ! -f "$1/.complete" ]; then
        say "creating $2 empty .wsp files in $1 (once; kept for later runs)"
        rm -rf "$1"
        python3 scripts/make-tree.py "$1" "$2"
        touch "$1/.complete"
    fi
}

# One TCP port free on every address given (the benchmarks' agents share it).
free_port() { # ip...
    python3 - "$@" <<'EOF'
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
}
