# shellcheck shell=bash
# Shared helpers for scripts/infra/*.sh and scripts/bootstrap.sh.
# Sourced, never executed: the caller owns `set -euo pipefail`.
#
# Everything here is loopback-only and keyed by explicit dirs/ports so that several
# instances (dev mesh + a test run on other ports) can coexist on one machine.

# Repo root = two levels above this file, so the scripts work from any cwd
# (make, CI in a fresh temp clone, a developer's shell in a subdir).
SC_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
# One cache shared by all clones/worktrees of the project: installs are done once per machine.
# shellcheck disable=SC2034  # used by the scripts that source this file
SC_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/servicecall"
SC_LOG_PREFIX="${SC_LOG_PREFIX:-$(basename "$0" .sh)}"

sc_log() { printf '[%s] %s\n' "$SC_LOG_PREFIX" "$*" >&2; }
sc_die() { printf '[%s] ERROR: %s\n' "$SC_LOG_PREFIX" "$*" >&2; exit 1; }

# Milliseconds since the epoch, for the "took N ms" lines (timings are part of the contract:
# warm starts must stay fast, and printing them makes regressions visible in CI logs).
sc_now_ms() { date +%s%3N; }

# Absolute path; relative paths are taken relative to the repo root (not the cwd), so
# PG_DIR=.run/pg means the same thing whether invoked by make or from a subdirectory.
sc_abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$SC_REPO_ROOT/$1" ;;
  esac
}

sc_require_cmd() {
  command -v "$1" >/dev/null 2>&1 || sc_die "'$1' not found on PATH${2:+ ($2)}"
}

# True if something accepts TCP connections on 127.0.0.1:$1. Uses bash's /dev/tcp so it
# needs no nc/ss; the subshell closes the fd again immediately.
sc_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# sc_wait_port PORT TIMEOUT_S [PID]: wait until the port accepts connections. If PID is
# given and that process dies first, fail fast instead of sitting out the whole timeout.
sc_wait_port() {
  local port="$1" timeout_s="$2" pid="${3:-}" deadline
  deadline=$(( $(date +%s) + timeout_s ))
  while ! sc_port_open "$port"; do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      return 2
    fi
    if (( $(date +%s) >= deadline )); then
      return 1
    fi
    sleep 0.1
  done
}

# Refuse to start on a port someone else holds: a silent clash would make tests talk to the
# wrong instance (e.g. the dev mesh's broker) and pass or fail for the wrong reasons.
sc_assert_port_free() {
  local port="$1" what="$2"
  if sc_port_open "$port"; then
    sc_die "port 127.0.0.1:$port is already in use, but not by this $what instance; pick another port"
  fi
}

# --- pid files -------------------------------------------------------------------------
# We only ever signal the pid recorded in our own pid file, and only after checking that
# /proc/<pid>/cmdline still contains a marker unique to this instance (e.g. its config path),
# so a recycled pid can never make us kill an unrelated process. Never kill by name.

# sc_pid_alive PIDFILE MARKER -> prints pid and returns 0 if the recorded process is ours and alive.
sc_pid_alive() {
  local pidfile="$1" marker="$2" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # cmdline is NUL-separated; tr makes it greppable.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
  printf '%s\n' "$pid"
}

# sc_pid_stop PIDFILE MARKER TIMEOUT_S: TERM, wait, then KILL. Idempotent: a missing or stale
# pid file is just removed.
sc_pid_stop() {
  local pidfile="$1" marker="$2" timeout_s="$3" pid deadline
  if ! pid="$(sc_pid_alive "$pidfile" "$marker")"; then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + timeout_s ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      sc_log "pid $pid did not exit within ${timeout_s}s after TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      # KILL cannot be ignored; the short wait only covers the kernel reaping it.
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      break
    fi
    sleep 0.1
  done
  rm -f "$pidfile"
}

# Print the last lines of a log to stderr: a failed start must say why without making
# the reader hunt for the file.
sc_log_tail() {
  local file="$1" n="${2:-40}"
  if [[ -f "$file" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
    tail -n "$n" "$file" >&2
    printf -- '----- end of %s -----\n' "$file" >&2
  fi
}

# Serialize one-time installs across concurrent invocations (e.g. a test run and `make dev`
# both doing a cold start): flock on a file in the cache, released when the fd closes.
# Usage: sc_with_lock LOCKFILE cmd args...
sc_with_lock() {
  local lockfile="$1"; shift
  mkdir -p "$(dirname "$lockfile")"
  (
    flock -w 900 9 || sc_die "timed out waiting for lock $lockfile"
    "$@"
  ) 9>"$lockfile"
}

sc_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# The venv python (has confluent_kafka etc.), created by scripts/bootstrap.sh.
sc_venv_python() {
  local py="${PYTHON:-$SC_REPO_ROOT/.venv/bin/python}"
  [[ -x "$py" ]] || sc_die "$py not found; run scripts/bootstrap.sh first (or set PYTHON)"
  printf '%s\n' "$py"
}
