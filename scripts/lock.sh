#!/usr/bin/env bash
# Write the lock files from the pinned inputs: requirements.lock (runtime) from
# requirements.txt and requirements-dev.lock (dev and runtime) from requirements-dev.txt,
# every transitive dependency pinned with the hashes of all its files on the index (the
# wheels of every platform and the sdist), so that the same lock serves set-up, the
# Docker images and the VM's manylinux wheelhouses. Run it after editing an input.
#
# usage: lock.sh [--check]   --check: fail when a lock is not what the inputs give
#
# Needs the uv that requirements-dev.txt pins (in $VENV after scripts/setup.sh) and the
# package index. Resolves for CPython 3.11 on Linux, what Debian 12 and the images run.
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

check=false
case ${1:-} in
    --check) check=true ;;
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

uv=${UV:-$VENV/bin/uv}
[[ -x $uv ]] || uv=$(command -v uv) || die "no uv (scripts/setup.sh installs it into $VENV)"

# compile INPUT LOCK [CONSTRAINTS]: resolve INPUT into LOCK; the dev lock is constrained by
# the runtime lock, so both hold the same version of every runtime package.
compile() {
    local input=$1 lock=$2 out
    shift 2
    out=$(mktemp)
    # --upgrade: resolve from the pins alone, not from what the old lock happened to hold.
    (cd "$CHATSYS_ROOT" && "$uv" pip compile --quiet --upgrade --generate-hashes --python-version 3.11 \
        --python-platform linux --custom-compile-command "scripts/lock.sh" "$@" \
        --output-file "$out" "$input")
    if $check; then
        if ! diff -u "$CHATSYS_ROOT/$lock" "$out" >&2; then
            rm -f "$out"
            die "$lock is out of date: run scripts/lock.sh"
        fi
        rm -f "$out"
    else
        mv "$out" "$CHATSYS_ROOT/$lock"
        chmod 0644 "$CHATSYS_ROOT/$lock"
        log "wrote $lock"
    fi
}

compile requirements.txt requirements.lock
compile requirements-dev.txt requirements-dev.lock --constraints requirements.lock
