#!/usr/bin/env bash
# Usage: scripts/scale_test.sh [--quick] [--cpu-cap CORES] [--pin on|off] [--idle-poll on|off]
#          [--servers "1 2 3"]
#          [--workloads "hot rooms"] [--slo-p99 MS] [--duration S] [--warmup S]
#          [--start-rate R] [--out DIR] [--docker] [-- -Jname=value ...]
#        scripts/scale_test.sh --target URL --login URL [...]   (= scripts/battle.sh)
#
# The maximum one, two and three chat servers sustain within a latency objective. Starts
# its own stack once (scripts/start.sh, three chat servers, on ports of its own), then for
# 1, 2 and 3 servers in HAProxy's rotation (scripts/rotation.sh) and each workload (the
# hot room; many rooms with a Zipf skew): a warm-up, then the SLO search
# (python -m tools.loadtest search): the highest open-model arrival rate with p99 <= --slo-p99
# (250 ms, counted from each request's scheduled arrival), errors < 1 % and >= 99 % of the
# offered requests sent; grown until a criterion fails, bisected to within 5 %, confirmed
# by 3 runs. The database is emptied before every run (indexes kept).
#
#   --quick            a smoke run of a few minutes: 6 s runs, three runs per search, no
#                      confirmation, no warm-up (too short for figures worth keeping)
#   --cpu-cap CORES    each chat server (gunicorn master + workers) in its own cgroup capped
#                      at CORES cores (scripts/cpu_cap.sh), like separate small hosts
#   --pin on|off       with --cpu-cap (default on, given 2 cores or more): the chat servers
#                      on the last core, everything else (the stack, JMeter) on the others,
#                      so no chat server shares a core with the parts that separate hosts
#                      would not share with it; needs the caps to fit in one core
#   --idle-poll on|off with --cpu-cap (default on where /dev/cpu_dma_latency can be
#                      written): idle cores poll instead of halting for the test (a PM QoS
#                      request, released at its end); a halt costs each wake-up a trip
#                      through the hypervisor on a virtual machine (scripts/lib/cores.sh)
#   --docker           the same, against the compose stack (scripts/docker-stack.sh, project
#                      chatsys-scale, the ports below published on loopback): the chat tier
#                      scaled to 1, 2 and 3 containers, and --cpu-cap is Docker's own `cpus`
#                      limit per chat container; the stack is removed at the end
#   --duration S       seconds of arrivals per run, after its users' setup (10)
#   --start-rate R     the one-server search's first rate (40 req/s); later series start
#                      from the previous maximum scaled by the servers
#   --target URL --login URL
#                      battle mode: runs scripts/battle.sh with the same arguments
#   -- -Jname=value    extra plan properties for every run
#
# Writes results/<UTC time>/ (or --out): summary.md, slo.csv, slo.png, steps.csv, cpu.csv,
# run.info, runs.csv and <series>/<workload>/<run>/ per JMeter run (with its dashboard)
# and search.json per search; timeline.csv and timeline.png from the stack's Prometheus
# (each chat server's req/s and p99, and CPU, over the whole test; with --docker the compose
# stack's Prometheus, its chat servers named chat-1, chat-2 ...; none with PROMETHEUS=off). The full run takes about 20 to 25 minutes. Stack environment (defaults differ from
# start.sh so a dev stack on the usual ports is left alone): CHATSYS_VAR (var/scale),
# MONGO_PORT (27117), LOGIN_PORT (4110), PROFILE_PORT (4210), LOGIN_SERVICE_PORT (4111),
# PROFILE_SERVICE_PORT (4211), CHAT_PORTS ("4010 4011 4012"),
# HAPROXY_PORT (5010), HAPROXY_STATS_PORT (8414; HAPROXY_PEER_PORT 8415), PROMETHEUS_PORT (9190), NODE_EXPORTER_PORT
# (9200), FERRETDB_METRICS_PORT (8188), HAPROXY_RUNTIME_SOCKET, MONGO_URI (an
# external database: then nothing is emptied between runs), CPU_CAP_PARENT (chatsys-scale),
# GUNICORN_WORKERS (1 per chat server with --cpu-cap, else 2), JVM_ARGS for JMeter
# (-XX:TieredStopAtLevel=1).
#
# FERRETDB_HANDLER=postgresql runs the local stack's FerretDB on a private PostgreSQL cluster
# (scripts/ferretdb.sh, docs/postgresql.md) in $CHATSYS_VAR/postgresql, on POSTGRES_PORT (5533;
# a standby, POSTGRES_STANDBY=on, on POSTGRES_STANDBY_PORT, 5534), made afresh for the test
# and stopped at its end; the report gives PostgreSQL's CPU (the postmaster and every process
# below it) beside FerretDB's. Not with --docker, which measures the compose stack's own
# database container (MONGO_IMAGE).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CHATSYS_VAR=${CHATSYS_VAR:-$root/var/scale}
export MONGO_PORT=${MONGO_PORT:-27117} LOGIN_PORT=${LOGIN_PORT:-4110} PROFILE_PORT=${PROFILE_PORT:-4210}
export LOGIN_SERVICE_PORT=${LOGIN_SERVICE_PORT:-4111} PROFILE_SERVICE_PORT=${PROFILE_SERVICE_PORT:-4211}
export CHAT_PORTS=${CHAT_PORTS:-"4010 4011 4012"} HAPROXY_PORT=${HAPROXY_PORT:-5010}
# The stack's Prometheus and what it scrapes (the report's timeline), also off the usual ports.
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-9190} NODE_EXPORTER_PORT=${NODE_EXPORTER_PORT:-9200}
export FERRETDB_METRICS_PORT=${FERRETDB_METRICS_PORT:-8188}
# FerretDB's PostgreSQL backend (FERRETDB_HANDLER=postgresql), off a dev stack's 5433 and 5434.
export POSTGRES_PORT=${POSTGRES_PORT:-5533} POSTGRES_STANDBY_PORT=${POSTGRES_STANDBY_PORT:-5534}
# The load generator is one client address and one token per thread, far beyond a person:
# HAProxy's per-address and per-token limits would measure themselves, not the servers.
export HAPROXY_AUTH_RATE=${HAPROXY_AUTH_RATE:-1000000} HAPROXY_POST_RATE=${HAPROXY_POST_RATE:-1000000}
export HAPROXY_ROOM_RATE=${HAPROXY_ROOM_RATE:-1000000} HAPROXY_ROOMS_PER_ADDRESS=${HAPROXY_ROOMS_PER_ADDRESS:-1000000}
export HAPROXY_STATS_PORT=${HAPROXY_STATS_PORT:-8414}
export CPU_CAP_PARENT=${CPU_CAP_PARENT:-chatsys-scale}
# shellcheck source=scripts/lib/common.sh
source "$root/scripts/lib/common.sh"
# shellcheck source=scripts/lib/cores.sh
source "$root/scripts/lib/cores.sh"
export HAPROXY_RUNTIME_SOCKET
command_line="scripts/scale_test.sh${*:+ $*}"
# JMeter starts afresh for every step; with C1 alone its JIT compiles far less, which
# halved the load generator's CPU per request on 20-second steps (docs/load-testing.md).
export JVM_ARGS=${JVM_ARGS--XX:TieredStopAtLevel=1}

