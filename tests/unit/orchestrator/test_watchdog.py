"""The watchdog on the in-memory store: the shared scenarios, its loop, and its event ids."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from mesh.ports import OutgoingMessage
from orchestrator.domain.decide import watchdog_timer
from orchestrator.domain.states import Dispatched, ServiceCallState
from orchestrator.entrypoints.watchdog import Watchdog
from orchestrator.service_layer.watchdog import event_id
from tests.contracts.watchdog import TIMING, WatchdogContract, World
from tests.fakes.store import InMemoryServiceCallStore


def fake_world(store: InMemoryServiceCallStore | None = None) -> World:
    store = store or InMemoryServiceCallStore()

    async def sent() -> Sequence[OutgoingMessage]:
        return list(store.outbox)

    return World(store, sent)


class TestWatchdogOnTheFakeStore(WatchdogContract):
    @pytest.fixture
    def world(self) -> World:
        return fake_world()


class FlakyStore(InMemoryServiceCallStore):
    """Fails the first `failures` sweeps, as a database that is away for a moment."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.sweeps = 0

    async def overdue_watchdogs(self, now: datetime, limit: int) -> Sequence[ServiceCallState]:
        self.sweeps += 1
        if self.sweeps <= self.failures:
            raise ConnectionError("database away")
        return await super().overdue_watchdogs(now, limit)


async def until(condition: Callable[[], Awaitable[bool]], tries: int = 5000) -> None:
    for _ in range(tries):
        if await condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def test_the_loop_survives_a_failing_store_and_stops_when_asked() -> None:
    store = FlakyStore(failures=2)
    world = fake_world(store)
    call = await world.submit()
    world.clock.advance(TIMING.dispatch_lease)
    stop = asyncio.Event()
    watchdog = Watchdog(world.orchestrator, store, world.clock, interval_s=0.001)
    running = asyncio.create_task(watchdog.run(stop))

    async def dispatched_again() -> bool:
        return len(await world.execution_requests(call)) == 2

    await until(dispatched_again)
    assert store.sweeps >= 3
    stop.set()
    await asyncio.wait_for(running, 1.0)


async def test_the_loop_stops_during_its_pause() -> None:
    world = fake_world()
    stop = asyncio.Event()
    watchdog = Watchdog(world.orchestrator, world.store, world.clock, interval_s=3600)
    running = asyncio.create_task(watchdog.run(stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(running, 1.0)


async def test_event_ids_are_the_same_for_every_replica_and_new_for_each_arming() -> None:
    world = fake_world()
    call = await world.submit()
    assert isinstance(call, Dispatched)
    timer = watchdog_timer(call)
    assert timer is not None
    assert event_id(call, timer) == event_id(call, timer)
    later = replace(call, lease_expires_at=call.lease_expires_at + timedelta(seconds=1))
    later_timer = watchdog_timer(later)
    assert later_timer is not None
    assert event_id(later, later_timer) != event_id(call, timer)
    # A re-armed timer (same fire time, newer version) must not look already applied.
    rearmed = replace(call, version=call.version + 1)
    assert event_id(rearmed, timer) != event_id(call, timer)
