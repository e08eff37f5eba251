#!/usr/bin/env bash
# Install whatever is still missing on a fresh Debian machine: system packages (as root),
# the virtualenv from the hash-locked Python packages, and the FerretDB binary. Safe to run again.
set -euo pipefail
usage() { echo "usage: $0 [--runtime-only | --fast-tests]   (env: VENV, PYTHON, CHATSYS_CACHE)"; }
source "$(dirname "$0")/lib/common.sh"

# The locks, not the human-edited requirements*.txt: every package pinned with its hashes.
requirements=$CHATSYS_ROOT/requirements-dev.lock
# --fast-tests: only what the fast test layer needs (`make test-fast`): the virtualenv and
# FerretDB, whose build needs patch; none of the process-level tests' tools.
fast_tests=no
case ${1:-} in
    --runtime-only) requirements=$CHATSYS_ROOT/requirements.lock ;;
    --fast-tests) fast_tests=yes ;;
    "") ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

# System packages, each only when its command is missing: HAProxy (the load balancer),
# wrk (benchmarks), curl, patch (FerretDB's build), Java and Maven (JMeter), Docker
# (docker.io: the engine and the CLI; docker-compose, Compose v1, where the Compose plugin
# is not packaged), debootstrap (the local stand-in images, scripts/docker-local-images.sh,
# and the boot test's virtual machine), for that machine QEMU, qemu-img, mkfs.ext4 and ssh,
# systemd-analyze, and Chromium for the web client's browser tests (driven by Playwright,
# which downloads no browser of its own) with npm, which installs axe-core for them (and
# eslint for `make lint`); Prometheus and its node exporter (`make run` starts them,
# docs/observability.md); podman, which runs the Kubernetes manifests here
# (scripts/kube-play.sh), with netavark and aardvark-dns for its networks and their names,
# and catatonit for its pods' infra containers, and PostgreSQL's server for FerretDB's
# postgresql backend (docs/postgresql.md; none of them a command on PATH). The tests
# require all of them; shellcheck is for `make lint`.
commands=(haproxy:haproxy wrk:wrk curl:curl patch:patch java:default-jdk-headless mvn:maven
          docker-compose:docker-compose docker:docker.io dockerd:docker.io debootstrap:debootstrap
          systemd-analyze:systemd qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
          mkfs.ext4:e2fsprogs ssh:openssh-client chromium:chromium npm:npm shellcheck:shellcheck
          prometheus:prometheus prometheus-node-exporter:prometheus-node-exporter podman:podman)
[[ $fast_tests == no ]] || commands=(patch:patch)
missing=()
for pair in "${commands[@]}"; do
    command -v "${pair%%:*}" >/dev/null || [[ " ${missing[*]} " == *" ${pair#*:} "* ]] || missing+=("${pair#*:}")
done
if [[ $fast_tests == no ]] && command -v dpkg-query >/dev/null; then
    for package in netavark aardvark-dns catatonit postgresql; do
        [[ $(dpkg-query -W -f '${Status}' "$package" 2>/dev/null) == "install ok installed" ]] || missing+=("$package")
    done
fi
if ((${#missing[@]})); then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        log "warning: please install ${missing[*]} (not root, or no apt-get)"
    fi
fi

# The virtualenv, refreshed only when the locks change.
stamp=$VENV/.installed-$(cat "$CHATSYS_ROOT"/requirements*.lock | sha256sum | cut -c1-16)-$(basename "$requirements")
if [[ ! -f $stamp ]]; then
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$requirements"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

"$CHATSYS_ROOT/scripts/ferretdb.sh" build

# npm packages, each folder's from its package-lock.json, again only when that lock changes
# (npm ci empties node_modules, stamp included): axe-core for the web client's
# accessibility tests (tests/), eslint for `make lint` (web/).
for folder in tests web; do
    npm_stamp=$CHATSYS_ROOT/$folder/node_modules/.installed-$(sha256sum <"$CHATSYS_ROOT/$folder/package-lock.json" | cut -c1-16)
    if [[ $requirements != */requirements.lock && $fast_tests == no && ! -f $npm_stamp ]] && command -v npm >/dev/null; then
        (cd "$CHATSYS_ROOT/$folder" && npm ci --ignore-scripts --no-audit --no-fund --silent)
        touch "$npm_stamp"
    fi
done
