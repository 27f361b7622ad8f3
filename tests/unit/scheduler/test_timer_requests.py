"""The timer-requests handler: arms what decodes and wakes the firing loop for it; ignores
other payloads; leaves an undecodable message to the runner (unreadable, never retried)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mesh.kafka import ReceivedMessage, UnreadableMessageError
from mesh.timeconv import to_timestamp
from mesh.topics import Topics
from scheduler.entrypoints.timer_requests import TimerRequestHandler
from scheduler.main import KafkaFirer
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.bus import InMemoryEventBus
from tests.fakes.clock import T0, FakeClock
from tests.fakes.timers import InMemoryTimerStore


def message(value: bytes) -> ReceivedMessage:
    return ReceivedMessage("t.timer-requests", 0, 1, "acme/call-1", value)


def timer_requested(fire_at_s: float) -> bytes:
    return pb.Envelope(
        event_id="e-1",
        tenant_id="acme",
        service_call_id="call-1",
        correlation_id="corr",
        timer_requested=pb.TimerRequested(
            purpose=1,  # type: ignore[arg-type]
            attempt=1,
            fire_time=to_timestamp(T0 + timedelta(seconds=fire_at_s)),
        ),
    ).SerializeToString()


async def test_a_request_arms_its_timer_once_and_wakes_the_loop_for_it() -> None:
    store = InMemoryTimerStore()
    firer = KafkaFirer(store, InMemoryEventBus(), FakeClock(T0), Topics.with_prefix("t."))
    firer.window.load(T0, [], truncated=False)
    handle = TimerRequestHandler(store, firer)
    await handle(message(timer_requested(30)))
    await handle(message(timer_requested(30)))  # a redelivery
    pending = await store.list_pending(10, None)
    assert [t.key.fire_at for t in pending] == [T0 + timedelta(seconds=30)]
    assert len(firer.window) == 1


async def test_other_payloads_are_ignored() -> None:
    store = InMemoryTimerStore()
    firer = KafkaFirer(store, InMemoryEventBus(), FakeClock(T0), Topics.with_prefix("t."))
    other = pb.Envelope(event_id="e", due_time_reached=pb.DueTimeReached(attempt=1))
    await TimerRequestHandler(store, firer)(message(other.SerializeToString()))
    assert await store.list_pending(10, None) == []


async def test_an_undecodable_message_is_unreadable() -> None:
    store = InMemoryTimerStore()
    firer = KafkaFirer(store, InMemoryEventBus(), FakeClock(T0), Topics.with_prefix("t."))
    with pytest.raises(UnreadableMessageError):
        await TimerRequestHandler(store, firer)(message(b"\xff\xff\xff"))
