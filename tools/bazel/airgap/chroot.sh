#!/usr/bin/env bash
# Bazel 7.7.1 for a Linux host that has none: Debian unstable's bazel-bootstrap package
# (the only Bazel ≥ 7 a Debian mirror serves) in a Debian sid chroot under the cache,
# with what the air-gapped build runs inside it (a C toolchain, Python, jq, bsdtar, zstd,
# coreutils, protoc) and the files of the offline base image (CA certificates, tzdata,
# netbase, media-types). Linux and root only.
#   chroot.sh                  builds it (a no-op when built) and prints its root;
#   chroot.sh run DIR CMD...   runs CMD in it, in DIR, in a mount namespace of its own.
# Mounts never reach the host: they live in that namespace, which ends with the last
# process in it (the Bazel server started there), so nothing is left to unmount.
set -euo pipefail
source "$(dirname "$0")/../../lib.sh"

# sid drops superseded packages: the Debian revision floats, Bazel's version does not
# (DEBIAN_MIRROR may name a snapshot mirror for a fully pinned chroot).
bazel_version=7.7.1
packages=("bazel-bootstrap=$bazel_version+*" default-jdk-headless git ca-certificates gcc g++
  libc6-dev python3 jq libarchive-tools zstd rust-coreutils protobuf-compiler
  tzdata netbase media-types)
root="$cache/bazel/sid-bazel-$bazel_version"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

arguments=("$@")
in_private_namespace() {
  [[ -n ${SETPOINT_CHROOT_NS:-} ]] ||
    exec unshare --mount --propagation slave env SETPOINT_CHROOT_NS=1 "$0" "${arguments[@]}"
}

build() {
  in_private_namespace
  [[ $(id -u) == 0 ]] || { say "needs root (debootstrap, chroot, mounts)"; exit 1; }
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap ..."
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  fi
  mkdir -p "$cache/bazel"
  local log="$cache/bazel/debootstrap.log" start=$SECONDS
  say "building a Debian sid chroot with Bazel $bazel_version into $root (1-3 min) ..."
  rm -rf "$root.tmp"
  debootstrap --variant=minbase sid "$root.tmp" "$mirror" >"$log" 2>&1 ||
    { say "debootstrap failed; see $log"; exit 1; }
  cp /etc/resolv.conf "$root.tmp/etc/resolv.conf"
  mount -t proc proc "$root.tmp/proc"
  chroot "$root.tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${packages[@]}" >>"$log" 2>&1 ||
    { say "apt-get in the chroot failed (has sid moved past Bazel $bazel_version?); see $log"; exit 1; }
  chroot "$root.tmp" apt-get clean
  umount "$root.tmp/proc"
  mv "$root.tmp" "$root"
  say "built the chroot in $((SECONDS - start)) s"
}

# Inside the chroot at the same paths as outside: the checkout, the caches (Bazel's output
# base, the control plane, Go's build cache), the offline bundle, rustup's toolchain,
# Cargo's registry, and Go with its module cache and settings (the control plane's
# repository rule).
shared_dirs() {
  local dir
  for dir in "$1" "${XDG_CACHE_HOME:-$HOME/.cache}" "$cache" "$airgap_bundle" \
    "${RUSTUP_HOME:-$HOME/.rustup}" "${CARGO_HOME:-$HOME/.cargo}" \
    "$(go env GOROOT)" "$(go env GOPATH)" "$(dirname "$(go env GOENV)")"; do
    [[ -d $dir ]] && echo "$dir"
  done
}

# The mount namespace of the Bazel server already running for checkout $1, when it sees
# that checkout as this one does. A client outside it would find the server's working
# folder "moved" and replace the server, losing its caches, on every command.
server_namespace() {
  local base pid
  base="${XDG_CACHE_HOME:-$HOME/.cache}/bazel/_bazel_${USER:-root}/$(printf %s "$1" | md5sum | cut -d' ' -f1)"
  pid=$(cat "$base/server/server.pid.txt" 2>/dev/null) || return 1
  [[ -e /proc/$pid/ns/mnt ]] || return 1
  [[ $(nsenter --mount="/proc/$pid/ns/mnt" stat -c %d:%i "$root$1" 2>/dev/null) == $(stat -c %d:%i "$1") ]] || return 1
  echo "/proc/$pid/ns/mnt"
}

run() {
  local dir=$1 shared outer mounted=() namespace
  if [[ -z ${SETPOINT_CHROOT_NS:-} ]] && namespace=$(server_namespace "$dir"); then
    exec nsenter --mount="$namespace" env SETPOINT_CHROOT_NS=joined "$0" "${arguments[@]}"
  fi
  in_private_namespace
  shift
  [[ $SETPOINT_CHROOT_NS == joined ]] && enter "$dir" "$@"
  mount -t proc proc "$root/proc"
  for fs in sys dev; do mount --rbind "/$fs" "$root/$fs"; done
  while read -r shared; do
    for outer in "${mounted[@]}"; do
      [[ $shared/ == "$outer"/* ]] && continue 2 # inside a folder already there
    done
    mkdir -p "$root$shared"
    mount --rbind "$shared" "$root$shared"
    mounted+=("$shared")
  done < <(shared_dirs "$dir")
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  enter "$dir" "$@"
}

# enter DIR CMD...: CMD in the chroot, in DIR.
enter() {
  local dir=$1
  shift
  # The host's own CAs (an egress proxy's, a company's), for Bazel's downloads of crates.
  if ! diff -rq /usr/local/share/ca-certificates "$root/usr/local/share/ca-certificates" >/dev/null 2>&1; then
    rm -rf "$root/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates "$root/usr/local/share/ca-certificates"
    chroot "$root" update-ca-certificates --fresh >/dev/null 2>&1
  fi
  # A clean environment but for what the builds inside need from the caller's.
  local keep=(HOME="$HOME" USER="${USER:-root}" TERM="${TERM:-dumb}"
    PATH="$(go env GOROOT)/bin:/usr/local/bin:/usr/bin:/bin")
  local name
  for name in SETPOINT_CACHE XDG_CACHE_HOME RUSTUP_HOME CARGO_HOME GOPATH GOMODCACHE GOCACHE \
    GOENV GOPROXY GOFLAGS GONOSUMDB GOPRIVATE GOTOOLCHAIN http_proxy https_proxy no_proxy \
    HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n ${!name:-} ]] && keep+=("$name=${!name}")
  done
  exec chroot "$root" /usr/bin/env -i "${keep[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$dir" "$@"
}

case ${1:-} in
  '') [[ -x $root/usr/bin/bazel ]] || build; echo "$root" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 [run DIR COMMAND...]" >&2; exit 2 ;;
esac
