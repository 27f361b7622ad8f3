"""Arms timers in batches: requests that arrive while one batch is being written wait for
the next, so under load one statement arms hundreds of timers, and alone a timer waits for
nobody (there is no batching delay)."""

from __future__ import annotations

import asyncio

from scheduler.domain.timers import Timer
from scheduler.ports import TimerStore
from scheduler.service_layer.firing import Firer


class ArmBatcher:
    def __init__(self, store: TimerStore, max_batch: int = 500) -> None:
        self._store = store
        self._max_batch = max_batch
        self._waiting: list[tuple[Timer, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def arm(self, timer: Timer) -> bool:
        """True if this request armed the timer (see TimerStore.arm)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((timer, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                armed = await self._store.arm_many([timer for timer, _ in batch])
            except Exception as e:
                # Each waiting handler fails and is retried by the consumer runner.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            seen: set[str] = set()
            for timer, future in batch:
                # Only the first request for a timer in a batch can have armed it.
                first = timer.timer_id not in seen
                seen.add(timer.timer_id)
                if not future.done():
                    future.set_result(first and timer.timer_id in armed)


class TimerArming:
    """Arms requested timers (in batches) and wakes the firing loop for one due before it
    would next look."""

    def __init__(self, store: TimerStore, firer: Firer) -> None:
        self._batcher = ArmBatcher(store)
        self._firer = firer

    async def arm(self, timer: Timer) -> bool:
        """True if this request armed the timer (see TimerStore.arm)."""
        armed = await self._batcher.arm(timer)
        if armed:
            self._firer.armed(timer.key.fire_at)
        return armed
