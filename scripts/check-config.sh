#!/usr/bin/env bash
# Offline checks of the operations files, for `make lint`; starts nothing, binds nothing.
#
#   haproxy      `haproxy -c` of conf/haproxy/haproxy.cfg, in zero-warning mode, three times:
#                with the defaults, with every `.if` branch taken
#                (Docker's DNS-found chat servers, the battle profile, a stats password,
#                trusted proxies, a per-address rate, a user to drop to; addresses stand in
#                for compose's service names, which resolve only inside compose), and with
#                all ten chat server lines of `scripts/start.sh --chat 10`
#   systemd      `systemd-analyze verify` of conf/systemd's units laid out as
#                scripts/install-systemd.sh lays them (@PREFIX@ written in, the sandbox
#                drop-in beside each service, the drop-ins of Debian's haproxy.service,
#                prometheus.service and prometheus-node-exporter.service with those units
#                when they are installed), a chat@ instance included: unknown or
#                misspelt directives, bad values and specifiers, missing dependencies, and
#                an ExecStart= that is no executable file. The prefix holds stand-ins for
#                gunicorn, Python and FerretDB (tests/deploy/test_systemd.py runs the real ones).
#
# usage: check-config.sh [haproxy|systemd ...]   (default: both; exit 1 when one fails)
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
root=$(cd "$(dirname "$0")/.." && pwd)
checks=()
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        haproxy|systemd) checks+=("$arg") ;;
        *) usage >&2; exit 2 ;;
    esac
done
((${#checks[@]})) || checks=(haproxy systemd)

check_haproxy() {
    local config=$root/conf/haproxy/haproxy.cfg output
    # Its findings are printed only when it fails (-q would hide them too).
    output=$(haproxy -c -dW -f "$config" 2>&1) || { printf 'haproxy -c, defaults:\n%s\n' "$output" >&2; return 1; }
    output=$(CHAT_DNS_NAME=chat LOGIN_SERVER=127.0.0.1:4100 PROFILE_SERVER=127.0.0.1:4200 CHATSYS_PROFILE=battle \
        HAPROXY_STATS_PASSWORD=check HAPROXY_TRUSTED_PROXIES="10.0.0.0/8 127.0.0.1" HAPROXY_RATE_LIMIT=100 \
        HAPROXY_USER=nobody haproxy -c -dW -f "$config" 2>&1) ||
        { printf 'haproxy -c, every .if branch:\n%s\n' "$output" >&2; return 1; }
    # Every chat server line taken: CHAT_SERVER_1..10 (scripts/start.sh --chat 10).
    output=$(for i in $(seq 10); do export "CHAT_SERVER_$i=127.0.0.1:$((3999 + i))"; done
        haproxy -c -dW -f "$config" 2>&1) ||
        { printf 'haproxy -c, ten chat servers:\n%s\n' "$output" >&2; return 1; }
}

check_systemd() {
    local scratch prefix units unit output
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' RETURN
    prefix=$scratch/opt/chatsys units=$scratch/units
    mkdir -p "$prefix/.venv/bin" "$prefix/bin" "$units"
    for stand_in in "$prefix/.venv/bin/gunicorn" "$prefix/.venv/bin/python" "$prefix/bin/ferretdb"; do
        printf '#!/bin/sh\n' >"$stand_in"
        chmod +x "$stand_in"
    done
    for unit in chatsys.target login.service profile.service chat@.service chatsys-ferretdb.service \
        chatsys-migrate.service; do
        sed "s|@PREFIX@|$prefix|g" "$root/conf/systemd/$unit" >"$units/$unit"
        if [[ $unit == *.service ]]; then
            mkdir -p "$units/$unit.d"
            cp "$root/conf/systemd/chatsys-sandbox.conf" "$units/$unit.d/"
        fi
    done
    local debian_units=()
    for unit in haproxy.service prometheus.service prometheus-node-exporter.service; do
        mkdir -p "$units/$unit.d"
        sed "s|@PREFIX@|$prefix|g" "$root/conf/systemd/$unit.d/chatsys.conf" >"$units/$unit.d/chatsys.conf"
        [[ ! -f /lib/systemd/system/$unit ]] || debian_units+=("/lib/systemd/system/$unit")
    done
    # verify exits 0 on an unknown directive (it only prints it), so any output fails too.
    if ! output=$(cd "$units" && systemd-analyze verify --man=no chatsys.target login.service profile.service \
        chatsys-ferretdb.service chatsys-migrate.service chat@.service:chat@4000.service ${debian_units[@]+"${debian_units[@]}"} 2>&1) ||
        [[ -n $output ]]; then
        echo "systemd-analyze verify, conf/systemd (as installed under $prefix):" >&2
        echo "$output" >&2
        return 1
    fi
}

status=0
for check in "${checks[@]}"; do
    case $check in
        haproxy) check_haproxy || status=1 ;;
        systemd) check_systemd || status=1 ;;
    esac
done
exit $status
