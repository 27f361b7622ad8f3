"""The watchdog's loop: a sweep (orchestrator/service_layer/watchdog.py) every `interval_s`,
at once again while a sweep finds a full batch, and with backoff while sweeps fail."""

from __future__ import annotations

import asyncio
import contextlib

from mesh.backoff import Backoff
from mesh.logs import get_logger
from mesh.ports import Clock
from orchestrator.ports import ServiceCallStore
from orchestrator.service_layer.services import Orchestrator
from orchestrator.service_layer.watchdog import WatchdogSweep

log = get_logger(__name__)

_MAX_BACKOFF_S = 10.0


class Watchdog:
    def __init__(
        self,
        orchestrator: Orchestrator,
        store: ServiceCallStore,
        clock: Clock,
        interval_s: float = 1.0,
        batch_size: int = 256,
    ) -> None:
        self._sweep = WatchdogSweep(orchestrator, store, clock, batch_size)
        self._interval_s = interval_s

    async def sweep(self) -> bool:
        """One sweep; True when more overdue calls may be waiting."""
        return await self._sweep.sweep()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self._interval_s, max(_MAX_BACKOFF_S, self._interval_s))
        while not stop.is_set():
            try:
                more = await self._sweep.sweep()
            except Exception:
                # Nothing is lost: whatever was not applied is still overdue next time.
                delay = backoff.next()
                log.exception("watchdog sweep failed; retrying", retry_in_s=delay)
                await self._pause(stop, delay)
                continue
            backoff.reset()
            if not more:
                await self._pause(stop, self._interval_s)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
