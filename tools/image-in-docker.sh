#!/usr/bin/env bash
# `make image` where the static Linux binaries cannot be built natively (macOS): runs the
# same `make image` inside the pinned Rust image, so there is one definition of what is
# in the image. Needs Docker. The binaries are built for the Docker engine's architecture
# (amd64, or arm64 on Apple silicon, which is what a local KIND node runs); the commit
# time and revision come from the host's git. Crates, tools and build output are kept
# in the volume `setpoint-build` and in target/linux, so later runs are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust:1.95.0-bookworm: the toolchain rust-toolchain.toml pins, on Debian 12 like CI.
builder=docker.io/library/rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1

command -v docker >/dev/null || {
  echo "make image: this host cannot build the static Linux binary natively, and Docker is missing" >&2
  exit 1
}
echo "image: building inside $builder (first run pulls it and compiles a release build: ~10 min) ..." >&2
docker run --rm \
  --volume "$PWD:/setpoint" --workdir /setpoint \
  --volume setpoint-build:/root \
  --env HOME=/root --env CARGO_HOME=/root/.cargo --env CARGO_TARGET_DIR=/setpoint/target/linux \
  --env SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:?}" --env REVISION="${REVISION:?}" \
  "$builder" make --no-print-directory image IMAGE_BUILDER=native
