#!/usr/bin/env bash
# Builds ghz, the gRPC load generator `make bench` drives (pinned in go.mod next to this
# script), into the cache outside the checkout; a no-op when built. Prints its path.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

version=$(module_version bench github.com/bojand/ghz)
out="$cache/bench/$(go env GOOS)-$(go env GOARCH)-ghz-$version/ghz"
go_build bench github.com/bojand/ghz/cmd/ghz "$out" "about 1 min" "-X main.version=$version"
echo "$out"
