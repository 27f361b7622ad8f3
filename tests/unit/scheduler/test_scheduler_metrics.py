"""The scheduler's metrics: the firing loop over a measured store counts what it arms, claims
and fires (in-memory store and bus, fake clock)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry

from mesh.topics import Topics
from scheduler.adapters.metrics import MeasuredTimerStore, SchedulerMetrics
from scheduler.domain.timers import Timer, TimerKey
from scheduler.main import KafkaFirer as Firer
from tests.fakes.bus import InMemoryEventBus
from tests.fakes.clock import T0, FakeClock
from tests.fakes.timers import InMemoryTimerStore


def timer(fire_at: datetime) -> Timer:
    return Timer(
        key=TimerKey("t", str(uuid.uuid4()), 1, 1, fire_at),
        armed_by=f"e-{uuid.uuid4()}",
        correlation_id="c",
        sequence=1,
    )


async def test_timers_armed_claimed_and_fired_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry)
    clock = FakeClock(T0)
    store = MeasuredTimerStore(InMemoryTimerStore(), metrics)
    firer = Firer(store, InMemoryEventBus(), clock, Topics.with_prefix("t."))
    due, later = timer(T0), timer(T0 + timedelta(hours=1))
    assert await store.arm_many([due, later]) == {due.timer_id, later.timer_id}
    assert await store.arm(due) is False  # already pending: not armed again

    def value(name: str) -> float | None:
        return registry.get_sample_value(f"servicecall_{name}")

    assert value("timers_armed_total") == 2
    assert await firer.fire_due(T0) == 1
    assert value("timers_claimed_total") == 1
    assert value("timers_fired_total") == 1
    assert value("timers_claimed_in_flight") == 0
    assert await store.cancel(later.timer_id, T0) is not None
    assert value("timers_canceled_total") == 1
