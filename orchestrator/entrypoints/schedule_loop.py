"""The materialiser's loop: a pass (orchestrator/service_layer/schedules.py) every `poll_s`, at
once again while a pass claims a full batch, and with backoff while passes fail.

Every replica runs it; they need no leader: a pass claims its schedules with SKIP LOCKED, and
an occurrence's call id is derived from the schedule and the occurrence time, so a pass that
is redone (or races another) makes no call twice."""

from __future__ import annotations

import asyncio
import contextlib

from mesh.backoff import Backoff
from mesh.logs import get_logger
from orchestrator.service_layer.schedules import Materialiser

log = get_logger(__name__)

_MAX_BACKOFF_S = 10.0


class ScheduleLoop:
    def __init__(self, materialiser: Materialiser, poll_s: float = 0.25) -> None:
        self._materialiser = materialiser
        self._poll_s = poll_s

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self._poll_s, max(_MAX_BACKOFF_S, self._poll_s))
        while not stop.is_set():
            try:
                result = await self._materialiser.run_pass()
            except Exception:
                # Nothing is lost: a pass that did not commit left its schedules due, and its
                # redo finds the calls it made already there.
                delay = backoff.next()
                log.exception("schedule pass failed; retrying", retry_in_s=delay)
                await self._pause(stop, delay)
                continue
            backoff.reset()
            if result.claimed < self._materialiser.limit:
                await self._pause(stop, self._poll_s)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
