"""Who is calling: an API key from the request metadata, mapped to its tenant."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchestrator.domain.api_keys import parse_api_key, secret_matches


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    tenant_id: str
    secret_hash: bytes
    revoked: bool


class KeyLookup(Protocol):
    async def find(self, key_id: str) -> StoredKey | None: ...


def key_from_metadata(metadata: dict[str, str]) -> str | None:
    """`Authorization: Bearer <key>` (what curl and grpcurl users send) or `x-api-key`."""
    authorization = metadata.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return metadata.get("x-api-key") or None


class Authenticator:
    """Maps a key to its tenant, remembering answers for `ttl` seconds so that a request does
    not cost a database round trip; a revoked key therefore stops working within `ttl`."""

    def __init__(
        self, lookup: KeyLookup, ttl: float = 30.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._now = now
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}

    async def tenant_for(self, key_text: str | None) -> str | None:
        if not key_text:
            return None
        key = parse_api_key(key_text)
        if key is None:
            return None
        stored = await self._stored(key.key_id)
        if stored is None or stored.revoked or not secret_matches(key.secret, stored.secret_hash):
            return None
        return stored.tenant_id

    async def _stored(self, key_id: str) -> StoredKey | None:
        cached = self._cache.get(key_id)
        now = self._now()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        stored = await self._lookup.find(key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: unknown key ids must not grow memory forever
        self._cache[key_id] = (now, stored)
        return stored
