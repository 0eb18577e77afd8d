# Shell helpers shared by the benchmarks (scripts/bench-agent.sh, scripts/bench-rebalance.sh): sourced,
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
