"""The TimerService's use cases: schedule, cancel, read and list timers (operators, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from scheduler.domain.timers import Timer, TimerState
from scheduler.ports import TimerStore
from scheduler.service_layer.firing import Firer


class TimerNotFoundError(LookupError):
    pass


class TimerNotPendingError(Exception):
    """The timer has fired or was canceled; the message says which."""


async def schedule(store: TimerStore, firer: Firer, timer: Timer) -> Timer:
    """Arms `timer` directly (no batching: an operator's one timer) and returns it as stored,
    which is the earlier request's if it was already pending."""
    if await store.arm(timer):
        firer.armed(timer.key.fire_at)
    stored = await store.get(timer.timer_id)
    assert stored is not None
    return stored


async def get(store: TimerStore, timer_id: str) -> Timer:
    timer = await store.get(timer_id)
    if timer is None:
        raise TimerNotFoundError(timer_id)
    return timer


async def cancel(store: TimerStore, timer_id: str, now: datetime) -> Timer:
    timer = await get(store, timer_id)
    if timer.state is not TimerState.PENDING:
        raise TimerNotPendingError(f"timer is {timer.state.value}")
    canceled = await store.cancel(timer_id, now)
    if canceled is None:
        raise TimerNotPendingError("timer fired meanwhile")
    return canceled


async def list_pending(
    store: TimerStore, size: int, after: tuple[datetime, str] | None
) -> tuple[Sequence[Timer], bool]:
    """A page of pending timers by fire time after `after`, and whether more follow."""
    timers = await store.list_pending(size + 1, after)
    return timers[:size], len(timers) > size
