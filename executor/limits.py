"""Concurrency caps on requests in flight: overall, per tenant and per target host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class _Gate:
    semaphore: asyncio.Semaphore
    users: int = 0  # holding or waiting
    holding: int = 0


class KeyedLimit:
    """At most `limit` holders per key. A key's semaphore lives only while someone holds or
    waits for it, so memory follows what is in the process, not every tenant or host seen."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, _Gate] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(asyncio.Semaphore(self._limit))
        gate.users += 1
        try:
            async with gate.semaphore:
                gate.holding += 1
                try:
                    yield
                finally:
                    gate.holding -= 1
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]

    def in_use(self, key: str) -> int:
        gate = self._gates.get(key)
        return 0 if gate is None else gate.holding

    def __len__(self) -> int:
        return len(self._gates)


class Limits:
    """The slots an attempt needs before its request may go out.

    Taken narrowest first (tenant, then host, then the global one): an attempt that waits for
    its tenant's or its host's slot holds no global slot meanwhile, so a tenant over its cap or
    a slow host leaves the global capacity to everyone else. Waiting is FIFO per semaphore.

    This bounds sockets and requests, not memory: attempts waiting here stay in the consumer's
    held set, whose size (MAX_HELD) is what makes the Kafka consumer stop fetching.
    """

    def __init__(self, total: int, per_tenant: int, per_host: int) -> None:
        self._total = asyncio.Semaphore(total)
        self.in_flight = 0
        self.tenants = KeyedLimit(per_tenant)
        self.hosts = KeyedLimit(per_host)

    @asynccontextmanager
    async def slot(self, tenant_id: str, host: str) -> AsyncIterator[None]:
        async with self.tenants.hold(tenant_id), self.hosts.hold(host), self._total:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
