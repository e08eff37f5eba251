#!/usr/bin/env bash
# The embedded default database: FerretDB on loopback, on its SQLite backend, or with
# FERRETDB_HANDLER=postgresql on a private PostgreSQL cluster under var/, optionally with a
# synchronous standby (POSTGRES_STANDBY=on) that `promote` makes the primary (docs/postgresql.md).
set -euo pipefail
usage() { echo "usage: $0 build|path|start|stop|status|promote|sync on|off   (env: FERRETDB_HANDLER, MONGO_PORT, POSTGRES_PORT, POSTGRES_STANDBY, POSTGRES_STANDBY_PORT, POSTGRES_BIN, FERRETDB_METRICS_PORT, CHATSYS_VAR, CHATSYS_CACHE, FERRETDB_BIN)"; }
source "$(dirname "$0")/lib/common.sh"

data_dir=$CHATSYS_VAR/ferretdb
pid_file=$CHATSYS_VAR/run/ferretdb.pid
log_file=$CHATSYS_VAR/log/ferretdb.log
# The PostgreSQL backend: up to two clusters under var/postgresql/, `data` on POSTGRES_PORT
# and, with a standby, `data2` on POSTGRES_STANDBY_PORT; the file `primary` names the one
# FerretDB uses (`data` until a promotion). The passwords of FerretDB's role and of the
# replication role are kept beside FerretDB's own files, for this user alone.
postgres_dir=$CHATSYS_VAR/postgresql
primary_file=$postgres_dir/primary
postgres_password_file=$data_dir/postgresql.password
replication_password_file=$data_dir/postgresql-replication.password
# The same password for the standby's WAL receiver, which runs as PostgreSQL's user.
replication_passfile=$postgres_dir/replication.pgpass
# The standby's name on the primary, which synchronous_standby_names waits for.
standby_name=chatsys_standby

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

cluster_data() { echo "$postgres_dir/$1"; }
cluster_port() { if [[ $1 == data ]]; then echo "$POSTGRES_PORT"; else echo "$POSTGRES_STANDBY_PORT"; fi; }
cluster_log() { if [[ $1 == data ]]; then echo "$postgres_dir/postgresql.log"; else echo "$postgres_dir/postgresql-$1.log"; fi; }
primary_cluster() { if [[ -s $primary_file ]]; then cat "$primary_file"; else echo data; fi; }
standby_cluster() { if [[ $(primary_cluster) == data ]]; then echo data2; else echo data; fi; }
is_standby() { [[ -f $(cluster_data "$1")/standby.signal ]]; }
has_standby() { is_standby "$(standby_cluster)"; }

# postgres_running [NAME]: whether that cluster (the primary) runs.
postgres_running() {
    local data
    data=$(cluster_data "${1:-$(primary_cluster)}")
    [[ -f $data/PG_VERSION ]] && as_postgres "$POSTGRES_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1
}

# run_cluster NAME: start that cluster on its port, unless it runs.
run_cluster() {
    local name=$1 port role=primary
    port=$(cluster_port "$name")
    postgres_running "$name" && return 0
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is taken by another process; set POSTGRES_PORT or POSTGRES_STANDBY_PORT"
    fi
    as_postgres "$POSTGRES_BIN/pg_ctl" start -D "$(cluster_data "$name")" -l "$(cluster_log "$name")" -o "-p $port" -w -t 60 >/dev/null ||
        die "PostgreSQL ($name) did not start; see $(cluster_log "$name")"
    ! is_standby "$name" || role=standby
    log "PostgreSQL ($role) running on 127.0.0.1:$port (data in $(cluster_data "$name"))"
}

# stop_cluster NAME: pg_ctl stop -m fast, when it runs.
stop_cluster() {
    if postgres_running "$1"; then
        as_postgres "$POSTGRES_BIN/pg_ctl" stop -D "$(cluster_data "$1")" -m fast -w -t 60 >/dev/null
        log "stopped PostgreSQL ($1)"
    fi
}

# primary_sql SQL: run SQL on the primary as FerretDB's role and print the rows, tab-separated.
# The SQL goes on standard input and the password in psql's environment: neither shows on a
# command line, which every user can read.
primary_sql() {
    PGPASSWORD=$(cat "$postgres_password_file") "$POSTGRES_BIN/psql" -h 127.0.0.1 -p "$(cluster_port "$(primary_cluster)")" \
        -U ferretdb -d postgres -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 <<< "$1"
}

