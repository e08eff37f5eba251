#!/bin/sh
# Prometheus's configuration for one deployment, written into DEST: CONFIG (prometheus.yml
# or compose.yml of this folder) with HAProxy's stats user in its haproxy job, rules.yml
# beside it, and DEST/haproxy-stats-password (mode 0600), the password that job sends with
# basic auth (empty: HAProxy asks for none). POSIX sh: the Prometheus container runs it too.
#
# usage: configure.sh CONFIG DEST
# env:   HAPROXY_STATS_USER (stats), HAPROXY_STATS_PASSWORD (none), FERRETDB_METRICS_TARGET
#        (when set: host:port of FerretDB's debug listener, written to DEST/targets/ferretdb.json;
#        empty: no FerretDB to scrape)
set -eu
if [ $# -ne 2 ]; then
    sed -n '9,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
config=$1
dest=$2
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
if [ -n "${FERRETDB_METRICS_TARGET+set}" ]; then
    if [ -n "$FERRETDB_METRICS_TARGET" ]; then
        printf '[{"targets": ["%s"]}]\n' "$FERRETDB_METRICS_TARGET" > "$dest/targets/ferretdb.json.tmp"
    else
        echo '[]' > "$dest/targets/ferretdb.json.tmp"
    fi
    mv -f "$dest/targets/ferretdb.json.tmp" "$dest/targets/ferretdb.json"
fi
