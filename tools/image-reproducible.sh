#!/usr/bin/env bash
# Checks that `make image` is reproducible: builds it again in a fresh clone of HEAD at
# another path, with an empty target directory, and compares the image archives and the
# SBOMs byte for byte (so the image digests are equal too).
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
for file in setpoint-server.tar setpoint-server.cdx.json; do
  if ! cmp -s "target/image/$file" "$scratch/setpoint/target/image/$file"; then
    echo "image-reproducible: the two builds of $file differ" >&2
    exit 1
  fi
done
echo "image-reproducible: identical archive (sha256 $(sha256sum < target/image/setpoint-server.tar | cut -c1-16)...)" \
  "and SBOM ($(grep -c '"purl": "pkg:cargo/' target/image/setpoint-server.cdx.json) crates)"
