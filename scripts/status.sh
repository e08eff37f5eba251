#!/usr/bin/env bash
# Every process start.sh starts, its port and its /ready; HAProxy's view of each server;
# and, when Prometheus runs, the last minute's requests per second, 5xx ratio and p99 of
# each server and service (the recording rules of conf/prometheus/rules.yml).
set -uo pipefail
usage() { echo "usage: $0   (env: CHATSYS_VAR, *_PORT, PROMETHEUS_PORT, HAPROXY_RUNTIME_SOCKET)"; }
case ${1:-} in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) usage; exit 2 ;;
esac
source "$(dirname "$0")/lib/common.sh"
shopt -s nullglob

# row NAME PID_FILE PORT URL [CURL_ARGS...]: one line; URL is asked when the process runs.
row() {
    local name=$1 pid_file=$2 port=$3 url=$4 ready
    shift 4
    if pid_alive "$pid_file"; then
        ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url")
        printf '%-16s %-8s %-6s %s\n' "$name" "$(cat "$pid_file")" "$port" "$ready"
    else
        printf '%-16s %-8s %-6s %s\n' "$name" - "$port" "not running"
    fi
}

printf '%-16s %-8s %-6s %s\n' PROCESS PID PORT READY
for pid_file in "$CHATSYS_VAR"/run/login-*.pid "$CHATSYS_VAR"/run/profile-*.pid "$CHATSYS_VAR"/run/chat-*.pid; do
    name=$(basename "$pid_file" .pid); port=${name##*-}
    row "${name/-/@}" "$pid_file" "$port" "http://127.0.0.1:$port/ready"
    metrics_port=$((port + METRICS_PORT_OFFSET))
    pid_alive "$pid_file" && printf '  metrics %s\n' \
        "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$metrics_port/metrics") on $metrics_port"
done
if [[ -f $CHATSYS_VAR/run/ferretdb.pid ]]; then
    row ferretdb "$CHATSYS_VAR/run/ferretdb.pid" "$MONGO_PORT" "http://127.0.0.1:$FERRETDB_METRICS_PORT/debug/livez"
fi
# FerretDB's private PostgreSQL clusters (FERRETDB_HANDLER=postgresql): the primary (the one
# var/postgresql/primary names, `data` until a promotion), a standby (standby.signal), or a
# former primary; each postmaster.pid starts with the server's pid; pg_isready says whether
# it accepts connections.
primary=$(cat "$CHATSYS_VAR/postgresql/primary" 2>/dev/null || echo data)
for cluster in data:"$POSTGRES_PORT" data2:"$POSTGRES_STANDBY_PORT"; do
    folder=$CHATSYS_VAR/postgresql/${cluster%%:*} port=${cluster#*:} name=postgresql
    [[ -f $folder/PG_VERSION ]] || continue
    if [[ -f $folder/standby.signal ]]; then name=pg-standby; elif [[ ${cluster%%:*} != "$primary" ]]; then name=pg-old-primary; fi
    if [[ -f $folder/postmaster.pid ]] && kill -0 "$(head -n 1 "$folder/postmaster.pid")" 2>/dev/null; then
        ready=$("$POSTGRES_BIN/pg_isready" -h 127.0.0.1 -p "$port" 2>&1 | sed 's/^[^ ]* - //')
        printf '%-16s %-8s %-6s %s\n' "$name" "$(head -n 1 "$folder/postmaster.pid")" "$port" "$ready"
    else
        printf '%-16s %-8s %-6s %s\n' "$name" - "$port" "not running"
    fi
done
# The stats password, when one is set, goes to curl on its standard input, not its command line.
if [[ -n ${HAPROXY_STATS_PASSWORD:-} ]]; then
    row haproxy "$CHATSYS_VAR/run/haproxy.pid" "$HAPROXY_PORT" "http://127.0.0.1:$HAPROXY_STATS_PORT/stats" --config - \
        <<< "user = \"${HAPROXY_STATS_USER:-stats}:$HAPROXY_STATS_PASSWORD\""
else
    row haproxy "$CHATSYS_VAR/run/haproxy.pid" "$HAPROXY_PORT" "http://127.0.0.1:$HAPROXY_STATS_PORT/stats"
fi
row node-exporter "$CHATSYS_VAR/run/node-exporter.pid" "$NODE_EXPORTER_PORT" "http://127.0.0.1:$NODE_EXPORTER_PORT/metrics"
row prometheus "$CHATSYS_VAR/run/prometheus.pid" "$PROMETHEUS_PORT" "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"

if pid_alive "$CHATSYS_VAR/run/haproxy.pid" && [[ -S $HAPROXY_RUNTIME_SOCKET ]]; then
    echo
    echo "HAProxy's view of each server:"
    stats=$(haproxy_cmd "show stat")
    for backend in chat_servers chat_waits login profile; do
        haproxy_rows "$backend" svname status scur stot <<<"$stats" |
            awk -F'\t' -v backend="$backend" '$1 != "BACKEND" {printf "  %-13s %-8s %-10s in flight=%s total=%s\n", backend, $1, $2, $3, $4}'
    done
fi

if pid_alive "$CHATSYS_VAR/run/prometheus.pid"; then
    echo
    echo "Last minute (Prometheus, http://127.0.0.1:$PROMETHEUS_PORT/graph):"
    PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT" "$PYTHON" - <<'PY'
import json, os, urllib.parse, urllib.request

base = os.environ["PROMETHEUS_URL"]


def query(expression):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)["data"]["result"]
    except OSError as error:
        raise SystemExit(f"  Prometheus did not answer: {error}")


def figures(level):
    rows = {}
    for name, rule in (("rate", "chatsys_requests:rate1m"), ("errors", "chatsys_errors:ratio_rate1m"),
                       ("p99", "chatsys_request_duration_seconds:p99_1m")):
        for sample in query(f"{level}:{rule}"):
            key = sample["metric"].get(level, sample["metric"].get("service", "?"))
            rows.setdefault(key, {})[name] = float(sample["value"][1])
    return rows


def show(value, scale=1.0, unit=""):
    return "-" if value is None or value != value else f"{value * scale:.1f}{unit}"


print(f"  {'':16} {'req/s':>8} {'5xx':>7} {'p99':>9}")
for level in ("server", "service"):
    for key, row in sorted(figures(level).items()):
        print(f"  {key:16} {show(row.get('rate')):>8} {show(row.get('errors'), 100, ' %'):>7} "
              f"{show(row.get('p99'), 1000, ' ms'):>9}")
targets = query("up")
down = [t["metric"].get("server") or t["metric"]["instance"] for t in targets if t["value"][1] != "1"]
print(f"  scrape targets: {len(targets)}, down: {', '.join(down) or 'none'}")
PY
fi
