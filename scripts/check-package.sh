#!/usr/bin/env bash
# Builds the Debian package (scripts/package.sh) and checks it; exits non-zero at the first defect.
#
#  1. The .deb itself: control fields, every file in place (root-owned, gzipped man pages that render
#     without warnings, completions that parse), conffiles, maintainer scripts that parse.
#  2. Installed (as root; CI runs as root on a fresh machine): `dpkg -i` twice (the postinst is idempotent),
#     the _bucky user, each binary's --version, `man -w`, bash completion loading, `systemd-analyze verify`
#     and an offline `systemd-analyze security` threshold for both units (where systemd-analyze exists), and
#     each unit's ExecStart, expanded as systemd does from the unit's and /etc/default's variables, really
#     starting the installed daemon (the agent as the unit's user, with setpriv), serving, and stopping on
#     SIGTERM.
#     The package is purged at the end. A machine where bucky is already installed is left alone.
#
# Usage: scripts/check-package.sh [--profile PROFILE]   (passed to scripts/package.sh; default dist,
#        scripts/test.sh uses dev to reuse its build)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> check-package [%ss]: %s\n' "$SECONDS" "$*" >&2; }
note() { printf '    note: %s\n' "$*" >&2; }
fail() { printf 'check-package: FAILED: %s\n' "$*" >&2; exit 1; }

DEB=$(bash scripts/package.sh "$@" | tail -n 1)
[ -f "$DEB" ] || fail "scripts/package.sh did not produce a .deb"
WORK=$(mktemp -d)
PIDS=()
INSTALLED_HERE=
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    if [ -n "$INSTALLED_HERE" ]; then
        dpkg --purge bucky >/dev/null 2>&1 || note "could not purge bucky"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

VERSION=$(dpkg-deb -f "$DEB" Version)
PROGRAMS=(bucky bucky-agent bucky-pickle-relay)

say "control fields of $DEB"
[ "$(dpkg-deb -f "$DEB" Package)" = bucky ] || fail "Package is not bucky"
[ "$(dpkg-deb -f "$DEB" Architecture)" = "$(dpkg --print-architecture)" ] || fail "wrong Architecture"
for field in Version Maintainer Description Installed-Size; do
    [ -n "$(dpkg-deb -f "$DEB" "$field")" ] || fail "no $field"
done
dpkg-deb -f "$DEB" Depends | grep -Eq '(^|, )libc6 \(>= [0-9.]+\)' || fail "Depends has no libc6 minimum"

say "contents"
dpkg-deb -c "$DEB" >"$WORK/listing"
awk '$2 != "root/root" { bad = 1; print "not root-owned: " $0 } END { exit bad }' "$WORK/listing" >&2 ||
    fail "files not owned by root"
awk '{ print $6 }' "$WORK/listing" | sed 's|^\./|/|' >"$WORK/paths"
expect=(
    /usr/bin/bucky /usr/bin/bucky-agent /usr/bin/bucky-pickle-relay
    /lib/systemd/system/bucky-agent.service /lib/systemd/system/bucky-pickle-relay.service
    /etc/default/bucky-agent /etc/default/bucky-pickle-relay
    /usr/share/man/man1/bucky.1.gz /usr/share/man/man1/bucky-rebalance.1.gz
    /usr/share/man/man1/bucky-whisper-create.1.gz
    /usr/share/man/man8/bucky-agent.8.gz /usr/share/man/man8/bucky-pickle-relay.8.gz
    /usr/share/doc/bucky/copyright /usr/share/doc/bucky/README.Debian
)
for program in "${PROGRAMS[@]}"; do
    expect+=("/usr/share/bash-completion/completions/$program" "/usr/share/zsh/vendor-completions/_$program"
        "/usr/share/fish/vendor_completions.d/$program.fish")
