#!/bin/sh
# Prometheus's configuration for one deployment, written into DEST: CONFIG (prometheus.yml
# or compose.yml of this folder) with HAProxy's stats user in its haproxy job, rules.yml
# beside it, and DEST/haproxy-stats-password (mode 0600), the password that job sends with
# basic auth (empty: HAProxy asks for none). POSIX sh: the Prometheus container runs it too.
#
# usage: configure.sh CONFIG DEST [--host-targets]
# env:   HAPROXY_STATS_USER (stats), HAPROXY_STATS_PASSWORD (none), FERRETDB_METRICS_TARGET
#        (when set: host:port of FerretDB's debug listener, written to DEST/targets/ferretdb.json;
#        empty: no FerretDB to scrape)
# --host-targets: also every target of one host, as systemd runs it, into DEST/targets/ from
#        the settings of chatsys.env: LOGIN_SERVER, PROFILE_SERVER and CHAT_SERVER_1..10 (each
#        service's metrics on 127.0.0.1, its port + METRICS_PORT_OFFSET), HAPROXY_STATS_BIND
#        and HAPROXY_STATS_PORT, FERRETDB_METRICS_PORT, NODE_EXPORTER_PORT, PROMETHEUS_PORT.
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ] || { [ $# -eq 3 ] && [ "$3" != --host-targets ]; }; then
    sed -n '7,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
config=$1
dest=$2
host_targets=${3:+yes}
user=${HAPROXY_STATS_USER:-stats}
case $user in
    *[!A-Za-z0-9._-]*)
        echo "configure.sh: HAPROXY_STATS_USER may hold letters, digits and . _ - only (got '$user')" >&2
        exit 1 ;;
esac

mkdir -p "$dest/targets"
# Each file is replaced whole: Prometheus rereads them and must never see half of one.
(umask 077 && printf '%s' "${HAPROXY_STATS_PASSWORD:-}" > "$dest/haproxy-stats-password.tmp")
mv -f "$dest/haproxy-stats-password.tmp" "$dest/haproxy-stats-password"
sed "s/{username: stats,/{username: $user,/" "$config" > "$dest/prometheus.yml.tmp"
mv -f "$dest/prometheus.yml.tmp" "$dest/prometheus.yml"
cp "$(dirname "$config")/rules.yml" "$dest/rules.yml.tmp"
mv -f "$dest/rules.yml.tmp" "$dest/rules.yml"

# target_file NAME JSON: DEST/targets/NAME.json, replaced whole.
target_file() {
    printf '%s\n' "$2" > "$dest/targets/$1.json.tmp"
    mv -f "$dest/targets/$1.json.tmp" "$dest/targets/$1.json"
}

if [ -n "$host_targets" ]; then
    services=
    for entry in "login ${LOGIN_SERVER:-127.0.0.1:4101}" "profile ${PROFILE_SERVER:-127.0.0.1:4201}" \
            "chat ${CHAT_SERVER_1:-}" "chat ${CHAT_SERVER_2:-}" "chat ${CHAT_SERVER_3:-}" \
            "chat ${CHAT_SERVER_4:-}" "chat ${CHAT_SERVER_5:-}" "chat ${CHAT_SERVER_6:-}" \
            "chat ${CHAT_SERVER_7:-}" "chat ${CHAT_SERVER_8:-}" "chat ${CHAT_SERVER_9:-}" \
            "chat ${CHAT_SERVER_10:-}"; do
        # shellcheck disable=SC2086  # two words: the service and its host:port
        set -- $entry
        [ $# -eq 2 ] || continue
        port=${2##*:}
        services="$services${services:+, }{\"targets\": [\"127.0.0.1:$((port + ${METRICS_PORT_OFFSET:-5000}))\"], \"labels\": {\"service\": \"$1\", \"server\": \"$1@$port\"}}"
    done
    target_file services "[$services]"
    target_file haproxy "[{\"targets\": [\"${HAPROXY_STATS_BIND:-127.0.0.1}:${HAPROXY_STATS_PORT:-8404}\"]}]"
    target_file ferretdb "[{\"targets\": [\"127.0.0.1:${FERRETDB_METRICS_PORT:-8088}\"]}]"
    target_file node "[{\"targets\": [\"127.0.0.1:${NODE_EXPORTER_PORT:-9100}\"]}]"
    target_file prometheus "[{\"targets\": [\"127.0.0.1:${PROMETHEUS_PORT:-9090}\"]}]"
fi
if [ -n "${FERRETDB_METRICS_TARGET+set}" ]; then
    if [ -n "$FERRETDB_METRICS_TARGET" ]; then
        target_file ferretdb "[{\"targets\": [\"$FERRETDB_METRICS_TARGET\"]}]"
    else
        target_file ferretdb "[]"
    fi
fi
