"""The real Sleeper: asyncio's monotonic timers."""

from __future__ import annotations

import asyncio


class AsyncioSleeper:
    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
