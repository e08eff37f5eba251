#!/usr/bin/env bash
# Set up what is missing, then run the whole test suite (extra arguments go to pytest).
set -euo pipefail
usage() { echo "usage: $0 [PYTEST_ARGS...]   (env: VENV; pytest's own options: $0 -- --help)"; }
case ${1:-} in
    -h|--help) usage; exit 0 ;;
    --) shift ;;
esac
source "$(dirname "$0")/lib.sh"
"$CHATSYS_ROOT/scripts/setup.sh"
cd "$CHATSYS_ROOT"
exec "$VENV/bin/pytest" "$@"
