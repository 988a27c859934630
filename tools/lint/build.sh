#!/usr/bin/env bash
# Builds buildifier and actionlint (pinned in go.mod next to this script) into the cache
# outside the checkout; a no-op when built. Prints the folder that holds both.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

buildtools=$(module_version lint github.com/bazelbuild/buildtools)
actionlint=$(module_version lint github.com/rhysd/actionlint)
out="$cache/lint/$(go env GOOS)-$(go env GOARCH)-buildtools-$buildtools-actionlint-$actionlint"
go_build lint github.com/bazelbuild/buildtools/buildifier "$out/buildifier" "about 30 s" \
  "-X main.buildVersion=$buildtools"
go_build lint github.com/rhysd/actionlint/cmd/actionlint "$out/actionlint" "about 30 s" \
  "-X github.com/rhysd/actionlint.version=$actionlint"
echo "$out"
