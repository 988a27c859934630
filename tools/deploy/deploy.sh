#!/usr/bin/env bash
# `make deploy`: Setpoint on a local KIND cluster (needs Docker). Creates or reuses the
# cluster (KIND_OFFLINE=1: two nodes from the node image `make kind-node` builds, with
# kube-router as CNI, for machines that reach no container registry), loads the image
# (setpoint:dev, both binaries), creates the TLS Secret and client-CA ConfigMap from a
# dev PKI in .dev/kind-pki, applies k8s/base with egress to exactly this cluster's API
# server (tools/deploy/egress.sh, as `make overlay`), waits for the rollouts of
# setpoint-api and setpoint-reconciler, and runs a smoke test through a port-forward
# with setpointctl. Idempotent: a second run rolls the pods only when the image or the
# PKI changed. `deploy.sh down` removes Setpoint; `deploy.sh kind-down` deletes the
# cluster.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
tools=$(tools/deploy/build.sh)
kind="$tools/kind"
# Every kubectl call goes to this cluster: "${kubectl[@]}" is the command with its flags.
kubectl=("$tools/kubectl" --context kind-setpoint)
cluster=setpoint

case "${1:-up}" in
  down) "${kubectl[@]}" delete -k k8s/base --ignore-not-found; exit ;;
  kind-down) "$kind" delete cluster --name "$cluster"; exit ;;
  up) ;;
  *) echo "usage: $0 [up|down|kind-down]" >&2; exit 2 ;;
esac

command -v docker >/dev/null || { echo "make deploy needs Docker (for KIND)" >&2; exit 1; }
if [[ ${KIND_OFFLINE:-0} == 1 ]]; then
  offline=$(tools/kind/build.sh)
  node_image=$(sed -n 's/^ *image: //p' "$offline/cluster.yaml" | head -1)
  # kind starts its nodes with --privileged; where Docker cannot grant every capability
  # ("unable to apply caps"), use the wrapper. Any other failure is reported as it is.
  if ! privileged=$(docker run --rm --privileged --entrypoint true "$node_image" 2>&1); then
    if [[ $privileged != *"apply caps"* ]]; then
      echo "deploy: cannot start the node image: $privileged" >&2
      exit 1
    fi
    echo "deploy: Docker refuses --privileged here; kind runs through tools/kind/docker-wrapper" >&2
    export SETPOINT_REAL_DOCKER
    SETPOINT_REAL_DOCKER=$(command -v docker)
    PATH="$root/tools/kind/docker-wrapper:$PATH"
  fi
fi
if ! "$kind" get clusters | grep -qx "$cluster"; then
  echo "deploy: creating KIND cluster $cluster (about 1 min) ..." >&2
  if [[ -n ${offline:-} ]]; then
    "$kind" create cluster --config "$offline/cluster.yaml"
  else
    "$kind" create cluster --config tools/deploy/kind-cluster.yaml --wait 120s
  fi
fi
if [[ -n ${offline:-} ]]; then
  # The node image carries no CNI: kube-router gives pod networking and NetworkPolicy.
  "${kubectl[@]}" apply -f "$offline/kube-router.yaml"
  "${kubectl[@]}" -n kube-system rollout status daemonset/kube-router --timeout=180s
  "${kubectl[@]}" wait --for=condition=Ready nodes --all --timeout=180s
fi

echo "deploy: loading the image ..." >&2
# One image, setpoint:dev, for both Deployments (each names its binary in `command:`).
"$kind" load image-archive target/image/setpoint.tar --name "$cluster"

echo "deploy: dev PKI, TLS Secret and client CA ..." >&2
# Its own dev PKI, kept across runs (so a second `make deploy` changes nothing) until it
# expires within a day; `make run` regenerates .dev/pki every time.
pki=.dev/kind-pki
if ! openssl x509 -checkend 86400 -noout -in "$pki/server.crt" >/dev/null 2>&1; then
  cargo run --quiet --locked -p devpki -- --out "$pki"
