#!/usr/bin/env bash
# Print compose.yaml in the form `docker stack deploy` accepts and a swarm without IPVS runs:
#   docker/swarm-stack.sh | docker stack deploy -c - chatsys
# - Swarm's file loader takes depends_on only as a list of names (it ignores start order
#   anyway), so each `depends_on:` mapping becomes that list.
# - Each published port is published in host mode (the node's own port, no routing mesh):
#   the mesh and a service's virtual IP need IPVS in the kernel, and every service here has
#   `endpoint_mode: dnsrr`, which swarm allows with host-mode ports only. Swarm has no host
#   address for a port, so it listens on every address of the node: the script refuses to
#   print the file without HAPROXY_STATS_PASSWORD, which the stats page then asks for.
# - Lines commented "# swarm only: ..." are taken in: the migration service becomes a job
#   (`mode: replicated-job`), run once to completion. Swarm starts the services beside it
#   (it has no start order); they answer /ready with 503 "database not migrated" until it
#   has run, and HAProxy sends them nothing until then.
# Everything else is unchanged.
set -euo pipefail

usage() { echo "usage: $0 [COMPOSE_FILE]   (default: compose.yaml next to this script's folder; needs HAPROXY_STATS_PASSWORD)"; }
case ${1:-} in -h|--help) usage; exit 0 ;; esac
compose_file=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/compose.yaml}
[[ -r $compose_file ]] || { usage >&2; echo "error: cannot read $compose_file" >&2; exit 1; }
[[ -n ${HAPROXY_STATS_PASSWORD:-} ]] || {
    usage >&2
    echo "error: a swarm publishes the stats page on every address of the node; set HAPROXY_STATS_PASSWORD" >&2
    exit 1
}

awk '
{
    # Settings for a swarm alone, commented out for compose ("# swarm only: mode: replicated-job").
    sub(/^ *# swarm only: /, substr($0, 1, match($0, /[^ ]/) - 1))
    match($0, /^ */)
    indent = RLENGTH
    # Blank lines and comments pass; any other line indented no deeper than
    # "depends_on:" or "ports:" ends its block.
    if ($0 ~ /^ *(#.*)?$/) { print; next }
    if (block >= 0 && indent <= block) block = -1
    if (block >= 0 && kind == "depends_on") {
        if (item < 0) item = indent
        if (indent == item) {
            name = $0
            sub(/^ */, "", name)
            sub(/:.*$/, "", name)
            print substr($0, 1, indent) "- " name
        }
        next
    }
    if (block >= 0 && kind == "ports" && $0 ~ /^ *- "?[^ "]+"? *$/) {
        # [ADDRESS:]PUBLISHED:TARGET[/PROTOCOL], where ADDRESS and PUBLISHED may be ${...}
        spec = $0
        sub(/^ *- "?/, "", spec)
        sub(/"? *$/, "", spec)
        protocol = "tcp"
        if (match(spec, /\/[a-z]+$/)) { protocol = substr(spec, RSTART + 1); spec = substr(spec, 1, RSTART - 1) }
        match(spec, /:[0-9]+$/)
        target = substr(spec, RSTART + 1)
        spec = substr(spec, 1, RSTART - 1)
        match(spec, /(\$\{[^}]*\}|[0-9]+)$/)
        published = substr(spec, RSTART)
        pad = substr($0, 1, indent)
        print pad "- target: " target
        print pad "  published: " published
        print pad "  protocol: " protocol
        print pad "  mode: host"
        next
    }
    print
    if ($0 ~ /^ *depends_on: *$/) { block = indent; kind = "depends_on"; item = -1 }
    if ($0 ~ /^ *ports: *$/) { block = indent; kind = "ports" }
}
BEGIN { block = -1 }
' "$compose_file"
