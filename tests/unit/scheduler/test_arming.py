"""Concurrent arm requests share statements, and each learns whether it armed its timer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from scheduler.domain.timers import Timer
from scheduler.service_layer.arming import ArmBatcher
from tests.contracts.timers import timer
from tests.fakes.timers import InMemoryTimerStore


class CountingStore(InMemoryTimerStore):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail_next = False

    async def arm_many(self, timers: Sequence[Timer]) -> set[str]:
        self.batches.append(len(timers))
        await asyncio.sleep(0)  # a round trip: others queue meanwhile
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database went away")
        return await super().arm_many(timers)


async def test_concurrent_requests_share_batches_and_get_their_own_answer() -> None:
    store = CountingStore()
    batcher = ArmBatcher(store, max_batch=50)
    timers = [timer(i) for i in range(120)]
    results = await asyncio.gather(*(batcher.arm(t) for t in [*timers, timers[0]]))
    assert results[:120] == [True] * 120
    assert results[120] is False  # the same request again: already armed
    assert len(store.batches) < 10 and max(store.batches) <= 50
    assert {t.timer_id for t in timers} <= set(store.rows)


async def test_a_failed_batch_fails_its_requests_and_the_next_ones_still_arm() -> None:
    store = CountingStore()
    batcher = ArmBatcher(store)
    store.fail_next = True
    first = await asyncio.gather(batcher.arm(timer(1)), return_exceptions=True)
    assert isinstance(first[0], ConnectionError)
    assert await batcher.arm(timer(2)) is True