for arg in "$@"; do
    [[ $arg != --target && $arg != --target=* ]] || exec "$root/scripts/battle.sh" "$@"
    [[ $arg != -- ]] || break
done
quick=no servers='' workloads='hot rooms' slo_p99=250 duration='' warmup='' start_rate=40
cpu_cap='' out='' plan_props=() docker=no pin=auto idle_poll=auto
while (($#)); do
    case $1 in
        --quick) quick=yes; shift ;;
        --servers) servers=${2:?--servers needs a list}; shift 2 ;;
        --workloads) workloads=${2:?--workloads needs a list}; shift 2 ;;
        --slo-p99) slo_p99=${2:?}; shift 2 ;;
        --duration) duration=${2:?}; shift 2 ;;
        --warmup) warmup=${2:?}; shift 2 ;;
        --start-rate) start_rate=${2:?}; shift 2 ;;
        --cpu-cap) cpu_cap=${2:?--cpu-cap needs a number of cores}; shift 2 ;;
        --pin) pin=${2:?--pin needs on or off}; shift 2 ;;
        --idle-poll) idle_poll=${2:?--idle-poll needs on or off}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --docker) docker=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; plan_props=("$@"); break ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
search_args=(--confirmations 3 --max-steps 12)
if [[ $quick == yes ]]; then
    duration=${duration:-6} warmup=${warmup:-0}
    search_args=(--confirmations 1 --misses 0 --max-steps 3)