done
for path in "${expect[@]}"; do grep -qxF "$path" "$WORK/paths" || fail "$path is not in the package"; done
grep -q '^-rwxr-xr-x .* \./usr/bin/bucky-agent$' "$WORK/listing" || fail "/usr/bin/bucky-agent is not 0755"
printf '/etc/default/bucky-agent\n/etc/default/bucky-pickle-relay\n' >"$WORK/conffiles.want"
dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles >"$WORK/conffiles.got"
cmp -s "$WORK/conffiles.want" "$WORK/conffiles.got" || fail "conffiles: $(tr '\n' ' ' <"$WORK/conffiles.got")"

dpkg-deb -R "$DEB" "$WORK/tree"
for script in postinst prerm postrm; do
    sh -n "$WORK/tree/DEBIAN/$script" || fail "DEBIAN/$script does not parse"
done
# The directives the units promise (a lost line would not move systemd-analyze's score much).
for unit in bucky-agent bucky-pickle-relay; do
    file="$WORK/tree/lib/systemd/system/$unit.service"
    for line in 'Restart=on-failure' 'KillSignal=SIGTERM' 'LimitNOFILE=65536' 'ProtectSystem=strict' \
        'ProtectHome=yes' 'PrivateTmp=yes' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' \
        'ProtectKernelTunables=yes' 'ProtectKernelModules=yes' 'ProtectControlGroups=yes' \
        'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service' \
        "EnvironmentFile=-/etc/default/$unit" "Documentation=man:$unit(8)"; do
        grep -qxF "$line" "$file" || fail "$unit.service lacks $line"
    done
done
agent_unit="$WORK/tree/lib/systemd/system/bucky-agent.service"
grep -qxF 'User=_bucky' "$agent_unit" || fail "bucky-agent.service does not run as _bucky"
grep -Eq '^ReadWritePaths=(.* )?-?/var/lib/graphite/whisper( |$)' "$agent_unit" ||
    fail "bucky-agent.service cannot write /var/lib/graphite/whisper"
# SIGKILL must not come before the agent's own shutdown: TimeoutStopSec above --shutdown-grace's default.
grace=$("$WORK/tree/usr/bin/bucky-agent" --help |
    sed -n '/--shutdown-grace/,/default/s/.*\[default: \([0-9]*\)\].*/\1/p')
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$agent_unit")
{ [ -n "$grace" ] && [ -n "$stop" ] && [ "$stop" -gt $((grace + 1)) ]; } ||
    fail "bucky-agent.service: TimeoutStopSec=$stop is not above --shutdown-grace $grace (+1 s)"

