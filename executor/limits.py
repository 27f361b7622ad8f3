"""Concurrency caps on requests in flight: overall, per tenant and per target host."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class FifoSlots:
    """A semaphore whose release hands the slot straight to the longest waiter.

    asyncio.Semaphore wakes a waiter that then takes the slot itself, and scans its waiters on
    every acquire and release; when thousands of attempts due together queue for one host's
    slots, that bookkeeping was a noticeable share of a send (docs/timing.md). Here both are
    O(1), and a cancelled waiter is simply skipped.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        # A free slot means nobody waits: release gives a slot away before it frees one.
        if self._free > 0:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                self.release()  # the slot was handed over just as the waiter was cancelled
            elif waiter in self._waiters:  # a release may have skipped it out already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


@dataclass(slots=True)
class _Gate:
    semaphore: FifoSlots
    users: int = 0  # holding or waiting
    holding: int = 0


class KeyedLimit:
    """At most `limit` holders per key. A key's semaphore lives only while someone holds or
    waits for it, so memory follows what is in the process, not every tenant or host seen."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, _Gate] = {}

    async def acquire(self, key: str) -> None:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(FifoSlots(self._limit))
        gate.users += 1
        try:
            await gate.semaphore.acquire()
        except BaseException:
            self._leave(key, gate)
            raise
        gate.holding += 1

    def release(self, key: str) -> None:
        gate = self._gates[key]
        gate.holding -= 1
        gate.semaphore.release()
        self._leave(key, gate)

    def _leave(self, key: str, gate: _Gate) -> None:
        gate.users -= 1
        if gate.users == 0:
            del self._gates[key]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    def holding(self) -> dict[str, int]:
        """Holders per key, for keys someone holds (a copy: metrics read it at scrape time)."""
        return {key: gate.holding for key, gate in self._gates.items() if gate.holding}

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
        self._total = FifoSlots(total)
        self.in_flight = 0
        self.tenants = KeyedLimit(per_tenant)
        self.hosts = KeyedLimit(per_host)

    def slot(self, tenant_id: str, host: str) -> _Slot:
        return _Slot(self, tenant_id, host)

    async def _acquire(self, tenant_id: str, host: str) -> None:
        await self.tenants.acquire(tenant_id)
        try:
            await self.hosts.acquire(host)
            try:
                await self._total.acquire()
            except BaseException:
                self.hosts.release(host)
                raise
        except BaseException:
            self.tenants.release(tenant_id)
            raise
        self.in_flight += 1

    def _release(self, tenant_id: str, host: str) -> None:
        self.in_flight -= 1
        self._total.release()
        self.hosts.release(host)
        self.tenants.release(tenant_id)


class _Slot:
    """`async with limits.slot(tenant, host)`: a plain class rather than a generator-based
    context manager, because every attempt takes one and the generator machinery (three
    nested ones before) was ~5% of an attempt's CPU."""

    __slots__ = ("_host", "_limits", "_tenant")

    def __init__(self, limits: Limits, tenant_id: str, host: str) -> None:
        self._limits = limits
        self._tenant = tenant_id
        self._host = host

    async def __aenter__(self) -> None:
        await self._limits._acquire(self._tenant, self._host)

    async def __aexit__(self, *_exc: object) -> None:
        self._limits._release(self._tenant, self._host)
