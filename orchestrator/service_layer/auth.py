"""Who is calling: an API key, mapped to its tenant (the gRPC API reads the key from the
request metadata)."""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.domain.api_keys import parse_api_key, secret_matches
from orchestrator.ports import KeyLookup, StoredKey


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
