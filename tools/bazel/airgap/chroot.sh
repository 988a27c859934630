#!/usr/bin/env bash
# Bazel 7.7.1 for a Linux host that has none: Debian unstable's bazel-bootstrap package
# (the only Bazel ≥ 7 a Debian mirror serves) in a Debian sid chroot under the cache,
# with the tools the air-gapped build runs inside it (a C toolchain, Python, jq, bsdtar,
# zstd, coreutils, protoc). Linux and root only. A no-op when built; prints its root.
# `chroot.sh mount` bind-mounts what builds need (idempotent); `chroot.sh umount` undoes it.
set -euo pipefail
source "$(dirname "$0")/../../lib.sh"

bazel_package=7.7.1+ds-8+b1
packages=(bazel-bootstrap="$bazel_package" default-jdk-headless git ca-certificates gcc g++
  libc6-dev python3 jq libarchive-tools zstd rust-coreutils protobuf-compiler)
root="$cache/bazel/sid-bazel-$bazel_package"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Inside the chroot at the same paths as outside: the checkout, the caches (Bazel's output
# base, the control plane, Go's build cache), the offline bundle, rustup's toolchain,
# Cargo's registry, and Go with its module cache (the control plane's repository rule).
shared_dirs=("$(cd "$tools_dir/.." && pwd)" "${XDG_CACHE_HOME:-$HOME/.cache}" "$cache"
  "${RUSTUP_HOME:-$HOME/.rustup}" "${CARGO_HOME:-$HOME/.cargo}")
if command -v go >/dev/null; then shared_dirs+=("$(go env GOROOT)" "$(go env GOPATH)"); fi
[[ -d $airgap_bundle ]] && shared_dirs+=("$airgap_bundle")

mounts() {
  for fs in proc sys dev dev/pts; do echo "$root/$fs"; done
  for dir in "${shared_dirs[@]}"; do echo "$root$dir"; done
}

case ${1:-} in
  mount)
    mount | grep -q " $root/proc " || mount -t proc proc "$root/proc"
    for fs in sys dev dev/pts; do mountpoint -q "$root/$fs" || mount --rbind "/$fs" "$root/$fs"; done
    for dir in "${shared_dirs[@]}"; do
      mkdir -p "$dir" "$root$dir"
      mountpoint -q "$root$dir" || mount --bind "$dir" "$root$dir"
    done
    mount --make-rslave "$root/dev"; mount --make-rslave "$root/sys"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # The host's own CAs (an egress proxy's, a company's) for Bazel's downloads of crates.
    if ! diff -rq /usr/local/share/ca-certificates "$root/usr/local/share/ca-certificates" >/dev/null 2>&1; then
      rm -rf "$root/usr/local/share/ca-certificates"
      cp -r /usr/local/share/ca-certificates "$root/usr/local/share/ca-certificates"
      chroot "$root" update-ca-certificates --fresh >/dev/null 2>&1
    fi
    exit ;;
  umount)
    [[ -d $root ]] || exit 0
    mounts | tac | while read -r dir; do
      if mountpoint -q "$dir"; then umount -l "$dir"; fi
    done
    exit ;;
  '') ;;
  *) echo "usage: $0 [mount|umount]" >&2; exit 2 ;;
esac

if [[ ! -x $root/usr/bin/bazel ]]; then
  [[ $(id -u) == 0 ]] || { say "needs root (debootstrap, chroot, bind mounts)"; exit 1; }
  command -v debootstrap >/dev/null || {
    say "installing debootstrap ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  }
  mkdir -p "$cache/bazel"
  say "building a Debian sid chroot with Bazel $bazel_package into $root (about 5 min) ..."
  start=$SECONDS
  rm -rf "$root.tmp"
  debootstrap --variant=minbase sid "$root.tmp" "$mirror" >"$cache/bazel/debootstrap.log" 2>&1 ||
    { say "debootstrap failed; see $cache/bazel/debootstrap.log"; exit 1; }
  cp /etc/resolv.conf "$root.tmp/etc/resolv.conf"
  mount -t proc proc "$root.tmp/proc"
  trap 'umount "$root.tmp/proc"' EXIT
  chroot "$root.tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${packages[@]}" >>"$cache/bazel/debootstrap.log" 2>&1 ||
    { say "apt-get in the chroot failed; see $cache/bazel/debootstrap.log"; exit 1; }
  chroot "$root.tmp" apt-get clean
  umount "$root.tmp/proc"
  trap - EXIT
  mv "$root.tmp" "$root"
  say "built the chroot in $((SECONDS - start)) s"
fi
echo "$root"
