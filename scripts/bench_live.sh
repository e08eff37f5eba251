#!/usr/bin/env bash
# Live delivery benchmark: long polls against 1-second polls (see python -m tools.bench_live --help).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
# --help needs nothing set up.
[[ ${1:-} == -h || ${1:-} == --help ]] || "$CHATSYS_ROOT/scripts/setup.sh" >&2
exec env PYTHONPATH="$CHATSYS_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.bench_live "$@"