pages=0
for page in "$WORK"/tree/usr/share/man/man*/*; do
    gzip -t "$page" || fail "$page is not gzip"
    pages=$((pages + 1))
    if command -v man >/dev/null 2>&1; then
        warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man cannot render $page"
        [ -z "$warnings" ] || fail "man warns about $(basename "$page"): $warnings"
    fi
done
[ "$pages" -gt 30 ] || fail "only $pages man pages"
command -v man >/dev/null 2>&1 || note "man is not installed: the pages were not rendered"
for program in "${PROGRAMS[@]}"; do
    bash -n "$WORK/tree/usr/share/bash-completion/completions/$program" || fail "bash completion of $program"
done

if [ "$(id -u)" -ne 0 ]; then
    note "not root: the package was not installed (CI runs this as root)"
    exit 0
fi
if dpkg-query -W -f '${Status}' bucky 2>/dev/null | grep -q 'ok installed'; then
    note "bucky is already installed on this machine: left alone, the package was not installed"
    exit 0
fi
say "dpkg -i (twice: the postinst must be idempotent)"
INSTALLED_HERE=1
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -i"; }
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -i (again)"; }
[ "$(getent passwd _bucky | cut -d: -f7)" = /usr/sbin/nologin ] || fail "no _bucky system user with nologin"
[ "$(getent passwd _bucky | cut -d: -f3)" -lt 1000 ] || fail "_bucky is not a system user"

for program in "${PROGRAMS[@]}"; do
    got=$("/usr/bin/$program" --version) || fail "$program --version"
    [ "$got" = "$program $VERSION" ] || fail "$program --version says '$got', the package is $VERSION"
done

# Docker's minimal Debian images tell dpkg not to install man pages at all.
if grep -Erqs '^path-exclude[= ]+/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
    MAN_INSTALLED=
    note "dpkg excludes /usr/share/man here: the installed man pages were not looked up"
else
    MAN_INSTALLED=1
    for page in /usr/share/man/man1/bucky.1.gz /usr/share/man/man8/bucky-agent.8.gz; do
        [ -f "$page" ] || fail "$page was not installed"
    done
    if command -v man >/dev/null 2>&1; then
        [ "$(man -w bucky)" = /usr/share/man/man1/bucky.1.gz ] || fail "man -w bucky: $(man -w bucky 2>&1)"
        { man -w 8 bucky-agent >/dev/null && man -w bucky-rebalance >/dev/null; } || fail "man -w"
    fi
fi
bash -c '. /usr/share/bash-completion/completions/bucky && complete -p bucky' >/dev/null ||
    fail "the bash completion of bucky does not register"

if command -v systemd-analyze >/dev/null 2>&1; then
    say "systemd-analyze verify and security"
    man_check=()
    [ -n "$MAN_INSTALLED" ] || man_check=(--man=no)
    for unit in bucky-agent bucky-pickle-relay; do
        out=$(systemd-analyze verify "${man_check[@]}" "/lib/systemd/system/$unit.service" 2>&1) ||
            fail "systemd-analyze verify $unit.service: $out"
        [ -z "$out" ] || fail "systemd-analyze verify $unit.service warns: $out"
        # Exposure on systemd's 0-10 scale (threshold in tenths): a lost hardening line fails here.
        if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
            systemd-analyze security --offline=yes --threshold=20 "/lib/systemd/system/$unit.service" \
                >"$WORK/security" 2>&1 || { tail -n 1 "$WORK/security" >&2; fail "$unit.service is exposed"; }
        fi
    done
else
    note "systemd-analyze is not installed: the units were not verified"
fi

# The units' command lines, run as systemd would run them: Environment= from the unit, then the installed
# /etc/default file over it, then the test's own values over both; `$VAR` split at whitespace into words,
# `${VAR}` one word. Prints the argv, one per line, NUL-free.
exec_start() { # unit, then NAME=VALUE overrides
    python3 - "$@" <<'EOF'
import re, shlex, sys
unit, overrides = sys.argv[1], sys.argv[2:]
env, exec_start, env_files = {}, None, []
for line in open(f"/lib/systemd/system/{unit}.service"):
    line = line.strip()
    if line.startswith("Environment="):
        for item in shlex.split(line[len("Environment="):]):
            name, _, value = item.partition("=")
            env[name] = value
    elif line.startswith("EnvironmentFile="):
        env_files.append(line[len("EnvironmentFile="):])
    elif line.startswith("ExecStart="):
        exec_start = line[len("ExecStart="):]
for path in env_files:
    optional = path.startswith("-")
    try:
        text = open(path.lstrip("-")).read()
    except FileNotFoundError:
        if optional:
            continue
        raise
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = " ".join(shlex.split(value))
for item in overrides:
    name, _, value = item.partition("=")
    env[name] = value
argv = []
for word in shlex.split(exec_start):
    whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
    if whole:
        argv.extend(env.get(whole.group(1), "").split())
    else:
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
print("\n".join(argv))
EOF
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # seconds, command...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}
stops_on_sigterm() { # pid, name, log
    kill -TERM "$1"
    local status=0
    # Gone, or a zombie waiting for our `wait` (kill -0 would still find it).
    wait_for 20 bash -c "[ ! -e /proc/$1 ] || grep -q '^[0-9]* (.*) Z' /proc/$1/stat" ||
        fail "$2 did not stop within 20 s of SIGTERM"
    wait "$1" || status=$?
    [ "$status" = 0 ] || { cat "$3" >&2; fail "$2 exited with $status after SIGTERM"; }
}

say "bucky-agent.service's command line starts the agent"
PORT=$(free_port)
mkdir -p "$WORK/whisper"
chown _bucky:_bucky "$WORK/whisper"
chmod 755 "$WORK"
mapfile -t argv < <(exec_start bucky-agent "BUCKY_AGENT_PREFIX=$WORK/whisper" "BUCKY_AGENT_BIND=127.0.0.1:$PORT" \
    "BUCKY_AGENT_RING=--node 127.0.0.1 127.0.0.1:2003")
[ "${argv[0]}" = /usr/bin/bucky-agent ] || fail "bucky-agent.service runs ${argv[0]}"
printf '    %s\n' "${argv[*]}" >&2
setpriv --reuid=_bucky --regid=_bucky --init-groups -- "${argv[@]}" 2>"$WORK/agent.log" &
PIDS+=($!)
hashring() {
    python3 -c "import urllib.request as u; print(u.urlopen('$1', timeout=2).read().decode())"
}
wait_for 20 hashring "http://127.0.0.1:$PORT/hashring" ||
    { cat "$WORK/agent.log" >&2; fail "the agent did not answer /hashring"; }
ring=$(hashring "http://127.0.0.1:$PORT/hashring")
grep -q '"Server":"127.0.0.1"' <<<"$ring" || fail "the agent's ring is not the one given: $ring"
stops_on_sigterm "${PIDS[-1]}" bucky-agent "$WORK/agent.log"
# Without a ring (the shipped default), the agent refuses to start with a usage error (no restart loop).
mapfile -t argv < <(exec_start bucky-agent "BUCKY_AGENT_PREFIX=$WORK/whisper")
status=0
"${argv[@]}" >/dev/null 2>&1 || status=$?
[ "$status" = 2 ] || fail "the agent without a ring exited with $status, not 2 (RestartPreventExitStatus=2)"

say "bucky-pickle-relay.service's command line starts the relay, which forwards a pickle"
# The destination: a line receiver that keeps what it reads (the relay waits for one at shutdown).
SINK_PORT=$(free_port)
python3 - "$SINK_PORT" "$WORK/sink.txt" <<'EOF' &
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
with open(sys.argv[2], "wb") as out:
    while True:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                out.write(data)
                out.flush()
EOF
PIDS+=($!)
PORT=$(free_port)
mapfile -t argv < <(exec_start bucky-pickle-relay "BUCKY_PICKLE_RELAY_BIND=127.0.0.1:$PORT" \
    "BUCKY_PICKLE_RELAY_DESTINATION=127.0.0.1:$SINK_PORT")
[ "${argv[0]}" = /usr/bin/bucky-pickle-relay ] || fail "bucky-pickle-relay.service runs ${argv[0]}"
printf '    %s\n' "${argv[*]}" >&2
setpriv --reuid=nobody --regid=nogroup --clear-groups -- "${argv[@]}" 2>"$WORK/relay.log" &
PIDS+=($!)
send_pickle() {
    python3 -c "
import pickle, socket, struct
body = pickle.dumps([('check.package.relay', (1700000000, 42.0))], protocol=2)
with socket.create_connection(('127.0.0.1', $PORT), timeout=2) as s:
    s.sendall(struct.pack('!L', len(body)) + body)"
}
wait_for 20 send_pickle || { cat "$WORK/relay.log" >&2; fail "the relay does not listen"; }
wait_for 20 grep -q '^check\.package\.relay 42' "$WORK/sink.txt" ||
    { cat "$WORK/relay.log" >&2; fail "the relay did not forward the pickle to its destination"; }
stops_on_sigterm "${PIDS[-1]}" bucky-pickle-relay "$WORK/relay.log"

say "ok: $DEB"