# start_postgres: initdb on first use (a superuser `ferretdb` with a random password, password
# authentication, TCP on loopback only, no Unix socket), then the primary on its port, and
# the standby when there is one or POSTGRES_STANDBY=on asks for one.
start_postgres() {
    [[ -x $POSTGRES_BIN/pg_ctl ]] || die "PostgreSQL's server programs are not installed (POSTGRES_BIN=$POSTGRES_BIN; Debian: apt-get install postgresql)"
    local primary postgres_data
    primary=$(primary_cluster)
    postgres_data=$(cluster_data "$primary")
    mkdir -p "$postgres_dir"
    chmod 700 "$postgres_dir"
    ((EUID != 0)) || chown postgres:postgres "$postgres_dir"
    # Root runs PostgreSQL as postgres, which must pass through every folder above its own:
    # under one closed to other users (as /root is, or pytest's temporary folders), initdb
    # would fail on its password file with no word of why.
    as_postgres test -w "$postgres_dir" ||
        die "PostgreSQL's user postgres cannot reach $postgres_dir: a folder above it is closed to other users (chmod o+x lets it pass), or set CHATSYS_VAR to a folder it can reach"
    if [[ ! -f $postgres_data/PG_VERSION ]]; then
        [[ $primary == data ]] || die "the primary $primary_file names, $postgres_data, is missing"
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
    ! is_standby "$primary" || die "$postgres_data, which $primary_file names the primary, is a standby"
    run_cluster "$primary"
    if has_standby || [[ $POSTGRES_STANDBY == on ]]; then
        start_standby
    fi
}

# start_standby: on first use (or when the standby's folder holds a former primary), a role
# `replicator` with a random password, replication allowed to it alone and from 127.0.0.1
# alone, and a base backup of the primary with a replication slot of its own; then the standby
# on its port and, once it streams, every commit on the primary waits for it.
start_standby() {
    local standby standby_data primary_port
    standby=$(standby_cluster)
    standby_data=$(cluster_data "$standby")
    primary_port=$(cluster_port "$(primary_cluster)")
    if ! is_standby "$standby"; then
        [[ -s $replication_password_file ]] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$replication_password_file"
        local password hba
        password=$(cat "$replication_password_file")
        printf '127.0.0.1:*:*:replicator:%s\n' "$password" > "$replication_passfile"
        chmod 600 "$replication_passfile"
        ((EUID != 0)) || chown postgres:postgres "$replication_passfile"
        # initdb's pg_hba.conf lets every role replicate, over the socket and from ::1 too.
        hba=$(cluster_data "$(primary_cluster)")/pg_hba.conf
        sed -i -E '/^(local|host)[[:space:]]+replication[[:space:]]/d' "$hba"
        printf 'host    replication     replicator      127.0.0.1/32            scram-sha-256\n' >> "$hba"
        primary_sql "
            SELECT pg_reload_conf();
            SELECT CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') THEN 'ALTER' ELSE 'CREATE' END AS verb \gset
            :verb ROLE replicator WITH REPLICATION LOGIN PASSWORD '$password';
            SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$standby_name' AND NOT active;" \
            >/dev/null || die "could not make the replication role on the primary"
        if [[ -e $standby_data ]]; then
            # A former primary, after a promotion: kept aside, never started again as it is.
            local aside
            aside=$standby_data.before-$(date -u +%Y%m%dT%H%M%SZ)
            mv "$standby_data" "$aside"
            log "moved the former primary $standby_data to $aside (remove it when no longer needed)"
        fi
        log "copying the primary into $standby_data (pg_basebackup)"
        PGPASSFILE=$replication_passfile as_postgres "$POSTGRES_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" \
            -U replicator -w -D "$standby_data" -X stream -c fast -C -S "$standby_name" \
            >>"$log_file" 2>&1 || die "pg_basebackup failed; see $log_file"
        # The standby follows the primary through its slot, which keeps the WAL the standby
        # has not received yet. The copy may hold the primary's synchronous_standby_names:
        # promoted, with no standby of its own, it must not wait for one.
        printf '%s\n' "primary_conninfo = 'host=127.0.0.1 port=$primary_port user=replicator application_name=$standby_name passfile=$replication_passfile'" \
            "primary_slot_name = '$standby_name'" "synchronous_standby_names = ''" >> "$standby_data/postgresql.auto.conf"
        as_postgres touch "$standby_data/standby.signal"
    fi
    run_cluster "$standby"
    local deadline=$((SECONDS + 60))
    until [[ $(primary_sql "SELECT state FROM pg_stat_replication WHERE application_name = '$standby_name'") == streaming ]]; do
        ((SECONDS < deadline)) || die "the standby does not stream from the primary; see $(cluster_log "$standby")"
        sleep 0.2
    done
    set_synchronous on
}

