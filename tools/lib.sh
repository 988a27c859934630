# Shared by the build scripts under tools/: where the cache lives, the pinned versions,
# and a Go build into the cache that says what it is doing. Source it; do not run it.

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SETPOINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/setpoint}

# shared_path <name>: what the machine provides beside the checkout, ../shared/<name>,
# else /work/shared/<name> (where the CI machines keep it, whatever the clone's path).
shared_path() {
  local beside
  beside=$(cd "$tools_dir/../.." && pwd)/shared/$1
  if [[ -d $beside ]]; then echo "$beside"; else echo "/work/shared/$1"; fi
}

# The offline Bazel module registry and sources (tools/bazel/airgap).
airgap_bundle=${SETPOINT_AIRGAP_BUNDLE:-$(shared_path bazel-offline)}

# bazel_dep_version <module>: the version MODULE.bazel pins for a Bazel module.
bazel_dep_version() {
  sed -n "s/^bazel_dep(name = \"$1\", version = \"\([^\"]*\)\").*/\1/p" "$tools_dir/../MODULE.bazel"
}

# module_version <module dir under tools/> <module path>
module_version() { (cd "$tools_dir/$1" && GOWORK=off go list -m -f '{{.Version}}' "$2"); }

# kube_versions: sets kube_version (the Kubernetes version tools/controlplane pins) and
# kube_ldflags (that version stamped into a Kubernetes binary). It runs `go list`, so
# only the scripts that build or name Kubernetes binaries call it.
kube_versions() {
  kube_version=$(module_version controlplane/kubernetes k8s.io/kubernetes)
  local minor=${kube_version#v1.}; minor=${minor%%.*}
  kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean"
}

# say <message>: a progress line on stderr, prefixed with the calling script's folder.
say() { echo "$(basename "$(dirname "$0")"): $*" >&2; }

# go_build <module dir: absolute, or under tools/> <package> <output file> <expected time>
# [ldflags]: a static binary, a no-op when the output exists. The dependency versions and
# checksums are the module's go.mod and go.sum (-mod=readonly: a module that also holds
# an incomplete vendor folder, like go-containerregistry's, is not built from it).
go_build() {
  local dir=$1 pkg=$2 output=$3 expected=$4 ldflags=${5:-}
  [[ -x $output ]] && return
  [[ $dir == /* ]] || dir="$tools_dir/$dir"
  say "building $(basename "$output") from $pkg ($expected cold on 2 cores) ..."
  local start=$SECONDS
  mkdir -p "$(dirname "$output")"
  (cd "$dir" && GOWORK=off CGO_ENABLED=0 go build -mod=readonly -trimpath \
    -ldflags "-s -w $ldflags" -o "$output.tmp" "$pkg")
  mv "$output.tmp" "$output"
  say "built $(basename "$output") in $((SECONDS - start)) s"
}
