#!/usr/bin/env bash
# Builds the local test control plane (etcd, kube-apiserver, kube-controller-manager)
# from the pinned Go modules next to this script, into a cache outside the checkout.
# A no-op when the pinned versions are already built. Prints the directory holding the binaries.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
kube_versions

etcd_version=$(module_version controlplane/etcd go.etcd.io/etcd/server/v3)
out="$cache/controlplane/kubernetes-$kube_version-etcd-$etcd_version"
go_build controlplane/etcd go.etcd.io/etcd/server/v3 "$out/etcd" "about 1 min"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$out/kube-apiserver" "about 5 min" "$kube_ldflags"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$out/kube-controller-manager" "about 2 min" "$kube_ldflags"
echo "$out"
