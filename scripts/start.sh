#!/usr/bin/env bash
# Start the whole system: database (unless MONGO_URI is set), its migration
# (python -m service_kit.migrate), login, profile, chat servers and HAProxy. Running it
# again starts only what is not running yet. The services listen on loopback; HAProxy
# alone faces clients, on BIND_HOST (chat 5000, login 4100, profile 4200).
# Then Prometheus (127.0.0.1:9090) and the node exporter, unless PROMETHEUS=off: they
# scrape HAProxy, every service's metrics port, FerretDB and the host (docs/observability.md).
set -euo pipefail
usage() { echo "usage: $0 [--chat N]   (a chat server on each port of CHAT_PORTS, 4000 4001 4002; with --chat N, on N ports from its first up; env: MONGO_URI, *_PORT, BIND_HOST, HAPROXY_*, METRICS_PORT_OFFSET, PROMETHEUS, CHATSYS_VAR)"; }
source "$(dirname "$0")/lib/common.sh"

read -r -a chat_ports <<< "$CHAT_PORTS"
chat_count=${#chat_ports[@]}
while (($#)); do
    case $1 in
        --chat) chat_count=${2:?--chat needs a number}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
done
if ! [[ $chat_count =~ ^[0-9]+$ ]] || ((chat_count < 1 || chat_count > MAX_CHAT_SERVERS)); then
    die "the number of chat servers must be 1 to $MAX_CHAT_SERVERS (conf/haproxy/haproxy.cfg has that many server lines), got '$chat_count'"
fi
((${#chat_ports[@]})) || die "CHAT_PORTS names no port"
# The first N ports of CHAT_PORTS, and past its last one the ports that follow it.
while ((${#chat_ports[@]} < chat_count)); do chat_ports+=($((chat_ports[-1] + 1))); done
chat_ports=("${chat_ports[@]:0:chat_count}")

command -v haproxy >/dev/null || die "haproxy is not installed (scripts/setup.sh installs it)"
# The stats page and /metrics stay on loopback unless HAPROXY_STATS_BIND says otherwise,
# and then only with a password.
export HAPROXY_STATS_BIND=${HAPROXY_STATS_BIND:-127.0.0.1}
if [[ $HAPROXY_STATS_BIND != 127.* && $HAPROXY_STATS_BIND != localhost && -z ${HAPROXY_STATS_PASSWORD:-} ]]; then
    die "HAPROXY_STATS_BIND=$HAPROXY_STATS_BIND exposes the stats page; set HAPROXY_STATS_PASSWORD too"
fi

mkdir -p "$CHATSYS_VAR/run" "$CHATSYS_VAR/log"
external_database=${MONGO_URI:-}
if [[ -z ${MONGO_URI:-} ]]; then
    "$CHATSYS_ROOT/scripts/ferretdb.sh" start
    export MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/chatsys"
fi
export LOGIN_URL=${LOGIN_URL:-http://127.0.0.1:$LOGIN_SERVICE_PORT}

# start_service NAME MODULE PORT: one gunicorn, detached, with pid file and log under var/
# (JSON lines, rotated by gunicorn's master past LOG_MAX_BYTES), its metrics on loopback.
start_service() {
    local name=$1 module=$2 port=$3
    local pid_file=$CHATSYS_VAR/run/$name-$port.pid
    if pid_alive "$pid_file"; then
        log "$name@$port already running (pid $(cat "$pid_file"))"
        return 0
    fi
    rm -f "$pid_file"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is taken by a process start.sh did not start; stop it or set the port variables"
    fi
    # gunicorn.conf.py captures the app's own output into the error log too.
    PORT=$port SERVICE_HOST=127.0.0.1 METRICS_HOST=127.0.0.1 METRICS_PORT=$((port + METRICS_PORT_OFFSET)) \
        "$VENV/bin/gunicorn" -c conf/gunicorn.conf.py --daemon --pid "$pid_file" \
        --error-logfile "$CHATSYS_VAR/log/$name-$port.log" "$module"
}

cd "$CHATSYS_ROOT"
# Every collection and index, and the migrations of earlier layouts, before any service
# starts (the services never migrate; they answer /ready with 503 until this has run).
"$VENV/bin/python" -m service_kit.migrate --wait 30 >&2 || die "the database is not migrated (the line above says why)"
start_service login login_service.wsgi:app "$LOGIN_SERVICE_PORT"
start_service profile profile_service.wsgi:app "$PROFILE_SERVICE_PORT"
for port in "${chat_ports[@]}"; do start_service chat chat_service.wsgi:app "$port"; done

for target in "login:$LOGIN_SERVICE_PORT" "profile:$PROFILE_SERVICE_PORT" "${chat_ports[@]/#/chat:}"; do
    wait_for_http "http://127.0.0.1:${target#*:}/ready" 30 || die "${target%%:*} on ${target#*:} is not ready; see $CHATSYS_VAR/log/"
done

haproxy_pid=$CHATSYS_VAR/run/haproxy.pid
if pid_alive "$haproxy_pid"; then
    log "HAProxy already running (pid $(cat "$haproxy_pid"))"
else
    for port in "$HAPROXY_PORT" "$LOGIN_PORT" "$PROFILE_PORT" "$HAPROXY_PEER_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is taken by a process start.sh did not start; stop it or set the port variables"
        fi
    done
    export HAPROXY_BIND=${HAPROXY_BIND:-$BIND_HOST} HAPROXY_PORT HAPROXY_STATS_PORT HAPROXY_RUNTIME_SOCKET HAPROXY_PEER_PORT
    export HAPROXY_LOGIN_PORT=$LOGIN_PORT HAPROXY_PROFILE_PORT=$PROFILE_PORT
    export LOGIN_SERVER=127.0.0.1:$LOGIN_SERVICE_PORT PROFILE_SERVER=127.0.0.1:$PROFILE_SERVICE_PORT
    # HAProxy balances over exactly the chat servers started here: CHAT_SERVER_1..N.
    for ((i = 1; i <= MAX_CHAT_SERVERS; i++)); do unset "CHAT_SERVER_$i"; done
    for i in "${!chat_ports[@]}"; do export "CHAT_SERVER_$((i + 1))=127.0.0.1:${chat_ports[i]}"; done
    haproxy -c -q -f "$HAPROXY_CFG"
    # In the background but not daemonised (-D would close its stdout): the request log
    # (one line per request, see the config's log-format) goes to haproxy.log. A master and
    # its worker (-W), as under systemd and in Docker: `kill -USR2 <the pid file's pid>`
    # reloads the configuration, and the rate tables pass to the new worker (docs/haproxy.md).
    nohup haproxy -W -db -f "$HAPROXY_CFG" </dev/null >>"$CHATSYS_VAR/log/haproxy.log" 2>&1 &
    echo $! >"$haproxy_pid"
    for port in "$HAPROXY_PORT" "$LOGIN_PORT" "$PROFILE_PORT"; do
        wait_for_port 127.0.0.1 "$port" 10 || die "HAProxy did not start; see $CHATSYS_VAR/log/haproxy.log"
    done
fi
in_rotation=$("$CHATSYS_ROOT/scripts/rotation.sh" "$chat_count")
[[ $in_rotation == *" of $chat_count" ]] ||
    log "warning: the HAProxy that was running has other chat servers ($in_rotation); scripts/stop.sh, then start.sh, to change them"
for port in "$LOGIN_PORT" "$PROFILE_PORT"; do
    wait_for_http "http://127.0.0.1:$port/ready" 10 || die "HAProxy on $port does not reach its service; see $CHATSYS_VAR/log/"
done

# start_daemon NAME PORT COMMAND...: a process of the observability side, detached, with pid
# file and log under var/. A taken port leaves it out with a warning: the system runs on.
start_daemon() {
    local name=$1 port=$2 pid_file=$CHATSYS_VAR/run/$1.pid
    shift 2
    if pid_alive "$pid_file"; then
        log "$name already running (pid $(cat "$pid_file"))"
        return 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "warning: port $port is taken; $name not started (set its port variable)"
        return 0
    fi
    setsid "$@" >>"$CHATSYS_VAR/log/$name.log" 2>&1 </dev/null &
    echo $! > "$pid_file"
    wait_for_port 127.0.0.1 "$port" 30 || log "warning: $name did not listen on $port; see $CHATSYS_VAR/log/$name.log"
}

# write_targets: what Prometheus scrapes, next to its configuration (it rereads them).
write_targets() {
    local dir=$1 entries=() target service port
    for target in "login:$LOGIN_SERVICE_PORT" "profile:$PROFILE_SERVICE_PORT" "${chat_ports[@]/#/chat:}"; do
        service=${target%%:*} port=${target#*:}
        entries+=("{\"targets\": [\"127.0.0.1:$((port + METRICS_PORT_OFFSET))\"], \"labels\": {\"service\": \"$service\", \"server\": \"$service@$port\"}}")
    done
    local IFS=,
    echo "[${entries[*]}]" > "$dir/services.json.tmp"
    mv "$dir/services.json.tmp" "$dir/services.json"
    echo "[{\"targets\": [\"127.0.0.1:$PROMETHEUS_PORT\"]}]" > "$dir/prometheus.json"
    echo "[{\"targets\": [\"$HAPROXY_STATS_BIND:$HAPROXY_STATS_PORT\"]}]" > "$dir/haproxy.json"
    echo "[{\"targets\": [\"127.0.0.1:$NODE_EXPORTER_PORT\"]}]" > "$dir/node.json"
    if [[ -z ${external_database:-} && $FERRETDB_METRICS_PORT != 0 ]]; then
        echo "[{\"targets\": [\"127.0.0.1:$FERRETDB_METRICS_PORT\"]}]" > "$dir/ferretdb.json"
    else
        echo "[]" > "$dir/ferretdb.json"
    fi
}

if [[ $PROMETHEUS != off ]]; then
    if command -v prometheus >/dev/null && command -v prometheus-node-exporter >/dev/null; then
        prometheus_dir=$CHATSYS_VAR/prometheus
        mkdir -p "$prometheus_dir/targets" "$prometheus_dir/data"
        # The configuration with HAProxy's stats user and password (basic auth when one is set).
        env -u FERRETDB_METRICS_TARGET conf/prometheus/configure.sh conf/prometheus/prometheus.yml "$prometheus_dir"
        write_targets "$prometheus_dir/targets"
        start_daemon node-exporter "$NODE_EXPORTER_PORT" \
            prometheus-node-exporter --web.listen-address="127.0.0.1:$NODE_EXPORTER_PORT"
        start_daemon prometheus "$PROMETHEUS_PORT" \
            prometheus --config.file="$prometheus_dir/prometheus.yml" --storage.tsdb.path="$prometheus_dir/data" \
            --storage.tsdb.retention.time=15d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
    else
        log "warning: prometheus or prometheus-node-exporter is not installed (scripts/setup.sh installs them)"
    fi
fi

cat <<TEXT
chatsys is running (HAProxy in front of every service):
  web client      http://$PUBLIC_HOST:$HAPROXY_PORT/
  chat            http://$PUBLIC_HOST:$HAPROXY_PORT
  login           http://$PUBLIC_HOST:$LOGIN_PORT
  profile         http://$PUBLIC_HOST:$PROFILE_PORT
  stats           http://$HAPROXY_STATS_BIND:$HAPROXY_STATS_PORT/stats  metrics /metrics
  behind HAProxy  login 127.0.0.1:$LOGIN_SERVICE_PORT, profile 127.0.0.1:$PROFILE_SERVICE_PORT, chat ${chat_ports[*]/#/127.0.0.1:}
  metrics         each service's port + $METRICS_PORT_OFFSET on 127.0.0.1, e.g. http://127.0.0.1:$((LOGIN_SERVICE_PORT + METRICS_PORT_OFFSET))/metrics
  prometheus      $( [[ $PROMETHEUS != off ]] && echo "http://127.0.0.1:$PROMETHEUS_PORT/graph" || echo "off (PROMETHEUS=off)")
  database        $MONGO_URI
logs in $CHATSYS_VAR/log; stop with scripts/stop.sh; see scripts/status.sh
TEXT
