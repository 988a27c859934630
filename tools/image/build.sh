#!/usr/bin/env bash
# `make image`: Setpoint's one image, setpoint-api and setpoint-reconciler (each
# Deployment names its binary in `command:`), as a reproducible OCI image archive,
# target/image/setpoint.tar.
# BUILD=bazel: the distroless-based image of services/BUILD.bazel, as that archive.
# BUILD=cargo: both binaries static (glibc, +crt-static) for IMAGE_TARGET, put into the
# image by setpoint-image (tools/ociimage), and a CycloneDX SBOM of each,
# target/image/setpoint-api.cdx.json and setpoint-reconciler.cdx.json; with
# IMAGE_BUILDER=docker (a host that is not Linux) the same inside the pinned Rust image
# (tools/image-in-docker.sh). The Makefile passes every variable below.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd -P) # as make's CURDIR: the paths the binaries and the SBOMs must not contain

: "${BUILD:?}" "${SOURCE_DATE_EPOCH:?}" "${REVISION:?}"

# The binaries in the image; each is also its Cargo package's name.
binaries=(setpoint-api setpoint-reconciler)

# Only this build's files: no SBOM left over from another build path, no archive of an
# older name.
rm -rf target/image
mkdir -p target/image
if [[ $BUILD == bazel ]]; then
  : "${BAZEL:?}"
  "$BAZEL" build --config=release --output_groups=+tarball //services:load
  install -m 644 "$("$BAZEL" cquery --config=release --output_groups=tarball --output=files \
    //services:load)" target/image/setpoint.tar
elif [[ ${IMAGE_BUILDER:?} == docker ]]; then
  tools/image-in-docker.sh
else
  : "${CARGO:?}" "${IMAGE_TARGET:?}" "${TARGET_DIR:?}" "${CARGO_CYCLONEDX:?}"
  packages=()
  image_binaries=()
  for binary in "${binaries[@]}"; do
    packages+=(-p "$binary")
    image_binaries+=(--binary "$TARGET_DIR/$IMAGE_TARGET/release/$binary")
  done
  RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$root=/setpoint --remap-path-prefix=$HOME=/home" \
    "$CARGO" build --release --locked --target "$IMAGE_TARGET" "${packages[@]}"
  "$CARGO" run --quiet --locked -p ociimage -- "${image_binaries[@]}" \
    --revision "$REVISION" --output target/image/setpoint.tar
  # CycloneDX SBOMs of the crates linked into each binary. The tool writes one file per
  # workspace binary next to its package's Cargo.toml (services/api/setpoint-api_bin.cdx.json);
  # keep the image's two, with paths as in the binaries.
  "$CARGO_CYCLONEDX" cyclonedx --quiet --format json \
    --spec-version 1.5 --describe binaries --no-build-deps --target "$IMAGE_TARGET"
  for binary in "${binaries[@]}"; do
    sbom=$(find services -name "${binary}_bin.cdx.json")
    [[ -f $sbom ]] || { echo "make image: not one ${binary}_bin.cdx.json under services/: ${sbom:-none}" >&2; exit 1; }
    sed "s|file://$root/|file:///setpoint/|g" "$sbom" > "target/image/$binary.cdx.json"
  done
  find services tools -name '*_bin.cdx.json' -delete
fi
