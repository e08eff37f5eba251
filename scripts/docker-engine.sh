#!/usr/bin/env bash
# A Docker engine for the containers: the one that answers already (DOCKER_HOST, or the
# system's /var/run/docker.sock), else a private dockerd of our own. The private one keeps
# its images in the user cache, so a fresh clone reuses what an earlier run built.
#
#   docker-engine.sh start    make sure an engine answers; print its DOCKER_HOST on stdout
#                             (exit 0), "started" on stderr when this call started it
#   docker-engine.sh stop     stop the private dockerd if it runs (never a system engine)
#   docker-engine.sh status   which engine answers (exit 3: none)
#   docker-engine.sh host     print the DOCKER_HOST of the engine that answers (exit 3: none)
#
# Environment: DOCKER_HOST (an engine to use; unix://$CHATSYS_DOCKER_DIR/docker.sock starts
# that private engine when it does not answer yet), CHATSYS_DOCKER_DIR (the private engine's
# home: data root, exec root, socket, pid file and log; default $CHATSYS_CACHE/docker),
# DOCKERD_BRIDGE (the private dockerd's default bridge, made here and removed by `stop`; a
# second engine beside another one needs a name of its own, since dockerd takes over an
# existing docker0 and `--bridge none` deletes it), DOCKERD_OPTIONS (more dockerd options,
# space-separated; such a second engine also takes "--iptables=false" and address pools of
# its own), DOCKERD_START_SECONDS (60). Starting the private engine needs root and Debian's
# docker.io.
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

engine_dir=${CHATSYS_DOCKER_DIR:-$CHATSYS_CACHE/docker}
private_socket=$engine_dir/docker.sock
private_host=unix://$private_socket
pid_file=$engine_dir/dockerd.pid
log_file=$engine_dir/dockerd.log
start_seconds=${DOCKERD_START_SECONDS:-60}
bridge=${DOCKERD_BRIDGE:-}

# answers HOST: true when a Docker engine answers at HOST (a DOCKER_HOST value).
answers() {
    DOCKER_HOST=$1 timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# The engine to use, in order: DOCKER_HOST, the system socket, our private one.
current_host() {
    if [[ -n ${DOCKER_HOST:-} ]]; then
        answers "$DOCKER_HOST" && echo "$DOCKER_HOST"
        return  # a DOCKER_HOST that does not answer is an error, not a reason to start ours
    fi
    local candidate
    for candidate in unix:///var/run/docker.sock "$private_host"; do
        if answers "$candidate"; then echo "$candidate"; return 0; fi
    done
    return 1
}

start() {
    local host
    if host=$(current_host); then
        echo "$host"
        return 0
    fi
    [[ -z ${DOCKER_HOST:-} || $DOCKER_HOST == "$private_host" ]] || die "no Docker engine answers at DOCKER_HOST=$DOCKER_HOST"
    command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed (scripts/setup.sh installs docker.io)"
    ((EUID == 0)) || die "no Docker engine answers; starting a private dockerd needs root"
    if pid_alive "$pid_file"; then
        die "dockerd (pid $(cat "$pid_file")) runs but does not answer at $private_host; see $log_file"
    fi
    mkdir -p "$engine_dir/data" "$engine_dir/run"
    rm -f "$pid_file" "$private_socket"
    log "starting a private dockerd (data in $engine_dir/data, log $log_file)"
    # Its own data root, exec root, socket and pid file: nothing shared with a system engine.
    local options
    read -ra options <<<"${DOCKERD_OPTIONS:-}"
    if [[ -n $bridge ]]; then
        ip link show "$bridge" >/dev/null 2>&1 || ip link add name "$bridge" type bridge
        options+=(--bridge "$bridge")
    fi
    setsid dockerd --data-root "$engine_dir/data" --exec-root "$engine_dir/run" \
        --pidfile "$pid_file" -H "$private_host" ${options[@]+"${options[@]}"} >>"$log_file" 2>&1 </dev/null &
    local deadline=$((SECONDS + start_seconds))
    until answers "$private_host"; do
        ((SECONDS < deadline)) || die "dockerd did not answer within $start_seconds s; see $log_file"
        sleep 0.3
    done
    log "started"
    echo "$private_host"
}

stop() {
    # dockerd stops its containers (their stop timeout) and its containerd on TERM.
    stop_pidfile "$pid_file" "the private dockerd" 30
    if [[ -n $bridge ]] && ip link show "$bridge" >/dev/null 2>&1; then
        ip link delete "$bridge"
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    host) current_host || exit 3 ;;
    status)
        if host=$(current_host); then
            echo "docker engine $(DOCKER_HOST=$host docker version --format '{{.Server.Version}}') at $host"
        else
            echo "no docker engine answers"; exit 3
        fi ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
