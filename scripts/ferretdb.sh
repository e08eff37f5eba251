#!/usr/bin/env bash
# The embedded default database: FerretDB on loopback, on its SQLite backend, or with
# FERRETDB_HANDLER=postgresql on a private PostgreSQL cluster under var/ (docs/postgresql.md).
set -euo pipefail
usage() { echo "usage: $0 build|path|start|stop|status   (env: FERRETDB_HANDLER, MONGO_PORT, POSTGRES_PORT, POSTGRES_BIN, FERRETDB_METRICS_PORT, CHATSYS_VAR, CHATSYS_CACHE, FERRETDB_BIN)"; }
source "$(dirname "$0")/lib/common.sh"

data_dir=$CHATSYS_VAR/ferretdb
pid_file=$CHATSYS_VAR/run/ferretdb.pid
log_file=$CHATSYS_VAR/log/ferretdb.log
# The PostgreSQL backend: the cluster, its log, and the password of FerretDB's role (kept
# beside FerretDB's own files, for this user alone).
postgres_dir=$CHATSYS_VAR/postgresql
postgres_data=$postgres_dir/data
postgres_log=$postgres_dir/postgresql.log
postgres_password_file=$data_dir/postgresql.password

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

# as_postgres COMMAND...: PostgreSQL refuses to run as root, so root runs its programs as
# Debian's system user postgres, which then owns the cluster's folder.
as_postgres() {
    if ((EUID == 0)); then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

postgres_running() {
    [[ -f $postgres_data/PG_VERSION ]] && as_postgres "$POSTGRES_BIN/pg_ctl" status -D "$postgres_data" >/dev/null 2>&1
}

# start_postgres: initdb on first use (a superuser `ferretdb` with a random password, password
# authentication, TCP on loopback only, no Unix socket), then the server on POSTGRES_PORT.
start_postgres() {
    [[ -x $POSTGRES_BIN/pg_ctl ]] || die "PostgreSQL's server programs are not installed (POSTGRES_BIN=$POSTGRES_BIN; Debian: apt-get install postgresql)"
    if postgres_running; then
        return 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$POSTGRES_PORT") 2>/dev/null; then
        die "port $POSTGRES_PORT is taken by another process; set POSTGRES_PORT"
    fi
    mkdir -p "$postgres_dir"
    chmod 700 "$postgres_dir"
    ((EUID != 0)) || chown postgres:postgres "$postgres_dir"
    if [[ ! -f $postgres_data/PG_VERSION ]]; then
        log "creating the PostgreSQL cluster in $postgres_data (once)"
        [[ -s $postgres_password_file ]] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$postgres_password_file"
        local password_file=$postgres_dir/initdb.password
        cat "$postgres_password_file" > "$password_file"
        ((EUID != 0)) || chown postgres:postgres "$password_file"
        as_postgres "$POSTGRES_BIN/initdb" --pgdata="$postgres_data" --username=ferretdb \
            --pwfile="$password_file" --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
            --encoding=UTF8 --no-instructions >>"$log_file" 2>&1 || { rm -f "$password_file"; die "initdb failed; see $log_file"; }
        rm -f "$password_file"
        printf '%s\n' "listen_addresses = '127.0.0.1'" "unix_socket_directories = ''" >> "$postgres_data/postgresql.conf"
    fi
    as_postgres "$POSTGRES_BIN/pg_ctl" start -D "$postgres_data" -l "$postgres_log" -o "-p $POSTGRES_PORT" -w -t 60 >/dev/null ||
        die "PostgreSQL did not start; see $postgres_log"
    log "PostgreSQL running on 127.0.0.1:$POSTGRES_PORT (data in $postgres_data)"
}

stop_postgres() {
    if postgres_running; then
        as_postgres "$POSTGRES_BIN/pg_ctl" stop -D "$postgres_data" -m fast -w -t 60 >/dev/null
        log "stopped PostgreSQL"
    fi
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
    local handler_flags
    case $FERRETDB_HANDLER in
        sqlite) handler_flags=(--handler=sqlite --sqlite-url="file:$data_dir/data/") ;;
        postgresql)
            start_postgres
            handler_flags=(--handler=postgresql)
            # In FerretDB's environment, not on its command line, where every user could read the password.
            FERRETDB_POSTGRESQL_URL="postgres://ferretdb:$(cat "$postgres_password_file")@127.0.0.1:$POSTGRES_PORT/postgres"
            export FERRETDB_POSTGRESQL_URL
            ;;
        *) die "FERRETDB_HANDLER is sqlite or postgresql, not $FERRETDB_HANDLER" ;;
    esac
    GOGC=$FERRETDB_GOGC setsid "$FERRETDB_BIN" "${handler_flags[@]}" \
        --state-dir="$data_dir/state" --listen-addr="127.0.0.1:$MONGO_PORT" \
        --debug-addr="$debug_addr" --telemetry=disable --log-level=warn \
        >>"$log_file" 2>&1 </dev/null &
    echo $! > "$pid_file"
    wait_for_port 127.0.0.1 "$MONGO_PORT" 30 || die "FerretDB did not answer on $MONGO_PORT; see $log_file"
    log "FerretDB ($FERRETDB_HANDLER) running on mongodb://127.0.0.1:$MONGO_PORT (data in $data_dir)"
}

stop() {
    stop_pidfile "$pid_file" FerretDB
    # Whatever FERRETDB_HANDLER says now: a cluster that runs was started by this script.
    [[ ! -d $postgres_data ]] || stop_postgres
}

status() {
    local code=0
    if pid_alive "$pid_file"; then echo "ferretdb running pid $(cat "$pid_file") port $MONGO_PORT"; else echo "ferretdb stopped"; code=3; fi
    if [[ -d $postgres_data ]]; then
        if postgres_running; then echo "postgresql running pid $(head -n 1 "$postgres_data/postmaster.pid") port $POSTGRES_PORT"; else echo "postgresql stopped"; fi
    fi
    return $code
}

case ${1:-} in
    build) build ;;
    path) build; echo "$FERRETDB_BIN" ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
