#!/usr/bin/env bash
# End to end on kind: build the image, create a cluster, install the mesh, run Bookinfo
# in an ambient namespace, and check that requests are answered (directly, through the
# ingress gateway, and routed by a waypoint), that pod-to-pod traffic is mutual TLS, and
# that the agents count it.
#
# Needs: docker (kind's nodes), kind, kubectl, openssl, and this repository's
# `cargo xtask image` (podman + runc). Requests are made from inside the mesh with
# `kubectl exec` into Bookinfo's ratings pod, as Istio's Bookinfo guide does (its image
# has curl). Pulls kind's node image and
# Bookinfo's images from their registries: it cannot run where no registry is reachable.
#
# Environment: CLUSTER (default mesh-e2e), IMAGE (default localhost/mesh-agent:dev),
# GATEWAY_API_CRDS (the Gateway API's standard-install.yaml, for the waypoint's Gateway),
# KEEP=1 keeps the cluster afterwards.
set -euo pipefail

CLUSTER=${CLUSTER:-mesh-e2e}
IMAGE=${IMAGE:-localhost/mesh-agent:dev}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
MESH_NS=mesh-system
FIXTURES="$ROOT/tests/fixtures/istio-bookinfo"
GATEWAY_API_CRDS=${GATEWAY_API_CRDS:-https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "e2e: '$1' is needed and not installed" >&2; exit 2; }
}
for tool in kind kubectl docker openssl cargo podman; do need "$tool"; done

cleanup() {
  rm -rf "$WORK"
  if [ "${KEEP:-0}" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "e2e: FAILED: $*" >&2; exit 1; }

step "image $IMAGE"
(cd "$ROOT" && cargo xtask image --tag "$IMAGE" --archive "$WORK/mesh-agent.tar")

step "cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --config "$ROOT/deploy/kind/cluster.yaml" --wait 120s
kind load image-archive "$WORK/mesh-agent.tar" --name "$CLUSTER"

step "mesh CA (Istio's cacerts layout)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/O=mesh-e2e/CN=mesh-e2e root" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$WORK/ca-key.pem" -out "$WORK/ca-cert.pem" 2>/dev/null
cp "$WORK/ca-cert.pem" "$WORK/root-cert.pem"
cp "$WORK/ca-cert.pem" "$WORK/cert-chain.pem"

step "install"
kubectl apply -f "$ROOT/deploy/mesh.yaml"
# The Istio kinds' CRDs come first in mesh.yaml; Bookinfo's DestinationRules need them served.
kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=mesh
kubectl -n "$MESH_NS" create secret generic cacerts \
  --from-file="$WORK/ca-cert.pem" --from-file="$WORK/ca-key.pem" \
  --from-file="$WORK/root-cert.pem" --from-file="$WORK/cert-chain.pem"
kubectl -n "$MESH_NS" rollout status daemonset/mesh-agent --timeout=180s

step "Bookinfo in an ambient namespace"
kubectl label namespace default istio.io/dataplane-mode=ambient --overwrite
kubectl apply -f "$FIXTURES/bookinfo.yaml"
kubectl apply -f "$FIXTURES/destination-rule-all.yaml"
kubectl wait --for=condition=available deployment --all --timeout=300s

ratings=$(kubectl get pod -l app=ratings -o jsonpath='{.items[0].metadata.name}')
fetch() { kubectl exec "$ratings" -c ratings -- curl -sS --max-time 10 "$@"; }

step "requests are answered"
title=$(fetch http://productpage:9080/productpage | grep -o '<title>[^<]*</title>' || true)
[ "$title" = "<title>Simple Bookstore App</title>" ] || fail "productpage answered '$title'"
echo "productpage: $title"

step "the ingress gateway routes Bookinfo's Gateway and VirtualService"
kubectl apply -f "$FIXTURES/bookinfo-gateway.yaml"
kubectl -n "$MESH_NS" rollout status deployment/istio-ingressgateway --timeout=180s
gateway_title=""
for _ in $(seq 1 30); do
  gateway_title=$(fetch "http://istio-ingressgateway.$MESH_NS/productpage" | grep -o '<title>[^<]*</title>' || true)
  [ "$gateway_title" = "<title>Simple Bookstore App</title>" ] && break
  sleep 2
done
[ "$gateway_title" = "<title>Simple Bookstore App</title>" ] || fail "the gateway answered '$gateway_title'"
echo "through the gateway: $gateway_title"

step "a waypoint applies Bookinfo's VirtualService: reviews v1 only, no stars"
# A waypoint is a Gateway API Gateway: its CRDs come from that project, as with Istio.
kubectl get crd gateways.gateway.networking.k8s.io >/dev/null 2>&1 \
  || kubectl apply -f "$GATEWAY_API_CRDS"
kubectl wait --for=condition=Established --timeout=60s crd/gateways.gateway.networking.k8s.io
(cd "$ROOT" && cargo run -q -p mesh-agent -- manifest waypoint --namespace default --set "image=$IMAGE") \
  | kubectl apply -f -
kubectl rollout status deployment/waypoint --timeout=180s
kubectl label service reviews istio.io/use-waypoint=waypoint --overwrite
kubectl apply -f "$FIXTURES/virtual-service-all-v1.yaml"
sleep 5
for _ in $(seq 1 10); do
  page=$(fetch http://productpage:9080/productpage)
  grep -q '<title>Simple Bookstore App</title>' <<<"$page" || fail "productpage did not answer through the waypoint"
  if grep -q 'glyphicon-star' <<<"$page"; then fail "a reviews version with stars answered despite all-v1"; fi
done
echo "10 product pages, reviews v1 each time"

step "the agents saw mutual TLS between the pods"
found=0
for pod in $(kubectl -n "$MESH_NS" get pod -l app=mesh-agent -o jsonpath='{.items[*].metadata.name}'); do
  metrics=$(kubectl get --raw "/api/v1/namespaces/$MESH_NS/pods/$pod:15020/proxy/metrics")
  if grep -q 'istio_tcp_connections_opened_total{.*connection_security_policy="mutual_tls"' <<<"$metrics"; then
    found=1
    grep 'istio_tcp_connections_opened_total{.*destination_service="productpage' <<<"$metrics" | head -3 || true
  fi
done
[ "$found" = 1 ] || fail "no agent counted a mutual TLS connection"

step "every agent is ready and the CNI plugin is in each node's chain"
for node in $(kind get nodes --name "$CLUSTER"); do
  docker exec "$node" sh -c 'grep -l mesh-cni /etc/cni/net.d/*.conflist' \
    || fail "mesh-cni is not in $node's CNI configuration"
done

step "uninstall"
kubectl delete -f "$ROOT/deploy/mesh.yaml" --wait=true
echo "e2e: passed"
