#!/usr/bin/env bash
# For CI on a Debian machine without a running Docker engine: installs Debian's Docker
# engine and debootstrap if absent, and starts dockerd in the background (no systemd
# here), logging to $SETPOINT_CACHE/kind/dockerd.log. `docker-up.sh stop` stops a dockerd
# this script started, and waits for it to exit. Prints nothing when Docker already answers.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
pidfile="$cache/kind/dockerd.pid"
log="$cache/kind/dockerd.log"
mkdir -p "$cache/kind"
sudo=$([[ $(id -u) == 0 ]] || echo sudo)

if [[ ${1:-} == stop ]]; then
  [[ -f $pidfile ]] || exit 0
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  # Only the dockerd this script started, not whatever now has its pid.
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || exit 0
  $sudo kill "$pid"
  for _ in $(seq 30); do
    [[ -d /proc/$pid ]] || { say "stopped dockerd"; exit 0; }
    sleep 1
  done
  say "dockerd ($pid) did not exit within 30 s"
  exit 1
fi

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing Debian's docker.io and debootstrap (about 1 min) ..."
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q docker.io debootstrap >/dev/null
fi
$sudo docker info >/dev/null 2>&1 && exit
say "starting dockerd (log: $log) ..."
$sudo sh -c "nohup dockerd > '$log' 2>&1 & echo \$! > '$pidfile'"
for _ in $(seq 60); do
  $sudo docker info >/dev/null 2>&1 && exit
  sleep 1
done
say "dockerd did not answer within 60 s; see $log"
exit 1
