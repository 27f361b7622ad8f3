"""The scheduler's Prometheus metrics: timers armed, claimed, fired, and pending.

Counted by a TimerStore wrapper the composition root puts around the Postgres store, so the
firing loop and the pure core stay as they are; pending is sampled by one count query.
No labels but a timer's purpose (hand-off or due), a closed set.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.metrics import counter, gauge
from scheduler.adapters.tables import PENDING, timers
from scheduler.domain.timers import Timer, Upcoming
from scheduler.ports import TimerStore


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.armed = counter(registry, "timers_armed", "Timers armed (new or re-armed).")
        self.claimed = counter(
            registry,
            "timers_claimed",
            "Due timers claimed for firing (a claim whose lease ran out is claimed again).",
        )
        self.fired = counter(
            registry, "timers_fired", "Timers marked fired after Kafka acknowledged them."
        )
        self.canceled = counter(registry, "timers_canceled", "Pending timers canceled.")
        self.pending = gauge(
            registry, "timers_pending", "Timers armed and not yet fired (sampled from Postgres)."
        )
        self.claimed_now = gauge(
            registry,
            "timers_claimed_in_flight",
            "Timers this process claimed and has not marked fired yet.",
        )


class MeasuredTimerStore:
    """A TimerStore that counts what passes through it."""

    def __init__(self, store: TimerStore, metrics: SchedulerMetrics) -> None:
        self._store = store
        self._metrics = metrics

    async def arm(self, timer: Timer) -> bool:
        armed = await self._store.arm(timer)
        if armed:
            self._metrics.armed.inc()
        return armed

    async def arm_many(self, timers: Sequence[Timer]) -> set[str]:
        armed = await self._store.arm_many(timers)
        self._metrics.armed.inc(len(armed))
        return armed

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease: timedelta,
        handoffs_until: datetime | None = None,
        by_tenant: bool = False,
    ) -> Sequence[Timer]:
        due = await self._store.claim_due(now, limit, lease, handoffs_until, by_tenant)
        if due:
            self._metrics.claimed.inc(len(due))
            self._metrics.claimed_now.inc(len(due))
        return due

    async def mark_fired(
        self, timer_ids: Sequence[str], now: datetime, claimed_until: datetime
    ) -> int:
        try:
            marked = await self._store.mark_fired(timer_ids, now, claimed_until)
        finally:
            # Marked or not, this process no longer holds them (a lost claim is another's).
            self._metrics.claimed_now.dec(len(timer_ids))
        self._metrics.fired.inc(marked)
        return marked

    async def next_fire_at(self) -> datetime | None:
        return await self._store.next_fire_at()

    async def upcoming(self, until: datetime, limit: int) -> Sequence[Upcoming]:
        return await self._store.upcoming(until, limit)

    async def cancel(self, timer_id: str, now: datetime) -> Timer | None:
        canceled = await self._store.cancel(timer_id, now)
        if canceled is not None:
            self._metrics.canceled.inc()
        return canceled

    async def prune(self, before: datetime) -> int:
        return await self._store.prune(before)

    async def get(self, timer_id: str) -> Timer | None:
        return await self._store.get(timer_id)

    async def list_pending(self, limit: int, after: tuple[datetime, str] | None) -> Sequence[Timer]:
        return await self._store.list_pending(limit, after)


# An index-only scan of the partial index of pending timers (timers_pending_by_fire_at):
# it reads that index alone, never the fired rows. Measured in docs/observability.md.
_PENDING = sa.select(sa.func.count()).select_from(timers).where(timers.c.state == PENDING)


class PendingSampler:
    def __init__(self, engine: AsyncEngine, metrics: SchedulerMetrics) -> None:
        self._engine = engine
        self._metrics = metrics

    async def sample(self) -> None:
        async with self._engine.connect() as conn:
            pending = (await conn.execute(_PENDING)).scalar()
        self._metrics.pending.set(int(pending or 0))
