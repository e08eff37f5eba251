#!/usr/bin/env bash
# Run the contract tests and the OpenAPI fuzzing against somebody's deployment: their
# login and profile services, and their chat entry point when given. Nothing is started
# here; tests that need to start or kill processes are left out (see docs/conformance.md).
set -euo pipefail
usage() {
    echo "usage: $0 --login URL --profile URL [--chat URL] [--v1] [-- PYTEST_ARGS...]   (env: VENV)"
    echo "  --v1   contract v1 only: leave out the v1.1 long-poll tests (tests/contract/v1_1/)"
}
source "$(dirname "$0")/lib/common.sh"

login_url="" profile_url="" chat_url="" contract=1.1
pytest_args=()
while (($#)); do
    case $1 in
        --login) login_url=${2:?--login needs a URL}; shift 2 ;;
        --profile) profile_url=${2:?--profile needs a URL}; shift 2 ;;
        --chat) chat_url=${2:?--chat needs a URL}; shift 2 ;;
        --v1) contract=1; shift ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ -n $login_url && -n $profile_url ]] || { usage >&2; exit 2; }

# check_service NAME URL: the URL is http(s) and its /health names the expected service.
check_service() {
    local name=$1 url=$2 instance
    [[ $url =~ ^https?://[^/]+ ]] || die "--$name must be an http:// or https:// URL, got '$url'"
    instance=$(curl -fsS --max-time 5 -D - -o /dev/null "$url/health" 2>/dev/null |
        tr -d '\r' | awk -F': *' 'tolower($1) == "x-instance" {print $2}') ||
        die "$name at $url does not answer GET /health with 200"
    [[ $instance == "$name@"* ]] || log "warning: $name at $url answers with X-Instance '$instance'"
    log "$name: $url (X-Instance $instance)"
}
login_url=${login_url%/} profile_url=${profile_url%/} chat_url=${chat_url%/}
check_service login "$login_url"
check_service profile "$profile_url"
if [[ -n $chat_url ]]; then
    check_service chat "$chat_url"
else
    log "chat: no URL given; the chat tests are left out"
fi

# The project's virtualenv with pytest and schemathesis; setup.sh builds it when missing.
if ! "$VENV/bin/python" -c 'import pytest, schemathesis, yaml' 2>/dev/null; then
    "$CHATSYS_ROOT/scripts/setup.sh"
fi

cd "$CHATSYS_ROOT"
shopt -s nullglob
# The contract layer, by folder: tests/contract; its v1_1 folder holds the v1.1 additions.
suites=(tests/contract)
[[ $contract != 1 ]] || suites+=(--ignore=tests/contract/v1_1)
export CHATSYS_LOGIN_URL=$login_url CHATSYS_PROFILE_URL=$profile_url CHATSYS_CHAT_URL=$chat_url
exec "$VENV/bin/pytest" "${suites[@]}" "${pytest_args[@]}"
