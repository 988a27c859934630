#!/usr/bin/env bash
# For CI on a Debian machine without a running Docker engine: installs Debian's Docker
# engine and debootstrap if absent, and starts dockerd in the background (no systemd
# here), logging to $SETPOINT_CACHE/kind/dockerd.log. `docker-up.sh stop` stops a dockerd
# this script started. Prints nothing when Docker already answers.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
pidfile="$cache/kind/dockerd.pid"
log="$cache/kind/dockerd.log"
mkdir -p "$cache/kind"
sudo=$([[ $(id -u) == 0 ]] || echo sudo)

if [[ ${1:-} == stop ]]; then
  [[ -f $pidfile ]] || exit 0
  $sudo kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
  say "stopped dockerd"
  exit
fi

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing Debian's docker.io and debootstrap (about 1 min) ..."
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q docker.io debootstrap >/dev/null
fi
docker info >/dev/null 2>&1 && exit
say "starting dockerd (log: $log) ..."
$sudo sh -c "nohup dockerd > '$log' 2>&1 & echo \$! > '$pidfile'"
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit
  sleep 1
done
echo "docker-up: dockerd did not answer within 60 s; see $log" >&2
exit 1
