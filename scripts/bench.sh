#!/usr/bin/env bash
# Side-by-side wrk benchmarks of the services (see scripts/bench.py --help).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# --help needs nothing set up.
[[ ${1:-} == -h || ${1:-} == --help ]] || "$CHATSYS_ROOT/scripts/setup.sh" >&2
exec "$VENV/bin/python" "$CHATSYS_ROOT/scripts/bench.py" "$@"
