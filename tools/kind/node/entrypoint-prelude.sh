# --- Setpoint offline KIND (tools/kind): inserted into kind's entrypoint before its fixes.
# Where Docker cannot start --privileged containers (the host's capability bounding set
# lacks CAP_SYS_RESOURCE), tools/kind/docker-wrapper starts nodes with every other capability
# instead, which leaves the cgroup mounts read-only: remount them read-write.
if findmnt -rn -t cgroup,cgroup2 -o OPTIONS | grep -qw ro; then
  log_info 'offline kind: remounting the cgroup mounts read-write'
  mount -o remount,rw /sys/fs/cgroup || true
  for m in $(findmnt -rn -t cgroup,cgroup2 -o target); do
    mount -o remount,bind,rw "$m" || log_warn "offline kind: cannot remount $m read-write"
  done
fi
# The kubelet sets these host-wide sysctls (its kernel tunables) when they differ; give
# it node-local files holding its values instead, so the host is untouched.
mkdir -p /kind/sysctl
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${setting%%=*} file=/kind/sysctl/${setting%%=*}
  mkdir -p "$(dirname "$file")" && echo "${setting#*=}" > "$file"
  mount --bind "$file" "/proc/sys/$key" || log_warn "offline kind: cannot shadow $key"
done
# --- end of the offline KIND prelude
