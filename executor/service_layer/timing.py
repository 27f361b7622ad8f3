"""Holding an attempt until its not-before time by the wall clock."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from executor.ports import Sleeper
from mesh.ports import Clock


async def wait_until(not_before: datetime, clock: Clock, sleeper: Sleeper) -> datetime:
    """Returns the first wall-clock reading at or after `not_before`.

    asyncio sleeps on the monotonic clock, and some loops (uvloop) round timers so they fire
    up to a millisecond early; the wall clock is the authority, so it is read again after every
    wake-up and the timer re-armed for whatever remains.
    """
    while True:
        now = clock.now()
        remaining = (not_before - now).total_seconds()
        if remaining <= 0:
            return now
        await sleeper.sleep(remaining)


class SharedWakeups:
    """Wakes everyone waiting for the same `resolution`-long slice of time together, at its
    start: the first waiter of a slice sleeps, the others wait for it. One timer per slice
    instead of one per waiter.

    For waits that need no precision (the executor's prepare moment, 5 ms ahead of a send).
    When thousands of attempts are due at one instant, a timer each meant thousands of entries
    in the event loop's timer heap, every push and pop paying a Python-level comparison per
    level, and a wall-clock check each; that wake-up work came before the first send went out
    (docs/timing.md). A waiter wakes at most `resolution` before `when`, never after it
    (bar the event loop being busy).
    """

    def __init__(
        self, clock: Clock, sleeper: Sleeper, resolution: timedelta = timedelta(milliseconds=1)
    ) -> None:
        self._clock = clock
        self._sleeper = sleeper
        self._step_us = resolution // timedelta(microseconds=1)
        if not 0 < self._step_us <= 1_000_000 or 1_000_000 % self._step_us:
            raise ValueError("resolution must divide a second")
        self._slices: dict[datetime, asyncio.Event] = {}

    async def until(self, when: datetime) -> None:
        start = when - timedelta(microseconds=when.microsecond % self._step_us)
        if start <= self._clock.now():
            return
        woken = self._slices.get(start)
        if woken is not None:
            await woken.wait()
            return
        woken = self._slices[start] = asyncio.Event()
        try:
            await wait_until(start, self._clock, self._sleeper)
        finally:
            # Also when this waiter is cancelled: the others then wake early, which for a
            # wait that needs no precision is harmless, where waiting forever would not be.
            del self._slices[start]
            woken.set()


class LatenessReport:
    """How late requests went out, summarised in one log line per interval.

    Successful attempts are not logged one by one, so without this an operator could not see
    the executor's precision at all; one line per interval costs nothing at any rate.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval = interval_s
        self._late_ms: list[float] = []
        self._since: float | None = None

    def add(self, late_ms: float, now_s: float) -> dict[str, float] | None:
        """Records one send; returns the summary (and starts a new interval) when one is due."""
        if self._since is None:
            self._since = now_s
        self._late_ms.append(late_ms)
        if now_s - self._since < self._interval:
            return None
        values = sorted(self._late_ms)
        self._late_ms = []
        self._since = now_s
        count = len(values)
        return {
            "sent": count,
            "late_ms_p50": values[count // 2],
            "late_ms_p99": values[min(count - 1, (count * 99) // 100)],
            "late_ms_max": values[-1],
        }


class _Delayed:
    __slots__ = ("callback", "due")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class DelayedCalls:
    """Calls each callback `delay_s` after it was added (unless cancelled), from one timer for
    all of them rather than one each.

    Every request the executor sends schedules its Started announcement this way and nearly
    all are cancelled by a quick answer; a loop timer per request (call_later and cancel, ~6 us)
    was a noticeable share of a send (docs/timing.md). The delay is the same for all, so
    entries queue in due order. A callback runs no earlier than its due time and at most
    `tick_s` after it; the queue holds at most what was added in the last `delay_s + tick_s`.
    """

    def __init__(self, delay_s: float, tick_s: float = 0.1) -> None:
        self._delay = delay_s
        self._tick = tick_s
        self._queue: deque[_Delayed] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, callback: Callable[[], None]) -> _Delayed:
        loop = asyncio.get_running_loop()
        entry = _Delayed(loop.time() + self._delay, callback)
        self._queue.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry.due, self._run)
        return entry

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._queue
        try:
            while queue and (queue[0].callback is None or queue[0].due <= now):
                callback = queue.popleft().callback
                if callback is not None:
                    callback()
        finally:
            # Re-armed even if a callback raised (the loop logs it): the rest still run.
            self._timer = (
                loop.call_at(max(queue[0].due, now + self._tick), self._run) if queue else None
            )
