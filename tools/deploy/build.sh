#!/usr/bin/env bash
# Builds kind (pinned in go.mod next to this script) and kubectl (from the pinned
# Kubernetes module) into a cache outside the checkout; a no-op when built. Prints the
# directory holding them. Works on Linux and macOS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kubernetes="$here/../controlplane/kubernetes"
cache=${SETPOINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/setpoint}
kind_version=$(cd "$here" && GOWORK=off go list -m -f '{{.Version}}' sigs.k8s.io/kind)
kube_version=$(cd "$kubernetes" && GOWORK=off go list -m -f '{{.Version}}' k8s.io/kubernetes)
out="$cache/deploy/$(go env GOOS)-$(go env GOARCH)-kind-$kind_version-kubectl-$kube_version"
mkdir -p "$out"

if [[ ! -x "$out/kind" ]]; then
  echo "deploy: building kind $kind_version (about a minute) ..." >&2
  (cd "$here" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/kind.tmp" sigs.k8s.io/kind)
  mv "$out/kind.tmp" "$out/kind"
fi
if [[ ! -x "$out/kubectl" ]]; then
  echo "deploy: building kubectl $kube_version (a few minutes) ..." >&2
  minor=${kube_version#v1.}; minor=${minor%%.*}
  (cd "$kubernetes" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$kube_version \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    -o "$out/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
  mv "$out/kubectl.tmp" "$out/kubectl"
fi
echo "$out"
