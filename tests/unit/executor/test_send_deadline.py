"""max_lateness: an attempt about to be sent after its request's send_deadline is not sent,
whatever made it late (a late hand-off, the wait for not_before, the wait for a slot); it is
reported FAILED, `max_lateness_exceeded`, not retryable."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from executor.mapping import order_from_envelope
from executor.service_layer.slots import SendingSlots
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.executor.ports import T0
from tests.fakes.executor.world import PORT, World, received, request_envelope

HOST = f"target.example:{PORT}"


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def refused(world: World) -> pb.ExecutionFailed:
    """The one result, which must say the attempt was refused as too late; nothing was sent."""
    assert world.http.requests == []
    [result] = world.results()
    assert result.WhichOneof("payload") == "execution_failed"
    failed = result.execution_failed
    assert failed.result.error == "max_lateness_exceeded"
    assert failed.result.response_status == 0
    assert failed.retryable is False
    assert not failed.HasField("retry_after")
    return failed


def test_the_deadline_is_read_from_the_request() -> None:
    deadline = T0 + timedelta(seconds=90)
    order = order_from_envelope(request_envelope(send_deadline=deadline), 16)
    assert order is not None and order.send_deadline == deadline
    unset = order_from_envelope(request_envelope(), 16)
    assert unset is not None and unset.send_deadline is None


async def test_a_request_handed_over_after_its_deadline_is_not_sent() -> None:
    world = World()
    world.clock.advance(timedelta(seconds=10))  # the hand-off came 10 s after not_before
    envelope = request_envelope(not_before=T0, send_deadline=T0 + timedelta(seconds=5))
    await world.handler(received(envelope))
    failed = refused(world)
    # The attempt's record says why, since there is no response body to show.
    assert "5.000 s past" in failed.result.response_snippet
    assert "max_lateness" in failed.result.response_snippet


@pytest.mark.parametrize("margin", [timedelta(0), timedelta(seconds=3)])
async def test_a_request_at_or_before_its_deadline_is_sent(margin: timedelta) -> None:
    world = World()
    world.clock.advance(timedelta(seconds=10))
    now = world.clock.now()
    await world.handler(received(request_envelope(not_before=T0, send_deadline=now + margin)))
    assert len(world.http.requests) == 1
    [result] = world.results()
    assert result.WhichOneof("payload") == "execution_succeeded"


async def test_a_request_without_a_deadline_is_sent_however_late() -> None:
    world = World()
    world.clock.advance(timedelta(days=3))
    await world.handler(received(request_envelope(not_before=T0)))
    assert len(world.http.requests) == 1


async def test_the_deadline_is_checked_after_waiting_for_not_before() -> None:
    world = World()
    envelope = request_envelope(
        not_before=T0 + timedelta(seconds=10), send_deadline=T0 + timedelta(seconds=5)
    )
    await world.handler(received(envelope))
    refused(world)


@pytest.mark.parametrize(
    ("slot_wait", "sent"), [(timedelta(seconds=3), False), (timedelta(seconds=1), True)]
)
async def test_the_deadline_is_checked_after_waiting_for_a_slot(
    slot_wait: timedelta, sent: bool
) -> None:
    world = World(limits=SendingSlots(8, 8, 1))
    release = asyncio.Event()

    async def busy() -> None:
        async with world.limits.slot("acme", HOST):
            await release.wait()

    holder = asyncio.create_task(busy())
    await settle()
    envelope = request_envelope(not_before=T0, send_deadline=T0 + timedelta(seconds=2))
    attempt = asyncio.create_task(world.handler(received(envelope)))
    await settle()
    assert world.http.requests == []  # waiting for the host's one slot
    world.clock.advance(slot_wait)
    release.set()
    await asyncio.gather(holder, attempt)
    if sent:
        assert len(world.http.requests) == 1
    else:
        assert "1.000 s past" in refused(world).result.response_snippet
