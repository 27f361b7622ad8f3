# shellcheck shell=bash
# Shared settings for scripts/k8s/*.sh: versions, cache paths and the node's fixed layout.
# Sourced, never executed: the caller owns `set -euo pipefail`.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file

# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../infra/lib.sh"

# Versions are pinned here and in k8s/local/kube/go.mod; the cache is keyed by them, so a bump
# rebuilds and an unchanged version never does.
K8S_VERSION="v1.34.4"
COREDNS_VERSION="v1.12.4"
PAUSE_VERSION="1.0"
PROBE_VERSION="1.0"

K8S_MODULE_DIR="$SC_REPO_ROOT/k8s/local/kube"
K8S_PAUSE_DIR="$SC_REPO_ROOT/k8s/local/pause"
K8S_PROBE_DIR="$SC_REPO_ROOT/k8s/local/probe"
K8S_BIN_CACHE="$SC_CACHE_DIR/kube/$K8S_VERSION"
K8S_IMAGE_CACHE="$SC_CACHE_DIR/kube/images"
K8S_PAUSE_ARCHIVE="$K8S_IMAGE_CACHE/pause-$PAUSE_VERSION.oci.tar"
K8S_COREDNS_ARCHIVE="$K8S_IMAGE_CACHE/coredns-$COREDNS_VERSION.oci.tar"
K8S_PROBE_ARCHIVE="$K8S_IMAGE_CACHE/probe-$PROBE_VERSION.oci.tar"
# Image names as the node sees them: `localhost/` so nothing ever tries a registry.
K8S_PAUSE_IMAGE="localhost/servicecall/pause:$PAUSE_VERSION"
K8S_COREDNS_IMAGE="localhost/servicecall/coredns:$COREDNS_VERSION"
K8S_PROBE_IMAGE="localhost/servicecall/probe:$PROBE_VERSION"
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# Go builds share the project's module and build caches (scripts/bootstrap.sh uses the same),
# so nothing lands in ~/go and a second clone reuses the compiled packages. -mod=readonly: the
# committed go.mod/go.sum are the pin, a build never edits them.
k8s_go_env() {
  export GOMODCACHE="$SC_CACHE_DIR/go/mod" GOCACHE="$SC_CACHE_DIR/go/build"
  export CGO_ENABLED=0 GOFLAGS="-mod=readonly"
}

# Debian packages the node needs, by the command that proves each is installed.
K8S_APT_PACKAGES=(
  "etcd:etcd-server" "containerd:containerd" "runc:runc"
  "/usr/lib/cni/bridge:containernetworking-plugins" "iptables:iptables"
  "conntrack:conntrack" "socat:socat" "buildah:buildah" "podman:podman"
  "openssl:openssl" "ip:iproute2" "nsenter:util-linux"
)

# Install whatever is missing, once; a second run only checks (no apt call at all).
k8s_apt_install() {
  local entry probe pkg missing=()
  for entry in "${K8S_APT_PACKAGES[@]}"; do
    probe="${entry%%:*}" pkg="${entry#*:}"
    if [[ "$probe" == /* ]]; then [[ -e "$probe" ]] && continue
    else command -v "$probe" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  sc_is_root || sc_die "missing Debian packages (${missing[*]}) and not root to install them"
  sc_log "installing Debian packages: ${missing[*]}"
  # Packages with a service (etcd-server, containerd) must not start it: there is no systemd
  # here, and the node runs its own instances with its own config anyway.
  # policy-rc.d exit 101 = "do not start services"; only ours is removed again.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if ((ours)); then rm -f "$policy"; fi
}
