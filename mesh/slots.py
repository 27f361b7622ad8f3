"""Concurrency caps: FIFO slots, slots shared fairly between shares (tenants), and either per
key (a tenant, a host). Shared so that a service layer (the executor's sending slots) and an
adapter (its DNS resolver's per-tenant lookups) use one implementation without one importing
the other."""

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


class FairSlots:
    """Slots shared between shares (tenants): a slot that frees up goes to the next share, in
    round-robin order, that has a waiter; within a share, first come first served.

    Deficit round robin where every holder costs one slot, which makes it plain round robin.
    The share just served goes behind every other share waiting at the next hand-over,
    including one that started waiting meanwhile: a share with one waiter behind another
    share's thousands gets the very next slot that frees up, and with n shares waiting none
    waits more than n - 1 hand-overs (docs/executor.md, Fair sharing). Acquire and release are
    O(1) like FifoSlots: a share's queue and its place in the ring exist only while it has
    waiters. With one share it is FifoSlots.
    """

    __slots__ = ("_free", "_queues", "_ring", "_served")

    def __init__(self, slots: int) -> None:
        self._free = slots
        # Waiters per share, only for shares that have some. The ring holds those shares in
        # the order they are served, except the one served last, which still has waiters: it
        # waits in `_served` and rejoins the ring at the next hand-over, behind the others.
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._ring: deque[str] = deque()
        self._served: str | None = None

    async def acquire(self, share: str = "") -> None:
        # A free slot means nobody waits: release gives a slot away before it frees one.
        if self._free > 0:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        queue = self._queues.get(share)
        if queue is None:
            queue = self._queues[share] = deque()
            self._ring.append(share)
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                self.release()  # the slot was handed over just as the waiter was cancelled
            else:
                self._forget(share, waiter)
            raise

    def release(self) -> None:
        ring = self._ring
        queues = self._queues
        if self._served is not None:
            ring.append(self._served)
            self._served = None
        while ring:
            share = ring[0]
            queue = queues[share]
            waiter = queue.popleft()
            if not queue:
                del queues[share]
                ring.popleft()
            if waiter.done():  # cancelled while queued: the same share's next one, if any
                continue
            if queue:
                ring.popleft()
                self._served = share
            waiter.set_result(None)
            return
        self._free += 1

    def _forget(self, share: str, waiter: asyncio.Future[None]) -> None:
        """Drops a cancelled waiter (rare: a revoked partition, a shutdown), so a share whose
        waiters all left is not kept in the ring."""
        queue = self._queues.get(share)
        if queue is None or waiter not in queue:  # a release already skipped it out
            return
        queue.remove(waiter)
        if queue:
            return
        del self._queues[share]
        if self._served == share:
            self._served = None
        else:
            self._ring.remove(share)

    def waiting(self) -> dict[str, int]:
        """Waiters per share (a copy, for tests and metrics)."""
        return {share: len(queue) for share, queue in self._queues.items()}


@dataclass(slots=True)
class _Gate:
    semaphore: FairSlots
    users: int = 0  # holding or waiting
    holding: int = 0


class KeyedLimit:
    """At most `limit` holders per key. A key's semaphore lives only while someone holds or
    waits for it, so memory follows what is in the process, not every tenant or host seen.
    Waiters for one key are served round robin by the `share` they name (FairSlots): the
    executor's per-host gates share a busy host's slots fairly between tenants."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, _Gate] = {}

    async def acquire(self, key: str, share: str = "") -> None:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(FairSlots(self._limit))
        gate.users += 1
        try:
            await gate.semaphore.acquire(share)
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
