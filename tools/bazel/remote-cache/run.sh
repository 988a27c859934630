#!/usr/bin/env bash
# A Bazel remote cache on loopback for CI (the GitHub workflow uses a hosted one through
# the same flags): bazel-remote, pinned in go.mod next to this script, built into the
# cache outside the checkout. Its data stays under ~/.cache/setpoint/bazel-remote, so a
# later run on the same machine is served from it; because what it serves ends up in
# the deployed image, it answers only with a password made on first use (mode 0600),
# not to any local process.
#   run.sh start    starts it in the background (a no-op when it answers)
#   run.sh header   prints the --remote_header value that authenticates to it
#   run.sh stop     stops it
# Port: SETPOINT_REMOTE_CACHE_PORT (9092; HTTP status on the next port).
set -euo pipefail
source "$(dirname "$0")/../../lib.sh"

version=$(module_version bazel/remote-cache github.com/buchgr/bazel-remote/v2)
binary="$cache/tools/bazel-remote-$version"
data="$cache/bazel-remote"
pidfile="$data/bazel-remote.pid"
port=${SETPOINT_REMOTE_CACHE_PORT:-9092}
http_port=$((port + 1))
user=ci

password() {
  if [[ ! -s $data/password ]]; then
    mkdir -p "$data"
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$data/password")
  fi
  cat "$data/password"
}
answers() { curl -fsS -u "$user:$(password)" "http://127.0.0.1:$http_port/status" >/dev/null 2>&1; }

case ${1:-} in
  start)
    go_build bazel/remote-cache github.com/buchgr/bazel-remote/v2 "$binary" "about 1 min"
    answers && exit
    # bazel-remote reads htpasswd's {SHA} form: base64 of the password's SHA-1.
    sha=$(password | python3 -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha1(sys.stdin.read().strip().encode()).digest()).decode())')
    (umask 077 && echo "$user:{SHA}$sha" >"$data/htpasswd")
    # 20 GiB: every configuration of a CI run several times over; the oldest go first.
    nohup "$binary" --dir "$data/cas" --max_size 20 --htpasswd_file "$data/htpasswd" \
      --host 127.0.0.1 --port "$http_port" --grpc_address "127.0.0.1:$port" \
      >"$data/bazel-remote.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 30); do answers && exit; sleep 1; done
    say "bazel-remote did not answer within 30 s; see $data/bazel-remote.log"
    exit 1 ;;
  header)
    echo "Authorization=Basic $(printf '%s:%s' "$user" "$(password)" | base64 -w0)" ;;
  stop)
    [[ -f $pidfile ]] || exit 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    # Only the bazel-remote this script started, not whatever now has its pid.
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == bazel-remote* ]] && kill "$pid"
    exit 0 ;;
  *) echo "usage: $0 start|header|stop" >&2; exit 2 ;;
esac
