#!/usr/bin/env bash
# Install chatsys as systemd services that come back after every reboot: the release under a
# prefix with its virtualenv and FerretDB, the units, /etc/chatsys, and HAProxy's drop-in.
# With --root DIR everything is staged below DIR and the running system is left alone.
set -euo pipefail
usage() {
    echo "usage: $0 [--prefix DIR] [--root DIR] [--python PATH] [--uninstall [--purge]]"
    echo "  --prefix DIR   where the release goes (default /opt/chatsys)"
    echo "  --root DIR     stage into DIR (DIR/opt/chatsys, DIR/etc/...): no user, no systemctl on the host"
    echo "  --python PATH  Python for the virtualenv (default /usr/bin/python3; must not live under /root or /home)"
    echo "  --uninstall    remove what the install put in place; keeps /etc/chatsys/chatsys.env and"
    echo "                 /var/lib/chatsys (the data) unless --purge is given too"
    echo "env: CHAT_PORTS (the chat servers, one chat@PORT each; default: the kept chatsys.env's, else 4000 4001 4002)"
}
# Told, or not: without it, a later install keeps the chat servers the settings file names.
chat_ports_given=${CHAT_PORTS:-}
source "$(dirname "$0")/lib/common.sh"
umask 022

prefix=/opt/chatsys
root=
venv_python=
action=install
purge=false
while (($#)); do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --python) venv_python=${2:?--python needs a path}; shift 2 ;;
        --uninstall) action=uninstall; shift ;;
        --purge) purge=true; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

