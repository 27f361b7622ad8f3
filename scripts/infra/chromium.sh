#!/usr/bin/env bash
# Headless Chromium from Debian for the browser tests (tests/e2e/test_dashboard.py).
#
#   scripts/infra/chromium.sh {install|path}
#
#   install  apt-get install chromium (and a font, so screenshots show text) when missing.
#            Idempotent: nothing happens when it is there. Needs root (CI runs as root); a
#            developer without root is told the one command to run.
#   path     install, then print the browser's path (what the test fixture calls).
#
# Env:
#   CHROMIUM   a Chromium binary to use instead; then nothing is installed.
#
# The browser comes from Debian's archive like Postgres does, never a browser build downloaded
# by a test tool: only the package registries are reachable, and Debian's chromium gets its
# security updates through apt.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(chromium fonts-dejavu-core)

find_chromium() {
  if [[ -n "${CHROMIUM:-}" ]]; then
    [[ -x "$CHROMIUM" ]] && printf '%s\n' "$CHROMIUM"
    return
  fi
  # Debian's /usr/bin/chromium is a wrapper script that execs /usr/lib/chromium/chromium with
  # the flags in /etc/chromium.d; either works, the wrapper is what a person would run.
  local candidate
  for candidate in /usr/bin/chromium /usr/lib/chromium/chromium; do
    [[ -x "$candidate" ]] && { printf '%s\n' "$candidate"; return; }
  done
  return 0
}

cmd_install() {
  [[ -n "$(find_chromium)" ]] && return 0
  [[ -z "${CHROMIUM:-}" ]] || sc_die "CHROMIUM=$CHROMIUM is not an executable file"
  sc_is_root || sc_die "Chromium is not installed and this is not root: run 'apt-get install -y --no-install-recommends ${PACKAGES[*]}' as root"
  sc_log "installing ${PACKAGES[*]} from Debian packages (apt-get, one time)"
  local t0; t0="$(sc_now_ms)"
  # Non-interactive (CI has no stdin); wait for a concurrent apt run instead of failing; try the
  # package lists as they are first, and refresh them only when that fails (a fresh machine).
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
  "${apt[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
    || { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
  [[ -n "$(find_chromium)" ]] || sc_die "apt-get install chromium finished but no /usr/bin/chromium"
  sc_log "installed $("$(find_chromium)" --version 2>/dev/null || echo chromium) in $(( $(sc_now_ms) - t0 )) ms"
}

case "${1:-}" in
  install) cmd_install ;;
  path) cmd_install; find_chromium ;;
  *) sc_die "usage: $0 {install|path}" ;;
esac
