#!/usr/bin/env bash
# Build what the local Kubernetes node runs, once per version, into the cache outside the repo:
#   kube     kube-apiserver, -controller-manager, -scheduler, kubelet, kube-proxy and kubectl
#            from the pinned wrapper module k8s/local/kube  -> $SC_CACHE_DIR/kube/<ver>/bin/
#   pause    the pod sandbox image (k8s/local/pause)        -> $SC_CACHE_DIR/kube/images/
#   coredns  cluster DNS image from the Go module proxy      -> $SC_CACHE_DIR/kube/images/
#   probe    the smoke test's HTTP server/client image (k8s/local/probe), not part of `all`
# Usage: scripts/k8s/build.sh [all|kube|pause|coredns|probe]...   (default: all)
# Cold, measured on 2 cores (niced, -p=2): kube 694 s (compiler peak 1.9 GB RSS), CoreDNS 288 s
# with an empty build cache (141 s after the kube build, which shares its dependencies), pause
# and probe ~1 s each; warm: a few stat calls.
set -euo pipefail
SC_LOG_PREFIX=k8s-build
# shellcheck source=scripts/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

# Builds share the machine with other work: be nice, and cap parallel compiles (the compiler
# peaks near 1.9 GB per package of the apiserver's size).
GO_BUILD=(nice -n 10 go build -trimpath -p=2)

# The version variables must be non-empty: an empty gitVersion makes every binary panic at start.
kube_ldflags() {
  local minor pkg flags="-s -w"
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=servicecall-k8s-local"
    flags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s\n' "$flags"
}

build_kube() {
  local out="$K8S_BIN_CACHE/bin" tmp t0 c
  if [[ -f "$K8S_BIN_CACHE/.complete" ]]; then
    return 0
  fi
  sc_require_cmd go "needed to build Kubernetes $K8S_VERSION"
  k8s_go_env
  t0=$(sc_now_ms)
  sc_log "building Kubernetes $K8S_VERSION (${K8S_COMPONENTS[*]}); cold: ~12 min on 2 cores"
  mkdir -p "$K8S_BIN_CACHE"
  tmp="$(mktemp -d "$K8S_BIN_CACHE/.build.XXXXXX")"
  # One `go build` for all six shares every common package's compile.
  (cd "$K8S_MODULE_DIR" && "${GO_BUILD[@]}" -ldflags "$(kube_ldflags)" -o "$tmp/" \
    "${K8S_COMPONENTS[@]/#/./cmd/}")
  for c in "${K8S_COMPONENTS[@]}"; do
    [[ -x "$tmp/$c" ]] || sc_die "go build produced no $c"
  done
  # Smoke-test the ldflags: a binary that panics on start would otherwise surface as a node
  # that never comes up.
  "$tmp/kubectl" version --client 2>&1 | grep -qF "$K8S_VERSION" \
    || sc_die "built kubectl does not report $K8S_VERSION"
  chmod 755 "$tmp"  # mktemp made it private; the binaries are for every user of the machine
  rm -rf "$out" && mv "$tmp" "$out"
  touch "$K8S_BIN_CACHE/.complete"
  sc_log "Kubernetes $K8S_VERSION built in $(( ($(sc_now_ms) - t0) / 1000 )) s -> $out"
}

# image_from_binary BINARY IMAGE ARCHIVE ENTRYPOINT_JSON: a from-scratch image holding one static
# binary, saved as an OCI archive (what `ctr images import` reads).
image_from_binary() {
  local bin="$1" image="$2" archive="$3" entrypoint="$4" ctr tmp
  sc_require_cmd buildah "install the Debian package buildah"
  ctr="$(buildah from scratch)"
  buildah copy --chmod 0755 "$ctr" "$bin" "/$(basename "$bin")" >/dev/null
  buildah config --entrypoint "$entrypoint" --cmd '' --user 65534:65534 "$ctr"
  buildah commit --quiet --rm "$ctr" "$image" >/dev/null  # --rm: drop the working container
  tmp="$archive.tmp.$$"
  rm -f "$tmp"
  buildah push --quiet "$image" "oci-archive:$tmp:$image"
  mv "$tmp" "$archive"
}

# small_image NAME DIR IMAGE ARCHIVE ENTRYPOINT_JSON: one of our own dependency-free programs.
small_image() {
  local name="$1" dir="$2" image="$3" archive="$4" entrypoint="$5" tmp t0
  [[ -s "$archive" ]] && return 0
  sc_require_cmd go "needed to build the $name image"
  k8s_go_env
  t0=$(sc_now_ms)
  mkdir -p "$K8S_IMAGE_CACHE"
  tmp="$(mktemp -d)"
  (cd "$dir" && "${GO_BUILD[@]}" -ldflags "-s -w" -o "$tmp/$name" .)
  image_from_binary "$tmp/$name" "$image" "$archive" "$entrypoint"
  rm -rf "$tmp"
  sc_log "$name image built in $(( $(sc_now_ms) - t0 )) ms -> $archive"
}

build_pause() {
  small_image pause "$K8S_PAUSE_DIR" "$K8S_PAUSE_IMAGE" "$K8S_PAUSE_ARCHIVE" '["/pause"]'
}

build_probe() {
  small_image probe "$K8S_PROBE_DIR" "$K8S_PROBE_IMAGE" "$K8S_PROBE_ARCHIVE" '["/probe"]'
}

build_coredns() {
  local tmp t0
  [[ -s "$K8S_COREDNS_ARCHIVE" ]] && return 0
  sc_require_cmd go "needed to build CoreDNS"
  k8s_go_env
  t0=$(sc_now_ms)
  sc_log "building CoreDNS $COREDNS_VERSION from the Go module proxy; cold: ~5 min on 2 cores"
  mkdir -p "$K8S_IMAGE_CACHE"
  tmp="$(mktemp -d)"
  # `go install pkg@version` resolves CoreDNS's own go.mod (pinned by its go.sum via the
  # checksum database), outside any module of ours.
  GOBIN="$tmp" nice -n 10 go install -trimpath -p=2 -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  "$tmp/coredns" -version | grep -qF "${COREDNS_VERSION#v}" \
    || sc_die "built coredns does not report $COREDNS_VERSION"
  # CoreDNS binds :53 as user nobody, so the pod grants NET_BIND_SERVICE (see the manifest).
  image_from_binary "$tmp/coredns" "$K8S_COREDNS_IMAGE" "$K8S_COREDNS_ARCHIVE" '["/coredns"]'
  rm -rf "$tmp"
  sc_log "CoreDNS image built in $(( ($(sc_now_ms) - t0) / 1000 )) s -> $K8S_COREDNS_ARCHIVE"
}

main() {
  local what t0
  (($#)) || set -- all
  t0=$(sc_now_ms)
  # One lock per artifact keeps two concurrent runs (two `make k8s-up`, a test) from building
  # the same thing into the same cache, without making the pause image wait for the 12-min build.
  for what in "$@"; do
    case "$what" in
      all) set -- kube pause coredns ;;
      kube|pause|coredns|probe) ;;
      *) sc_die "unknown target '$what' (all|kube|pause|coredns|probe)" ;;
    esac
  done
  # The Debian packages first (buildah for the images): a machine without them should fail now,
  # not after the 12-minute Kubernetes build.
  [[ "$*" == kube ]] || k8s_apt_install
  for what in "$@"; do
    sc_with_lock "$SC_CACHE_DIR/kube-$what.lock" "build_$what"
  done
  sc_log "build ($*) done in $(( $(sc_now_ms) - t0 )) ms"
}

main "$@"
