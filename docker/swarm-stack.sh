#!/usr/bin/env bash
# Print compose.yaml in the form `docker stack deploy` accepts:
#   docker/swarm-stack.sh | docker stack deploy -c - chatsys
# Swarm's file loader takes depends_on only as a list of names (it ignores start order
# anyway), so each `depends_on:` mapping becomes that list; everything else is unchanged.
set -euo pipefail

usage() { echo "usage: $0 [COMPOSE_FILE]   (default: compose.yaml next to this script's folder)"; }
case ${1:-} in -h|--help) usage; exit 0 ;; esac
compose_file=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/compose.yaml}
[[ -r $compose_file ]] || { usage >&2; echo "error: cannot read $compose_file" >&2; exit 1; }

awk '
{
    match($0, /^ */)
    indent = RLENGTH
    # Blank lines and comments pass; any other line indented no deeper than
    # "depends_on:" ends its mapping.
    if ($0 ~ /^ *(#.*)?$/) { print; next }
    if (block >= 0 && indent <= block) block = -1
    if (block >= 0) {
        if (item < 0) item = indent
        if (indent == item) {
            name = $0
            sub(/^ */, "", name)
            sub(/:.*$/, "", name)
            print substr($0, 1, indent) "- " name
        }
        next
    }
    print
    if ($0 ~ /^ *depends_on: *$/) { block = indent; item = -1 }
}
BEGIN { block = -1 }
' "$compose_file"
