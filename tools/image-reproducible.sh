#!/usr/bin/env bash
# Checks that `make image` is reproducible: builds it again in a fresh clone of HEAD at
# another path, with an empty target directory, and compares the archives byte for byte
# (so the image digests are equal too).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ -f target/image/setpoint-server.tar ]] || { echo "run make image first" >&2; exit 1; }
if [[ -n "$(git status --porcelain)" ]]; then
  echo "image-reproducible: the working tree has uncommitted changes; commit them first" >&2
  exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git clone --quiet . "$scratch/setpoint"
echo "image-reproducible: second clean build in $scratch (a release build: ~7-10 min) ..." >&2
make -C "$scratch/setpoint" --no-print-directory image
if cmp -s target/image/setpoint-server.tar "$scratch/setpoint/target/image/setpoint-server.tar"; then
  echo "image-reproducible: identical ($(sha256sum < target/image/setpoint-server.tar | cut -c1-16)...)"
else
  echo "image-reproducible: the two builds differ" >&2
  exit 1
fi