fi
servers=${servers:-"1 2 3"} duration=${duration:-10} warmup=${warmup:-8}

number='^[0-9]+$'
for value in $servers "$duration" "$warmup"; do
    [[ $value =~ $number ]] || die "counts and durations are whole numbers, not '$value'"
done
for value in "$slo_p99" "$start_rate" ${cpu_cap:+"$cpu_cap"}; do
    [[ $value =~ ^[0-9]*\.?[0-9]+$ ]] || die "--slo-p99, --start-rate and --cpu-cap are numbers, not '$value'"
done
for workload in $workloads; do
    [[ $workload == hot || $workload == rooms ]] || die "workloads are hot and rooms, not '$workload'"
done
for value in "$pin" "$idle_poll"; do
    [[ $value == on || $value == off || $value == auto ]] || die "--pin and --idle-poll are on or off, not '$value'"
done
for prop in ${plan_props[@]+"${plan_props[@]}"}; do
    [[ $prop == -J?*=* ]] || die "arguments after -- are -Jname=value, not '$prop'"
done

# --- where the load goes ------------------------------------------------------------------
mode=local
[[ $docker == no ]] || mode=docker
chat_url=http://127.0.0.1:$HAPROXY_PORT login_url=http://127.0.0.1:$LOGIN_PORT
read -r -a chat_ports <<< "$CHAT_PORTS"
series_list=()
for n in $servers; do
    ((n >= 1 && n <= ${#chat_ports[@]})) || die "--servers values must be 1 to ${#chat_ports[@]}"
    series_list+=("servers-$n")
done
[[ $mode == docker ]] || command -v haproxy >/dev/null || die "haproxy is not installed (scripts/setup.sh installs it)"
[[ $FERRETDB_HANDLER == sqlite || $FERRETDB_HANDLER == postgresql ]] ||
    die "FERRETDB_HANDLER is sqlite or postgresql, not '$FERRETDB_HANDLER'"
[[ $mode == local || $FERRETDB_HANDLER == sqlite ]] ||
    die "--docker measures the compose stack's own database container; FERRETDB_HANDLER=postgresql is for the local stack"
# The embedded database on PostgreSQL: its clusters are this test's, made afresh below.
postgresql=no
[[ $mode != local || -n ${MONGO_URI:-} || $FERRETDB_HANDLER != postgresql ]] || postgresql=yes
# Cores of their own for the chat servers, and idle cores that poll (scripts/lib/cores.sh):
# by default with caps on a local stack, which model separate small hosts.
modelled_hosts=no
# The machine's cores, not this process's: nproc counts only the cores a process may run
# on, and --pin puts this script on the shared ones.
machine_cores=$(getconf _NPROCESSORS_ONLN)
[[ $mode != local || -z $cpu_cap ]] || modelled_hosts=yes
if [[ $pin == auto ]]; then
    pin=off
    if [[ $modelled_hosts == yes ]] && ((machine_cores >= 2)) && "$root/scripts/cpu_cap.sh" check >/dev/null 2>&1; then
        pin=on
    fi
fi
chat_cpus='' shared_cpus=''
if [[ $pin == on ]]; then
    [[ $modelled_hosts == yes ]] || die "--pin on is for the local stack with --cpu-cap"
    ((machine_cores >= 2)) || die "--pin on needs 2 cores or more"
    awk -v c="$cpu_cap" -v n="${#chat_ports[@]}" 'BEGIN {exit !(c * n <= 1)}' ||
        die "--pin on: ${#chat_ports[@]} chat servers capped at $cpu_cap core do not fit in one core (a lower cap, or --pin off)"
    chat_cpus=$((machine_cores - 1)) shared_cpus=$(cores_list 0 $((machine_cores - 2)))
fi
if [[ $idle_poll == auto ]]; then
    idle_poll=off
    if [[ $modelled_hosts == yes && -w /dev/cpu_dma_latency ]]; then idle_poll=on; fi
fi
[[ $idle_poll == off || -w /dev/cpu_dma_latency ]] || die "--idle-poll on needs to write /dev/cpu_dma_latency (root)"
if [[ $postgresql == yes ]]; then
    [[ -x $POSTGRES_BIN/pg_ctl ]] || die "PostgreSQL's server programs are not installed (POSTGRES_BIN=$POSTGRES_BIN; scripts/setup.sh installs them)"
fi

[[ -x $VENV/bin/python ]] || die "no virtualenv at $VENV (run scripts/setup.sh)"
"$VENV/bin/python" -c 'import matplotlib, pymongo' 2>/dev/null ||
    die "the virtualenv lacks matplotlib or pymongo (scripts/setup.sh installs requirements-dev.lock)"
command -v java >/dev/null || [[ -x ${JAVA_HOME:-/nonexistent}/bin/java ]] || die "java is needed for JMeter"
"$root/scripts/jmeter-install.sh" >/dev/null

loadtest() { PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.loadtest "$@"; }

out=${out:-$root/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/runs.csv" "$out/timeline.csv"  # each search appends to runs.csv (tools/loadtest/search.py)

# --- cleanup: everything this script starts is stopped on any exit -------------------------
monitor_pid='' search_pid='' stack_started=no
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $search_pid ]] && kill -0 "$search_pid" 2>/dev/null; then
        kill -TERM -- "-$search_pid" 2>/dev/null || true  # its own process group: JMeter too
        wait "$search_pid" 2>/dev/null || true
    fi
    if [[ -n $monitor_pid ]]; then
        kill "$monitor_pid" 2>/dev/null || true
        wait "$monitor_pid" 2>/dev/null || true
    fi
    [[ -z $idle_poll_pid ]] || kill "$idle_poll_pid" 2>/dev/null || true
    if [[ $stack_started == yes && $mode == docker ]]; then
        docker_stack down --volumes >/dev/null 2>&1 || log "scripts/docker-stack.sh down failed"
    elif [[ $stack_started == yes ]]; then
        [[ -z $cpu_cap ]] || "$root/scripts/cpu_cap.sh" release "${chat_ports[@]/#/chat-}" 2>/dev/null || true
        "$root/scripts/stop.sh" >/dev/null 2>&1 || log "scripts/stop.sh failed; see $CHATSYS_VAR/run"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

idle_poll_pid=''
if [[ $idle_poll == on ]]; then
    hold_idle_poll || die "could not hold a PM QoS request on /dev/cpu_dma_latency"
    log "idle cores poll for the test (PM QoS: cpu_dma_latency 0; by default: $(idle_state_description))"
fi
if [[ $pin == on ]]; then
    # This script, and so everything it starts (the stack, the searches, JMeter), on the
    # shared cores; the chat servers move to their own core once they run.
    taskset -p -c "$shared_cpus" $$ >/dev/null
    log "the chat servers on CPU $chat_cpus, everything else on CPU $shared_cpus"
fi

# --- the stack ------------------------------------------------------------------------------
cap_mode=off cap_reason='' cap_applied=''
database_reset="not reset (a deployment under test keeps its data; its history grows over the runs)"
# docker_stack ARGS...: scripts/docker-stack.sh for this script's own compose project.
docker_stack() {
    COMPOSE_PROJECT_NAME=chatsys-scale CHAT_PUBLISHED_PORT=$HAPROXY_PORT STATS_PUBLISHED_PORT=$HAPROXY_STATS_PORT \
        LOGIN_PUBLISHED_PORT=$LOGIN_PORT PROFILE_PUBLISHED_PORT=$PROFILE_PORT PROMETHEUS_PUBLISHED_PORT=$PROMETHEUS_PORT \
        DOCKER_COMPOSE_FILES="$CHATSYS_VAR/compose.scale.yaml" "$root/scripts/docker-stack.sh" "$@"
}
# docker_pids SERVICE: the host pid of each running container of SERVICE, as NUMBER=PID lines.
docker_pids() {
    local id
    for id in $(docker_stack compose ps -q "$1"); do
        DOCKER_HOST=$docker_host docker inspect --format \
            '{{index .Config.Labels "com.docker.compose.container-number"}}={{.State.Pid}}' "$id"
    done
}
if [[ $mode == docker ]]; then
    docker_stack down --volumes >/dev/null 2>&1 || true
    ports=("$LOGIN_PORT" "$PROFILE_PORT" "$HAPROXY_PORT" "$HAPROXY_STATS_PORT" "$MONGO_PORT")
    [[ $PROMETHEUS == off ]] || ports+=("$PROMETHEUS_PORT")
    for port in "${ports[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use; choose other ports (see --help) or stop what runs there"
        fi
    done
    mkdir -p "$CHATSYS_VAR"
    # This run's additions to compose.yaml: the database on a loopback port (emptied before
    # every run) and, with --cpu-cap, Docker's CPU limit on every chat container.
    {
        echo "services:"
        echo "  mongo:"
        echo "    ports: [\"127.0.0.1:$MONGO_PORT:27017\"]"
        if [[ -n $cpu_cap ]]; then
            echo "  chat:"
            echo "    cpus: $cpu_cap"
        fi
    } > "$CHATSYS_VAR/compose.scale.yaml"
    stack_started=yes
    log "starting the compose stack chatsys-scale (HAProxy $HAPROXY_PORT, login $LOGIN_PORT)"
    docker_stack up --scale chat="${#chat_ports[@]}" > "$out/stack.log" 2>&1 ||
        { cat "$out/stack.log" >&2; die "the stack did not start"; }
    docker_host=$(sed -n 's/^DOCKER_HOST=//p' "$CHATSYS_VAR/docker/chatsys-scale.env")
    mongo_uri="mongodb://127.0.0.1:$MONGO_PORT/chatsys"
    database_reset="the database container ($(sed -n 's/^MONGO_IMAGE=//p' "$CHATSYS_VAR/docker/chatsys-scale.env")), emptied before every run (collections with indexes emptied, the others dropped)"
    if [[ -n $cpu_cap ]]; then
        cap_mode="docker cpus" cap_applied=$cpu_cap
    fi
elif [[ $mode == local ]]; then
    # Whatever a previous run left in our var dir is ours: stop it, then insist on free ports.
    "$root/scripts/stop.sh" >/dev/null 2>&1 || true
    [[ -z $cpu_cap ]] || "$root/scripts/cpu_cap.sh" release "${chat_ports[@]/#/chat-}" >/dev/null 2>&1 || true
    ports=("$LOGIN_PORT" "$PROFILE_PORT" "$LOGIN_SERVICE_PORT" "$PROFILE_SERVICE_PORT" "${chat_ports[@]}" "$HAPROXY_PORT" "$HAPROXY_STATS_PORT")
    [[ -n ${MONGO_URI:-} ]] || ports+=("$MONGO_PORT")
    [[ $postgresql == no ]] || ports+=("$POSTGRES_PORT")
    [[ $postgresql == no || $POSTGRES_STANDBY != on ]] || ports+=("$POSTGRES_STANDBY_PORT")
    for port in "${ports[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use; choose other ports (see --help) or stop what runs there"
        fi
    done
    emptied="emptied before every run (collections with indexes emptied, the others dropped)"
    if [[ $postgresql == yes ]]; then
        # FerretDB's files hold the cluster's password: both go, and initdb makes a new cluster.
        rm -rf "$CHATSYS_VAR/ferretdb" "$CHATSYS_VAR/postgresql"
        mongo_uri="mongodb://127.0.0.1:$MONGO_PORT/chatsys"
        postgres_version=$("$POSTGRES_BIN/postgres" --version | awk '{print $3}')
        standby_text=''
        [[ $POSTGRES_STANDBY != on ]] || standby_text=", with a synchronous standby on :$POSTGRES_STANDBY_PORT"
        database_reset="embedded FerretDB (PostgreSQL $postgres_version, private cluster on :$POSTGRES_PORT made afresh for the test, initdb's default settings$standby_text), emptied before every run (collections with indexes emptied and vacuumed, the others dropped)"
    elif [[ -z ${MONGO_URI:-} ]]; then
        rm -rf "$CHATSYS_VAR/ferretdb"
        mongo_uri="mongodb://127.0.0.1:$MONGO_PORT/chatsys"
        database_reset="embedded FerretDB (SQLite), $emptied"
    else
        mongo_uri=$MONGO_URI
        database_reset="external database $MONGO_URI, not emptied (history grows over the runs)"
    fi
    stack_started=yes
    # A chat server capped below one core gains nothing from a second gunicorn process
    # (each is one Python interpreter): it would only be one more racer for the room's
    # next seq. So with caps every service of the stack runs one worker unless told otherwise.
    [[ -z $cpu_cap ]] || export GUNICORN_WORKERS=${GUNICORN_WORKERS:-1}
    log "starting the stack in $CHATSYS_VAR (chat servers ${chat_ports[*]}, HAProxy $HAPROXY_PORT)"
    "$root/scripts/start.sh" --chat "${#chat_ports[@]}" > "$out/stack.log" 2>&1 ||
        { cat "$out/stack.log" >&2; die "the stack did not start"; }

    pid_of() { cat "$CHATSYS_VAR/run/$1.pid"; }
    groups=("haproxy=$(pid_of haproxy)" "login=$(pid_of "login-$LOGIN_SERVICE_PORT")"
            "profile=$(pid_of "profile-$PROFILE_SERVICE_PORT")")
    [[ -n ${MONGO_URI:-} ]] || groups+=("ferretdb=$(pid_of ferretdb)")
    if [[ $postgresql == yes ]]; then
        # Each cluster's postmaster and every process below it: backends, autovacuum, the
        # WAL writer, a standby's WAL receiver (pg_ctl leaves the postmaster on its own).
        for data in "$CHATSYS_VAR"/postgresql/data*; do
            [[ ! -f $data/postmaster.pid ]] || groups+=("postgresql=$(head -n 1 "$data/postmaster.pid")")
        done
        [[ ${groups[-1]} == postgresql=* ]] || die "PostgreSQL does not run in $CHATSYS_VAR/postgresql"
    fi
    for port in "${chat_ports[@]}"; do groups+=("chat-$port=$(pid_of "chat-$port")"); done

    if [[ -n $cpu_cap ]]; then
        if check=$("$root/scripts/cpu_cap.sh" check); then
            cap_mode=${check%%:*} cap_applied=$cpu_cap
            for port in "${chat_ports[@]}"; do
                "$root/scripts/cpu_cap.sh" apply "chat-$port" "$cpu_cap" "$(pid_of "chat-$port")" >&2
            done
        else
            cap_mode=none cap_reason=${check#none: }
            log "************************************************************************"
            log "WARNING: --cpu-cap $cpu_cap requested but NO cgroup CPU controller is usable:"
            log "  $cap_reason"
            log "The chat servers run UNCAPPED; the report says so."
            log "************************************************************************"
        fi
    fi
    if [[ $pin == on ]]; then
        for port in "${chat_ports[@]}"; do
            pin_tree "$chat_cpus" "$(pid_of "chat-$port")" || die "could not pin chat-$port to CPU $chat_cpus"
        done
    fi
else
    groups=()
fi
groups+=("jmeter=$$:ApacheJMeter.jar")
# start_monitor FILE: sample the CPU of every group (in docker mode: of the containers now running).
start_monitor() {
    local monitored=("${groups[@]}") line
    if [[ $mode == docker ]]; then
        for line in $(docker_pids chat); do monitored+=("chat-${line%%=*}=${line#*=}"); done
        for service in login profile haproxy; do
            for line in $(docker_pids "$service"); do monitored+=("$service=${line#*=}"); done
        done
        for line in $(docker_pids mongo); do monitored+=("ferretdb=${line#*=}"); done
    fi
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.loadtest monitor --out "$1" \
        --interval 1 --max-seconds 7200 "${monitored[@]}" &
    monitor_pid=$!
}
stop_monitor() {
    if [[ -n $monitor_pid ]]; then
        kill "$monitor_pid" 2>/dev/null || true
        wait "$monitor_pid" 2>/dev/null || true
        monitor_pid=''
    fi
}
# Scaling adds containers (new processes): docker mode samples each series in its own file.
[[ $mode == docker ]] || start_monitor "$out/cpu.csv"

{
    echo "command=$command_line"
    echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores=$machine_cores"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "memory=$(awk '/^MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ $mode == local ]]; then
        echo "target_description=local stack started by the script: HAProxy :$HAPROXY_PORT, chat servers ${chat_ports[*]} (gunicorn ${GUNICORN_WORKERS:-2} gevent workers each), login :$LOGIN_PORT"
    else
        echo "target_description=compose stack started by the script (scripts/docker-stack.sh, images $(sed -n 's/^CHATSYS_DOCKER_IMAGES=//p' "$CHATSYS_VAR/docker/chatsys-scale.env"), Docker $(DOCKER_HOST=$docker_host docker version --format '{{.Server.Version}}')): HAProxy container on :$HAPROXY_PORT, chat containers scaled to each series' count (gunicorn ${GUNICORN_WORKERS:-2} gevent workers each), login container :$LOGIN_PORT; ports through docker-proxy on loopback"
    fi
    echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cap_mode=$cap_mode"
    echo "cap_cores_requested=$cpu_cap"
    echo "cap_cores_applied=$cap_applied"
    [[ $mode != local || -z $cap_applied ]] || echo "cap_period_us=${CPU_CAP_PERIOD_US:-100000}"
    echo "cap_reason=$cap_reason"
    if [[ $pin == on ]]; then
        echo "pin=the chat servers on CPU $chat_cpus, everything else (the stack's other processes, JMeter) on CPU $shared_cpus"
        echo "shared_cores=$((machine_cores - 1))"
    else
        echo "pin=off"
    fi
    if [[ $idle_poll == on ]]; then
        echo "idle=idle cores poll (PM QoS request cpu_dma_latency 0 held for the test; otherwise $(idle_state_description))"
    else
        echo "idle=the kernel's idle states ($(idle_state_description))"
    fi
    echo "database_reset=$database_reset"
    echo "workloads=$workloads"
    echo "slo_p99_ms=$slo_p99"
    echo "duration=$duration"
    echo "warmup=$warmup"
    echo "plan_properties=${plan_props[*]:-}"
} > "$out/run.info"

# --- one SLO search -------------------------------------------------------------------------
# run_search SERIES SERVERS WORKLOAD START_RATE GROWTH [EXTRA...]: sets `maximum` (0.00: none).
run_search() {
    local series=$1 servers=$2 workload=$3 rate=$4 growth=$5
    shift 5
    local args=(search --out "$out" --series "$series" --servers "$servers" --chat "$chat_url"
        --login "$login_url" --workload "$workload" --duration "$duration" --slo-p99 "$slo_p99"
        --start-rate "$rate" --growth "$growth" "$@")
    [[ -n ${MONGO_URI:-} ]] || args+=(--reset-uri "$mongo_uri")
    [[ $postgresql == no ]] || args+=(--reset-compact)
    args+=(-- ${plan_props[@]+"${plan_props[@]}"})
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" setsid "$VENV/bin/python" -m tools.loadtest "${args[@]}" > "$out/.maximum" &
    search_pid=$!
    wait "$search_pid" || die "the search of $series, $workload failed"
    search_pid=''
    maximum=$(cat "$out/.maximum")
}

# wait_rotation N: until HAProxy reports exactly N chat servers UP.
wait_rotation() {
    local wanted=$1 up stats
    for _ in $(seq 60); do
        if [[ $mode == docker ]]; then
            stats=$(curl -fsS --max-time 5 "http://127.0.0.1:$HAPROXY_STATS_PORT/stats;csv")
        else
            stats=$(haproxy_cmd "show stat")
        fi
        up=$(haproxy_rows chat_servers svname status <<< "$stats" | awk -F'\t' '$1 != "BACKEND" && $2 ~ /^UP/' | wc -l)
        ((up == wanted)) && return 0
        sleep 0.5
    done
    die "HAProxy does not show $wanted chat servers up"
}

# --- the searches ---------------------------------------------------------------------------
started=$SECONDS
log "results in $out"
declare -A previous=()  # workload -> "servers maximum" of the last series
for series in "${series_list[@]}"; do
    n=${series#servers-}
    if [[ $mode == local ]]; then
        "$root/scripts/rotation.sh" "$n" >&2
        wait_rotation "$n"
    else
        log "scaling the chat tier to $n container(s)"
        docker_stack compose up -d --scale chat="$n" >/dev/null 2>&1 || die "docker compose --scale chat=$n failed"
        wait_rotation "$n"
        if [[ -n $cpu_cap ]]; then
            for id in $(docker_stack compose ps -q chat); do
                nano=$(DOCKER_HOST=$docker_host docker inspect --format '{{.HostConfig.NanoCpus}}' "$id")
                [[ $nano == "$(awk -v c="$cpu_cap" 'BEGIN {printf "%.0f", c * 1e9}')" ]] ||
                    die "chat container $id has no cpus limit of $cpu_cap (NanoCpus $nano)"
            done
        fi
        start_monitor "$out/cpu-$series.csv"
    fi
    if ((warmup > 0)); then  # one run at the start rate, never counted
        run_search "$series" "$n" hot "$start_rate" 2 --duration "$warmup" --warm-up
    fi
    for workload in $workloads; do
        rate=$start_rate growth=1.5
        if [[ -n ${previous[$workload]:-} ]]; then
            # The last series' maximum per server, times these servers, a little under it.
            read -r last_n last_max <<< "${previous[$workload]}"
            rate=$(awk -v m="$last_max" -v a="$last_n" -v b="$n" 'BEGIN {r = m / a * b * 0.85; printf "%.1f", r < 1 ? 1 : r}')
            growth=1.25
        fi
        log "  $series, $workload: search from $rate req/s"
        run_search "$series" "$n" "$workload" "$rate" "$growth" "${search_args[@]}"
        log "  $series, $workload: maximum within the objective $maximum req/s"
        [[ $maximum == 0.00 ]] || previous[$workload]="$n $maximum"
    done
    [[ $mode != docker ]] || stop_monitor
done
rm -f "$out/.maximum"
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/run.info"
echo "elapsed_seconds=$((SECONDS - started))" >> "$out/run.info"

stop_monitor
if [[ $PROMETHEUS != off ]]; then
    loadtest timeline "$out" --prometheus "http://127.0.0.1:$PROMETHEUS_PORT" || log "no timeline: see above"
fi
if [[ $mode == docker ]]; then
    # One sample file for the report: every series' rows under one header.
    files=("$out"/cpu-servers-*.csv)
    { head -n 1 "${files[0]}"; for file in "${files[@]}"; do tail -n +2 "$file"; done; } > "$out/cpu.csv"
    rm -f "${files[@]}"
fi
echo
loadtest report "$out"
