#!/usr/bin/env bash
# Throwaway local PostgreSQL cluster for dev and tests, loopback only.
#
#   scripts/infra/postgres.sh {install|start|stop|status|url}
#
# Env:
#   PG_DIR    instance dir (default .run/pg, relative to the repo root). Holds data/, the
#             unix socket and postgres.log. Several instances may run at once with
#             different PG_DIR + PG_PORT.
#   PG_PORT   TCP port on 127.0.0.1 (default 55432; not 5432, to stay clear of a system cluster)
#   PG_FSYNC  "off" disables fsync/synchronous_commit/full_page_writes (tests only: a crash
#             can corrupt the cluster). Default "on".
#   PG_BIN    PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   PG_OS_USER  unprivileged OS user that runs the server when invoked as root (default postgres)
#
# The cluster is initialised on first start (initdb ~0.5 s) and reused afterwards.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_PORT="${PG_PORT:-55432}"
PG_FSYNC="${PG_FSYNC:-on}"
PG_OS_USER="${PG_OS_USER:-postgres}"
PG_DB="servicecall"
PG_DIR_REQ="$(sc_abspath "${PG_DIR:-.run/pg}")"

[[ "$PG_PORT" =~ ^[0-9]+$ ]] || sc_die "PG_PORT must be a number, got '$PG_PORT'"
case "$PG_FSYNC" in on|off) ;; *) sc_die "PG_FSYNC must be on or off, got '$PG_FSYNC'" ;; esac

find_pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "$PG_BIN/initdb" ]] && printf '%s\n' "$PG_BIN"
    return
  fi
  # Debian installs each major under /usr/lib/postgresql/<major>/bin (not on PATH);
  # take the newest one present (15 on Debian 12, 17 on Debian 13).
  local d
  # (An unmatched glob stays literal and fails the -x test below.)
  d="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  [[ -n "$d" && -x "$d/initdb" ]] && printf '%s\n' "$d"
}

cmd_install() {
  if [[ -n "$(find_pg_bin)" ]]; then
    return 0
  fi
  sc_is_root || sc_die "PostgreSQL server binaries not found and not root: run 'apt-get install -y postgresql' as root (or set PG_BIN)"
  sc_log "installing PostgreSQL from Debian packages (apt-get)"
  # Non-interactive so CI (no stdin) never blocks on a debconf prompt. The package may create
  # and start a system 'main' cluster on 5432; we never use it and never touch it.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  [[ -n "$(find_pg_bin)" ]] || sc_die "apt-get install postgresql finished but no initdb under /usr/lib/postgresql/*/bin"
}

# Run a PostgreSQL server-side binary. initdb/pg_ctl/postgres refuse to run as root, so as root
# we drop to PG_OS_USER; as a normal user we run them directly. 'cd /' because the caller's cwd
# (a root-only temp clone, say) may be unreadable to that user, and initdb/pg_ctl stat it.
as_pg_user() {
  if sc_is_root; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    (cd / && "$@")
  fi
}

