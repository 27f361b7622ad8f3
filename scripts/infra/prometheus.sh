#!/usr/bin/env bash
# Local Prometheus for a mesh (Debian's `prometheus` package), loopback only.
#
#   scripts/infra/prometheus.sh {install|start|stop|status}
#
# Env:
#   PROM_DIR     instance dir (default .run/prometheus, relative to the repo root): data/,
#                prometheus.log, prometheus.pid
#   PROM_PORT    web/API port on 127.0.0.1 (default 9090)
#   PROM_CONFIG  prometheus.yml to run with (default $PROM_DIR/prometheus.yml; meshctl writes
#                it from the mesh's Layout: meshctl/prometheus.py)
#   PROM_RETENTION  how long samples are kept (default 2d: a local mesh, not an archive)
#   PROMETHEUS   the binary (default: prometheus on PATH, else /usr/bin/prometheus)
#
# Install: the Debian package as root, with its own service kept from starting (it would take
# port 9090 for a system-wide instance nobody asked for); nothing else of it is used.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_PORT="${PROM_PORT:-9090}"
PROM_DIR="$(sc_abspath "${PROM_DIR:-.run/prometheus}")"
PROM_CONFIG="$(sc_abspath "${PROM_CONFIG:-$PROM_DIR/prometheus.yml}")"
PROM_RETENTION="${PROM_RETENTION:-2d}"
PIDFILE="$PROM_DIR/prometheus.pid"
LOGFILE="$PROM_DIR/prometheus.log"
# The marker that tells our process from any other Prometheus: its data dir is ours alone.
MARKER="--storage.tsdb.path=$PROM_DIR/data"

[[ "$PROM_PORT" =~ ^[0-9]+$ ]] || sc_die "PROM_PORT must be a number, got '$PROM_PORT'"

find_prometheus() {
  if [[ -n "${PROMETHEUS:-}" ]]; then
    [[ -x "$PROMETHEUS" ]] && printf '%s\n' "$PROMETHEUS"
    return
  fi
  command -v prometheus 2>/dev/null || { [[ -x /usr/bin/prometheus ]] && echo /usr/bin/prometheus; } || true
}

do_install() {
  [[ -n "$(find_prometheus)" ]] && return 0  # another process finished it while we waited
  sc_is_root || sc_die "prometheus not found and not root: run 'apt-get install -y --no-install-recommends prometheus' as root (or set PROMETHEUS)"
  sc_log "installing Prometheus from Debian packages (apt-get)"
  local t0 policy=/usr/sbin/policy-rc.d added=0
  t0="$(sc_now_ms)"
  # invoke-rc.d asks policy-rc.d whether a package may start its service; 101 = no. Only
  # written if there is none (a container usually has one already), and removed afterwards.
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# Written by scripts/infra/prometheus.sh during apt-get install.\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { apt-get -q -o DPkg::Lock::Timeout=300 update -qq &&
    apt-get -q -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >/dev/null; } || rc=$?
  if (( added )); then rm -f "$policy"; fi
  (( rc == 0 )) || sc_die "apt-get install prometheus failed (exit $rc)"
  [[ -n "$(find_prometheus)" ]] || sc_die "apt-get install prometheus finished but no prometheus binary"
  sc_log "installed $("$(find_prometheus)" --version 2>&1 | head -n1) in $(( $(sc_now_ms) - t0 )) ms"
}

cmd_install() {
  [[ -n "$(find_prometheus)" ]] && return 0
  sc_with_lock "$SC_CACHE_DIR/prometheus-apt.lock" do_install
}

cmd_start() {
  local t0 pid bin
  t0="$(sc_now_ms)"
  cmd_install
  bin="$(find_prometheus)"
  [[ -f "$PROM_CONFIG" ]] || sc_die "no configuration at $PROM_CONFIG (meshctl writes it)"
  mkdir -p "$PROM_DIR/data"
  if pid="$(sc_pid_alive "$PIDFILE" "$MARKER")"; then
    # Already running: have it read the (re-generated) configuration and rules again.
    kill -HUP "$pid"
    sc_log "already running on 127.0.0.1:$PROM_PORT (pid $pid); configuration reloaded"
    return 0
  fi
  rm -f "$PIDFILE"
  sc_assert_port_free "$PROM_PORT" prometheus
  "$(dirname "$bin")/promtool" check config "$PROM_CONFIG" >"$PROM_DIR/check.log" 2>&1 \
    || { sc_log_tail "$PROM_DIR/check.log"; sc_die "promtool refused $PROM_CONFIG"; }
  printf '\n==== start %s ====\n' "$(date -u +%FT%TZ)" >>"$LOGFILE"
  # Detached like Kafka (kafka.sh): it outlives the `make` that started it.
  (cd "$PROM_DIR" && exec setsid nohup "$bin" \
      --config.file="$PROM_CONFIG" \
      "$MARKER" \
      --storage.tsdb.retention.time="$PROM_RETENTION" \
      --web.listen-address="127.0.0.1:$PROM_PORT" \
      </dev/null >>"$LOGFILE" 2>&1) &
  pid=$!
  printf '%s\n' "$pid" >"$PIDFILE"
  local waited=0
  sc_wait_port "$PROM_PORT" 30 "$pid" || waited=$?
  if (( waited != 0 )); then
    sc_log_tail "$LOGFILE"
    sc_pid_stop "$PIDFILE" "$MARKER" 10
    sc_die "prometheus did not listen on 127.0.0.1:$PROM_PORT (log: $LOGFILE)"
  fi
  sc_log "started on http://127.0.0.1:$PROM_PORT (pid $pid, $PROM_DIR) in $(( $(sc_now_ms) - t0 )) ms"
}

cmd_stop() {
  local pid
  if pid="$(sc_pid_alive "$PIDFILE" "$MARKER")"; then
    sc_pid_stop "$PIDFILE" "$MARKER" 20
    sc_log "stopped pid $pid ($PROM_DIR)"
  else
    rm -f "$PIDFILE"
  fi
}

cmd_status() {
  local pid
  if pid="$(sc_pid_alive "$PIDFILE" "$MARKER")"; then
    echo "prometheus running: pid $pid, http://127.0.0.1:$PROM_PORT, dir $PROM_DIR"
    return 0
  fi
  echo "prometheus stopped"
  return 3
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
esac
