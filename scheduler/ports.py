"""The scheduler's ports: where timers are stored, and where fired timers are announced."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from scheduler.domain.timers import Timer, Upcoming


class TimerStore(Protocol):
    async def arm(self, timer: Timer) -> bool:
        """Stores a pending timer. Arming one already pending, or redelivering the request that
        armed one, changes nothing (False); a new request for a fired timer re-arms it."""
        ...

    async def arm_many(self, timers: Sequence[Timer]) -> set[str]:
        """`arm` for many timers at once; returns the ids of those armed by this call. A
        timer id repeated within `timers` is armed (at most) once, by its first occurrence."""
        ...

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease: timedelta,
        handoffs_until: datetime | None = None,
        by_tenant: bool = False,
    ) -> Sequence[Timer]:
        """Claims up to `limit` pending timers due at `now`, and hand-off timers firing by
        `handoffs_until` (crowded hand-offs fired early, scheduler/domain/window.py), earliest
        first, for `lease`; a claim that is not marked fired within the lease may be claimed
        again. `by_tenant`: when more are claimable than `limit`, tenants take turns (each
        tenant's earliest, then each one's second earliest, ...) instead of fire-time order
        over all, so one tenant's crowd does not take every claim before another tenant's
        timer due with it. Either way, fewer than `limit` means nothing else was claimable."""
        ...

    async def mark_fired(
        self, timer_ids: Sequence[str], now: datetime, claimed_until: datetime
    ) -> int:
        """Marks fired those of `timer_ids` still held by the claim that ends at
        `claimed_until` (the `now + lease` of the `claim_due` that returned them); returns how
        many. A firer whose lease ran out and whose timers another claimed, fired, or saw
        re-armed meanwhile marks none of them: only the claim's holder may end a timer."""
        ...

    async def next_fire_at(self) -> datetime | None:
        """When the earliest pending timer needs attention (its fire time, or the end of its
        claim's lease), or None when nothing is pending."""
        ...

    async def upcoming(self, until: datetime, limit: int) -> Sequence[Upcoming]:
        """Up to `limit` pending timers firing before `until`, earliest fire time first. The
        attention time is the fire time, or the end of the claim's lease when one holds it.
        Feeds the firing loop's near-term window."""
        ...

    async def cancel(self, timer_id: str, now: datetime) -> Timer | None: ...

    async def prune(self, before: datetime) -> int:
        """Deletes fired and canceled timers that ended before `before`."""
        ...

    async def get(self, timer_id: str) -> Timer | None: ...

    async def list_pending(
        self, limit: int, after: tuple[datetime, str] | None
    ) -> Sequence[Timer]: ...


class FiredTimers(Protocol):
    async def publish(self, timers: Sequence[Timer], fired_at: datetime) -> None:
        """Announces that `timers` fired at `fired_at` (a DueTimeReached each); returns once
        every one is acknowledged, raises if any may not be. Each announcement continues the
        trace its timer was armed in."""
        ...
