# shellcheck shell=bash
# Shared by the commands in scripts/: paths, defaults and small helpers. Source it, do not run it.
# Every value can be overridden from the environment.

CHATSYS_ROOT=${CHATSYS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CHATSYS_VAR=${CHATSYS_VAR:-$CHATSYS_ROOT/var}
CHATSYS_CACHE=${CHATSYS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatsys}
VENV=${VENV:-$CHATSYS_ROOT/.venv}
PYTHON=${PYTHON:-python3}
FERRETDB_VERSION=${FERRETDB_VERSION:-v1.24.2}
# Go's garbage collector target for FerretDB (GOGC): collecting at 4x the live heap rather
# than 2x takes about a tenth of its CPU per request off, for some 15 MB more memory
# (docs/architecture.md). The systemd unit, the image, the manifests and the test harness
# give the same value (tests/fast/test_ferretdb_flags.py).
FERRETDB_GOGC=${FERRETDB_GOGC:-400}
FERRETDB_PATCH=${FERRETDB_PATCH:-$CHATSYS_ROOT/patches/ferretdb.patch}
# The binary's name carries the patch's hash: a changed patch is a new build. (A release
# holds no patches/: scripts/install-systemd.sh copies the binary in.)
FERRETDB_BIN=${FERRETDB_BIN:-$CHATSYS_CACHE/bin/ferretdb-$FERRETDB_VERSION-$([[ ! -f $FERRETDB_PATCH ]] || sha256sum "$FERRETDB_PATCH" | cut -c1-12)}
MONGO_PORT=${MONGO_PORT:-27017}
# FerretDB's backend: sqlite (the default, one file per database under var/) or postgresql
# (a private PostgreSQL cluster under var/, on loopback port POSTGRES_PORT; docs/postgresql.md).
FERRETDB_HANDLER=${FERRETDB_HANDLER:-sqlite}
POSTGRES_PORT=${POSTGRES_PORT:-5433}
# POSTGRES_STANDBY=on: a second cluster beside it, a streaming copy made with pg_basebackup
# on loopback port POSTGRES_STANDBY_PORT, to which every commit is synchronous; once made,
# start, stop and status handle it whatever this says (`scripts/ferretdb.sh promote` makes it
# the primary; docs/postgresql.md).
POSTGRES_STANDBY=${POSTGRES_STANDBY:-off}
POSTGRES_STANDBY_PORT=${POSTGRES_STANDBY_PORT:-5434}
# Debian's PostgreSQL server programs (initdb, pg_ctl, postgres): the newest major installed.
# (None, on a machine without it: `|| true`, or a caller under `set -e -o pipefail`, such as
# scripts/install-systemd.sh on a fresh host, would stop here without a word.)
POSTGRES_BIN=${POSTGRES_BIN:-$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1 || true)}
# Public ports, all HAProxy's: login, profile and the chat entry point.
LOGIN_PORT=${LOGIN_PORT:-4100}
PROFILE_PORT=${PROFILE_PORT:-4200}
HAPROXY_PORT=${HAPROXY_PORT:-5000}
HAPROXY_STATS_PORT=${HAPROXY_STATS_PORT:-8404}
# Where HAProxy hands its rate tables to its successor on a reload (loopback): beside the
# stats port, so a second stack that moves that one moves this one too.
HAPROXY_PEER_PORT=${HAPROXY_PEER_PORT:-$((HAPROXY_STATS_PORT + 1))}
# The services behind HAProxy, on loopback only.
LOGIN_SERVICE_PORT=${LOGIN_SERVICE_PORT:-4101}
PROFILE_SERVICE_PORT=${PROFILE_SERVICE_PORT:-4201}
# The chat servers, one per port: how many there are is this setting (scripts/start.sh
# --chat N takes N ports from the first one up), and HAProxy balances over exactly those
# (CHAT_SERVER_1..N). conf/haproxy/haproxy.cfg has a server line for up to MAX_CHAT_SERVERS.
CHAT_PORTS=${CHAT_PORTS:-"4000 4001 4002"}
# shellcheck disable=SC2034  # read by start.sh
MAX_CHAT_SERVERS=10
# Observability, on loopback only (docs/observability.md): each service's metrics on its
# port + METRICS_PORT_OFFSET (chat 9000-9002, login 9101, profile 9201), FerretDB's debug
# listener, the node exporter and Prometheus (PROMETHEUS=off: neither of the last two).
METRICS_PORT_OFFSET=${METRICS_PORT_OFFSET:-5000}
FERRETDB_METRICS_PORT=${FERRETDB_METRICS_PORT:-8088}
NODE_EXPORTER_PORT=${NODE_EXPORTER_PORT:-9100}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
PROMETHEUS=${PROMETHEUS:-on}
# The address of the public ports: BIND_HOST=0.0.0.0 opens them to other machines.
BIND_HOST=${BIND_HOST:-127.0.0.1}
PUBLIC_HOST=${PUBLIC_HOST:-127.0.0.1}

# The battle profile (docs/load-testing.md): CHATSYS_PROFILE=battle. HAProxy reads it itself
# (conf/haproxy/haproxy.cfg: per-address and per-token rates 10x and more); here the login
# service's registrations per address, one per virtual user, go from 600 to 6000 per 10 min.
if [[ ${CHATSYS_PROFILE:-} == battle ]]; then
    export REGISTRATIONS_PER_ADDRESS=${REGISTRATIONS_PER_ADDRESS:-6000}
fi

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_alive FILE: true when FILE names a running process.
pid_alive() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# wait_for_port HOST PORT SECONDS: until something accepts TCP connections there.
wait_for_port() {
    local host=$1 port=$2 deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# wait_for_http URL SECONDS: until URL answers 200.
wait_for_http() {
    local url=$1 deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# stop_pidfile FILE NAME [SECONDS]: TERM, wait up to SECONDS (10), then KILL; removes FILE.
stop_pidfile() {
    local file=$1 name=$2 seconds=${3:-10} pid
    if pid_alive "$file"; then
        pid=$(cat "$file")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in $seconds s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        log "stopped $name"
    fi
    rm -f "$file"
}

HAPROXY_CFG=${HAPROXY_CFG:-$CHATSYS_ROOT/conf/haproxy/haproxy.cfg}
HAPROXY_RUNTIME_SOCKET=${HAPROXY_RUNTIME_SOCKET:-$CHATSYS_VAR/run/haproxy.sock}

# haproxy_cmd "COMMAND": send one command to HAProxy's runtime API, print the answer.
haproxy_cmd() {
    PYTHONPATH=$CHATSYS_ROOT${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" -m scripts.lib.haproxy_runtime "$HAPROXY_RUNTIME_SOCKET" "$1"
}

# haproxy_rows PROXY FIELD...: with HAProxy's statistics CSV (`haproxy_cmd "show stat"`, or the
# stats page's ;csv) on stdin, print FIELD... of each row of PROXY, tab-separated, by name.
haproxy_rows() {
    PYTHONPATH=$CHATSYS_ROOT${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" -m scripts.lib.haproxy_stats "$@"
}

# download_wheels DEST: the wheels of requirements.lock for Debian 12's CPython 3.11, for
# installs without network (the local container images, the boot test's VM), checked
# against the lock's hashes, which the installs there check again. Wheels for glibc 2.28
# and up run on bookworm (glibc 2.36); some packages (gevent) ship no older ones.
download_wheels() {
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --only-binary=:all: --require-hashes \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform "manylinux2014_$(uname -m)" --platform "manylinux_2_28_$(uname -m)" \
        -r "$CHATSYS_ROOT/requirements.lock" -d "$1"
}
