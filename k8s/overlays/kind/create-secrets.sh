#!/usr/bin/env bash
# Creates the kind mesh's Secrets once, with fresh random values; never replaces one that
# exists (a new MESH_SECRET_KEY could not open what the old one sealed).
#
#   k8s/overlays/kind/create-secrets.sh [namespace]     (default: servicecall)
#
# servicecall-secrets: MESH_SECRET_KEY, PAGE_TOKEN_SECRET, DATABASE_URL (k8s/base/secret.template.yaml)
# postgres-dev:        POSTGRES_PASSWORD for the dev Postgres (k8s/overlays/kind/postgres.yaml)
set -euo pipefail
ns="${1:-servicecall}"

random_b64() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
exists() { kubectl -n "$ns" get secret "$1" >/dev/null 2>&1; }

kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"

if exists servicecall-secrets || exists postgres-dev; then
  echo "secrets already exist in $ns; leaving them as they are" >&2
  exit 0
fi

# URL-safe: it goes into DATABASE_URL as is.
pg_password="$(random_b64 24 | tr '+/' '-_' | tr -d '=')"
kubectl -n "$ns" create secret generic postgres-dev \
  --from-literal=POSTGRES_PASSWORD="$pg_password"
kubectl -n "$ns" create secret generic servicecall-secrets \
  --from-literal=MESH_SECRET_KEY="$(random_b64 32)" \
  --from-literal=PAGE_TOKEN_SECRET="$(random_b64 32)" \
  --from-literal=DATABASE_URL="postgresql://servicecall:${pg_password}@postgres:5432/servicecall"
echo "created servicecall-secrets and postgres-dev in $ns" >&2
