#!/usr/bin/env bash
# Local stand-ins for the images a machine without registry access cannot pull, built from
# Debian's own packages: debootstrap makes a bookworm root file system on this host, with
# the host's mirror, and `docker import` turns it into an image. Each image is built only
# when it is missing or its recipe changed (a label records the recipe), so later runs, and
# fresh clones using the same engine, reuse them.
#
#   chatsys-local/python:3.11      for python:3.11-slim: Debian's Python 3.11 and a wheelhouse
#                                  of requirements.lock (pip installs offline from it)
#   chatsys-local/haproxy:2.6      for haproxy:2.8: Debian's HAProxy 2.6, run like the official
#   chatsys-local/ferretdb:VERSION for mongo:7: the embedded default, FerretDB on SQLite
#                                  (with its own healthcheck command, MONGO_HEALTHCHECK)
#   chatsys-local/prometheus:2.42  for prom/prometheus and prom/node-exporter: Debian's
#                                  (compose.prometheus.yaml)
#
# usage: docker-local-images.sh [build]   prints PYTHON_IMAGE=, HAPROXY_IMAGE=, MONGO_IMAGE=,
#                                         MONGO_HEALTHCHECK=, PROMETHEUS_IMAGE= and
#                                         NODE_EXPORTER_IMAGE= lines, the settings compose takes
#
# Needs root (debootstrap), a Docker engine (DOCKER_HOST or scripts/docker-engine.sh) and the
# project's virtualenv (pip download). Environment: DEBIAN_MIRROR (default: the bookworm
# mirror of /etc/apt/sources.list.d/ or /etc/apt/sources.list), DEBIAN_SUITE (bookworm),
# CHATSYS_CACHE (debootstrap's package cache goes to $CHATSYS_CACHE/debootstrap).
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

case ${1:-build} in
    build) ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

suite=${DEBIAN_SUITE:-bookworm}
recipes=$CHATSYS_ROOT/docker/local
export DOCKER_BUILDKIT=0  # the legacy builder: the docker CLI here may lack buildx

# The first plain Debian mirror (not the security one) the host's apt uses for $suite.
host_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -r $file ]] || continue
        # deb822 stanzas: URIs and Suites of each paragraph.
        awk -v suite="$suite" '
            /^URIs:/ { uris = $0; sub(/^URIs: */, "", uris) }
            /^Suites:/ { suites = " " $0 " " }
            /^$/ { if (index(suites, " " suite " ")) { split(uris, u, " "); print u[1]; exit } uris = suites = "" }
            END { if (index(suites, " " suite " ")) { split(uris, u, " "); print u[1] } }
        ' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $file ]] || continue
        awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }' "$file"
    done
}
mirror=${DEBIAN_MIRROR:-$(host_mirror | grep -v -- '-security' | head -n 1 || true)}
[[ -n $mirror ]] || die "no Debian $suite mirror in /etc/apt; set DEBIAN_MIRROR"

recipe_of() { docker image inspect --format '{{index .Config.Labels "chatsys.recipe"}}' "$1" 2>/dev/null || true; }
hash_of() { sha256sum | cut -c1-16; }
# forget OLD_ID: remove the image a tag pointed at before a rebuild, unless something uses it.
forget() { [[ -z $1 ]] || docker image rm "$1" >/dev/null 2>&1 || true; }

