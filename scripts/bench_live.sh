#!/usr/bin/env bash
# Live delivery benchmark: long polls against 1-second polls (see scripts/bench_live.py --help).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# --help needs nothing set up.
[[ ${1:-} == -h || ${1:-} == --help ]] || "$CHATSYS_ROOT/scripts/setup.sh" >&2
exec "$VENV/bin/python" "$CHATSYS_ROOT/scripts/bench_live.py" "$@"
