#!/usr/bin/env bash
# Stop everything start.sh started (Prometheus, the node exporter, HAProxy, chat, profile,
# login, the embedded database).
set -euo pipefail
usage() { echo "usage: $0 [--keep-db]"; }
source "$(dirname "$0")/lib/common.sh"
keep_db=no
case ${1:-} in
    --keep-db) keep_db=yes ;;
    "") ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
stop_pidfile "$CHATSYS_VAR/run/prometheus.pid" Prometheus
stop_pidfile "$CHATSYS_VAR/run/node-exporter.pid" "node exporter"
stop_pidfile "$CHATSYS_VAR/run/haproxy.pid" HAProxy
shopt -s nullglob
for pid_file in "$CHATSYS_VAR"/run/chat-*.pid "$CHATSYS_VAR"/run/profile-*.pid "$CHATSYS_VAR"/run/login-*.pid; do
    name=$(basename "$pid_file" .pid)
    stop_pidfile "$pid_file" "${name/-/@}"
done
[[ $keep_db == yes ]] || "$CHATSYS_ROOT/scripts/ferretdb.sh" stop
