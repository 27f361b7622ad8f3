"""The queues' loops (#18): the queue dispatcher's pass (orchestrator/service_layer/queues.py)
every `poll_s` in every replica, and the refresh of this process's view of the queues every
`interval` in every process that decides (QueueConfigs).

Replicas need no leader: a pass claims each queue with a lock nobody else holds (skipping a
held one), and a release is refused for a call no longer held, so two passes never send one
call twice."""

from __future__ import annotations

import asyncio
import contextlib

from mesh.backoff import Backoff
from mesh.logs import get_logger
from orchestrator.ports import QueueConfigs
from orchestrator.service_layer.queues import QueueDispatcher

log = get_logger(__name__)

_MAX_BACKOFF_S = 10.0


class QueueDispatchLoop:
    def __init__(self, dispatcher: QueueDispatcher, poll_s: float = 0.1) -> None:
        self._dispatcher = dispatcher
        self._poll_s = poll_s

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self._poll_s, max(_MAX_BACKOFF_S, self._poll_s))
        while not stop.is_set():
            try:
                await self._dispatcher.run_once()
            except Exception:
                # Nothing is lost: held calls stay held until a pass releases them.
                delay = backoff.next()
                log.exception("queue dispatch pass failed; retrying", retry_in_s=delay)
                await _pause(stop, delay)
                continue
            backoff.reset()
            await _pause(stop, self._poll_s)


class QueueViewRefresher:
    def __init__(self, configs: QueueConfigs) -> None:
        self._configs = configs

    async def run(self, stop: asyncio.Event) -> None:
        interval = self._configs.interval.total_seconds()
        backoff = Backoff(interval, max(_MAX_BACKOFF_S, interval))
        while not stop.is_set():
            try:
                await self._configs.refresh()
            except Exception:
                # The last view stays: calls keep being gated as it says.
                delay = backoff.next()
                log.exception("queue view refresh failed; retrying", retry_in_s=delay)
                await _pause(stop, delay)
                continue
            backoff.reset()
            await _pause(stop, interval)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
