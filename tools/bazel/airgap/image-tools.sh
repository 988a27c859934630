#!/usr/bin/env bash
# What `//services:image`, `:load` and `:push` would download, made on this machine:
# one repository per prebuilt tool of aspect_bazel_lib, tar.bzl and rules_oci, the two bats
# toolchain hubs, and the distroless base (distroless-base.py), each a directory under
# $cache/bazel/airgap/image-tools/<canonical name>/ holding the tool, an empty REPO.bazel and
# the BUILD.bazel the original repository rule writes. Prints the flags that use them,
# `--override_repository=<canonical name>=<dir>`, one a line, on stdout.
#
# Canonical names are Bazel 7's (`module~~extension~repo`; Bazel 8 writes `+`), for the
# host's CPU (linux_amd64 or linux_arm64). Debian's jq, coreutils (rust-coreutils), bsdtar
# and zstd are symlinks to /usr/bin, which resolve inside the Bazel chroot (chroot.sh installs
# them there). The Go tools are built from source into the cache, once: copy_to_directory
# and expand_template in a copy of the bundle's aspect_bazel_lib tree, with its go.mod and
# go.sum (`go install` of them from the Go module proxy fails: v2 tags on a module path
# without /v2), regctl and crane at rules_oci's pins from the module proxy.
# Linux only. Reads the module versions from MODULE.bazel and the pins from the bundle.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(…) fails the script
source "$(dirname "$0")/../../lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

[[ $(uname -s) == Linux ]] || { say "Linux only"; exit 1; }
case $(uname -m) in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) say "no prebuilt tools for $(uname -m)"; exit 1 ;;
esac
platform=linux_$arch
out="$cache/bazel/airgap/image-tools"
bin="$out/bin"
modules="$airgap_bundle/modules-src"

