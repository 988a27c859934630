#!/usr/bin/env bash
# Stand-ins for the Rust toolchain repositories that rules_rust 0.73.0 downloads from
# static.rust-lang.org, made from the local rustup toolchain of rust-toolchain.toml
# (1.95.0, x86_64 Linux). MODULE.bazel stays as it is: each stand-in replaces one
# repository through --override_repository. Prints those flags, one per line.
#
# Each stand-in holds what the original repository rule writes: the files of the
# components it would download, at the paths of the release archives (taken from
# rustup's lib/rustlib/manifest-<component>-<triple>), and the same BUILD.bazel
# (rust/private/repository_utils.bzl) for 1.95.0 on x86_64-unknown-linux-gnu.
# The files are symlinks into rustup's toolchain: Bazel follows symlinks (in globs too),
# rustc and the other tools find their own libraries through /proc/self/exe, and
# chroot.sh mounts rustup's home at the same path. Files, not directories, are linked,
# so that a repository holds its components' files only (the rustfmt one no stdlib).
#
# Only the repositories a build for x86_64 Linux fetches are replaced (Bazel 7 names;
# Bazel 8 spells them rules_rust++rust+… ):
#   rules_rust~~rust~rust_linux_x86_64__x86_64-unknown-linux-gnu__stable_tools
#       the toolchain every Rust target, build script, test and clippy uses;
#   rules_rust~~rust~rustfmt_nightly-2026-07-16__x86_64-unknown-linux-gnu_tools
#       the rustfmt toolchain (rustfmt aspect); rules_rust's default rustfmt is that
#       nightly, 1.95.0's rustfmt stands in, as `cargo fmt` under rust-toolchain.toml;
#   rules_rust~~rust_host_tools~rust_host_tools
#       the cargo and rustc crate_universe runs (default Rust 1.97.1, not in the bundle).
# Cross targets (macOS, aarch64) would fetch other repositories, which need rust-std
# archives of those targets: not available here.
set -euo pipefail
source "$(dirname "$0")/../../lib.sh"

version=1.95.0
triple=x86_64-unknown-linux-gnu
out="$cache/bazel/airgap/rust-$version"

# The toolchain rust-toolchain.toml selects (RUST_SYSROOT overrides); checked, because
# rules_rust's toolchain is declared as exactly this version.
sysroot=${RUST_SYSROOT:-$(cd "$tools_dir/.." && rustc --print sysroot)}
found=$("$sysroot/bin/rustc" --version 2>/dev/null || true)
if [[ $found != "rustc $version "* ]]; then
  say "need rustc $version in $sysroot, found '${found:-nothing}' (rustup toolchain install $version --profile minimal -c clippy -c rustfmt)"
  exit 1
fi

