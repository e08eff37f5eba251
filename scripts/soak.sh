#!/usr/bin/env bash
# Soak benchmark: constant-rate posts and reads through HAProxy on a stack of its own.
# usage: scripts/soak.sh (--rate N | --peak N) [--minutes 10] [--clients 16] [--out DIR]
#        (python -m tools.soak --help lists every option)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [[ $# -eq 0 ]]; then
    log "usage: $0 (--rate REQUESTS_PER_SECOND | --peak REQUESTS_PER_SECOND) [--minutes 10] [more: --help]"
    exit 2
fi
# --help needs nothing set up.
[[ ${1:-} == -h || ${1:-} == --help ]] || "$CHATSYS_ROOT/scripts/setup.sh" >&2
exec env PYTHONPATH="$CHATSYS_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.soak "$@"
