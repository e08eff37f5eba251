#!/usr/bin/env bash
# The whole system in containers (compose.yaml), on whatever Docker engine this machine has:
#
#   docker-stack.sh up [COMPOSE_UP_ARGS...]   start an engine if none answers
#                                             (scripts/docker-engine.sh), build what is
#                                             missing, start every container, wait until
#                                             all are healthy, print the URLs
#   docker-stack.sh down [--volumes|-v] [--keep-engine]
#                                             remove the containers and the network (the
#                                             database volume stays unless --volumes); stop
#                                             the private engine if `up` started it
#   docker-stack.sh status                    the containers and their health
#   docker-stack.sh compose ARGS...           any compose command on the same files, e.g.
#                                             `compose up -d --scale chat=5`, `compose logs chat`
#
# Images (DOCKER_IMAGES): "official" uses python:3.11-slim, mongo:7 and haproxy:2.8 as
# compose.yaml says; "local" uses the stand-ins of scripts/docker-local-images.sh (FerretDB
# for the database); "auto" (default) takes the official ones
# when they are present or can be pulled, else the local ones.
#
# Prometheus and the node exporter come up too (compose.prometheus.yaml, Prometheus on
# 127.0.0.1:PROMETHEUS_PUBLISHED_PORT, default 9090) unless PROMETHEUS=off.
#
# Environment: COMPOSE_PROJECT_NAME (chatsys), PUBLISHED_ADDRESS (127.0.0.1) and the
# *_PUBLISHED_PORT variables of compose.yaml, DOCKER_COMPOSE_FILES (more compose files, space
# separated), DOCKER_UP_SECONDS (180: how long `up` waits for every container to be healthy),
# CHATSYS_VAR (the settings of a running stack are kept in $CHATSYS_VAR/docker/).
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-chatsys}
state_dir=$CHATSYS_VAR/docker
state_file=$state_dir/$COMPOSE_PROJECT_NAME.env
up_seconds=${DOCKER_UP_SECONDS:-180}
images=${DOCKER_IMAGES:-auto}
[[ $images =~ ^(auto|official|local)$ ]] || die "DOCKER_IMAGES is auto, official or local, not '$images'"

# compose ARGS...: Compose v2 (the docker CLI plugin) when present, else docker-compose v1.
compose() {
    local files=(-f "$CHATSYS_ROOT/compose.yaml") file
    [[ ${PROMETHEUS:-on} == off ]] || files+=(-f "$CHATSYS_ROOT/compose.prometheus.yaml")
    for file in ${DOCKER_COMPOSE_FILES:-}; do files+=(-f "$file"); done
    if docker compose version >/dev/null 2>&1; then
        docker compose --project-directory "$CHATSYS_ROOT" "${files[@]}" "$@"
    elif command -v docker-compose >/dev/null; then
        docker-compose --project-directory "$CHATSYS_ROOT" "${files[@]}" "$@"
    else
        die "neither 'docker compose' nor docker-compose is installed (scripts/setup.sh installs docker-compose)"
    fi
}

# The settings `up` chose, for the later commands of the same stack.
load_state() {
    if [[ -f $state_file ]]; then
        set -a
        # shellcheck disable=SC1090
        source "$state_file"
        set +a
    fi
    if [[ -z ${DOCKER_HOST:-} ]]; then
        DOCKER_HOST=$("$CHATSYS_ROOT/scripts/docker-engine.sh" host) || die "no Docker engine answers (docker-stack.sh up starts one)"
        export DOCKER_HOST
    fi
}

official_images_available() {
    local image
    local wanted=("${PYTHON_IMAGE:-python:3.11-slim}" "${MONGO_IMAGE:-mongo:7}" "${HAPROXY_IMAGE:-haproxy:2.8}")
    if [[ ${PROMETHEUS:-on} != off ]]; then
        wanted+=("${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}" "${NODE_EXPORTER_IMAGE:-prom/node-exporter:v1.8.2}")
    fi
    for image in "${wanted[@]}"; do
        docker image inspect "$image" >/dev/null 2>&1 && continue
        log "pulling $image"
        timeout 300 docker pull --quiet "$image" >/dev/null 2>&1 || { log "cannot pull $image"; return 1; }
    done
}

# containers_health: one "name status" line per container of the project that keeps running:
# not the migration's one-shot, which has exited 0 before `compose up` starts the services
# (compose.yaml: service_completed_successfully; `up` fails when it does not).
containers_health() {
    docker ps --all --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --format '{{.Label "com.docker.compose.service"}} {{.Names}} {{.Status}}' |
        awk '$1 != "migrate" { sub(/^[^ ]* /, ""); print }'
}

wait_healthy() {
    local deadline=$((SECONDS + up_seconds)) lines
    while true; do
        lines=$(containers_health)
        if [[ -n $lines ]] && ! grep -v '(healthy)' <<< "$lines" >/dev/null; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            log "not every container became healthy within $up_seconds s:"
            log "$lines"
            compose logs --tail 20 >&2 || true
            return 1
        fi
        sleep 1
    done
}

