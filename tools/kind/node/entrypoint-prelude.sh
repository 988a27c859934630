# --- Setpoint offline KIND (tools/kind): inserted into kind's entrypoint before its fixes.
# Where Docker cannot start --privileged containers (the host's capability bounding set
# lacks CAP_SYS_RESOURCE), tools/kind/docker starts nodes with every other capability
# instead, which leaves the cgroup mounts read-only: remount them read-write.
if ! touch /sys/fs/cgroup/memory/.setpoint-probe 2>/dev/null; then
  log_info 'offline kind: remounting the cgroup mounts read-write'
  mount -o remount,rw /sys/fs/cgroup || true
  for m in $(findmnt -rn -t cgroup,cgroup2 -o target); do
    mount -o remount,bind,rw "$m" || log_warn "offline kind: cannot remount $m read-write"
  done
else
  rm -f /sys/fs/cgroup/memory/.setpoint-probe
fi
# The kubelet sets these host-wide sysctls; give it node-local files instead, so the
# host is untouched.
mkdir -p /kind/sysctl
for setting in vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1; do
  key=${setting%%=*} file=/kind/sysctl/${setting%%=*}
  mkdir -p "$(dirname "$file")" && echo "${setting#*=}" > "$file"
  mount --bind "$file" "/proc/sys/$key" || log_warn "offline kind: cannot shadow $key"
done
# --- end of the offline KIND prelude
