#!/usr/bin/env bash
# Prove the running local node works end to end (after `make k8s-up`): load an image of our own,
# run a Deployment behind a Service, and a Job that resolves it through the cluster DNS, fetches
# it over the Service IP and connects to the apiserver through kubernetes.default; then fetch the
# Service from the host too (Service IP and node port), and remove it all again.
# Usage: scripts/k8s/smoke.sh
set -euo pipefail
SC_LOG_PREFIX=k8s-smoke
# shellcheck source=scripts/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

env_file="$(sc_abspath "${K8S_STATE_DIR:-.run/k8s}")/env"
[[ -f "$env_file" ]] || sc_die "$env_file not found: start the node first (make k8s-up)"
# shellcheck source=/dev/null
source "$env_file"
kubectl() { "$K8S_KUBECTL" "$@"; }
NS=sc-smoke

t0=$(sc_now_ms)
"$SC_REPO_ROOT/scripts/k8s/build.sh" probe
"$SC_REPO_ROOT/scripts/k8s/load-image.sh" "$K8S_PROBE_ARCHIVE"
# The Namespace first: a server-side apply of objects in a namespace that does not exist yet fails.
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
apply_step() {
  sed "s|@IMAGE@|$K8S_PROBE_IMAGE|" "$SC_REPO_ROOT/k8s/local/smoke.yaml" \
    | kubectl apply --server-side -l "smoke-step=$1" -f -
}
apply_step server
kubectl -n "$NS" rollout status deployment/probe-server --timeout=60s
# The client only once the Service has ready endpoints, else it is refused by design.
apply_step client
deadline=$(( $(date +%s) + 60 ))
until [[ "$(kubectl -n "$NS" get job probe-client -o jsonpath='{.status.succeeded}')" == 1 ]]; do
  if [[ -n "$(kubectl -n "$NS" get job probe-client -o jsonpath='{.status.failed}')" ]] \
    || (( $(date +%s) >= deadline )); then
    kubectl -n "$NS" logs job/probe-client >&2 || true
    sc_die "the client Job failed"
  fi
  sleep 0.5
done
sc_log "all Running/Complete in $(( $(sc_now_ms) - t0 )) ms; client Job's log:"
kubectl -n "$NS" logs job/probe-client
kubectl -n "$NS" get pods -o wide
ip="$(kubectl -n "$NS" get service probe-server -o jsonpath='{.spec.clusterIP}')"
sc_log "from the host through the Service IP $ip: $(curl -fsS --max-time 5 "http://$ip/")"
port="$(kubectl -n "$NS" get service probe-server -o jsonpath='{.spec.ports[0].nodePort}')"
sc_log "from the host through the node port $K8S_NODE_IP:$port: $(curl -fsS --max-time 5 "http://$K8S_NODE_IP:$port/")"
kubectl delete namespace "$NS" --timeout=60s >/dev/null
sc_log "smoke test passed in $(( $(sc_now_ms) - t0 )) ms"
