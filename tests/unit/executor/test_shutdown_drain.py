"""Shutdown: held attempts get a bounded time to finish, then are abandoned unacknowledged."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mesh.lifecycle import drain
from tests.fakes.executor.ports import T0
from tests.fakes.executor.world import World, received, request_envelope


async def consume_one(world: World, delay: timedelta) -> None:
    """Stands in for ConsumerRunner.run after stop(): waits for its handler task to end."""
    message = received(request_envelope(not_before=T0 + delay))
    task = asyncio.create_task(world.handler(message))
    await asyncio.wait([task])


async def test_attempts_that_finish_in_time_are_reported() -> None:
    world = World()
    consuming = asyncio.create_task(consume_one(world, timedelta(0)))
    await drain(consuming, world.handler, timeout=5.0)
    assert consuming.done()
    assert len(world.results()) == 1


async def test_attempts_past_the_grace_are_abandoned_without_a_result() -> None:
    world = World()
    world.sleeper.gate = asyncio.Event()  # the attempt waits for its not-before forever
    consuming = asyncio.create_task(consume_one(world, timedelta(seconds=1)))
    await world.sleeper.sleeping.wait()
    await drain(consuming, world.handler, timeout=0)
    assert consuming.done()
    assert world.bus.published == []
    assert len(world.executions) == 0


async def test_drain_of_an_idle_consumer_returns_at_once() -> None:
    world = World()
    consuming = asyncio.create_task(asyncio.sleep(0))
    await drain(consuming, world.handler, timeout=0)
    assert consuming.done()
