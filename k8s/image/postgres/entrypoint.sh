#!/bin/bash
# Dev Postgres image (Debian's postgresql-15): initdb's an empty PGDATA once, then runs postgres
# on every address, started from the environment the way the postgres:15 image is, so
# k8s/overlays/kind/postgres.yaml runs on either image unchanged:
#   POSTGRES_USER      superuser (default postgres)
#   POSTGRES_PASSWORD  its password, required: connections over TCP use scram-sha-256
#   POSTGRES_DB        database created on first start (default: POSTGRES_USER)
#   PGDATA             data directory (a volume, or a directory below one)
# Runs as the image's postgres user (uid 999); the root filesystem may be read-only.
set -euo pipefail

: "${PGDATA:?PGDATA must be set}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (TCP connections need a password)}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  # Unix socket: trust (only this container reaches it, e.g. pg_isready and kubectl exec psql);
  # TCP: password, from any address (the NetworkPolicy-free dev namespace is the boundary).
  initdb -D "$PGDATA" -U "$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  printf '%s\n' "host all all 0.0.0.0/0 scram-sha-256" "host all all ::/0 scram-sha-256" \
    >>"$PGDATA/pg_hba.conf"
  if [[ "$db" != postgres ]]; then
    # Single-user mode: no server, socket or port is needed to create the database.
    printf 'CREATE DATABASE "%s" OWNER "%s";\n' "$db" "$user" \
      | postgres --single -j -D "$PGDATA" postgres >/dev/null
  fi
  echo "initialized $PGDATA (user $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
