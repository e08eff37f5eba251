#!/usr/bin/env bash
# Side-by-side wrk benchmarks of the services (see python -m tools.bench --help).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
# --help needs nothing set up.
[[ ${1:-} == -h || ${1:-} == --help ]] || "$CHATSYS_ROOT/scripts/setup.sh" >&2
exec env PYTHONPATH="$CHATSYS_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.bench "$@"