# rootfs TAG PACKAGES...: a debootstrap minbase root file system with PACKAGES, imported as TAG.
rootfs() {
    local tag=$1; shift
    local packages=${*:-}
    local recipe old work
    recipe=$(printf 'debootstrap minbase %s %s %s v1' "$suite" "$mirror" "$packages" | hash_of)
    [[ $(recipe_of "$tag") != "$recipe" ]] || return 0
    ((EUID == 0)) || die "building $tag needs root (debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/setup.sh installs it)"
    old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    work=$(mktemp -d)
    log "debootstrap $suite${packages:+ with $packages} from $mirror (once; about a minute)"
    mkdir -p "$CHATSYS_CACHE/debootstrap"
    if ! debootstrap --variant=minbase --cache-dir="$CHATSYS_CACHE/debootstrap" \
            ${packages:+--include="${packages// /,}"} "$suite" "$work/root" "$mirror" >"$work/log" 2>&1; then
        tail -n 20 "$work/log" >&2
        rm -rf "$work"
        die "debootstrap failed"
    fi
    # What a container never uses: package lists and caches, manuals, translations.
    rm -rf "$work/root"/var/lib/apt/lists/* "$work/root"/var/cache/apt/* "$work/root"/var/cache/debconf/*-old \
        "$work/root"/usr/share/man/* "$work/root"/usr/share/locale/* "$work/root"/usr/share/info/*
    tar -C "$work/root" --numeric-owner -c . | docker import \
        --change "LABEL chatsys.recipe=$recipe" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$tag" >/dev/null
    rm -rf "$work"
    [[ $old == "$(docker image inspect --format '{{.Id}}' "$tag")" ]] || forget "$old"
    log "imported $tag"
}

# recipe_for RECIPE_FILE ROOTFS CONTEXT_HASH: the recipe label of an image built from these.
recipe_for() { { cat "$1"; docker image inspect --format '{{.Id}}' "$2"; echo "$3"; } | hash_of; }

# build TAG RECIPE RECIPE_FILE ROOTFS CONTEXT_DIR: build RECIPE_FILE on ROOTFS as TAG.
build() {
    local tag=$1 recipe=$2 recipe_file=$3 base=$4 context=$5 old
    old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    log "building $tag"
    local output
    if ! output=$(docker build --quiet --build-arg "ROOTFS=$base" --label "chatsys.recipe=$recipe" \
            -f "$recipe_file" -t "$tag" "$context" 2>&1); then
        printf '%s\n' "$output" >&2
        die "building $tag failed"
    fi
    [[ $old == "$(docker image inspect --format '{{.Id}}' "$tag")" ]] || forget "$old"
}

python_image=chatsys-local/python:3.11
haproxy_image=chatsys-local/haproxy:2.6
ferretdb_image=chatsys-local/ferretdb:$FERRETDB_VERSION
prometheus_image=chatsys-local/prometheus:2.42

rootfs chatsys-local/bookworm:minbase
rootfs chatsys-local/bookworm:python python3 python3-venv python-is-python3
rootfs chatsys-local/bookworm:haproxy haproxy
rootfs chatsys-local/bookworm:prometheus prometheus prometheus-node-exporter wget

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# Python: the wheelhouse is downloaded again only when requirements.lock changes.
recipe=$(recipe_for "$recipes/python.Dockerfile" chatsys-local/bookworm:python \
    "$(hash_of < "$CHATSYS_ROOT/requirements.lock")")
if [[ $(recipe_of "$python_image") != "$recipe" ]]; then
    [[ -x $VENV/bin/pip ]] || die "no virtualenv at $VENV (scripts/setup.sh makes it)"
    log "downloading the wheels of requirements.lock for CPython 3.11 on $(uname -m)"
    download_wheels "$context/wheels" >&2
    build "$python_image" "$recipe" "$recipes/python.Dockerfile" chatsys-local/bookworm:python "$context"
    rm -rf "${context:?}"/*
fi

recipe=$(recipe_for "$recipes/haproxy.Dockerfile" chatsys-local/bookworm:haproxy none)
if [[ $(recipe_of "$haproxy_image") != "$recipe" ]]; then
    build "$haproxy_image" "$recipe" "$recipes/haproxy.Dockerfile" chatsys-local/bookworm:haproxy "$context"
fi

recipe=$(recipe_for "$recipes/prometheus.Dockerfile" chatsys-local/bookworm:prometheus none)
if [[ $(recipe_of "$prometheus_image") != "$recipe" ]]; then
    build "$prometheus_image" "$recipe" "$recipes/prometheus.Dockerfile" chatsys-local/bookworm:prometheus "$context"
fi

# FerretDB: the binary scripts/ferretdb.sh builds, wherever lib/common.sh says it is.
"$CHATSYS_ROOT/scripts/ferretdb.sh" build >&2
recipe=$(recipe_for "$recipes/ferretdb.Dockerfile" chatsys-local/bookworm:minbase "$(hash_of < "$FERRETDB_BIN")")
if [[ $(recipe_of "$ferretdb_image") != "$recipe" ]]; then
    cp "$FERRETDB_BIN" "$context/ferretdb"
    build "$ferretdb_image" "$recipe" "$recipes/ferretdb.Dockerfile" chatsys-local/bookworm:minbase "$context"
fi

echo "PYTHON_IMAGE=$python_image"
echo "HAPROXY_IMAGE=$haproxy_image"
echo "MONGO_IMAGE=$ferretdb_image"
echo "PROMETHEUS_IMAGE=$prometheus_image"
echo "NODE_EXPORTER_IMAGE=$prometheus_image"
# FerretDB has no mongosh: its readiness is on its debug listener (loopback in the container).
# The $ and the \r\n are for the container's bash and printf, so echo prints them as they are.
# shellcheck disable=SC2016,SC2028
echo 'MONGO_HEALTHCHECK=bash -c "exec 3<>/dev/tcp/127.0.0.1/8088 && printf '"'"'GET /debug/readyz HTTP/1.0\r\n\r\n'"'"' >&3 && head -n 1 <&3 | grep -q '"'"' 200 '"'"'"'