# link <repo dir> <component>...: the component's files, as its archive holds them.
link() {
  local dir=$1 component manifest path
  shift
  for component in "$@"; do
    manifest="$sysroot/lib/rustlib/manifest-$component-$triple"
    [[ -f $manifest ]] || { say "rustup component $component is missing in $sysroot"; exit 1; }
    while IFS= read -r path; do
      [[ $path == file:* ]] || continue # dir: is only rust-docs' HTML, in no archive used here
      path=${path#file:}
      mkdir -p "$dir/$(dirname "$path")"
      ln -sfn "$sysroot/$path" "$dir/$path"
    done <"$manifest"
  done
}

# llvm-tools (llvm-cov, llvm-profdata: coverage only) is not in a minimal rustup install.
# The BUILD names both files, so stubs stand in when the component is absent.
link_llvm_tools() {
  if [[ -f $sysroot/lib/rustlib/manifest-llvm-tools-preview-$triple ]]; then
    link "$1" llvm-tools-preview
    return
  fi
  local tool
  mkdir -p "$1/lib/rustlib/$triple/bin"
  for tool in llvm-cov llvm-profdata; do
    printf '#!/bin/sh\necho "%s: llvm-tools is not installed in the local Rust toolchain (no coverage offline)" >&2\nexit 1\n' \
      "$tool" >"$1/lib/rustlib/$triple/bin/$tool"
    chmod +x "$1/lib/rustlib/$triple/bin/$tool"
  done
}

# BUILD pieces, each the text of one template of repository_utils.bzl for this triple;
# the repository rules join them with a newline.
build_compiler() { # BUILD_for_compiler(include_linker = True)
  cat <<EOF
filegroup(
    name = "rustc",
    srcs = ["bin/rustc"],
    visibility = ["//visibility:public"],
)

filegroup(
    name = "rustc_lib",
    srcs = glob(
        [
            "bin/*.so",
            "lib/*.so*",
            "lib/rustlib/$triple/codegen-backends/*.so",
            "lib/rustlib/$triple/lib/*.so*",
            "lib/rustlib/$triple/lib/*.rmeta",
        ],
        allow_empty = True,
    ),
    visibility = ["//visibility:public"],
)

filegroup(
    name = "rustdoc",
    srcs = ["bin/rustdoc"],
    visibility = ["//visibility:public"],
)

filegroup(
    name = "rust-lld",
    srcs = ["lib/rustlib/$triple/bin/rust-lld"],
    data = glob(
        include = [
            "lib/rustlib/$triple/bin/*-ld",
            "lib/rustlib/$triple/bin/gcc-ld/*",
        ],
        exclude = [
            "lib/rustlib/$triple/bin/rust-lld",
        ],
        allow_empty = True,
    ),
    visibility = ["//visibility:public"],
)
EOF
}

build_rustfmt() { # BUILD_for_rustfmt
  cat <<EOF
load("@rules_shell//shell:sh_binary.bzl", "sh_binary")

filegroup(
    name = "rustfmt_bin",
    srcs = ["bin/rustfmt"],
    visibility = ["//visibility:public"],
)

sh_binary(
    name = "rustfmt",
    srcs = [":rustfmt_bin"],
    visibility = ["//visibility:public"],
)
EOF
}

# rust_toolchain_tools_repository: compiler (+ rust-objcopy, Rust ≥ 1.84), clippy,
# cargo, rustfmt, llvm-tools, stdlib, rust_toolchain. $1: the default edition.
build_toolchain() {
  build_compiler
  cat <<EOF

filegroup(
    name = "rust-objcopy",
    srcs = glob(
        ["lib/rustlib/$triple/bin/rust-objcopy"],
        allow_empty = True,
    ),
    visibility = ["//visibility:public"],
)

filegroup(
    name = "clippy_driver_bin",
    srcs = ["bin/clippy-driver"],
    visibility = ["//visibility:public"],
)
filegroup(
    name = "cargo_clippy_bin",
    srcs = ["bin/cargo-clippy"],
    visibility = ["//visibility:public"],
)

filegroup(
    name = "cargo",
    srcs = ["bin/cargo"],
    visibility = ["//visibility:public"],
)
EOF
  build_rustfmt
  cat <<EOF

filegroup(
    name = "llvm_lib",
    srcs = glob(
      ["lib/rustlib/$triple/lib/libLLVM*.so*"],
      allow_empty = True,
    ),
    visibility = ["//visibility:public"],
)

filegroup(
    name = "llvm_cov_bin",
    srcs = ["lib/rustlib/$triple/bin/llvm-cov"],
    visibility = ["//visibility:public"],
)

filegroup(
    name = "llvm_profdata_bin",
    srcs = ["lib/rustlib/$triple/bin/llvm-profdata"],
    visibility = ["//visibility:public"],
)

load("@rules_rust//rust:toolchain.bzl", "rust_stdlib_filegroup")

rust_stdlib_filegroup(
    name = "rust_std-$triple",
    srcs = glob(
        [
            "lib/rustlib/$triple/lib/*.rlib",
            "lib/rustlib/$triple/lib/*.rmeta",
            "lib/rustlib/$triple/lib/*.so*",
            "lib/rustlib/$triple/lib/*.a",
            "lib/rustlib/$triple/lib/self-contained/**",
        ],
        # Some patterns (e.g. \`lib/*.a\`) don't match anything, see https://github.com/bazelbuild/rules_rust/pull/245
        allow_empty = True,
    ),
    visibility = ["//visibility:public"],
)

# For legacy support
alias(
    name = "rust_lib-$triple",
    actual = "rust_std-$triple",
    visibility = ["//visibility:public"],
)

load("@rules_rust//rust:toolchain.bzl", "rust_toolchain")

rust_toolchain(
    name = "rust_toolchain",
    rust_doc = "//:rustdoc",
    rust_std = "//:rust_std-$triple",
    rustc = "//:rustc",
    linker = "//:rust-lld",
    linker_type = "direct",
    rust_objcopy = "//:rust-objcopy",
    rustfmt = "//:rustfmt_bin",
    cargo = "//:cargo",
    clippy_driver = "//:clippy_driver_bin",
    cargo_clippy = "//:cargo_clippy_bin",
    llvm_cov = "//:llvm_cov_bin",
    llvm_profdata = "//:llvm_profdata_bin",
    llvm_lib = "//:llvm_lib",
    rustc_lib = "//:rustc_lib",
    allocator_library = None,
    global_allocator_library = None,
    binary_ext = "",
    staticlib_ext = ".a",
    dylib_ext = ".so",
    stdlib_linkflags = ["-ldl", "-lpthread"],
    default_edition = "$1",
    exec_triple = "$triple",
    target_triple = "$triple",
    visibility = ["//visibility:public"],
    extra_rustc_flags = [],
    extra_exec_rustc_flags = [],
    opt_level = None,
    strip_level = None,
    version = "$version",
    channel = "stable",
    iso_date = None,
    tags = ["rust_version=$version"],
)
EOF
}

# rustfmt_toolchain_tools_repository: compiler, rustfmt, rustfmt_toolchain.
build_rustfmt_toolchain() {
  build_compiler
  echo
  build_rustfmt
  cat <<EOF

load("@rules_rust//rust:toolchain.bzl", "rustfmt_toolchain")

rustfmt_toolchain(
    name = "rustfmt_toolchain",
    rustfmt = "//:rustfmt_bin",
    rustc = "//:rustc",
    rustc_lib = "//:rustc_lib",
    visibility = ["//visibility:public"],
)
EOF
}

# stand_in <canonical name> toolchain <default edition> | rustfmt: the repository of a
# toolchain (rustc, clippy, cargo, rustfmt, the standard library, llvm-tools) or of
# rustfmt alone. Made again only when the sysroot or its rustc changed (a running Bazel
# server may be reading it), and then whole, in a new folder moved into place.
stand_in() {
  local name=$1 kind=$2 dir="$out/$1" stamp="$sysroot $found"
  echo "--override_repository=$name=$dir"
  [[ $(cat "$dir/.made-from" 2>/dev/null) == "$stamp" ]] && return
  rm -rf "$dir.new"
  mkdir -p "$dir.new"
  : >"$dir.new/REPO.bazel" # the repository boundary (the rule writes a WORKSPACE.bazel)
  if [[ $kind == toolchain ]]; then
    build_toolchain "$3" >"$dir.new/BUILD.bazel"
    link "$dir.new" rustc clippy-preview cargo rustfmt-preview rust-std
    link_llvm_tools "$dir.new"
    # rust_toolchain_tools_repository also writes an empty file named after the
    # repository ("used to locate rust_host_tools"); crate_universe takes its folder.
    : >"$dir.new/$name"
  else
    build_rustfmt_toolchain >"$dir.new/BUILD.bazel"
    link "$dir.new" rustc rustfmt-preview
  fi
  echo "$stamp" >"$dir.new/.made-from"
  rm -rf "$dir"
  mv "$dir.new" "$dir"
}

say "Rust $version toolchain stand-ins from $sysroot in $out"
# edition: the project's rust.toolchain(edition = "2024"); host_tools has none.
stand_in "rules_rust~~rust~rust_linux_x86_64__${triple}__stable_tools" toolchain 2024
stand_in "rules_rust~~rust~rustfmt_nightly-2026-07-16__${triple}_tools" rustfmt
stand_in "rules_rust~~rust_host_tools~rust_host_tools" toolchain ""
