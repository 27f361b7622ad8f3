"""In-memory TimerStore with the Postgres adapter's semantics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from scheduler.domain.timers import HANDOFF_PURPOSE, Timer, TimerState, Upcoming


@dataclass
class _Row:
    timer: Timer
    claimed_until: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class InMemoryTimerStore:
    rows: dict[str, _Row] = field(default_factory=dict)

    async def arm(self, timer: Timer) -> bool:
        row = self.rows.get(timer.timer_id)
        if row is None:
            self.rows[timer.timer_id] = _Row(timer)
            return True
        if row.timer.state is TimerState.FIRED and row.timer.armed_by != timer.armed_by:
            self.rows[timer.timer_id] = _Row(timer)
            return True
        return False

    async def arm_many(self, timers: Sequence[Timer]) -> set[str]:
        armed: set[str] = set()
        seen: set[str] = set()
        for timer in timers:
            if timer.timer_id in seen:
                continue
            seen.add(timer.timer_id)
            if await self.arm(timer):
                armed.add(timer.timer_id)
        return armed

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease: timedelta,
        handoffs_until: datetime | None = None,
        by_tenant: bool = False,
    ) -> Sequence[Timer]:
        handoffs_until = max(now, handoffs_until or now)
        due = sorted(
            (
                r
                for r in self.rows.values()
                if r.timer.state is TimerState.PENDING
                and (
                    r.timer.key.fire_at <= now
                    or (
                        r.timer.key.purpose == HANDOFF_PURPOSE
                        and r.timer.key.fire_at <= handoffs_until
                    )
                )
                and (r.claimed_until is None or r.claimed_until <= now)
            ),
            key=lambda r: (r.timer.key.fire_at, r.timer.timer_id),
        )
        if by_tenant:
            turns: dict[str, int] = {}
            ranked = []
            for r in due:
                tenant = r.timer.key.tenant_id
                turns[tenant] = turns.get(tenant, 0) + 1
                ranked.append((turns[tenant], r.timer.key.fire_at, r.timer.timer_id, r))
            due = [entry[-1] for entry in sorted(ranked, key=lambda e: e[:3])][:limit]
            due.sort(key=lambda r: (r.timer.key.fire_at, r.timer.timer_id))
        due = due[:limit]
        for row in due:
            row.claimed_until = now + lease
        return [r.timer for r in due]

    async def mark_fired(
        self, timer_ids: Sequence[str], now: datetime, claimed_until: datetime
    ) -> int:
        marked = 0
        for timer_id in timer_ids:
            row = self.rows.get(timer_id)
            if (
                row is not None
                and row.timer.state is TimerState.PENDING
                and row.claimed_until == claimed_until
            ):
                row.timer = replace(row.timer, state=TimerState.FIRED)
                row.claimed_until = None
                row.ended_at = now
                marked += 1
        return marked

    async def next_fire_at(self) -> datetime | None:
        times = [
            max(r.timer.key.fire_at, r.claimed_until) if r.claimed_until else r.timer.key.fire_at
            for r in self.rows.values()
            if r.timer.state is TimerState.PENDING
        ]
        return min(times) if times else None

    async def upcoming(self, until: datetime, limit: int) -> Sequence[Upcoming]:
        rows = sorted(
            (
                r
                for r in self.rows.values()
                if r.timer.state is TimerState.PENDING and r.timer.key.fire_at < until
            ),
            key=lambda r: r.timer.key.fire_at,
        )[:limit]
        return [
            Upcoming(
                r.timer.key.fire_at,
                max(r.timer.key.fire_at, r.claimed_until)
                if r.claimed_until
                else r.timer.key.fire_at,
                r.timer.key.purpose == HANDOFF_PURPOSE and r.claimed_until is None,
            )
            for r in rows
        ]

    async def cancel(self, timer_id: str, now: datetime) -> Timer | None:
        row = self.rows.get(timer_id)
        if row is None or row.timer.state is not TimerState.PENDING:
            return None
        row.timer = replace(row.timer, state=TimerState.CANCELED)
        row.ended_at = now
        return row.timer

    async def get(self, timer_id: str) -> Timer | None:
        row = self.rows.get(timer_id)
        return None if row is None else row.timer

    async def list_pending(self, limit: int, after: tuple[datetime, str] | None) -> Sequence[Timer]:
        pending = sorted(
            (r.timer for r in self.rows.values() if r.timer.state is TimerState.PENDING),
            key=lambda t: (t.key.fire_at, t.timer_id),
        )
        if after is not None:
            pending = [t for t in pending if (t.key.fire_at, t.timer_id) > after]
        return pending[:limit]

    async def prune(self, before: datetime) -> int:
        old = [k for k, r in self.rows.items() if r.ended_at is not None and r.ended_at < before]
        for key in old:
            del self.rows[key]
        return len(old)
