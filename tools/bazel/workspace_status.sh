#!/usr/bin/env bash
# Bazel's --workspace_status_command for `--config=release`: the commit for the image's
# revision label (STABLE_ keys invalidate stamped outputs when they change).
set -euo pipefail
echo "STABLE_GIT_COMMIT $(git rev-parse HEAD 2>/dev/null || echo unknown)"
