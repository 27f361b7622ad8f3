"""FiredTimers over a bus: one DueTimeReached per timer, on the timer-events topic; a failed
publish is raised to the firing loop (which keeps the claim and looks again)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mesh.ports import OutgoingMessage
from scheduler.adapters.fired_timers import KafkaFiredTimers
from scheduler.domain.timers import Timer, TimerKey
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.bus import InMemoryEventBus
from tests.fakes.clock import T0


def timer(call: str) -> Timer:
    return Timer(TimerKey("acme", call, 1, 1, T0), f"e-{call}", "c", 1)


async def test_each_fired_timer_is_announced_on_the_topic() -> None:
    bus = InMemoryEventBus()
    await KafkaFiredTimers(bus, "t.timer-events").publish([timer("a"), timer("b")], T0)
    assert [key for key, _ in bus.on("t.timer-events")] == ["acme/a", "acme/b"]
    assert [pb.Envelope.FromString(v).event_id for _, v in bus.on("t.timer-events")] == [
        "e-a/fired",
        "e-b/fired",
    ]


class DownBus(InMemoryEventBus):
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise ConnectionError("kafka down")


async def test_a_failed_publish_raises() -> None:
    with pytest.raises(ConnectionError):
        await KafkaFiredTimers(DownBus(), "t.timer-events").publish([timer("a")], T0)
