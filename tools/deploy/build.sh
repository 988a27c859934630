#!/usr/bin/env bash
# Builds kind (pinned in go.mod next to this script) and kubectl (from the pinned
# Kubernetes module) into a cache outside the checkout; a no-op when built. Prints the
# directory holding them. Works on Linux and macOS.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
kube_versions

kind_version=$(module_version deploy sigs.k8s.io/kind)
out="$cache/deploy/$(go env GOOS)-$(go env GOARCH)-kind-$kind_version-kubectl-$kube_version"
go_build deploy sigs.k8s.io/kind "$out/kind" "about 1 min"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kubectl "$out/kubectl" "a few minutes" "$kube_ldflags"
echo "$out"
