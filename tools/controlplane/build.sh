#!/usr/bin/env bash
# Builds the local test control plane (etcd, kube-apiserver, kube-controller-manager)
# from the pinned Go modules next to this script, into a cache outside the checkout.
# A no-op when the pinned versions are already built. Prints the directory holding the binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${SETPOINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/setpoint}

module_version() { (cd "$here/$1" && GOWORK=off go list -m -f '{{.Version}}' "$2"); }
kube_version=$(module_version kubernetes k8s.io/kubernetes)
etcd_version=$(module_version etcd go.etcd.io/etcd/server/v3)
out="$cache/controlplane/kubernetes-$kube_version-etcd-$etcd_version"

build() { # build <module dir> <package> <binary name> [ldflags]
  local dir=$1 pkg=$2 bin=$3 ldflags=${4:-}
  if [[ -x "$out/$bin" ]]; then return; fi
  echo "controlplane: building $bin from $pkg (cold: 2-10 min on 2 cores) ..." >&2
  local start=$SECONDS
  (cd "$here/$dir" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w $ldflags" -o "$out/$bin.tmp" "$pkg")
  mv "$out/$bin.tmp" "$out/$bin"
  echo "controlplane: built $bin in $((SECONDS - start))s" >&2
}

mkdir -p "$out"
minor=${kube_version#v1.}; minor=${minor%%.*}
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean"
build etcd go.etcd.io/etcd/server/v3 etcd
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kube_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$kube_ldflags"
echo "$out"
