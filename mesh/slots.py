"""Concurrency caps: FIFO slots, and the same per key (a tenant, a host). Shared so that a
service layer (the executor's sending slots) and an adapter (its DNS resolver's per-tenant
lookups) use one implementation without one importing the other."""

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
