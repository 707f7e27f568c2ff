#!/usr/bin/env bash
# Renders an overlay with the image a pipeline built, on stdout, ready for `kubectl apply -f -`:
#   deploy/k8s/render.sh OVERLAY IMAGE
#   deploy/k8s/render.sh staging registry.example.com/shop/microshop:1a2b3c4
# The overlays name the image `microshop`; this wraps OVERLAY in a throwaway kustomization whose
# `images:` entry points every container at IMAGE (name:tag or name@sha256:digest), so nothing
# in the tree is edited. Works with kubectl's embedded kustomize from v2.0.3 (kubectl 1.20) on.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 OVERLAY IMAGE (overlays: $(ls "$here/overlays" | tr '\n' ' '))" >&2; exit 2; }
[ $# -eq 2 ] || usage
overlay=$1 image=$2
[[ "$overlay" =~ ^[a-z][a-z0-9-]*$ && -f "$here/overlays/$overlay/kustomization.yaml" ]] ||
    { echo "render: no overlay '$overlay'" >&2; usage; }
if [[ "$image" =~ ^([a-z0-9][a-z0-9._/:-]*[a-z0-9])@(sha256:[0-9a-f]{64})$ ]]; then
    name=${BASH_REMATCH[1]} field="digest: ${BASH_REMATCH[2]}"
elif [[ "$image" =~ ^([a-z0-9][a-z0-9._/:-]*[a-z0-9]):([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$ ]]; then
    name=${BASH_REMATCH[1]} field="newTag: ${BASH_REMATCH[2]}"
else
    echo "render: IMAGE must be name:tag or name@sha256:digest, got '$image'" >&2
    exit 2
fi
kubectl=${KUBECTL:-kubectl} # another kubectl binary, if given
command -v "$kubectl" >/dev/null || { echo "render: kubectl is needed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
bases:
  - $(realpath --relative-to="$tmp" "$here/overlays/$overlay")
images:
  - name: microshop
    newName: $name
    $field
YAML
# newer kubectls warn that `bases` and `patchesStrategicMerge` are deprecated; kubectl 1.20
# knows nothing else
"$kubectl" kustomize "$tmp" 2> >(grep -v "^# Warning: '.*' is deprecated" >&2)
