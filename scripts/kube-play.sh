#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes) run on this machine with podman's `kube play`,
# without a cluster: the images Docker builds here, copied into podman's store, and every
# pod waited for by its own readiness probes. What podman honours: docs/kubernetes.md.
#
#   kube-play.sh up [OVERLAY]          play OVERLAY (default: deploy/kubernetes/overlays/local),
#                                      wait until every pod is ready, print the URLs
#   kube-play.sh down [--volumes]      remove the pods, the Secrets, the ConfigMap volumes and
#                                      the network; the database's volume too with --volumes
#   kube-play.sh status                podman's pods
#
# Environment: CHAT_PUBLISHED_PORT, LOGIN_PUBLISHED_PORT, PROFILE_PUBLISHED_PORT and
# STATS_PUBLISHED_PORT (the hostPorts of the overlay: 5000, 4100, 4200, 8404, on 127.0.0.1),
# KUBE_OVERLAY, KUBE_NETWORK (chatsys-kube), KUBE_READY_SECONDS (240), CHATSYS_VAR (what was
# played is kept in $CHATSYS_VAR/kube/). Needs root, podman, kubectl and a Docker engine
# (scripts/docker-engine.sh starts a private one for the images and stops it again).
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

case ${1:-} in
    up|down|status) ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
command -v podman >/dev/null || die "podman is not installed (scripts/setup.sh installs it)"
command -v kubectl >/dev/null || die "kubectl is not installed (it renders the manifests: kubectl kustomize)"
"$VENV/bin/python" -c 'import yaml' 2>/dev/null || "$CHATSYS_ROOT/scripts/setup.sh" >&2
export CHATSYS_VAR
export PYTHONPATH=$CHATSYS_ROOT${PYTHONPATH:+:$PYTHONPATH}
exec "$VENV/bin/python" -m scripts.lib.kube_play "$@"