# Where the instance really lives. Normally PG_DIR itself. But when we are root and PG_DIR
# sits below a directory the postgres user cannot traverse (CI clones into a 0700 mktemp dir;
# /root is 0700), or the unix socket path would exceed the kernel's 107-byte limit, the data
# goes to a world-traversable place under /tmp and PG_DIR becomes a symlink to it. We do not
# chmod the caller's parent dirs: that would silently widen permissions outside the repo.
resolve_instance_dir() {
  if [[ -L "$PG_DIR_REQ" ]]; then
    # Relocated earlier. The target may be gone (/tmp cleaned at reboot): recreate it empty,
    # and the next start runs initdb again.
    local target
    target="$(readlink -f "$PG_DIR_REQ")"
    mkdir -p "$target"
    printf '%s\n' "$target"
    return
  fi
  local parent need_reloc=0
  parent="$(dirname "$PG_DIR_REQ")"
  mkdir -p "$parent"
  if sc_is_root && ! runuser -u "$PG_OS_USER" -- test -x "$parent" 2>/dev/null; then
    need_reloc=1
  fi
  # Socket file is <dir>/.s.PGSQL.<port>; sun_path holds 107 chars + NUL.
  if (( ${#PG_DIR_REQ} + 20 > 107 )); then
    need_reloc=1
  fi
  if (( need_reloc == 0 )) || [[ -d "$PG_DIR_REQ" ]]; then
    # An existing real dir was usable before (we created it), so keep using it.
    mkdir -p "$PG_DIR_REQ"
    printf '%s\n' "$PG_DIR_REQ"
    return
  fi
  local key target
  key="$(printf '%s' "$PG_DIR_REQ" | sha256sum | cut -c1-12)"
  target="/tmp/servicecall-pg-$key"
  mkdir -p "$target"
  ln -sfn "$target" "$PG_DIR_REQ"
  sc_log "PG_DIR $PG_DIR_REQ is not reachable by user $PG_OS_USER (or too long for a socket); using $target (symlinked)" >&2
  printf '%s\n' "$target"
}

# Set by init_paths.
INST="" DATA="" LOGFILE="" PGBIN=""
init_paths() {
  PGBIN="$(find_pg_bin)"
  INST="$(resolve_instance_dir)"
  DATA="$INST/data"
  LOGFILE="$INST/postgres.log"
}

is_running() {
  [[ -n "$PGBIN" && -f "$DATA/PG_VERSION" ]] || return 1
  as_pg_user "$PGBIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

psql_admin() {
  # Over the unix socket as superuser 'postgres' (trust auth); -X skips any ~/.psqlrc.
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$INST" -p "$PG_PORT" -U postgres "$@"
}

write_conf() {
  local conf="$DATA/servicecall.conf" durable="on"
  [[ "$PG_FSYNC" == off ]] && durable="off"
  # Rewritten on every start so that env changes (port, PG_FSYNC) apply; postgresql.conf
  # stays as initdb made it apart from one include line.
  cat >"$conf.tmp" <<CONF
# Written by scripts/infra/postgres.sh on every start; edits here are overwritten.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$INST'
max_connections = 200
fsync = $durable
synchronous_commit = $durable
full_page_writes = $durable
CONF
  if sc_is_root; then chown "$PG_OS_USER:" "$conf.tmp"; fi
  mv -f "$conf.tmp" "$conf"
}

ensure_db() {
  local exists
  exists="$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")"
  if [[ "$exists" != 1 ]]; then
    psql_admin -d postgres -c "CREATE DATABASE $PG_DB"
    sc_log "created database $PG_DB"
  fi
}

cmd_start() {
  local t0; t0="$(sc_now_ms)"
  cmd_install
  init_paths
  if is_running; then
    # Idempotent: already up. A different PG_PORT than the running one would need a restart;
    # say so rather than silently serving on the old port.
    local running_port
    running_port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
    if [[ -n "$running_port" && "$running_port" != "$PG_PORT" ]]; then
      sc_die "instance in $INST is running on port $running_port, not PG_PORT=$PG_PORT; stop it first"
    fi
    write_conf
    as_pg_user "$PGBIN/pg_ctl" reload -D "$DATA" -s  # picks up a changed PG_FSYNC
    ensure_db
    sc_log "already running on 127.0.0.1:$PG_PORT ($INST)"
    return 0
  fi
  sc_assert_port_free "$PG_PORT" postgres
  if sc_is_root; then
    chown "$PG_OS_USER:" "$INST"
  fi
  chmod 0755 "$INST"  # socket lives here; others (root, the app user) must reach it
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    rm -rf "$DATA"  # a half-finished initdb leaves a dir that initdb refuses to reuse
    as_pg_user "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$INST/initdb.log" 2>&1 || { sc_log_tail "$INST/initdb.log"; sc_die "initdb failed"; }
    printf "\ninclude_if_exists = 'servicecall.conf'\n" >>"$DATA/postgresql.conf"
  fi
  write_conf
  if ! as_pg_user "$PGBIN/pg_ctl" start -w -t 60 -s -D "$DATA" -l "$LOGFILE"; then
    sc_log_tail "$LOGFILE"
    sc_die "postgres failed to start (log: $LOGFILE)"
  fi
  ensure_db
  sc_log "started on 127.0.0.1:$PG_PORT ($INST, fsync=$PG_FSYNC) in $(( $(sc_now_ms) - t0 )) ms"
}

cmd_stop() {
  PGBIN="$(find_pg_bin)"
  if [[ -z "$PGBIN" ]] || [[ ! -e "$PG_DIR_REQ" ]]; then
    return 0  # never installed or never started: nothing to stop
  fi
  init_paths
  if is_running; then
    # fast = roll back open transactions, disconnect clients, clean shutdown (no crash recovery
    # on next start). pg_ctl signals the postmaster pid from postmaster.pid, never by name.
    as_pg_user "$PGBIN/pg_ctl" stop -w -t 60 -s -m fast -D "$DATA"
    sc_log "stopped ($INST)"
  fi
}

cmd_status() {
  PGBIN="$(find_pg_bin)"
  if [[ -n "$PGBIN" && -e "$PG_DIR_REQ" ]]; then
    init_paths
    if is_running; then
      echo "postgres running: pid $(head -n1 "$DATA/postmaster.pid"), 127.0.0.1:$(sed -n 4p "$DATA/postmaster.pid"), dir $INST"
      return 0
    fi
  fi
  echo "postgres stopped"
  return 3  # LSB 'not running', as pg_ctl status does
}

cmd_url() {
  echo "postgresql://postgres@127.0.0.1:$PG_PORT/$PG_DB"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) echo "usage: $0 {install|start|stop|status|url}" >&2; exit 2 ;;
esac
