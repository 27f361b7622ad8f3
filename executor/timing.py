"""Holding an attempt until its not-before time by the wall clock."""

from __future__ import annotations

from datetime import datetime

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
