"""FiredTimers over the event bus: a DueTimeReached per fired timer, onto the timer-events topic."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mesh import tracing
from mesh.ports import EventBus
from scheduler.domain.timers import Timer
from scheduler.mapping import due_time_reached


class KafkaFiredTimers:
    def __init__(self, bus: EventBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic

    async def publish(self, timers: Sequence[Timer], fired_at: datetime) -> None:
        topic = self._topic
        # A PRODUCER span per timer armed with a trace, continuing it (mesh/tracing.py).
        spans = tracing.ProducerSpans(
            "servicecall.timer fire",
            [
                tracing.with_trace(due_time_reached(t, fired_at, topic), t.trace_context)
                for t in timers
            ],
        )
        try:
            await self._bus.publish(spans.messages)
        except Exception:
            spans.end(failed=range(len(timers)))
            raise
        spans.end()
