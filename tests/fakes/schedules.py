"""In-memory ScheduleStore with the Postgres adapter's semantics: a claim holds its schedules
(a change waits for it, another claim skips them) and writes nothing if an advance raises."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from orchestrator.domain.schedules import Schedule, ScheduleState
from orchestrator.ports import (
    Advance,
    Invalid,
    ScheduleNotFound,
    SchedulePage,
    ScheduleRefusal,
    ScheduleStep,
)

Key = tuple[str, str]


@dataclass
class InMemoryScheduleStore:
    rows: dict[Key, Schedule] = field(default_factory=dict)
    _locks: defaultdict[Key, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    async def create(self, schedule: Schedule) -> bool:
        key = (schedule.tenant_id, schedule.schedule_id)
        if key in self.rows:
            return False
        self.rows[key] = schedule
        return True

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        return self.rows.get((tenant_id, schedule_id))

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> SchedulePage:
        ids = sorted(s for t, s in self.rows if t == tenant_id and s > (after or ""))
        page = [self.rows[(tenant_id, s)] for s in ids[:page_size]]
        more = len(ids) > page_size and page
        return SchedulePage(page, page[-1].schedule_id if more else None)

    async def change(
        self, tenant_id: str, schedule_id: str, step: ScheduleStep
    ) -> Schedule | ScheduleRefusal | Invalid:
        key = (tenant_id, schedule_id)
        async with self._locks[key]:
            current = self.rows.get(key)
            if current is None:
                return ScheduleNotFound(tenant_id, schedule_id)
            outcome = step(current)
            if isinstance(outcome, Schedule) and outcome != current:
                self.rows[key] = outcome
            return outcome

    async def delete(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        key = (tenant_id, schedule_id)
        async with self._locks[key]:
            return self.rows.pop(key, None)

    async def claim_due(self, until: datetime, limit: int, advance: Advance) -> int:
        due = sorted(
            (
                s
                for key, s in self.rows.items()
                if s.state is ScheduleState.ACTIVE
                and s.next_occurrence_at is not None
                and s.next_occurrence_at <= until
                and not self._locks[key].locked()  # SKIP LOCKED
            ),
            key=lambda s: (s.next_occurrence_at, s.tenant_id, s.schedule_id),
        )[:limit]
        locks = [self._locks[(s.tenant_id, s.schedule_id)] for s in due]
        for lock in locks:
            await lock.acquire()  # free (checked above, no await since): taken at once
        try:
            advanced = await asyncio.gather(*(advance(s) for s in due))
            for before, after in zip(due, advanced, strict=True):
                key = (before.tenant_id, before.schedule_id)
                if key in self.rows:
                    self.rows[key] = replace(
                        self.rows[key],
                        next_occurrence_at=after.next_occurrence_at,
                        last_occurrence_at=after.last_occurrence_at,
                        state=after.state,
                    )
        finally:
            for lock in locks:
                lock.release()
        return len(due)
