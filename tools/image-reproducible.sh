#!/usr/bin/env bash
# Checks that `make image` is reproducible: builds it again in a fresh clone of HEAD at
# another path, with an empty target directory, and compares the image archive and the
# SBOMs (Cargo's build writes one per binary) byte for byte (so the image digests are
# equal too).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ -f target/image/setpoint.tar ]] || { echo "run make image first" >&2; exit 1; }
if [[ -n "$(git status --porcelain)" ]]; then
  echo "image-reproducible: the working tree has uncommitted changes; commit them first" >&2
  exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git clone --quiet . "$scratch/setpoint"
echo "image-reproducible: second clean build in $scratch (a release build: ~7-10 min) ..." >&2
make -C "$scratch/setpoint" --no-print-directory image
# Every file of both builds' target/image (make image writes only its own there).
names() { (cd "$1" && printf '%s\n' *); }
files=$(names target/image)
if [[ $files != "$(names "$scratch/setpoint/target/image")" ]]; then
  echo "image-reproducible: the two builds wrote different files to target/image" >&2
  exit 1
fi
summary=""
while IFS= read -r file; do
  if ! cmp -s "target/image/$file" "$scratch/setpoint/target/image/$file"; then
    echo "image-reproducible: the two builds of $file differ" >&2
    exit 1
  fi
  if [[ $file == *.cdx.json ]]; then
    summary+=", SBOM $file ($(grep -c '"purl": "pkg:cargo/' "target/image/$file") crates)"
  fi
done <<< "$files"
echo "image-reproducible: identical archive (sha256 $(sha256sum < target/image/setpoint.tar | cut -c1-16)...)$summary"
