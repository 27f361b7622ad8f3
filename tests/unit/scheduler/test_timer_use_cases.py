"""The TimerService's use cases over the in-memory store (scheduler/service_layer/timers.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mesh.topics import Topics
from scheduler.domain.timers import Timer, TimerKey, TimerState
from scheduler.main import KafkaFirer
from scheduler.service_layer import timers
from tests.fakes.bus import InMemoryEventBus
from tests.fakes.clock import T0, FakeClock
from tests.fakes.timers import InMemoryTimerStore


def timer(seconds: int, armed_by: str = "api/1") -> Timer:
    return Timer(
        TimerKey("acme", "call-1", 1, 1, T0 + timedelta(seconds=seconds)), armed_by, "c", 0
    )


def firer(store: InMemoryTimerStore) -> KafkaFirer:
    return KafkaFirer(store, InMemoryEventBus(), FakeClock(T0), Topics.with_prefix("t."))


async def test_scheduling_twice_returns_the_timer_the_first_request_armed() -> None:
    store = InMemoryTimerStore()
    first = await timers.schedule(store, firer(store), timer(5, "api/1"))
    again = await timers.schedule(store, firer(store), timer(5, "api/2"))
    assert again.armed_by == first.armed_by == "api/1"


async def test_cancel_a_pending_timer_then_not_again() -> None:
    store = InMemoryTimerStore()
    t = await timers.schedule(store, firer(store), timer(5))
    assert (await timers.cancel(store, t.timer_id, T0)).state is TimerState.CANCELED
    with pytest.raises(timers.TimerNotPendingError, match="timer is canceled"):
        await timers.cancel(store, t.timer_id, T0)
    with pytest.raises(timers.TimerNotFoundError):
        await timers.get(store, timer(6).timer_id)


async def test_pages_of_pending_timers_say_whether_more_follow() -> None:
    store = InMemoryTimerStore()
    for seconds in range(3):
        await store.arm(timer(seconds))
    page, more = await timers.list_pending(store, 2, None)
    assert (len(page), more) == (2, True)
    last = page[-1]
    page, more = await timers.list_pending(store, 2, (last.key.fire_at, last.timer_id))
    assert (len(page), more) == (1, False)
