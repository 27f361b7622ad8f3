"""Tenants and API keys in Postgres: the admin side (sync, for the CLI) and the lookup the
API uses on every request (async)."""

from __future__ import annotations

import os

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import libpq_url
from orchestrator.domain.api_keys import ApiKey, hash_secret, new_api_key
from orchestrator.ports import KeyInfo, StoredKey


class TenantAdmin:
    """What `python -m orchestrator admin ...` does."""

    def __init__(self, database_url: str) -> None:
        self._url = libpq_url(database_url)

    def create_tenant(self, tenant_id: str) -> bool:
        with psycopg.connect(self._url) as conn:
            cur = conn.execute(
                "INSERT INTO orchestrator.tenants (tenant_id) VALUES (%s)"
                " ON CONFLICT DO NOTHING RETURNING tenant_id",
                (tenant_id,),
            )
            return cur.fetchone() is not None

    def create_key(self, tenant_id: str) -> ApiKey:
        key = new_api_key(os.urandom(8), os.urandom(32))
        with psycopg.connect(self._url) as conn:
            conn.execute(
                "INSERT INTO orchestrator.api_keys (key_id, tenant_id, secret_hash)"
                " VALUES (%s, %s, %s)",
                (key.key_id, tenant_id, hash_secret(key.secret)),
            )
        return key

    def revoke_key(self, key_id: str) -> bool:
        with psycopg.connect(self._url) as conn:
            cur = conn.execute(
                "UPDATE orchestrator.api_keys SET revoked_at = now()"
                " WHERE key_id = %s AND revoked_at IS NULL RETURNING key_id",
                (key_id,),
            )
            return cur.fetchone() is not None

    def list_keys(self, tenant_id: str) -> list[KeyInfo]:
        with psycopg.connect(self._url) as conn:
            rows = conn.execute(
                "SELECT key_id, tenant_id, created_at, revoked_at FROM orchestrator.api_keys"
                " WHERE tenant_id = %s ORDER BY created_at",
                (tenant_id,),
            ).fetchall()
        return [KeyInfo(*row) for row in rows]


class PostgresKeyLookup:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def find(self, key_id: str) -> StoredKey | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT key_id, tenant_id, secret_hash, revoked_at IS NOT NULL AS revoked"
                        " FROM orchestrator.api_keys WHERE key_id = :key_id"
                    ),
                    {"key_id": key_id},
                )
            ).first()
        if row is None:
            return None
        return StoredKey(row.key_id, row.tenant_id, bytes(row.secret_hash), row.revoked)