up() {
    mkdir -p "$state_dir"
    local engine_started=no host started_at
    local stats_address=${STATS_PUBLISHED_ADDRESS:-127.0.0.1}
    if [[ $stats_address != 127.* && -z ${HAPROXY_STATS_PASSWORD:-} ]]; then
        die "STATS_PUBLISHED_ADDRESS=$stats_address exposes the stats page; set HAPROXY_STATS_PASSWORD too"
    fi
    if ! host=$("$CHATSYS_ROOT/scripts/docker-engine.sh" host); then
        host=$("$CHATSYS_ROOT/scripts/docker-engine.sh" start)
        engine_started=yes
    fi
    export DOCKER_HOST=$host
    if [[ -f $state_file ]] && grep -qx 'CHATSYS_ENGINE_STARTED=yes' "$state_file"; then
        engine_started=yes  # an earlier `up` of this stack started it: `down` stops it
    fi
    if [[ $images == auto ]]; then
        if official_images_available; then images=official; else images=local; fi
    fi
    if [[ $images == local ]]; then
        log "using local stand-in images (scripts/docker-local-images.sh)"
        local line name
        while IFS= read -r line; do
            name=${line%%=*}
            # A value the caller set wins over the stand-in.
            [[ -n ${!name:-} ]] || export "${line?}"
        done < <("$CHATSYS_ROOT/scripts/docker-local-images.sh")
    fi
    export CHATSYS_DOCKER_IMAGES=$images
    # The FerretDB stand-in serves its metrics to Prometheus; another database image none.
    if [[ -z ${FERRETDB_METRICS_TARGET+set} && ${MONGO_IMAGE:-} == chatsys-local/ferretdb:* ]]; then
        export FERRETDB_METRICS_TARGET=mongo:8088
    fi
    {
        echo "DOCKER_HOST=$DOCKER_HOST"
        echo "CHATSYS_DOCKER_IMAGES=$images"
        echo "CHATSYS_ENGINE_STARTED=$engine_started"
        local name
        for name in PYTHON_IMAGE MONGO_IMAGE MONGO_HEALTHCHECK HAPROXY_IMAGE CHATSYS_IMAGE PUBLISHED_ADDRESS CHAT_PUBLISHED_PORT \
                    STATS_PUBLISHED_ADDRESS STATS_PUBLISHED_PORT LOGIN_PUBLISHED_PORT PROFILE_PUBLISHED_PORT DOCKER_COMPOSE_FILES \
                    PROMETHEUS PROMETHEUS_IMAGE NODE_EXPORTER_IMAGE PROMETHEUS_PUBLISHED_PORT FERRETDB_METRICS_TARGET; do
            [[ -z ${!name:-} ]] || printf '%s=%q\n' "$name" "${!name}"
        done
    } > "$state_file"
    started_at=$SECONDS
    compose up -d --build "$@" >&2
    wait_healthy
    local address=${PUBLISHED_ADDRESS:-127.0.0.1}
    log "all $(containers_health | wc -l) containers healthy $((SECONDS - started_at)) s after 'up' (images: $images, engine $DOCKER_HOST)"
    cat <<EOF
chat (HAProxy)   http://$address:${CHAT_PUBLISHED_PORT:-5000}
login            http://$address:${LOGIN_PUBLISHED_PORT:-4100}
profile          http://$address:${PROFILE_PUBLISHED_PORT:-4200}
HAProxy stats    http://$stats_address:${STATS_PUBLISHED_PORT:-8404}/stats  (Prometheus: /metrics)
Prometheus       $([[ ${PROMETHEUS:-on} == off ]] && echo "off (PROMETHEUS=off)" || echo "http://127.0.0.1:${PROMETHEUS_PUBLISHED_PORT:-9090}/graph")
stop with        make docker-down   (or scripts/docker-stack.sh down)
EOF
}

down() {
    local volumes=() keep_engine=no
    while (($#)); do
        case $1 in
            --volumes|-v) volumes=(--volumes); shift ;;
            --keep-engine) keep_engine=yes; shift ;;
            *) usage >&2; exit 2 ;;
        esac
    done
    if [[ ! -f $state_file ]] && ! "$CHATSYS_ROOT/scripts/docker-engine.sh" host >/dev/null; then
        log "no stack and no engine: nothing to do"
        return 0
    fi
    load_state
    compose down --remove-orphans ${volumes[@]+"${volumes[@]}"} >&2
    if [[ ${CHATSYS_ENGINE_STARTED:-no} == yes && $keep_engine == no ]]; then
        "$CHATSYS_ROOT/scripts/docker-engine.sh" stop
    fi
    rm -f "$state_file"
}

command=${1:-}
(($#)) && shift
case $command in
    up) up "$@" ;;
    down) down "$@" ;;
    status) load_state; containers_health ;;
    compose) load_state; compose "$@" ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
