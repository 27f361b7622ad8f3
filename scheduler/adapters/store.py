"""TimerStore over Postgres: claims with FOR UPDATE SKIP LOCKED so replicas never share a timer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.domain.timers import HANDOFF_PURPOSE, Timer, TimerKey, TimerState, Upcoming

_COLUMNS = (
    "timer_id::text AS timer_id, tenant_id, service_call_id, purpose, attempt, fire_at, state,"
    " armed_by, correlation_id, sequence, trace_context"
)

# Arming is an upsert: a new timer is inserted; a fired one is armed again only by a request
# other than the one that armed it (a re-arm, not a redelivery). The batch travels as one
# JSON document, so one statement arms a whole batch (JSON, not one array per column: the
# driver's dumping of Python lists as arrays cost more CPU than the rest of the write).
_ARM_MANY = sa.text(
    """
    INSERT INTO scheduler.timers (timer_id, tenant_id, service_call_id, purpose, attempt,
                                  fire_at, state, armed_by, correlation_id, sequence,
                                  trace_context)
    SELECT t.timer_id, t.tenant_id, t.service_call_id, t.purpose, t.attempt,
           t.fire_at, 'pending', t.armed_by, t.correlation_id, t.sequence, t.trace_context
      FROM jsonb_to_recordset(CAST(:timers AS jsonb))
           AS t(timer_id uuid, tenant_id text, service_call_id text, purpose smallint,
                attempt integer, fire_at timestamptz, armed_by text, correlation_id text,
                sequence bigint, trace_context jsonb)
    ON CONFLICT (timer_id) DO UPDATE
       SET state = 'pending', armed_by = EXCLUDED.armed_by, claimed_until = NULL,
           fired_at = NULL, correlation_id = EXCLUDED.correlation_id,
           sequence = EXCLUDED.sequence, trace_context = EXCLUDED.trace_context
     WHERE scheduler.timers.state = 'fired'
       AND scheduler.timers.armed_by <> EXCLUDED.armed_by
    RETURNING timer_id::text
    """
)

# The inner SELECT takes the earliest due, unclaimed rows and locks them; SKIP LOCKED lets a
# second replica take the next rows instead of waiting, and the lease written here keeps a
# third from re-claiming them after this transaction commits.
_CLAIM = sa.text(
    f"""
    UPDATE scheduler.timers AS t SET claimed_until = :lease_until
      FROM (SELECT timer_id FROM scheduler.timers
             WHERE state = 'pending' AND fire_at <= :handoffs_until
               AND (fire_at <= :now OR purpose = {HANDOFF_PURPOSE})
               AND (claimed_until IS NULL OR claimed_until <= :now)
             ORDER BY fire_at
             LIMIT :limit
             FOR UPDATE SKIP LOCKED) AS due
     WHERE t.timer_id = due.timer_id
    RETURNING {_COLUMNS.replace("timer_id::text", "t.timer_id::text")}
    """
)

_MARK_FIRED = sa.text(
    """
    UPDATE scheduler.timers SET state = 'fired', fired_at = :now, claimed_until = NULL
     WHERE timer_id = ANY(CAST(:ids AS uuid[])) AND state = 'pending'
       AND claimed_until = :claimed_until
    """
)

_NEXT = sa.text(
    """
    SELECT fire_at, claimed_until FROM scheduler.timers
     WHERE state = 'pending' ORDER BY fire_at LIMIT 64
    """
)

# Served by the partial index on fire_at: the cost does not depend on how many timers pend.
_UPCOMING = sa.text(
    f"""
    SELECT fire_at, GREATEST(fire_at, claimed_until) AS attention,
           purpose = {HANDOFF_PURPOSE} AND claimed_until IS NULL AS may_fire_early
      FROM scheduler.timers
     WHERE state = 'pending' AND fire_at < :until ORDER BY fire_at LIMIT :limit
    """
)

_CANCEL = sa.text(
    f"""
    UPDATE scheduler.timers SET state = 'canceled', fired_at = :now
     WHERE timer_id = CAST(:timer_id AS uuid) AND state = 'pending'
    RETURNING {_COLUMNS}
    """
)

_GET = sa.text(f"SELECT {_COLUMNS} FROM scheduler.timers WHERE timer_id = CAST(:timer_id AS uuid)")

_LIST_FIRST = sa.text(
    f"""
    SELECT {_COLUMNS} FROM scheduler.timers WHERE state = 'pending'
     ORDER BY fire_at, timer_id LIMIT :limit
    """
)
_LIST_AFTER = sa.text(
    f"""
    SELECT {_COLUMNS} FROM scheduler.timers
     WHERE state = 'pending' AND (fire_at, timer_id) > (:fire_at, CAST(:timer_id AS uuid))
     ORDER BY fire_at, timer_id LIMIT :limit
    """
)

_PRUNE = sa.text("DELETE FROM scheduler.timers WHERE state <> 'pending' AND fired_at < :before")


def _timer(row: Any) -> Timer:
    return Timer(
        key=TimerKey(
            tenant_id=row.tenant_id,
            service_call_id=row.service_call_id,
            purpose=row.purpose,
            attempt=row.attempt,
            fire_at=row.fire_at,
        ),
        armed_by=row.armed_by,
        correlation_id=row.correlation_id,
        sequence=row.sequence,
        state=TimerState(row.state),
        trace_context=row.trace_context,
    )


class PostgresTimerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def arm(self, timer: Timer) -> bool:
        return timer.timer_id in await self.arm_many([timer])

    async def arm_many(self, timers: Sequence[Timer]) -> set[str]:
        # One timer id may appear once per statement (ON CONFLICT cannot touch a row twice):
        # a repeat in the same batch is the same request delivered twice, so the first wins.
        unique = list({t.timer_id: t for t in reversed(timers)}.values())
        if not unique:
            return set()
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                _ARM_MANY,
                {
                    "timers": json.dumps(
                        [
                            {
                                "timer_id": t.timer_id,
                                "tenant_id": t.key.tenant_id,
                                "service_call_id": t.key.service_call_id,
                                "purpose": t.key.purpose,
                                "attempt": t.key.attempt,
                                "fire_at": t.key.fire_at.isoformat(),
                                "armed_by": t.armed_by,
                                "correlation_id": t.correlation_id,
                                "sequence": t.sequence,
                                "trace_context": t.trace_context,
                            }
                            for t in unique
                        ],
                        separators=(",", ":"),
                    )
                },
            )
            return {row[0] for row in rows}

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease: timedelta,
        handoffs_until: datetime | None = None,
    ) -> Sequence[Timer]:
        params = {
            "now": now,
            "handoffs_until": max(now, handoffs_until or now),
            "limit": limit,
            "lease_until": now + lease,
        }
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM, params)).all()
        return sorted((_timer(r) for r in rows), key=lambda t: t.key.fire_at)

    async def mark_fired(
        self, timer_ids: Sequence[str], now: datetime, claimed_until: datetime
    ) -> int:
        async with self._engine.begin() as conn:
            marked = await conn.execute(
                _MARK_FIRED,
                {"ids": list(timer_ids), "now": now, "claimed_until": claimed_until},
            )
        return marked.rowcount

    async def next_fire_at(self) -> datetime | None:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_NEXT)).all()
        # A claimed timer needs attention again only when its lease runs out.
        times = [max(r.fire_at, r.claimed_until) if r.claimed_until else r.fire_at for r in rows]
        return min(times) if times else None

    async def upcoming(self, until: datetime, limit: int) -> Sequence[Upcoming]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_UPCOMING, {"until": until, "limit": limit})).all()
        return [Upcoming(r.fire_at, r.attention, r.may_fire_early) for r in rows]

    async def cancel(self, timer_id: str, now: datetime) -> Timer | None:
        async with self._engine.begin() as conn:
            row = (await conn.execute(_CANCEL, {"timer_id": timer_id, "now": now})).first()
        return None if row is None else _timer(row)

    async def get(self, timer_id: str) -> Timer | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_GET, {"timer_id": timer_id})).first()
        return None if row is None else _timer(row)

    async def list_pending(self, limit: int, after: tuple[datetime, str] | None) -> Sequence[Timer]:
        async with self._engine.connect() as conn:
            if after is None:
                rows = (await conn.execute(_LIST_FIRST, {"limit": limit})).all()
            else:
                rows = (
                    await conn.execute(
                        _LIST_AFTER, {"limit": limit, "fire_at": after[0], "timer_id": after[1]}
                    )
                ).all()
        return [_timer(r) for r in rows]

    async def prune(self, before: datetime) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(_PRUNE, {"before": before})
        return result.rowcount
