#!/usr/bin/env bash
# usage: scripts/test.sh [--fast] [PYTEST-ARGUMENT...]
# Set up what is missing, then run the whole test suite (extra arguments go to pytest).
# --fast: the fast layer alone (marker `fast`), after only the set-up it needs
# (scripts/setup.sh --fast-tests: the virtualenv and FerretDB).
set -euo pipefail
usage() { echo "usage: $0 [--fast] [PYTEST_ARGS...]   (--fast: the fast layer alone; env: VENV; pytest's own options: $0 -- --help)"; }
case ${1:-} in
    -h|--help) usage; exit 0 ;;
    --) shift ;;
esac
source "$(dirname "$0")/lib/common.sh"
setup_options=()
if [[ ${1:-} == --fast ]]; then
    shift
    setup_options=(--fast-tests)
    set -- -m fast "$@"
fi
"$CHATSYS_ROOT/scripts/setup.sh" "${setup_options[@]}"
cd "$CHATSYS_ROOT"
exec "$VENV/bin/pytest" "$@"
