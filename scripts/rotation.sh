#!/usr/bin/env bash
# Set how many chat servers HAProxy sends requests to (the first N; the rest in maintenance),
# for short requests and long polls alike.
set -euo pipefail
usage() { echo "usage: $0 N | --show   (env: HAPROXY_RUNTIME_SOCKET)"; }
case ${1:-} in
    -h|--help) usage; exit 0 ;;
esac
source "$(dirname "$0")/lib/common.sh"
[[ -S $HAPROXY_RUNTIME_SOCKET ]] || die "no HAProxy runtime socket at $HAPROXY_RUNTIME_SOCKET"

servers=$(haproxy_cmd "show servers state chat_servers" | awk 'NR > 2 && $4 != "" {print $4}')
[[ -n $servers ]] || die "HAProxy lists no chat servers"
if [[ ${1:-} == --show ]]; then
    haproxy_cmd "show stat" | haproxy_rows chat_servers svname status | awk -F'\t' '$1 != "BACKEND" {printf "%-8s %s\n", $1, $2}'
    exit 0
fi
[[ ${1:-} =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
wanted=$1
count=0
for server in $servers; do
    count=$((count + 1))
    action=disable
    ((count > wanted)) || action=enable
    for backend in chat_servers chat_waits; do
        haproxy_cmd "$action server $backend/$server" >/dev/null
    done
done
((wanted <= count)) || log "only $count chat servers are configured"
echo "chat servers in rotation: $((wanted < count ? wanted : count)) of $count"
