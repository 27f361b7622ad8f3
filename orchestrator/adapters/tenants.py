"""Tenants and API keys in Postgres: the admin side (sync, for the CLI) and the lookup the
API uses on every request (async)."""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import sqlalchemy_url
from orchestrator.adapters.tables import api_keys, tenants
from orchestrator.domain.api_keys import ApiKey, hash_secret, new_api_key
from orchestrator.ports import KeyInfo, StoredKey

_CREATE_TENANT = pg_insert(tenants).on_conflict_do_nothing().returning(tenants.c.tenant_id)

_CREATE_KEY = sa.insert(api_keys)

_REVOKE_KEY = (
    sa.update(api_keys)
    .where(api_keys.c.key_id == sa.bindparam("revoked_key_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=sa.func.now())
    .returning(api_keys.c.key_id)
)

_TENANT_KEYS = (
    sa.select(api_keys.c.key_id, api_keys.c.tenant_id, api_keys.c.created_at, api_keys.c.revoked_at)
    .where(api_keys.c.tenant_id == sa.bindparam("tenant_id"))
    .order_by(api_keys.c.created_at)
)

# On every request whose key is not cached (orchestrator/service_layer/auth.py).
_FIND_KEY = sa.select(
    api_keys.c.key_id,
    api_keys.c.tenant_id,
    api_keys.c.secret_hash,
    api_keys.c.revoked_at.is_not(None).label("revoked"),
).where(api_keys.c.key_id == sa.bindparam("key_id"))


class TenantAdmin:
    """What `python -m orchestrator admin ...` does."""

    def __init__(self, database_url: str) -> None:
        # No pool: each command is one short transaction, and the CLI exits after it.
        self._engine = sa.create_engine(
            sqlalchemy_url(database_url), poolclass=sa.NullPool, hide_parameters=True
        )

    def create_tenant(self, tenant_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(_CREATE_TENANT, {"tenant_id": tenant_id}).first() is not None

    def create_key(self, tenant_id: str) -> ApiKey:
        key = new_api_key(os.urandom(8), os.urandom(32))
        with self._engine.begin() as conn:
            conn.execute(
                _CREATE_KEY,
                {
                    "key_id": key.key_id,
                    "tenant_id": tenant_id,
                    "secret_hash": hash_secret(key.secret),
                },
            )
        return key

    def revoke_key(self, key_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(_REVOKE_KEY, {"revoked_key_id": key_id}).first() is not None

    def list_keys(self, tenant_id: str) -> list[KeyInfo]:
        with self._engine.begin() as conn:
            rows = conn.execute(_TENANT_KEYS, {"tenant_id": tenant_id}).all()
        return [KeyInfo(r.key_id, r.tenant_id, r.created_at, r.revoked_at) for r in rows]


class PostgresKeyLookup:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def find(self, key_id: str) -> StoredKey | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_FIND_KEY, {"key_id": key_id})).first()
        if row is None:
            return None
        return StoredKey(row.key_id, row.tenant_id, bytes(row.secret_hash), row.revoked)
