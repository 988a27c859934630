#!/usr/bin/env bash
# Bazel's --workspace_status_command for `--config=release`: the commit for the image's
# revision label (STABLE_ keys invalidate stamped outputs when they change).
set -euo pipefail
# safe.directory: under tools/bazel/airgap/bazel git runs as root in a chroot, and would
# refuse a checkout that another user owns (the label would then say "unknown").
echo "STABLE_GIT_COMMIT $(git -c safe.directory="$PWD" rev-parse HEAD 2>/dev/null || echo unknown)"
