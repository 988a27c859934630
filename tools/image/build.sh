#!/usr/bin/env bash
# `make image`: the server in a reproducible OCI image archive, target/image/setpoint-server.tar.
# BUILD=bazel: the distroless-based image of services/server/BUILD.bazel, as that archive.
# BUILD=cargo: the static server (glibc, +crt-static) for IMAGE_TARGET wrapped by
# setpoint-image (tools/ociimage), and its CycloneDX SBOM, target/image/setpoint-server.cdx.json;
# with IMAGE_BUILDER=docker (a host that is not Linux) the same inside the pinned Rust
# image (tools/image-in-docker.sh). The Makefile passes every variable below.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd -P) # as make's CURDIR: the paths the binary and the SBOM must not contain

: "${BUILD:?}" "${SOURCE_DATE_EPOCH:?}" "${REVISION:?}"

if [[ $BUILD == bazel ]]; then
  : "${BAZEL:?}"
  "$BAZEL" build --config=release --output_groups=+tarball //services/server:load
  mkdir -p target/image
  install -m 644 "$("$BAZEL" cquery --config=release --output_groups=tarball --output=files \
    //services/server:load)" target/image/setpoint-server.tar
elif [[ ${IMAGE_BUILDER:?} == docker ]]; then
  tools/image-in-docker.sh
else
  : "${CARGO:?}" "${IMAGE_TARGET:?}" "${TARGET_DIR:?}" "${CARGO_CYCLONEDX:?}"
  RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$root=/setpoint --remap-path-prefix=$HOME=/home" \
    "$CARGO" build --release --locked --target "$IMAGE_TARGET" -p setpoint-server
  "$CARGO" run --quiet --locked -p ociimage -- \
    --binary "$TARGET_DIR/$IMAGE_TARGET/release/setpoint-server" \
    --revision "$REVISION" --output target/image/setpoint-server.tar
  # CycloneDX SBOM of the crates linked into the binary. The tool writes one file per
  # workspace binary next to its Cargo.toml; keep the server's, with paths as in the binary.
  "$CARGO_CYCLONEDX" cyclonedx --quiet --format json \
    --spec-version 1.5 --describe binaries --no-build-deps --target "$IMAGE_TARGET"
  sed "s|file://$root/|file:///setpoint/|g" services/server/setpoint-server_bin.cdx.json \
    > target/image/setpoint-server.cdx.json
  find services tools -name '*_bin.cdx.json' -delete
fi
