#!/usr/bin/env bash
# Each process, its port, its /ready, and HAProxy's view of each chat server.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
shopt -s nullglob
printf '%-14s %-8s %-6s %s\n' PROCESS PID PORT READY
for pid_file in "$CHATSYS_VAR"/run/login-*.pid "$CHATSYS_VAR"/run/profile-*.pid "$CHATSYS_VAR"/run/chat-*.pid; do
    name=$(basename "$pid_file" .pid); port=${name##*-}
    if pid_alive "$pid_file"; then
        ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/ready")
        printf '%-14s %-8s %-6s %s\n' "${name/-/@}" "$(cat "$pid_file")" "$port" "$ready"
    else
        printf '%-14s %-8s %-6s %s\n' "${name/-/@}" - "$port" "not running"
    fi
done
"$CHATSYS_ROOT/scripts/ferretdb.sh" status 2>/dev/null || true
if pid_alive "$CHATSYS_VAR/run/haproxy.pid"; then
    echo "haproxy running pid $(cat "$CHATSYS_VAR/run/haproxy.pid") port $HAPROXY_PORT"
    haproxy_cmd "show stat" | haproxy_rows chat_servers svname status scur stot |
        awk -F'\t' '{printf "  %-12s %-10s sessions=%s total=%s\n", $1, $2, $3, $4}'
else
    echo "haproxy stopped"
fi
