#!/usr/bin/env bash
# Prepares this machine to build with Bazel without the Bazel Central Registry, GitHub or
# a container registry (docs/build.md, "Building in an air-gapped environment"); crates come
# from crates.io. Builds or assembles, into the cache, each thing Bazel would download:
#   - Bazel 7.7.1 itself, for a Linux host without one (chroot.sh);
#   - the Rust toolchain, from rustup's local 1.95.0 (rust.sh);
#   - cargo-bazel, crate_universe's generator, from rules_rust's own source of the pinned
#     version in the bundle;
#   - the image's prebuilt tools and its distroless base (image-tools.sh);
# then writes the per-machine flags of `--config=airgap` to airgap.bazelrc, which
# tools/bazel/airgap/bazel passes. Idempotent: a second run only rewrites that file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../lib.sh"
out="$cache/bazel/airgap"
mkdir -p "$out"
[[ -d $airgap_bundle/registry ]] || {
  say "no offline Bazel registry at $airgap_bundle (set SETPOINT_AIRGAP_BUNDLE)"
  exit 1
}

"$here/chroot.sh" >/dev/null

# cargo-bazel: the version of the pinned rules_rust, built with the local Cargo.
rules_rust=$(bazel_dep_version rules_rust)
cargo_bazel="$out/cargo-bazel-$rules_rust"
if [[ ! -x $cargo_bazel ]]; then
  say "building cargo-bazel from rules_rust $rules_rust's source (about 4 min cold on 2 cores) ..."
  start=$SECONDS
  CARGO_TARGET_DIR="$out/cargo-bazel-target" cargo build --quiet --release --locked \
    --manifest-path "$airgap_bundle/modules-src/rules_rust-$rules_rust/crate_universe/Cargo.toml" \
    --bin cargo-bazel
  cp "$out/cargo-bazel-target/release/cargo-bazel" "$cargo_bazel.tmp"
  mv "$cargo_bazel.tmp" "$cargo_bazel"
  rm -rf "$out/cargo-bazel-target"
  say "built cargo-bazel in $((SECONDS - start)) s"
fi

{
  echo "# Written by tools/bazel/airgap/setup.sh for this machine; do not edit."
  echo "common:airgap --registry=file://$airgap_bundle/registry"
  echo "common:airgap --repo_env=CARGO_BAZEL_GENERATOR_URL=file://$cargo_bazel"
  echo "common:airgap --repo_env=CARGO_BAZEL_GENERATOR_SHA256=$(sha256sum "$cargo_bazel" | cut -d' ' -f1)"
  "$here/rust.sh" | sed 's/^/common:airgap /'
  "$here/image-tools.sh" | sed 's/^/common:airgap /'
} >"$out/airgap.bazelrc.tmp"
mv "$out/airgap.bazelrc.tmp" "$out/airgap.bazelrc"
say "wrote $out/airgap.bazelrc"
