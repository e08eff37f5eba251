#!/usr/bin/env bash
# Three Docker engines on this one machine, each a node of its own: its own network namespace
# (a veth to a bridge, an address of its own), its own dockerd and containerd, data root,
# exec root, socket and cgroup parent. They form a swarm over those addresses (node 1 the
# manager, the others workers), so an overlay network really spans nodes (VXLAN between
# the namespaces) and a service's tasks really spread.
#
#   swarm-nodes.sh up       start the nodes and form the swarm (idempotent); prints one
#                           line per node: NAME ADDRESS DOCKER_HOST
#   swarm-nodes.sh down     stop every node and remove all it made: engines, namespaces,
#                           veths, the bridge, the data and exec roots
#   swarm-nodes.sh status   the nodes and their swarm state (exit 3: none runs)
#   swarm-nodes.sh load IMAGE...
#                           copy images from the engine of DOCKER_HOST (docker save) into
#                           every node (docker load) that lacks them or has another version
#   swarm-nodes.sh kill N   SIGKILL every process of node N (its engine, containerd and
#                           containers): the node dies as on a power cut
#   swarm-nodes.sh env N    print DOCKER_HOST=... of node N
#
# Environment: SWARM_NODES (3), SWARM_NODES_PREFIX (chatsys-node: the namespaces, the cgroup
# parents), SWARM_NODES_BRIDGE (chatsys-nodes0), SWARM_NODES_SUBNET (10.215.0: the host is
# .1, node N is .1N), SWARM_NODES_POOL (10.216.0.0/16, the overlay networks' addresses),
# SWARM_NODES_DIR ($CHATSYS_VAR/swarm-nodes: data roots, sockets, logs), SWARM_NODES_RUN
# (/run/chatsys-swarm-nodes: exec roots; a unix socket path must stay short),
# DOCKERD_START_SECONDS (60), SWARM_NODES_KILL_SECONDS (60: the longest wait for a killed
# node's processes, or an interface, to go). Needs root, iproute2 and Debian's docker.io.
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

count=${SWARM_NODES:-3}
prefix=${SWARM_NODES_PREFIX:-chatsys-node}
bridge=${SWARM_NODES_BRIDGE:-chatsys-nodes0}
subnet=${SWARM_NODES_SUBNET:-10.215.0}
pool=${SWARM_NODES_POOL:-10.216.0.0/16}
nodes_dir=${SWARM_NODES_DIR:-$CHATSYS_VAR/swarm-nodes}
run_dir=${SWARM_NODES_RUN:-/run/chatsys-swarm-nodes}
start_seconds=${DOCKERD_START_SECONDS:-60}
kill_seconds=${SWARM_NODES_KILL_SECONDS:-60}

forward_rule=(-i "$bridge" -o "$bridge" -m comment --comment "chatsys swarm nodes" -j ACCEPT)