fi
"${kubectl[@]}" apply -f k8s/base/namespace.yaml
"${kubectl[@]}" -n setpoint create secret generic setpoint-tls \
  --from-file=tls.crt="$pki/server.crt" --from-file=tls.key="$pki/server.key" \
  --from-file=ca.crt="$pki/ca.crt" --dry-run=client -o yaml | "${kubectl[@]}" apply -f -
# Client certificates chain to their own CA, not to the server certificate's issuer.
"${kubectl[@]}" -n setpoint create configmap setpoint-client-ca \
  --from-file=ca.crt="$pki/client-ca.crt" --dry-run=client -o yaml | "${kubectl[@]}" apply -f -

# k8s/base allows no egress: the overlay that `make overlay` writes (tools/deploy/egress.sh)
# allows it to exactly this cluster's API-server endpoints.
tools/deploy/egress.sh .dev/deploy/egress "${kubectl[@]}"
# The tag stays setpoint:dev; the digest of the image archive in both pod templates, and
# of the PKI in the API's (the reconciler reads no TLS material), roll the pods when
# either changed (a second `make deploy` upgrades in place), not otherwise.
sha256() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -d' ' -f1; }
image_digest=$(sha256 < target/image/setpoint.tar)
pki_digest=$(cat "$pki"/{ca,client-ca,server}.crt | sha256)
mkdir -p .dev/deploy
cat > .dev/deploy/kustomization.yaml <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [egress]
patches:
  - patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: setpoint-api, namespace: setpoint}
      spec:
        template:
          metadata:
            annotations:
              setpoint.dev/image-archive: "sha256:$image_digest"
              setpoint.dev/pki: "sha256:$pki_digest"
  - patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: setpoint-reconciler, namespace: setpoint}
      spec:
        template:
          metadata:
            annotations:
              setpoint.dev/image-archive: "sha256:$image_digest"
EOF
# A cluster deployed before the API and the reconciler were two Deployments still runs
# the one Deployment `setpoint` (setpoint-server:dev, whose pods would contend for the
# Lease) with its PodDisruptionBudget, ServiceAccount and cluster-wide RBAC (which the
# admission policies no longer name); `kubectl apply` prunes nothing.
previous=(deployment/setpoint poddisruptionbudget/setpoint serviceaccount/setpoint
  clusterrolebinding/setpoint clusterrole/setpoint)
"${kubectl[@]}" -n setpoint delete "${previous[@]}" --ignore-not-found
"${kubectl[@]}" apply -k .dev/deploy
for deployment in setpoint-api setpoint-reconciler; do
  "${kubectl[@]}" -n setpoint rollout status "deployment/$deployment" --timeout=180s
done

echo "deploy: smoke test ..." >&2
"${kubectl[@]}" create namespace setpoint-demo --dry-run=client -o yaml | "${kubectl[@]}" apply -f -
"${kubectl[@]}" -n setpoint-demo create deployment web --image=registry.k8s.io/pause:3.10.2 \
  --dry-run=client -o yaml | "${kubectl[@]}" apply -f -
"${kubectl[@]}" -n setpoint port-forward service/setpoint 18443:8443 >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
export SETPOINT_SERVER=https://localhost:18443 SETPOINT_CA=$pki/ca.crt \
  SETPOINT_CERT=$pki/operator.crt SETPOINT_KEY=$pki/operator.key
ctl() { cargo run --quiet --locked -p setpointctl -- "$@"; }
for _ in $(seq 30); do ctl list >/dev/null 2>&1 && break; sleep 1; done
ctl list -n setpoint-demo
ctl set setpoint-demo/web 2
scaled=false
for _ in $(seq 30); do
  if [[ $("${kubectl[@]}" -n setpoint-demo get deployment web -o jsonpath='{.spec.replicas}') == 2 ]]; then
    scaled=true
    break
  fi
  sleep 1
done
$scaled || { echo "deploy: smoke test failed: setpoint-demo/web was not scaled to 2" >&2; exit 1; }
ctl get setpoint-demo/web
echo "deploy: done. Setpoint runs in KIND cluster $cluster (context kind-$cluster)." >&2
