#!/usr/bin/env bash
# Import image archives into the local node's containerd (the namespace the kubelet uses), so
# pods can run them with `imagePullPolicy: Never`: there is no registry.
# Usage: scripts/k8s/load-image.sh ARCHIVE...   (OCI or docker archives, e.g. from
#   `podman save --format oci-archive -o x.tar localhost/name:tag`); needs `make k8s-up` first.
set -euo pipefail
SC_LOG_PREFIX=k8s-load-image
# shellcheck source=scripts/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

(($#)) || sc_die "usage: $0 ARCHIVE..."
env_file="$(sc_abspath "${K8S_STATE_DIR:-.run/k8s}")/env"
[[ -f "$env_file" ]] || sc_die "$env_file not found: start the node first (make k8s-up)"
# shellcheck source=/dev/null
source "$env_file"
for archive in "$@"; do
  [[ -s "$archive" ]] || sc_die "no such archive: $archive"
  t0=$(sc_now_ms)
  # The CRI only sees images in k8s.io; ctr unpacks into the CRI's snapshotter (overlayfs).
  ctr --address "$CONTAINERD_ADDRESS" --namespace "$CONTAINERD_NAMESPACE" \
    images import --snapshotter overlayfs "$archive" >&2
  sc_log "imported $archive in $(( $(sc_now_ms) - t0 )) ms"
done
