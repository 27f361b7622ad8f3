"""The real Sleeper: asyncio's timers for the long wait, a short blocking sleep for the last
millisecond."""

from __future__ import annotations

import asyncio
import time

# The last stretch before a not-before time is slept without the event loop. asyncio's timers
# wake up to a millisecond late (the selector's timeout is rounded up to whole milliseconds)
# and later still behind whatever the loop runs at that moment; a thread sleep (nanosleep) wakes
# within tens of microseconds. Blocking the loop for at most this long per due instant is the
# price: other attempts due in that window are due later, so none is delayed past its own time.
FINE_SLEEP_S = 0.0015


class PreciseSleeper:
    """`sleep` may return early (wait_until re-reads the wall clock and sleeps again)."""

    def __init__(self, fine_sleep_s: float = FINE_SLEEP_S) -> None:
        self._fine = fine_sleep_s

    async def sleep(self, seconds: float) -> None:
        if seconds > self._fine:
            await asyncio.sleep(seconds - self._fine)
        elif seconds > 0:
            time.sleep(seconds)  # noqa: ASYNC251 - on purpose, bounded by FINE_SLEEP_S


class LoopSleeper:
    """asyncio's timers only, for waits that need no precision (the moment an attempt prepares,
    5 ms ahead of its send). PreciseSleeper's last stretch blocks the event loop, which is right
    before a send (nothing else can be due in it sooner) but not before a prepare moment: a
    send due inside that stretch would wait for it."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
