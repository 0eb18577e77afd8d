#!/usr/bin/env bash
# Checks formatting and lints, installs the reference peers if missing, then runs bucky's whole test suite.
# This is the README's test command and what CI (.ci/run) calls. Safe to rerun: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

say() { printf '==> %s\n' "$*" >&2; }

# Style first: seconds, and a failure here needs no peers to explain it.
say "checking formatting (cargo fmt --all --check)"
if ! cargo fmt --all --check; then
    say "FAILED: the tree is not formatted; run \`cargo fmt --all\` and commit the result"
    exit 1
fi
say "checking lints (cargo clippy --workspace --all-targets -- -D warnings)"
if ! cargo clippy --workspace --all-targets --quiet -- -D warnings; then
    say "FAILED: clippy reports warnings (above); fix them, or allow one where it is wrong, saying why"
    exit 1
fi
say "checking module cycles (scripts/module-graph.py: bucky-cli and whisper)"
if ! python3 scripts/module-graph.py crates/bucky-cli/src crates/whisper/src; then
    say "FAILED: modules import each other in a cycle (above); move what both need into a module of its own"
    exit 1
fi

# Debian peers: carbon-c-relay is the placement oracle (`carbon-c-relay -t`).
need_apt=()
command -v carbon-c-relay >/dev/null 2>&1 || need_apt+=(carbon-c-relay)
# dpkg-shlibdeps builds the Debian package's Depends (scripts/package.sh).
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python peers, in the project's own venv (git-ignored).
VENV="$ROOT/.venv"
REQ="$ROOT/tests/oracle/requirements.txt"
STAMP="$VENV/.requirements.sha"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    say "creating $VENV with the reference packages"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
fi
export BUCKY_ORACLE_PYTHON="$VENV/bin/python"

# Go peers (go-carbon 0.17.1, buckytools 0.4.2 and 0.6.0), built from the shared source tarballs into the
# git-ignored .peers/ (Debian's golang-go, offline; nothing to do once built).
PEERS_SRC="${BUCKY_PEERS_SRC:-$ROOT/../shared/peers}"
say "building the Go peers into $ROOT/.peers"
bash "$PEERS_SRC/build.sh" "$ROOT/.peers" >&2
export BUCKY_PEERS="$ROOT/.peers"

say "building the binaries"
cargo build --workspace --bins
# The Debian package of these (dev) binaries: built, installed (as root), its units and binaries checked.
say "checking the Debian package"
bash scripts/check-package.sh --profile dev

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest not found; using cargo test"
    exec cargo test --workspace "$@"
fi
say "running the test suite"
cargo test --workspace --doc --quiet
exec cargo nextest run --workspace --no-fail-fast "$@"