# set_synchronous on|off: whether a commit on the primary returns only once the standby has
# flushed it to disk (synchronous_commit = on; remote_apply would also wait for the standby to
# replay it, which only reads from the standby would need; docs/postgresql.md).
set_synchronous() {
    if [[ $1 == on ]]; then
        primary_sql "ALTER SYSTEM SET synchronous_standby_names = '$standby_name';
            ALTER SYSTEM SET synchronous_commit = on; SELECT pg_reload_conf();" >/dev/null
        log "commits on the primary wait for the standby"
    else
        primary_sql "ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf();" >/dev/null
        log "commits on the primary no longer wait for a standby"
    fi
}

# promote: the standby becomes the primary, and FerretDB, when it runs, is restarted on it.
# The former primary, if it still runs here, is stopped first: nothing may write to it again.
promote() {
    local standby
    standby=$(standby_cluster)
    has_standby || die "there is no standby to promote ($(cluster_data "$standby") is not one)"
    postgres_running "$standby" || die "the standby ($(cluster_data "$standby")) is not running"
    stop_cluster "$(primary_cluster)"
    as_postgres "$POSTGRES_BIN/pg_ctl" promote -D "$(cluster_data "$standby")" -w -t 60 >/dev/null ||
        die "the standby was not promoted; see $(cluster_log "$standby")"
    echo "$standby" > "$primary_file"
    set_synchronous off
    log "promoted: the primary is 127.0.0.1:$(cluster_port "$standby") ($(cluster_data "$standby")), without a standby until POSTGRES_STANDBY=on $0 start makes one"
    if pid_alive "$pid_file"; then
        # FerretDB keeps no state of its own: a new process on the new primary is all it takes.
        # The old one can only fail what it still serves, so it gets 1 s to stop, not 10.
        # The new one starts without a new standby yet, so that the service is back at once.
        stop_pidfile "$pid_file" FerretDB 1
        FERRETDB_HANDLER=postgresql POSTGRES_STANDBY=off start
    fi
}

start() {
    mkdir -p "$data_dir/data" "$data_dir/state" "$(dirname "$pid_file")" "$(dirname "$log_file")"
    # The database holds password hashes, tokens' digests and every message: its files are
    # for this user alone (the folder, and the files FerretDB creates, under umask 077).
    chmod 700 "$data_dir"
    umask 077
    # Also when FerretDB runs: a stopped standby is started, POSTGRES_STANDBY=on makes one.
    [[ $FERRETDB_HANDLER != postgresql ]] || start_postgres
    if pid_alive "$pid_file"; then
        log "FerretDB already running (pid $(cat "$pid_file")) on 127.0.0.1:$MONGO_PORT"
        return 0
    fi
    build
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
            handler_flags=(--handler=postgresql)
            # In FerretDB's environment, not on its command line, where every user could read the password.
            FERRETDB_POSTGRESQL_URL="postgres://ferretdb:$(cat "$postgres_password_file")@127.0.0.1:$(cluster_port "$(primary_cluster)")/postgres"
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
    # Whatever FERRETDB_HANDLER says now: a cluster that runs was started by this script. The
    # primary first, so that nothing it commits waits for a standby that is gone.
    stop_cluster "$(primary_cluster)"
    stop_cluster "$(standby_cluster)"
}

status() {
    local code=0 name data role
    if pid_alive "$pid_file"; then echo "ferretdb running pid $(cat "$pid_file") port $MONGO_PORT"; else echo "ferretdb stopped"; code=3; fi
    for name in "$(primary_cluster)" "$(standby_cluster)"; do
        data=$(cluster_data "$name")
        [[ -f $data/PG_VERSION ]] || continue
        role=postgresql
        if is_standby "$name"; then role="postgresql standby"; elif [[ $name != "$(primary_cluster)" ]]; then role="postgresql former primary"; fi
        if postgres_running "$name"; then
            echo "$role running pid $(head -n 1 "$data/postmaster.pid") port $(cluster_port "$name")"
        else
            echo "$role stopped"
        fi
    done
    if has_standby && postgres_running; then
        echo "replication: $(primary_sql "SELECT coalesce((SELECT state || ' ' || sync_state FROM pg_stat_replication
            WHERE application_name = '$standby_name'), 'no standby connected')
            || format(', synchronous_standby_names = %L', current_setting('synchronous_standby_names'));")"
    fi
    return $code
}

case ${1:-} in
    build) build ;;
    path) build; echo "$FERRETDB_BIN" ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    promote) promote ;;
    sync)
        [[ ${2:-} == on || ${2:-} == off ]] || { usage >&2; exit 2; }
        { has_standby && postgres_running; } || die "there is no running primary with a standby"
        set_synchronous "$2" ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
