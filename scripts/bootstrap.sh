#!/usr/bin/env bash
# Developer/CI environment: pinned uv, the project venv, and pinned Go CLI tools.
#
#   scripts/bootstrap.sh
#
# Idempotent and fast when nothing changed (~1 s): every install is cached per machine under
# ${XDG_CACHE_HOME:-~/.cache}/servicecall and skipped when the pinned version is present.
#
# Result:
#   .venv/                 Python 3.11 venv synced exactly to requirements.lock
#   .run/bin/{uv,grpcurl,buf,protoc-gen-openapiv2}  symlinks into the cache (put .run/bin on PATH)
#
# Env:
#   BOOTSTRAP_GO_TOOLS=0   skip grpcurl/buf/protoc-gen-openapiv2 (e.g. a CI job that only runs
#                          Python tests; scripts/proto.sh then cannot write the OpenAPI document)
#   BOOTSTRAP_PYTHON       interpreter used to install uv (default python3)
#   UV_PYTHON_DOWNLOADS    passed to uv (default never: only package registries are reachable,
#                          so a missing Python 3.11 should fail at once, not after a download timeout)
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/infra/lib.sh"

UV_VERSION=0.13.8
GRPCURL_MODULE=github.com/fullstorydev/grpcurl/cmd/grpcurl
GRPCURL_VERSION=v1.9.3
BUF_MODULE=github.com/bufbuild/buf/cmd/buf
BUF_VERSION=v1.75.0
OPENAPIV2_MODULE=github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2
OPENAPIV2_VERSION=v2.33.0

TOOLS_DIR="$SC_CACHE_DIR/tools"
UV_HOME="$TOOLS_DIR/uv-$UV_VERSION"
UV="$UV_HOME/bin/uv"
RUN_BIN="$SC_REPO_ROOT/.run/bin"
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"

cd "$SC_REPO_ROOT"
mkdir -p "$RUN_BIN"

uv_ok() { [[ -x "$UV" ]] && [[ "$("$UV" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; }

do_install_uv() {
  uv_ok && return 0
  local py="${BOOTSTRAP_PYTHON:-python3}"
  sc_require_cmd "$py" "needed once to install uv"
  sc_log "installing uv $UV_VERSION into $UV_HOME"
  # A private venv, not the user's pip: no --user/--break-system-packages games, and the
  # version is pinned regardless of whatever uv may be on PATH.
  rm -rf "$UV_HOME"
  "$py" -m venv "$UV_HOME"
  "$UV_HOME/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  uv_ok || sc_die "uv $UV_VERSION install in $UV_HOME did not produce a working binary"
}

sync_venv() {
  local t0; t0="$(sc_now_ms)"
  # Recreate a venv built for another Python minor (pyproject requires 3.11 exactly).
  if [[ -x .venv/bin/python ]] && \
     [[ "$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != 3.11 ]]; then
    sc_log ".venv is not Python 3.11; recreating it"
    rm -rf .venv
  fi
  if [[ ! -x .venv/bin/python ]]; then
    "$UV" venv -q .venv --python 3.11
  fi
  # sync (not install): removes anything not in the lock, so every machine has the same set.
  # Wheels come from uv's own cache after the first run, so this is ~0.1 s when in sync.
  "$UV" pip sync -q --python .venv/bin/python requirements.lock
  sc_log "venv synced to requirements.lock in $(( $(sc_now_ms) - t0 )) ms"
}

# go_tool NAME MODULE VERSION: `go install` into a per-version GOBIN in the cache, once.
# Module downloads and build cache also live in the cache, so a rebuild (new version) is quick
# and nothing lands in ~/go.
go_tool() {
  local name="$1" module="$2" version="$3" gobin bin t0
  gobin="$SC_CACHE_DIR/go-tools/$name-$version"
  bin="$gobin/$name"
  if [[ ! -x "$bin" ]]; then
    sc_require_cmd go "needed to build $name; set BOOTSTRAP_GO_TOOLS=0 to skip the Go tools"
    sc_log "building $name $version (one time)"
    t0="$(sc_now_ms)"
    GOBIN="$gobin" \
      GOMODCACHE="$SC_CACHE_DIR/go/mod" \
      GOCACHE="$SC_CACHE_DIR/go/build" \
      GOFLAGS="-mod=mod${GOFLAGS:+ $GOFLAGS}" \
      go install "$module@$version"
    [[ -x "$bin" ]] || sc_die "go install $module@$version produced no $bin"
    sc_log "built $name in $(( $(sc_now_ms) - t0 )) ms"
  fi
  ln -sfn "$bin" "$RUN_BIN/$name"
}

t_start="$(sc_now_ms)"
sc_with_lock "$TOOLS_DIR/uv-$UV_VERSION.lock" do_install_uv
ln -sfn "$UV" "$RUN_BIN/uv"
sync_venv
if [[ "${BOOTSTRAP_GO_TOOLS:-1}" != 0 ]]; then
  # The lock keeps two concurrent bootstraps from building into the same GOBIN at once.
  sc_with_lock "$SC_CACHE_DIR/go-tools.lock" go_tool grpcurl "$GRPCURL_MODULE" "$GRPCURL_VERSION"
  sc_with_lock "$SC_CACHE_DIR/go-tools.lock" go_tool buf "$BUF_MODULE" "$BUF_VERSION"
  sc_with_lock "$SC_CACHE_DIR/go-tools.lock" \
    go_tool protoc-gen-openapiv2 "$OPENAPIV2_MODULE" "$OPENAPIV2_VERSION"
fi
sc_log "done in $(( $(sc_now_ms) - t_start )) ms; tools in $RUN_BIN"
