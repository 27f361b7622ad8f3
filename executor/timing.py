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
