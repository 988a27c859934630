#!/usr/bin/env bash
# `make kind-node`: everything an offline KIND cluster needs, built from the Go module
# proxy and Debian's packages, for machines that reach no container registry. Builds
# kubeadm, kubelet, kubectl and the control-plane images at the Kubernetes version pinned
# in tools/controlplane, etcd, CoreDNS, pause, crictl, kube-router (the CNI), two Debian
# bases from debootstrap, and the node image; saves the node image as an archive in the
# cache, keyed by every version in it and by the files that shape it. A second run only
# loads that archive into Docker when Docker lacks the image. Prints the folder holding
# `cluster.yaml` (the kind config naming the node image) and `kube-router.yaml`.
# Needs Docker, debootstrap and root (debootstrap); Linux only.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
kube_versions
here="$tools_dir/kind"
export DOCKER_BUILDKIT=0 # the classic builder needs no frontend image from a registry

etcd_version=$(module_version controlplane/etcd go.etcd.io/etcd/server/v3)
coredns_version=$(module_version kind/coredns github.com/coredns/coredns)
crictl_version=$(module_version kind/crictl sigs.k8s.io/cri-tools)
kube_router_version=$(module_version kind/kube-router github.com/cloudnativelabs/kube-router/v2)
kind_version=$(module_version deploy sigs.k8s.io/kind)
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Release files are checked against Debian's archive key, packages against them.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# module_dir <module dir under tools/> <module path>: its source, downloaded if needed.
module_dir() {
  (cd "$tools_dir/$1" && GOWORK=off go mod download -json "$2") | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}
kubernetes_source=$(module_dir controlplane/kubernetes k8s.io/kubernetes)
pause_version=$(sed -n 's/^TAG ?= //p' "$kubernetes_source/build/pause/Makefile")
kind_files="$(module_dir deploy sigs.k8s.io/kind)/images/base/files"