name_of() { echo "$prefix$1"; }
address_of() { echo "$subnet.$((10 + $1))"; }
host_of() { echo "unix://$nodes_dir/node$1/docker.sock"; }
# The host side of node N's veth (interface names have at most 15 characters).
veth_of() { echo "csn$1-${prefix:0:8}"; }
node_docker() { local node=$1; shift; DOCKER_HOST=$(host_of "$node") timeout 60 docker "$@"; }
answers() { node_docker "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

network_up() {
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        ip link add name "$bridge" type bridge
        ip addr add "$subnet.1/24" dev "$bridge"
    fi
    ip link set "$bridge" up
    # Traffic between the nodes crosses the bridge, which this host's iptables filters
    # (br_netfilter) with a FORWARD policy that may drop it: let it pass, and only it.
    iptables -C FORWARD "${forward_rule[@]}" 2>/dev/null || iptables -I FORWARD "${forward_rule[@]}"
    local node name veth
    for node in $(seq "$count"); do
        name=$(name_of "$node") veth=$(veth_of "$node")
        [[ -e /run/netns/$name ]] || ip netns add "$name"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name eth0 netns "$name"
            ip -n "$name" addr add "$(address_of "$node")/24" dev eth0
        fi
        ip link set "$veth" master "$bridge" up
        ip -n "$name" link set lo up
        ip -n "$name" link set eth0 up
    done
}

engine_up() {
    local node=$1 name dir exec_root
    name=$(name_of "$node") dir=$nodes_dir/node$node exec_root=$run_dir/node$node
    answers "$node" && return 0
    if pid_alive "$dir/dockerd.pid"; then
        die "node $node's dockerd (pid $(cat "$dir/dockerd.pid")) runs but does not answer; see $dir/dockerd.log"
    fi
    mkdir -p "$dir/data" "$exec_root"
    rm -f "$dir/docker.sock" "$dir/dockerd.pid"
    # The node's network (with no route off the bridge: a pull fails at once, and an image
    # comes from `load`), and a mount namespace of its own (mounts made on the host still
    # reach it): its mounts (container roots, network sandboxes) stay off the host and go
    # with it. Not `ip netns exec`, whose fresh /sys has no cgroup mounts. containerd is
    # the one dockerd starts under its exec root (this host runs no system containerd,
    # which dockerd would otherwise share).
    # A host name of its own too (its UTS namespace): swarm names a node by it.
    # shellcheck disable=SC2016  # expanded by that sh
    setsid unshare --mount --propagation slave --uts nsenter --net="/run/netns/$name" \
        sh -c 'hostname "$0" && exec "$@"' "$name" dockerd \
        --data-root "$dir/data" --exec-root "$exec_root" --pidfile "$dir/dockerd.pid" \
        -H "$(host_of "$node")" --cgroup-parent "/$name" \
        >>"$dir/dockerd.log" 2>&1 </dev/null &
    local deadline=$((SECONDS + start_seconds))
    until answers "$node"; do
        ((SECONDS < deadline)) || die "node $node's dockerd did not answer within $start_seconds s; see $dir/dockerd.log"
        sleep 0.3
    done
}

swarm_state() { node_docker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unreachable; }

swarm_up() {
    if [[ $(swarm_state 1) != active ]]; then
        node_docker 1 swarm init --advertise-addr "$(address_of 1)" --listen-addr "$(address_of 1):2377" \
            --default-addr-pool "$pool" >/dev/null
    fi
    local token node
    token=$(node_docker 1 swarm join-token --quiet worker)
    for node in $(seq 2 "$count"); do
        [[ $(swarm_state "$node") == active ]] && continue
        node_docker "$node" swarm join --token "$token" --advertise-addr "$(address_of "$node")" \
            --listen-addr "$(address_of "$node"):2377" "$(address_of 1):2377" >/dev/null
    done
    local deadline=$((SECONDS + start_seconds))
    until [[ $(node_docker 1 node ls --filter role=worker --format '{{.Status}}' | grep -c '^Ready$') -eq $((count - 1)) ]]; do
        ((SECONDS < deadline)) || die "the workers did not report Ready within $start_seconds s: $(node_docker 1 node ls)"
        sleep 0.5
    done
}

up() {
    ((EUID == 0)) || die "the nodes need root (network namespaces, dockerd)"
    command -v dockerd >/dev/null || die "dockerd is not installed (Debian's docker.io)"
    network_up
    local node
    for node in $(seq "$count"); do engine_up "$node"; done
    swarm_up
    for node in $(seq "$count"); do
        echo "$(name_of "$node") $(address_of "$node") $(host_of "$node")"
    done
}

load() {
    [[ -n ${DOCKER_HOST:-} ]] || die "load copies from the engine of DOCKER_HOST; set it"
    (($# > 0)) || { usage >&2; exit 2; }
    local node image wanted
    for node in $(seq "$count"); do
        wanted=()
        for image in "$@"; do
            [[ $(node_docker "$node" image inspect --format '{{.Id}}' "$image" 2>/dev/null) == \
                "$(docker image inspect --format '{{.Id}}' "$image")" ]] || wanted+=("$image")
        done
        ((${#wanted[@]} > 0)) || continue
        log "loading ${wanted[*]} into node $node"
        docker save "${wanted[@]}" | DOCKER_HOST=$(host_of "$node") docker load --quiet >/dev/null
    done
}

# node_processes N: every process of node N: those in its network namespace (dockerd,
# containerd, the shims) and those in its cgroup parent (the containers, each in a network
# namespace of its own).
node_processes() {
    local name
    name=$(name_of "$1")
    [[ ! -e /run/netns/$name ]] || ip netns pids "$name"
    [[ ! -d /sys/fs/cgroup/pids/$name ]] || find "/sys/fs/cgroup/pids/$name" -name cgroup.procs -exec cat {} +
}

# kill_node N: SIGKILL to every process of node N; returns once none is left. A killed
# process is gone only once the kernel has scheduled its exit, which on a busy machine takes
# a while: the wait is bounded in time (SWARM_NODES_KILL_SECONDS), not in tries.
kill_node() {
    local pids deadline=$((SECONDS + kill_seconds))
    while :; do
        pids=$(node_processes "$1" | sort -u)
        [[ -z $pids ]] && return 0
        ((SECONDS < deadline)) || die "processes of node $1 survive SIGKILL for ${kill_seconds} s: $(tr '\n' ' ' <<< "$pids")"
        # shellcheck disable=SC2086  # one word per process id
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
}

# remove_link NAME: delete a network interface that may be going away by itself: deleting a
# namespace destroys the veth ends inside it, and with them their peers out here, in the
# kernel's own time (a work queue), so a look and a delete can straddle its going. Returns
# once it is gone, bounded in time.
remove_link() {
    local deadline=$((SECONDS + kill_seconds))
    while ip link show "$1" >/dev/null 2>&1; do
        ip link delete "$1" 2>/dev/null || true
        ip link show "$1" >/dev/null 2>&1 || return 0
        ((SECONDS < deadline)) || die "the network interface $1 is still there after ${kill_seconds} s"
        sleep 0.2
    done
}

down() {
    local node name
    # Everything the nodes hold goes, their data too: no need to stop anything gently. Each
    # node's mounts were in its own mount namespace, which goes with its last process.
    for node in $(seq "$count"); do kill_node "$node"; done
    for node in $(seq "$count"); do
        name=$(name_of "$node")
        [[ ! -e /run/netns/$name ]] || ip netns delete "$name"
        remove_link "$(veth_of "$node")"
        # cgroup v1: the parent made in each hierarchy (empty once the containers are gone).
        find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name "$name" -exec rmdir {} + 2>/dev/null || true
        rm -rf "${nodes_dir:?}/node$node" "${run_dir:?}/node$node"
    done
    remove_link "$bridge"
    while iptables -D FORWARD "${forward_rule[@]}" 2>/dev/null; do :; done
    rmdir "$nodes_dir" "$run_dir" 2>/dev/null || true
}

status() {
    local node running=0 state
    for node in $(seq "$count"); do
        state=$(swarm_state "$node")
        [[ $state == unreachable ]] || running=$((running + 1))
        echo "$(name_of "$node") $(address_of "$node") $(host_of "$node") swarm:$state"
    done
    ((running > 0)) || exit 3
}

node_argument() {
    if ! [[ ${1:-} =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > count)); then usage >&2; exit 2; fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    load) shift; load "$@" ;;
    kill) node_argument "${2:-}"; kill_node "$2" ;;
    env) node_argument "${2:-}"; echo "DOCKER_HOST=$(host_of "$2")" ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
