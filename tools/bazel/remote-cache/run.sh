#!/usr/bin/env bash
# A Bazel remote cache on loopback for CI (the GitHub workflow uses a hosted one through
# the same flags): bazel-remote, pinned in go.mod next to this script, built into the
# cache outside the checkout. `run.sh start` starts it in the background (a no-op when it
# answers) with its data under ~/.cache/setpoint/bazel-remote, so a later run on the
# same machine is served from it; `run.sh stop` stops it; `run.sh stats` prints its
# counters. Prints nothing else on success. Port: SETPOINT_REMOTE_CACHE_PORT (9092).
set -euo pipefail
source "$(dirname "$0")/../../lib.sh"

version=$(module_version bazel/remote-cache github.com/buchgr/bazel-remote/v2)
binary="$cache/tools/bazel-remote-$version"
data="$cache/bazel-remote"
pidfile="$data/bazel-remote.pid"
port=${SETPOINT_REMOTE_CACHE_PORT:-9092}
http_port=$((port + 1))

answers() { curl -fsS "http://127.0.0.1:$http_port/status" >/dev/null 2>&1; }

case ${1:-} in
  start)
    go_build bazel/remote-cache github.com/buchgr/bazel-remote/v2 "$binary" "about 1 min"
    answers && exit
    mkdir -p "$data"
    # 20 GiB: every configuration of a CI run several times over; the oldest go first.
    nohup "$binary" --dir "$data/cas" --max_size 20 --host 127.0.0.1 --port "$http_port" \
      --grpc_address "127.0.0.1:$port" >"$data/bazel-remote.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 30); do answers && exit; sleep 1; done
    say "bazel-remote did not answer within 30 s; see $data/bazel-remote.log"
    exit 1 ;;
  stop)
    [[ -f $pidfile ]] || exit 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == bazel-remote* ]] && kill "$pid"
    exit 0 ;;
  stats)
    curl -fsS "http://127.0.0.1:$http_port/status" ;;
  *) echo "usage: $0 start|stop|stats" >&2; exit 2 ;;
esac
