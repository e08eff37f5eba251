#!/usr/bin/env bash
# The Kubernetes manifests checked offline: every kustomization under deploy/kubernetes (the
# base and each overlay) is rendered with `kubectl kustomize`, and what comes out is
# validated against the Kubernetes API's own schemas (kubernetes-validate, which ships them;
# strict: a field the API does not have is an error, and so is a kind without a schema).
# Then the check proves it can fail: a deliberately broken Deployment must be refused.
#
# usage: kube-lint.sh [KUSTOMIZATION_DIR...]   (default: every one under deploy/kubernetes)
#
# Environment: KUBERNETES_VERSION (1.32.0, the API of the kubectl used here), VENV (the
# project's virtualenv, where scripts/setup.sh installs kubernetes-validate).
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
source "$(dirname "$0")/lib/common.sh"

case ${1:-} in -h|--help) usage; exit 0 ;; esac

version=${KUBERNETES_VERSION:-1.32.0}
validator=$VENV/bin/kubernetes-validate
command -v kubectl >/dev/null || die "kubectl is not installed (it renders the manifests: kubectl kustomize)"
[[ -x $validator ]] || die "no $validator (scripts/setup.sh installs it from requirements-dev.lock)"

directories=("$@")
if ((${#directories[@]} == 0)); then
    while IFS= read -r file; do
        directories+=("$(dirname "$file")")
    done < <(find "$CHATSYS_ROOT/deploy/kubernetes" -name kustomization.yaml | sort)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# validate FILE: true when every document of FILE holds to the schema of its kind.
validate() {
    local output
    # kubernetes-validate only warns about a kind it has no schema for: a misspelt kind
    # would pass. Here any warning is a failure.
    if output=$("$validator" --strict --quiet -k "$version" "$1" 2>&1) && ! grep -q . <<< "$output"; then
        return 0
    fi
    printf '%s\n' "$output" >&2
    return 1
}

status=0
for directory in "${directories[@]}"; do
    name=${directory#"$CHATSYS_ROOT"/}
    if ! kubectl kustomize "$directory" > "$work/rendered.yaml" 2> "$work/kustomize.log"; then
        cat "$work/kustomize.log" >&2
        log "$name: kubectl kustomize failed"
        status=1
        continue
    fi
    documents=$(grep -c '^kind:' "$work/rendered.yaml" || true)
    if validate "$work/rendered.yaml"; then
        log "$name: $documents objects hold to the Kubernetes $version schema"
    else
        log "$name: does not hold to the Kubernetes $version schema"
        status=1
    fi
done

# The check itself: a Deployment with a misspelt field and a count that is not a number,
# and a misspelt kind, must both be refused, or the check above proved nothing.
cat > "$work/broken.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  replicas: three
  selector:
    matchLabels:
      app: broken
  template:
    metadata:
      labels:
        app: broken
    spec:
      containers:
        - name: broken
          image: broken:latest
          readinessProbe:
            httpGet:
              path: /ready
              port: 4000
            periodSecond: 5
EOF
printf 'apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: broken\n' > "$work/unknown-kind.yaml"
for file in broken.yaml unknown-kind.yaml; do
    if validate "$work/$file" 2>/dev/null; then
        log "the schema check accepts a broken manifest ($file): it checks nothing"
        status=1
    fi
done
exit $status
