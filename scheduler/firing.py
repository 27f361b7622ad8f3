"""The firing loop: sleeps until the next timer, claims what is due, publishes, marks fired.

At least once: a timer is marked fired only after Kafka acknowledged its DueTimeReached; a
process that dies between claim and mark leaves the claim to expire, and the timer fires
again (with the same event id, so the orchestrator's inbox drops the repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from mesh.logs import get_logger
from mesh.ports import Clock, EventBus, OutgoingMessage
from mesh.timeconv import to_timestamp
from mesh.topics import Topics, call_key
from scheduler.domain.timers import Timer, sleep_for
from scheduler.ports import TimerStore
from servicecall.internal.v1 import events_pb2 as pb

log = get_logger(__name__)


def due_time_reached(timer: Timer, fired_at: datetime, topic: str) -> OutgoingMessage:
    key = timer.key
    envelope = pb.Envelope(
        event_id=timer.fire_event_id,
        tenant_id=key.tenant_id,
        service_call_id=key.service_call_id,
        correlation_id=timer.correlation_id,
        occurred_at=to_timestamp(fired_at),
        sequence=timer.sequence,
        due_time_reached=pb.DueTimeReached(
            purpose=key.purpose,  # type: ignore[arg-type]
            attempt=key.attempt,
            fire_time=to_timestamp(key.fire_at),
            fired_time=to_timestamp(fired_at),
        ),
    )
    return OutgoingMessage(
        topic, call_key(key.tenant_id, key.service_call_id), envelope.SerializeToString()
    )


class Firer:
    def __init__(
        self,
        store: TimerStore,
        bus: EventBus,
        clock: Clock,
        topics: Topics,
        batch_size: int = 500,
        claim_lease: timedelta = timedelta(seconds=10),
        max_sleep: timedelta = timedelta(seconds=1),
        retention: timedelta = timedelta(hours=1),
    ) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self._topics = topics
        self._batch_size = batch_size
        self._claim_lease = claim_lease
        self._max_sleep = max_sleep
        self._retention = retention
        self._wake = asyncio.Event()
        self._sleeping_until: datetime | None = None
        self.fired = 0

    def armed(self, fire_at: datetime) -> None:
        """A timer was armed in this process: wake up if it is due before the current sleep."""
        if self._sleeping_until is None or fire_at < self._sleeping_until:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        last_prune = self._clock.now()
        while not stop.is_set():
            try:
                fired = await self.fire_due()
                if fired:
                    continue  # more may be due; sleep only once nothing is
                now = self._clock.now()
                if now - last_prune > timedelta(minutes=1):
                    await self._store.prune(now - self._retention)
                    last_prune = now
                await self._sleep(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("firing loop failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    async def fire_due(self) -> int:
        now = self._clock.now()
        due = await self._store.claim_due(now, self._batch_size, self._claim_lease)
        if not due:
            return 0
        await self._bus.publish([due_time_reached(t, now, self._topics.timer_events) for t in due])
        await self._store.mark_fired([t.timer_id for t in due], self._clock.now())
        self.fired += len(due)
        return len(due)

    async def _sleep(self, stop: asyncio.Event) -> None:
        # Clear before reading the next fire time: an arm that lands after the read sets the
        # event again, so its wake-up cannot be lost.
        self._wake.clear()
        next_fire_at = await self._store.next_fire_at()
        now = self._clock.now()
        delay = sleep_for(next_fire_at, now, self._max_sleep)
        self._sleeping_until = now + delay
        if delay <= timedelta(0):
            return
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=delay.total_seconds(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._sleeping_until = None
