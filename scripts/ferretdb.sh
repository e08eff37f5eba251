#!/usr/bin/env bash
# The embedded default database: FerretDB on its SQLite backend, on loopback.
set -euo pipefail
usage() { echo "usage: $0 build|path|start|stop|status   (env: MONGO_PORT, FERRETDB_METRICS_PORT, CHATSYS_VAR, CHATSYS_CACHE, FERRETDB_BIN)"; }
source "$(dirname "$0")/lib/common.sh"

data_dir=$CHATSYS_VAR/ferretdb
pid_file=$CHATSYS_VAR/run/ferretdb.pid
log_file=$CHATSYS_VAR/log/ferretdb.log

build() {
    [[ -x $FERRETDB_BIN ]] && return 0
    command -v go >/dev/null || die "Go is needed to build FerretDB"
    command -v patch >/dev/null || die "patch is needed to build FerretDB"
    log "building FerretDB $FERRETDB_VERSION (once; cached at $FERRETDB_BIN)"
    local src module_dir
    src=$(mktemp -d)
    # `go install ...@$FERRETDB_VERSION` alone gives a binary that panics at start: the
    # module lacks build/version/version.txt, which FerretDB's own build generates. So we
    # build the same module source with that one file written.
    module_dir=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
        "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$module_dir/." "$src"
    chmod -R u+w "$src"
    echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
    # Our changes to its source; the patch says what they are and why.
    patch -s -p1 -d "$src" < "$FERRETDB_PATCH"
    mkdir -p "$(dirname "$FERRETDB_BIN")"
    (cd "$src" && go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb)
    mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
    rm -rf "$src"
}

start() {
    if pid_alive "$pid_file"; then
        log "FerretDB already running (pid $(cat "$pid_file")) on 127.0.0.1:$MONGO_PORT"
        return 0
    fi
    build
    mkdir -p "$data_dir/data" "$data_dir/state" "$(dirname "$pid_file")" "$(dirname "$log_file")"
    # The database holds password hashes, tokens' digests and every message: its files are
    # for this user alone (the folder, and the files FerretDB creates, under umask 077).
    chmod 700 "$data_dir"
    umask 077
    if (exec 3<>"/dev/tcp/127.0.0.1/$MONGO_PORT") 2>/dev/null; then
        die "port $MONGO_PORT is taken by another process; set MONGO_PORT or MONGO_URI"
    fi
    # Loopback only, telemetry off; its debug HTTP listener (Prometheus metrics at
    # /debug/metrics) on loopback too, FERRETDB_METRICS_PORT (0: none).
    # The systemd unit, the harness and the images give the same settings
    # (tests/fast/test_ferretdb_flags.py holds them together).
    local debug_addr=-
    if ((FERRETDB_METRICS_PORT != 0)); then
        if (exec 3<>"/dev/tcp/127.0.0.1/$FERRETDB_METRICS_PORT") 2>/dev/null; then
            log "warning: port $FERRETDB_METRICS_PORT is taken; FerretDB starts without its metrics (set FERRETDB_METRICS_PORT)"
        else
            debug_addr=127.0.0.1:$FERRETDB_METRICS_PORT
        fi
    fi
    setsid "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$data_dir/data/" \
        --state-dir="$data_dir/state" --listen-addr="127.0.0.1:$MONGO_PORT" \
        --debug-addr="$debug_addr" --telemetry=disable --log-level=warn \
        >>"$log_file" 2>&1 </dev/null &
    echo $! > "$pid_file"
    wait_for_port 127.0.0.1 "$MONGO_PORT" 30 || die "FerretDB did not answer on $MONGO_PORT; see $log_file"
    log "FerretDB running on mongodb://127.0.0.1:$MONGO_PORT (data in $data_dir)"
}

case ${1:-} in
    build) build ;;
    path) build; echo "$FERRETDB_BIN" ;;
    start) start ;;
    stop) stop_pidfile "$pid_file" FerretDB ;;
    status) if pid_alive "$pid_file"; then echo "ferretdb running pid $(cat "$pid_file") port $MONGO_PORT"; else echo "ferretdb stopped"; exit 3; fi ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
