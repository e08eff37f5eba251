#!/usr/bin/env bash
# Set up what is missing, then run the whole test suite (extra arguments go to pytest).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
"$CHATSYS_ROOT/scripts/setup.sh"
cd "$CHATSYS_ROOT"
exec "$VENV/bin/pytest" "$@"