versions="kubernetes-$kube_version etcd-$etcd_version coredns-$coredns_version crictl-$crictl_version \
kube-router-$kube_router_version pause-$pause_version kind-$kind_version debian-$suite-$(go env GOARCH)"
# Any change to how the node is assembled makes a new image.
shape=$(cat "$here"/build.sh "$here"/node/* "$here"/kube-router.yaml | sha256sum | cut -c1-12)
out="$cache/kind/$(echo "$versions" | tr ' ' '_')"
node_image="setpoint.local/kind-node:$kube_version-$shape"
node_archive="$out/node-$shape.tar"
images="$out/images" bin="$out/bin"
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$out" "$images" "$bin"

write_config() { # the kind config for the offline two-node cluster, and the CNI manifest
  sed "s|@NODE_IMAGE@|$node_image|; s|@ETCD_TAG@|$etcd_version|" "$here/cluster.yaml" > "$out/cluster.yaml"
  sed "s|@KUBE_ROUTER_IMAGE@|setpoint.local/kube-router:$kube_router_version|" \
    "$here/kube-router.yaml" > "$out/kube-router.yaml"
  echo "$out"
}

if docker image inspect "$node_image" >/dev/null 2>&1; then write_config; exit; fi
if [[ -f $node_archive ]]; then
  say "loading the cached node image $node_image (about 1 min) ..."
  docker load -q -i "$node_archive" >&2
  write_config
  exit
fi
[[ $(uname -s) == Linux ]] || { say "the offline node image is built on Linux only"; exit 1; }
command -v debootstrap >/dev/null || { say "needs debootstrap (apt-get install debootstrap)"; exit 1; }
[[ -f $keyring ]] || { say "needs Debian's archive key $keyring (apt-get install debian-archive-keyring)"; exit 1; }
start=$SECONDS
say "building the offline KIND node image $node_image: about 10 min on 2 cores once the control plane is built"

# 1. Binaries, one Kubernetes version for all; the control plane's are reused.
controlplane=$("$tools_dir/controlplane/build.sh")
cp "$controlplane"/{etcd,kube-apiserver,kube-controller-manager} "$bin/"
cp "$("$tools_dir/deploy/build.sh")/kubectl" "$bin/"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kubeadm "$bin/kubeadm" "under a minute" "$kube_ldflags"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kubelet "$bin/kubelet" "under a minute" "$kube_ldflags"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$bin/kube-scheduler" "seconds" "$kube_ldflags"
go_build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-proxy "$bin/kube-proxy" "seconds" "$kube_ldflags"
go_build kind/coredns github.com/coredns/coredns "$bin/coredns" "about 3 min"
go_build kind/crictl sigs.k8s.io/cri-tools/cmd/crictl "$bin/crictl" "about 1 min"
go_build kind/kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router "$bin/kube-router" "about 2 min"
if [[ ! -x $bin/pause ]]; then
  say "building pause $pause_version from the Kubernetes module (seconds) ..."
  gcc -Os -Wall -Werror -static -DVERSION="v$pause_version-setpoint" -o "$bin/pause" \
    "$kubernetes_source/build/pause/linux/pause.c"
fi

# 2. Two Debian bases: the node (systemd, containerd, runc, CNI plugins) and a small one
#    with a shell and the network tools kube-proxy, kube-router and the e2e probe need.
debootstrap_image() { # debootstrap_image <tag> <packages>
  local tag=$1 packages=$2
  docker image inspect "$tag" >/dev/null 2>&1 && return
  say "debootstrap $suite for $tag from $mirror (1-2 min) ..."
  local rootfs
  rootfs=$(mktemp -d)
  debootstrap --keyring="$keyring" --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  local changes=(--change "ENV PATH=$path")
  if [[ $tag == *kind-base* ]]; then
    prepare_node_rootfs "$rootfs"
    changes+=(--change 'ENV container=docker')
  fi
  tar -C "$rootfs" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  rm -rf "$rootfs"
}

prepare_node_rootfs() { # what kind's base-image Dockerfile does, with Debian's containerd
  local r=$1
  install -d -m 0755 "$r/kind/bin" "$r/etc/kubernetes/manifests" "$r/opt/cni/bin" "$r/etc/cni/net.d"
  install -m 0755 "$kind_files"/usr/local/bin/* "$r/usr/local/bin/"
  install -m 0755 "$kind_files"/kind/bin/* "$r/kind/bin/"
  cp -r "$kind_files"/etc/. "$r/etc/"
  chmod -R u=rwX,go=rX "$r/etc/systemd/system" "$r/etc/containerd" "$r/etc/default" "$r/etc/sysctl.d"
  # kind starts the node without --privileged here (the Docker wrapper): prelude first.
  sed -i "/^fix_mount$/e cat $here/node/entrypoint-prelude.sh" "$r/usr/local/bin/entrypoint"
  grep -q 'offline kind' "$r/usr/local/bin/entrypoint"
  sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
    -e "s|registry.k8s.io/pause:[0-9.]*|registry.k8s.io/pause:$pause_version|" "$r/etc/containerd/config.toml"
  for tool in containerd containerd-shim-runc-v2 ctr; do ln -sf "/usr/bin/$tool" "$r/usr/local/bin/$tool"; done
  for plugin in bridge host-local portmap loopback; do ln -sf "/usr/lib/cni/$plugin" "$r/opt/cni/bin/$plugin"; done
  chroot "$r" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
  chroot "$r" sh -c '
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    ln -sf /usr/lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
    systemctl mask systemd-binfmt.service >/dev/null 2>&1'
}

# The node base holds the files that shape it (the entrypoint prelude): named by the shape.
debootstrap_image "setpoint.local/kind-base:$suite-$shape" \
  systemd,dbus,containerd,runc,containernetworking-plugins,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,jq,procps
debootstrap_image setpoint.local/debian-net:$suite iptables,ipset,iproute2,conntrack,kmod,bash,procps

# 3. Images the node holds before kubeadm runs, under the names kubeadm and containerd use.
image() { # image <tag> <base> <binary> [entrypoint]
  local tag=$1 base=$2 binary=$3 entrypoint=${4:-}
  local archive
  archive="$images/$(echo "$tag" | tr '/:' '__').tar"
  [[ -f $archive ]] && return
  say "image $tag ..."
  {
    echo "FROM $base"
    echo "ENV PATH=$path"
    echo "COPY $binary /usr/local/bin/$binary"
    if [[ -n $entrypoint ]]; then echo "ENTRYPOINT [\"/usr/local/bin/$binary\"]"; fi
  } | docker build -q -t "$tag" -f - "$bin" >/dev/null 2>"$out/build.log" || { cat "$out/build.log" >&2; exit 1; }
  docker save -o "$archive.tmp" "$tag"
  mv "$archive.tmp" "$archive"
}
for component in kube-apiserver kube-controller-manager kube-scheduler; do
  image "registry.k8s.io/$component:$kube_version" scratch "$component"
done
image "registry.k8s.io/kube-proxy:$kube_version" setpoint.local/debian-net:$suite kube-proxy
image "registry.k8s.io/etcd:$etcd_version" scratch etcd
image "registry.k8s.io/coredns/coredns:$coredns_version" scratch coredns entrypoint
image "registry.k8s.io/pause:$pause_version" scratch pause entrypoint
image "setpoint.local/kube-router:$kube_router_version" setpoint.local/debian-net:$suite kube-router entrypoint
if [[ ! -f $images/debian-net.tar ]]; then
  docker save -o "$images/debian-net.tar.tmp" setpoint.local/debian-net:$suite
  mv "$images/debian-net.tar.tmp" "$images/debian-net.tar"
fi

# 4. The node: the base, kubeadm/kubelet/kubectl/crictl, /kind/version, and every image
#    imported into the node's containerd, pinned so the kubelet never collects it.
say "assembling the node image (about 1 min) ..."
node=setpoint-kind-node-build-$$
docker run -d --name "$node" --entrypoint sleep --security-opt seccomp=unconfined \
  "setpoint.local/kind-base:$suite-$shape" infinity >/dev/null
trap 'docker rm -f -v "$node" >/dev/null 2>&1 || true' EXIT
for b in kubeadm kubelet kubectl crictl; do docker cp "$bin/$b" "$node:/usr/bin/$b"; done
docker exec "$node" sh -c "chown root:root /usr/bin/kube* /usr/bin/crictl && mkdir -p /kind && printf %s $kube_version > /kind/version"
docker exec -d "$node" containerd
docker exec "$node" sh -c 'for _ in $(seq 30); do ctr version >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1'
for archive in "$images"/*.tar; do
  docker exec -i "$node" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --no-unpack --digests - < "$archive" >/dev/null
done
docker exec "$node" sh -c 'pkill containerd; while pgrep -x containerd >/dev/null; do sleep 1; done'
docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  --change 'CMD []' "$node" "$node_image" >/dev/null
say "saving $node_image to $node_archive ..."
docker save -o "$node_archive.tmp" "$node_image"
mv "$node_archive.tmp" "$node_archive"
say "node image ready in $((SECONDS - start)) s"
write_config