# The version MODULE.bazel pins for a module, and that version's sources in the bundle.
module_src() {
  local version
  version=$(bazel_dep_version "$1")
  [[ -n $version ]] || { say "MODULE.bazel has no bazel_dep on $1"; exit 1; }
  [[ -d $modules/$1-$version ]] || { say "$1 $version is not in $modules"; exit 1; }
  echo "$modules/$1-$version"
}
# The one version of a module the bundle holds (for modules MODULE.bazel does not pin).
bundled_src() {
  local dirs=("$modules/$1"-[0-9]*)
  [[ ${#dirs[@]} == 1 && -d ${dirs[0]} ]] || { say "expected one $1 in $modules"; exit 1; }
  echo "${dirs[0]}"
}
abl_src=$(module_src aspect_bazel_lib)
abl_version=${abl_src##*-}
oci_src=$(module_src rules_oci)
tar_src=$(bundled_src tar.bzl)
# rules_oci's pins: REGCTL_VERSION (oci/repositories.bzl) and the first key of CRANE_VERSIONS
# (oci/private/versions.bzl), which register_crane_toolchains uses.
regctl_version=$(sed -n 's/^REGCTL_VERSION = "\(v[^"]*\)"$/\1/p' "$oci_src/oci/repositories.bzl")
crane_version=$(awk '/^CRANE_VERSIONS = \{/ { on = 1; next }
  on && match($0, /"v[0-9][^"]*"/) { print substr($0, RSTART + 1, RLENGTH - 2); exit }' \
  "$oci_src/oci/private/versions.bzl")
[[ -n $regctl_version && -n $crane_version ]] ||
  { say "could not read the regctl and crane pins from $oci_src"; exit 1; }

# expect <file> <text>: the repository rule in <file> still writes the BUILD file below.
expect() {
  grep -qF -- "$2" "$1" || { say "$1 no longer contains '$2': check the BUILD file image-tools.sh writes"; exit 1; }
}

flags=()
# repo <canonical name> <BUILD.bazel content>: the directory, REPO.bazel and BUILD.bazel,
# written only when they differ (a rewritten BUILD file would make Bazel reload it).
repo() {
  local dir="$out/$1"
  mkdir -p "$dir"
  [[ -f $dir/REPO.bazel && ! -s $dir/REPO.bazel ]] || : >"$dir/REPO.bazel"
  printf '%s\n' "$2" | cmp -s - "$dir/BUILD.bazel" || printf '%s\n' "$2" >"$dir/BUILD.bazel"
  flags+=("--override_repository=$1=$dir")
}
# link <canonical name> <file name> <target>: the tool, a symlink.
link() {
  local path="$out/$1/$2"
  [[ -L $path && $(readlink "$path") == "$3" ]] || ln -sfn "$3" "$path"
}

# Debian's tools: checked in the chroot when it exists.
chroots=()
for dir in "$cache"/bazel/sid-bazel-*; do
  [[ -d $dir && $dir != *.tmp ]] && chroots+=("$dir")
done
debian_tool() {
  local dir
  for dir in "${chroots[@]}"; do
    [[ -x $dir$1 ]] || say "warning: $dir has no $1 (Debian package $2); Bazel will not find it"
  done
  echo "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# module_dir <module>@<version>: the module in Go's module cache, from the module proxy.
module_dir() {
  (cd "$tmp" && GOWORK=off go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}
# bundle_tool <name>: a tool of aspect_bazel_lib's tools/, built in a copy of the bundle's
# tree (go.mod, go.sum, tools/common, the tool); its dependencies from the module proxy.
bundle_tool() {
  local output="$bin/$1-$abl_version"
  if [[ ! -x $output ]]; then
    local tree="$tmp/bazel-lib"
    if [[ ! -d $tree ]]; then
      mkdir -p "$tree/tools"
      cp "$abl_src/go.mod" "$abl_src/go.sum" "$tree/"
      cp -r "$abl_src/tools/common" "$tree/tools/"
    fi
    cp -r "$abl_src/tools/$1" "$tree/tools/"
    chmod -R u+w "$tree"
    go_build "$tree" "./tools/$1" "$output" "$2"
  fi
  echo "$output"
}
# proxy_tool <name> <module> <version> <package> <expected time> [ldflags]: a command of a
# module at a version, built in its directory of the module cache, so with the dependency
# versions of its go.mod and the checksums of its go.sum, as its release was.
proxy_tool() {
  local output="$bin/$1-$3"
  if [[ ! -x $output ]]; then
    local dir
    say "fetching $2@$3 from the Go module proxy ..."
    dir=$(module_dir "$2@$3")
    [[ -d $dir ]] || { say "go mod download $2@$3 failed"; exit 1; }
    go_build "$dir" "$4" "$output" "$5" "${6:-}"
  fi
  echo "$output"
}

# aspect_bazel_lib's toolchains extension (lib/extensions.bzl), whose repositories
# rules_oci's toolchains resolve to; coreutils, copy_to_directory and expand_template
# toolchain types are aliases of bazel_lib's, and aspect_bazel_lib registers first, so
# bazel_lib's platform repositories are never fetched.
abl=aspect_bazel_lib~~toolchains
private=$abl_src/lib/private

expect "$private/jq_toolchain.bzl" 'jq_toolchain(name = "jq_toolchain", bin = "{0}", visibility = ["//visibility:public"])'
repo "$abl~jq_$platform" '# @generated by @aspect_bazel_lib//lib/private:jq_toolchain.bzl
load("@aspect_bazel_lib//lib/private:jq_toolchain.bzl", "jq_toolchain")
exports_files(["jq"])
jq_toolchain(name = "jq_toolchain", bin = "jq", visibility = ["//visibility:public"])'
link "$abl~jq_$platform" jq "$(debian_tool /usr/bin/jq jq)"

expect "$private/coreutils_toolchain.bzl" 'coreutils_toolchain(name = "coreutils_toolchain", binary = "{0}", visibility = ["//visibility:public"])'
repo "$abl~coreutils_$platform" '# @generated by @aspect_bazel_lib//lib/private:coreutils_toolchain.bzl
load("@aspect_bazel_lib//lib/private:coreutils_toolchain.bzl", "coreutils_toolchain")
exports_files(["coreutils"])
coreutils_toolchain(name = "coreutils_toolchain", binary = "coreutils", visibility = ["//visibility:public"])'
# uutils' multi-call binary: called as `coreutils <utility>`.
link "$abl~coreutils_$platform" coreutils "$(debian_tool /usr/bin/coreutils rust-coreutils)"

expect "$private/tar_toolchain.bzl" 'tar_toolchain(name = "bsdtar_toolchain", binary = "{}")'
repo "$abl~bsd_tar_$platform" '# @generated by @aspect_bazel_lib//lib/private:tar_toolchain.bzl

load("@aspect_bazel_lib//lib/private:tar_toolchain.bzl", "tar_toolchain")

package(default_visibility = ["//visibility:public"])

tar_toolchain(name = "bsdtar_toolchain", binary = "tar")'
link "$abl~bsd_tar_$platform" tar "$(debian_tool /usr/bin/bsdtar libarchive-tools)"

expect "$private/zstd_toolchain.bzl" 'zstd_toolchain(name = "zstd_toolchain", binary = "{}")'
repo "$abl~zstd_$platform" '# @generated by @aspect_bazel_lib//lib/private:zstd_toolchain.bzl

load("@aspect_bazel_lib//lib/private:zstd_toolchain.bzl", "zstd_toolchain")

package(default_visibility = ["//visibility:public"])

zstd_toolchain(name = "zstd_toolchain", binary = "zstd")'
link "$abl~zstd_$platform" zstd "$(debian_tool /usr/bin/zstd zstd)"

expect "$private/copy_to_directory_toolchain.bzl" 'copy_to_directory_toolchain(name = "copy_to_directory_toolchain", bin = "{0}", visibility = ["//visibility:public"])'
repo "$abl~copy_to_directory_$platform" '# @generated by @aspect_bazel_lib//lib/private:copy_to_directory_toolchain.bzl
load("@aspect_bazel_lib//lib/private:copy_to_directory_toolchain.bzl", "copy_to_directory_toolchain")
exports_files(["copy_to_directory"])
copy_to_directory_toolchain(name = "copy_to_directory_toolchain", bin = "copy_to_directory", visibility = ["//visibility:public"])'
tool=$(bundle_tool copy_to_directory "about 30 s")
link "$abl~copy_to_directory_$platform" copy_to_directory "$tool"

expect "$private/expand_template_toolchain.bzl" 'expand_template_toolchain(name = "expand_template_toolchain", bin = "{0}", visibility = ["//visibility:public"])'
repo "$abl~expand_template_$platform" '# @generated by @aspect_bazel_lib//lib/private:expand_template_toolchain.bzl
load("@aspect_bazel_lib//lib/private:expand_template_toolchain.bzl", "expand_template_toolchain")
exports_files(["expand_template"])
expand_template_toolchain(name = "expand_template_toolchain", bin = "expand_template", visibility = ["//visibility:public"])'
tool=$(bundle_tool expand_template "about 5 s")
link "$abl~expand_template_$platform" expand_template "$tool"

# tar.bzl's toolchains extension (tar/extensions.bzl, tar/toolchain/platforms.bzl): the tar
# toolchain of rules_oci's oci_load.
expect "$tar_src/tar/toolchain/platforms.bzl" 'tar_toolchain(name = "bsdtar_toolchain", binary = "{}")'
repo "tar.bzl~~toolchains~bsd_tar_toolchains_$platform" '# @generated by @tar.bzl//tar/toolchain:tar_toolchain.bzl

load("@tar.bzl//tar/toolchain:toolchain.bzl", "tar_toolchain")

package(default_visibility = ["//visibility:public"])

tar_toolchain(name = "bsdtar_toolchain", binary = "tar")'
link "tar.bzl~~toolchains~bsd_tar_toolchains_$platform" tar "$(debian_tool /usr/bin/bsdtar libarchive-tools)"

# rules_oci's oci extension (oci/extensions.bzl, oci/repositories.bzl; toolchains named
# "oci"). The templates' trailing spaces after `name = "…", ` are rules_oci's.
expect "$oci_src/oci/repositories.bzl" '    regctl = "regctl{ext}",'
repo "rules_oci~~oci~oci_regctl_$platform" '# Generated by container/repositories.bzl
load("@rules_oci//oci:toolchain.bzl", "regctl_toolchain")
regctl_toolchain(
    name = "regctl_toolchain", 
    regctl = "regctl",
)'
# regclient's Makefile stamps the tag the same way.
tool=$(proxy_tool regctl github.com/regclient/regclient "$regctl_version" ./cmd/regctl "about 30 s" \
  "-buildid= -X github.com/regclient/regclient/internal/version.vcsTag=$regctl_version")
link "rules_oci~~oci~oci_regctl_$platform" regctl "$tool"

# crane: only oci_push runs it.
expect "$oci_src/oci/repositories.bzl" '    version = "{version}"'
repo "rules_oci~~oci~oci_crane_$platform" "# Generated by oci/repositories.bzl
load(\"@rules_oci//oci:toolchain.bzl\", \"crane_toolchain\")

crane_toolchain(
    name = \"crane_toolchain\", 
    crane = \"crane\",
    version = \"$crane_version\"
)"
# go-containerregistry's .goreleaser.yml stamps the version without its "v".
tool=$(proxy_tool crane github.com/google/go-containerregistry "$crane_version" ./cmd/crane "about 1 min" \
  "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=${crane_version#v} \
-X github.com/google/go-containerregistry/pkg/v1/remote/transport.Version=${crane_version#v}")
link "rules_oci~~oci~oci_crane_$platform" crane "$tool"

# The bats toolchain hubs of aspect_bazel_lib and bazel_lib: http_archives of bats-core
# from GitHub, fetched whenever toolchains are resolved (`@bats_toolchains//:all` is
# registered). No target here uses bats: empty.
for hub in aspect_bazel_lib~~toolchains~bats_toolchains bazel_lib~~toolchains~bats_toolchains; do
  repo "$hub" '# Empty: replaces the bats-core download (tools/bazel/airgap/image-tools.sh).'
done

# The base: `@distroless_static` is rules_oci's alias repository, which downloads the
# index itself, so it is replaced whole (the per-platform repositories are then never
# fetched). distroless-base.py writes the directory from the Debian packages of the
# chroot (sid, as distroless tracks Debian), not the host's: a no-op when up to date.
base=rules_oci~~oci~distroless_static
python3 "$here/distroless-base.py" "$out/$base" --name distroless_static --arch "$arch" \
  --sysroot "$("$here/chroot.sh")"
flags+=("--override_repository=$base=$out/$base")

printf '%s\n' "${flags[@]}"