# The prefix is written into unit files: an absolute path systemd and sed take as it is.
[[ $prefix =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$ && $prefix != *//* && $prefix != */../* ]] ||
    die "--prefix must be an absolute path of letters, digits and . _ - / (got '$prefix')"
if [[ -z $venv_python ]]; then
    if [[ -x /usr/bin/python3 ]]; then venv_python=/usr/bin/python3; else venv_python=python3; fi
fi

staging=false
if [[ -n $root ]]; then
    staging=true
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
    [[ $root != / ]] || die "--root / is the live system; leave --root out instead"
else
    ((EUID == 0)) || die "run as root (sudo $0), or stage with --root DIR"
    [[ -d /run/systemd/system ]] || die "systemd is not running as init here; stage with --root DIR instead"
fi

dest=$root$prefix
etc_dir=$root/etc/chatsys
env_file=$etc_dir/chatsys.env
unit_dir=$root/etc/systemd/system
manifest=$dest/.chatsys-release-files
units=(chatsys.target chatsys-ferretdb.service chatsys-migrate.service login.service profile.service chat@.service)
# The services that share conf/systemd/chatsys-sandbox.conf, installed as a drop-in of each.
sandboxed=(chatsys-ferretdb.service chatsys-migrate.service login.service profile.service chat@.service)
service_user=chatsys
# Debian's units the install configures with a drop-in chatsys.conf each: HAProxy, and
# Prometheus and its node exporter (conf/systemd/<unit>.d/chatsys.conf).
dropin_units=(haproxy.service prometheus.service prometheus-node-exporter.service)

[[ $(realpath -m "$dest") != "$(realpath -m "$CHATSYS_ROOT")" ]] ||
    die "the prefix $dest is this checkout itself; choose another --prefix"

# What runs, and so what a release holds (docs/architecture.md, Layout): the services and
# their kit, the clients, the settings, the operator's commands, the runtime lock and the
# units' documentation. Tests, tools/, patches/, jmeter/ and the rest of docs/ stay behind.
shipped=(service_kit/ login_service/ profile_service/ chat_service/ chat_client/ web/ conf/ scripts/
    requirements.lock docs/systemd.md)

# is_shipped FILE: true when FILE, relative to the checkout, belongs to a release.
is_shipped() {
    local path
    for path in "${shipped[@]}"; do
        if [[ $1 == "$path" || ($path == */ && $1 == "$path"*) ]]; then return 0; fi
    done
    return 1
}

# release_files: the release's files, NUL-separated, relative to the checkout: the shipped
# ones git tracks plus new ones it does not ignore (so never .venv, var/, results/ or .git).
release_files() {
    local listing
    if listing=$(git -c safe.directory="$CHATSYS_ROOT" -C "$CHATSYS_ROOT" \
            ls-files -z --cached --others --exclude-standard 2>/dev/null | tr '\0' '\n'); then
        :
    else
        listing=$(cd "$CHATSYS_ROOT" && find . \( -path ./.git -o -path ./.venv -o -path ./var \
            -o -path ./results -o -name __pycache__ -o -name .pytest_cache -o -name .hypothesis \) -prune \
            -o -type f -print | sed 's|^\./||')
    fi
    local file
    while IFS= read -r file; do
        # Deleted but still tracked files are gone; links and odd names are not release files.
        if [[ -n $file && $file != /* && $file != *..* && -f $CHATSYS_ROOT/$file && ! -L $CHATSYS_ROOT/$file ]] && is_shipped "$file"; then
            printf '%s\0' "$file"
        fi
    done <<< "$listing"
}

# export_env_file FILE: export the KEY=VALUE lines of a systemd EnvironmentFile (no shell evaluation).
export_env_file() {
    local line key value
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
        export "$key=$value"
    done < "$1"
}

# remove_empty_dirs BASE: remove BASE's subfolders named in the manifest once they are empty.
remove_empty_dirs() {
    local file dir
    while IFS= read -r -d '' file; do
        dir=$(dirname "$file")
        while [[ $dir != . ]]; do printf '%s\0' "$dir"; dir=$(dirname "$dir"); done
    done < "$manifest" | sort -zur | while IFS= read -r -d '' dir; do
        rm -rf -- "${1:?}/$dir/__pycache__"
        rmdir -- "$1/$dir" 2>/dev/null || true
    done
}

install_release() {
    local list=$manifest.new
    mkdir -p "$dest"
    release_files > "$list"
    [[ -s $list ]] || die "found no release files in $CHATSYS_ROOT"
    log "copying the release to $dest"
    tar -C "$CHATSYS_ROOT" --null --no-recursion -T "$list" -cf - |
        tar -C "$dest" --no-same-owner --no-same-permissions -xf -
    if [[ -f $manifest ]]; then
        # Files an earlier release had and this one has not.
        local stale
        while IFS= read -r -d '' stale; do
            if [[ $stale != /* && $stale != *..* ]]; then rm -f -- "$dest/$stale"; fi
        done < <(comm -z -23 <(sort -z "$manifest") <(sort -z "$list"))
    fi
    chmod 0644 "$list"
    mv -f "$list" "$manifest"
}

install_virtualenv() {
    local venv=$dest/.venv base
    base=$("$venv_python" -c 'import os, sys; print(os.path.realpath(sys.executable))') ||
        die "cannot run $venv_python"
    case $base in
        /root/*|/home/*|/run/user/*)
            # ProtectHome= hides these folders from the services: the venv's python would be missing.
            if $staging; then
                log "warning: $base lives in a home folder, which the units hide (ProtectHome=); fine for staging only"
            else
                die "$base lives in a home folder, which the units hide (ProtectHome=); pass --python /usr/bin/python3"
            fi ;;
    esac
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
        log "creating the virtualenv $venv with $base"
        "$venv_python" -m venv --clear "$venv"
    fi
    log "installing requirements.lock into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$dest/requirements.lock"
    # ProtectSystem=strict keeps the services from writing bytecode, so write it now.
    local package
    for package in "$dest"/*/__init__.py; do
        "$venv/bin/python" -m compileall -q "$(dirname "$package")" >/dev/null
    done
    "$venv/bin/gunicorn" --version >/dev/null || die "gunicorn does not run from $venv"
}

install_ferretdb() {
    "$CHATSYS_ROOT/scripts/ferretdb.sh" build
    if ! cmp -s "$FERRETDB_BIN" "$dest/bin/ferretdb"; then
        log "installing FerretDB $FERRETDB_VERSION as $dest/bin/ferretdb"
        install -D -m 0755 "$FERRETDB_BIN" "$dest/bin/ferretdb"
    fi
}

ensure_user() {
    $staging && return 0
    getent group "$service_user" >/dev/null || groupadd --system "$service_user"
    if ! getent passwd "$service_user" >/dev/null; then
        log "creating the system user $service_user"
        useradd --system --gid "$service_user" --home-dir /var/lib/chatsys --no-create-home \
            --shell /usr/sbin/nologin --comment "chatsys services" "$service_user"
    fi
}

# choose_chat_ports: chat_ports, the chat servers' ports: CHAT_PORTS as given, else the
# CHAT_PORTS line of the kept settings file (an earlier install's), else common.sh's default.
choose_chat_ports() {
    local kept
    if [[ -z $chat_ports_given && -f $env_file ]]; then
        kept=$(grep -E '^CHAT_PORTS=' "$env_file" | tail -n 1 || true)
        kept=${kept#CHAT_PORTS=}
        kept=${kept//[\"\']/}
        [[ -z $kept ]] || CHAT_PORTS=$kept
    fi
    read -r -a chat_ports <<< "$CHAT_PORTS"
    ((${#chat_ports[@]} >= 1 && ${#chat_ports[@]} <= MAX_CHAT_SERVERS)) ||
        die "CHAT_PORTS must name 1 to $MAX_CHAT_SERVERS ports (conf/haproxy/haproxy.cfg has that many server lines), got '$CHAT_PORTS'"
    local port seen=" "
    for port in "${chat_ports[@]}"; do
        if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); then die "CHAT_PORTS: '$port' is not a port"; fi
        [[ $seen != *" $port "* ]] || die "CHAT_PORTS names $port twice"
        seen+="$port "
    done
}

# write_chat_servers: CHAT_PORTS and HAProxy's CHAT_SERVER_1..N in the settings file, one
# server line per chat port, in place of the lines there were; the rest of it is kept.
write_chat_servers() {
    local block="CHAT_PORTS=${chat_ports[*]}" i new
    for i in "${!chat_ports[@]}"; do block+=$'\n'"CHAT_SERVER_$((i + 1))=127.0.0.1:${chat_ports[i]}"; done
    new=$(mktemp "$etc_dir/.chatsys.env.XXXXXX")
    BLOCK=$block awk '
        /^(CHAT_PORTS|CHAT_SERVER_[0-9]+)=/ { if (!done) print ENVIRON["BLOCK"]; done = 1; next }
        { print }
        END { if (!done) print ENVIRON["BLOCK"] }' "$env_file" > "$new"
    if cmp -s "$new" "$env_file"; then
        rm -f "$new"
        return 0
    fi
    chmod --reference="$env_file" "$new"
    chown --reference="$env_file" "$new"
    mv -f "$new" "$env_file"
    log "wrote the chat servers ${chat_ports[*]} into $env_file (CHAT_PORTS, CHAT_SERVER_1..${#chat_ports[@]})"
}

install_config() {
    install -d -m 0755 "$etc_dir"
    if [[ -e $env_file ]]; then
        log "kept $env_file (never overwritten but for its chat servers; $dest/conf/systemd/chatsys.env lists every setting)"
    elif $staging; then
        install -m 0640 "$dest/conf/systemd/chatsys.env" "$env_file"
    else
        install -m 0640 -o root -g "$service_user" "$dest/conf/systemd/chatsys.env" "$env_file"
    fi
    write_chat_servers
    # The config and the web client's loader, which it names beside itself (lua-load web.lua).
    install -m 0644 "$dest/conf/haproxy/haproxy.cfg" "$etc_dir/haproxy.cfg"
    install -m 0644 "$dest/conf/haproxy/web.lua" "$etc_dir/web.lua"
    if command -v haproxy >/dev/null; then
        # As HAProxy's drop-in sets it (the settings file may override it, as under systemd),
        # but where the release lies now, staged or not.
        (export HAPROXY_WEB_ROOT=$dest/web && export_env_file "$env_file" && haproxy -c -q -f "$etc_dir/haproxy.cfg") ||
            die "HAProxy rejects $etc_dir/haproxy.cfg with the settings of $env_file"
    else
        log "warning: haproxy is not installed (apt-get install haproxy); the chat servers answer directly"
    fi
}

install_units() {
    install -d -m 0755 "$unit_dir"
    local unit
    for unit in "${units[@]}"; do
        sed "s|@PREFIX@|$prefix|g" "$dest/conf/systemd/$unit" > "$unit_dir/.$unit.tmp"
        chmod 0644 "$unit_dir/.$unit.tmp"
        mv -f "$unit_dir/.$unit.tmp" "$unit_dir/$unit"
    done
    for unit in "${sandboxed[@]}"; do
        install -d -m 0755 "$unit_dir/$unit.d"
        install -m 0644 "$dest/conf/systemd/chatsys-sandbox.conf" "$unit_dir/$unit.d/.chatsys-sandbox.conf.tmp"
        mv -f "$unit_dir/$unit.d/.chatsys-sandbox.conf.tmp" "$unit_dir/$unit.d/chatsys-sandbox.conf"
    done
    for unit in "${dropin_units[@]}"; do
        install -d -m 0755 "$unit_dir/$unit.d"
        sed "s|@PREFIX@|$prefix|g" "$dest/conf/systemd/$unit.d/chatsys.conf" > "$unit_dir/$unit.d/.chatsys.conf.tmp"
        chmod 0644 "$unit_dir/$unit.d/.chatsys.conf.tmp"
        mv -f "$unit_dir/$unit.d/.chatsys.conf.tmp" "$unit_dir/$unit.d/chatsys.conf"
    done
    log "installed ${units[*]}, their sandbox drop-ins and the chatsys.conf drop-ins of ${dropin_units[*]} into $unit_dir"
}

# enable_chat_servers: exactly chat@PORT for each chat port wanted by chatsys.target (its
# [Install] WantedBy= links them into chatsys.target.wants/); the others are disabled and,
# on the running system, stopped.
enable_chat_servers() {
    local wanted=() link instance systemctl=(systemctl) port
    $staging && systemctl=(systemctl --root="$root")
    for port in "${chat_ports[@]}"; do wanted+=("chat@$port.service"); done
    for link in "$unit_dir"/chatsys.target.wants/chat@*.service; do
        [[ -L $link ]] || continue
        instance=${link##*/}
        if [[ " ${wanted[*]} " != *" $instance "* ]]; then
            log "disabling $instance: its port is not in CHAT_PORTS (${chat_ports[*]})"
            if $staging; then
                "${systemctl[@]}" --quiet disable "$instance"
            else
                systemctl --quiet disable --now "$instance"
            fi
        fi
    done
    "${systemctl[@]}" --quiet enable "${wanted[@]}"
}

enable_and_start() {
    if $staging; then
        # Offline, on the staged files only: the symlinks that bring chatsys.target up at
        # boot, and its chat servers with it.
        systemctl --root="$root" --quiet enable chatsys.target
        enable_chat_servers
        log "staged in $root (nothing started)"
        return 0
    fi
    systemctl daemon-reload
    systemctl enable --quiet chatsys.target
    enable_chat_servers
    if command -v haproxy >/dev/null; then systemctl enable --quiet haproxy.service; fi
    if command -v prometheus >/dev/null && command -v prometheus-node-exporter >/dev/null; then
        systemctl enable --quiet prometheus.service prometheus-node-exporter.service
    else
        log "warning: prometheus or prometheus-node-exporter is not installed (apt-get install prometheus prometheus-node-exporter)"
    fi
    # restart, not start: a new release or new settings take effect (PartOf= carries it to
    # every chatsys unit and HAProxy).
    systemctl restart chatsys.target
    local port failed=false
    for port in $LOGIN_SERVICE_PORT $PROFILE_SERVICE_PORT "${chat_ports[@]}" $LOGIN_PORT $PROFILE_PORT; do
        if ! wait_for_http "http://127.0.0.1:$port/ready" 60; then
            log "warning: nothing ready on port $port; see systemctl status chatsys.target and journalctl"
            failed=true
        fi
    done
    if systemctl is-active --quiet prometheus.service &&
            ! wait_for_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 60; then
        log "warning: Prometheus is not ready on $PROMETHEUS_PORT; see systemctl status prometheus and journalctl"
        failed=true
    fi
    $failed || log "chatsys is running and enabled at boot: systemctl status chatsys.target"
}

uninstall() {
    if ! $staging; then
        systemctl disable --quiet --now chatsys.target 2>/dev/null || true
        systemctl stop chatsys-ferretdb.service chatsys-migrate.service login.service profile.service 'chat@*.service' 2>/dev/null || true
    fi
    local unit
    for unit in "${units[@]}"; do rm -f "$unit_dir/$unit"; done
    for unit in "${sandboxed[@]}"; do
        rm -f "$unit_dir/$unit.d/chatsys-sandbox.conf"
        rmdir "$unit_dir/$unit.d" 2>/dev/null || true
    done
    # Enable links: chatsys.target's own and those of its chat@ instances.
    rm -f "$unit_dir/multi-user.target.wants/chatsys.target"
    rm -rf "$unit_dir/chatsys.target.wants"
    for unit in "${dropin_units[@]}"; do
        rm -f "$unit_dir/$unit.d/chatsys.conf"
        rmdir "$unit_dir/$unit.d" 2>/dev/null || true
    done
    rm -f "$etc_dir/haproxy.cfg" "$etc_dir/web.lua"
    if [[ -f $manifest ]]; then
        local file
        while IFS= read -r -d '' file; do
            if [[ $file != /* && $file != *..* ]]; then rm -f -- "$dest/$file"; fi
        done < "$manifest"
        rm -rf "$dest/.venv"
        rm -f "$dest/bin/ferretdb"
        rmdir "$dest/bin" 2>/dev/null || true
        remove_empty_dirs "$dest"
        rm -f "$manifest"
        rmdir "$dest" 2>/dev/null || log "kept $dest: it holds files the install did not put there"
    fi
    if $purge; then
        rm -f "$env_file"
        rmdir "$etc_dir" 2>/dev/null || true
        rm -rf "$root/var/lib/chatsys"
        if ! $staging && getent passwd "$service_user" >/dev/null; then userdel "$service_user"; fi
    elif [[ -e $env_file ]]; then
        log "kept $env_file and the data in $root/var/lib/chatsys (--uninstall --purge removes them)"
    fi
    if $staging; then
        # Leave no empty folders behind in the staging root.
        local dir
        for dir in "$unit_dir/multi-user.target.wants" "$etc_dir" "$root/var/lib/chatsys" "$dest"; do
            while [[ $dir == "$root"/* ]]; do
                if [[ -d $dir ]]; then rmdir "$dir" 2>/dev/null || break; fi
                dir=$(dirname "$dir")
            done
        done
    else
        systemctl daemon-reload
        log "chatsys removed; HAProxy and Prometheus are stopped and use Debian's configuration again when started"
    fi
}

case $action in
    install)
        choose_chat_ports
        install_release
        install_virtualenv
        install_ferretdb
        ensure_user
        install_config
        install_units
        enable_and_start ;;
    uninstall) uninstall ;;
esac
