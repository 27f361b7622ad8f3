"""TimerStore over Postgres: claims with FOR UPDATE SKIP LOCKED so replicas never share a timer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.adapters.tables import CANCELED, FIRED, PENDING, timers
from scheduler.domain.timers import HANDOFF_PURPOSE, Timer, TimerKey, TimerState, Upcoming

# The timer id as text, the str the domain holds (a uuid column would load as a UUID object).
_timer_id = sa.cast(timers.c.timer_id, sa.Text).label("timer_id")
_COLUMNS = (
    _timer_id,
    timers.c.tenant_id,
    timers.c.service_call_id,
    timers.c.purpose,
    timers.c.attempt,
    timers.c.fire_at,
    timers.c.state,
    timers.c.armed_by,
    timers.c.correlation_id,
    timers.c.sequence,
    timers.c.trace_context,
)
# A constant of the code, written into the statements like the states (tables.PENDING).
_HANDOFF = sa.literal_column(str(HANDOFF_PURPOSE), sa.SmallInteger)


def _param(name: str) -> sa.BindParameter[Any]:
    """A parameter passed to psycopg as it is: no type, so SQLAlchemy neither converts the
    value nor adds a cast of its own (the statement casts where Postgres needs one)."""
    return sa.bindparam(name, type_=sa.types.NullType())


def _uuid(name: str) -> sa.Cast[Any]:
    return sa.cast(_param(name), pg.UUID)


# Arming is an upsert: a new timer is inserted; a fired one is armed again only by a request
# other than the one that armed it (a re-arm, not a redelivery). The batch travels as one
# JSON document, so one statement arms a whole batch (JSON, not one array per column: the
# driver's dumping of Python lists as arrays cost more CPU than the rest of the write).
_batch = (
    sa.func.jsonb_to_recordset(sa.cast(_param("timers"), pg.JSONB))
    .table_valued(
        sa.column("timer_id", pg.UUID),
        sa.column("tenant_id", sa.Text),
        sa.column("service_call_id", sa.Text),
        sa.column("purpose", sa.SmallInteger),
        sa.column("attempt", sa.Integer),
        sa.column("fire_at", sa.DateTime(timezone=True)),
        sa.column("armed_by", sa.Text),
        sa.column("correlation_id", sa.Text),
        sa.column("sequence", sa.BigInteger),
        sa.column("trace_context", pg.JSONB),
    )
    .render_derived(name="t", with_types=True)
)
_insert_batch = pg.insert(timers).from_select(
    [
        "timer_id",
        "tenant_id",
        "service_call_id",
        "purpose",
        "attempt",
        "fire_at",
        "state",
        "armed_by",
        "correlation_id",
        "sequence",
        "trace_context",
    ],
    sa.select(
        _batch.c.timer_id,
        _batch.c.tenant_id,
        _batch.c.service_call_id,
        _batch.c.purpose,
        _batch.c.attempt,
        _batch.c.fire_at,
        PENDING,
        _batch.c.armed_by,
        _batch.c.correlation_id,
        _batch.c.sequence,
        _batch.c.trace_context,
    ),
)
_ARM_MANY = _insert_batch.on_conflict_do_update(
    index_elements=[timers.c.timer_id],
    set_={
        "state": PENDING,
        "armed_by": _insert_batch.excluded.armed_by,
        "claimed_until": sa.null(),
        "fired_at": sa.null(),
        "correlation_id": _insert_batch.excluded.correlation_id,
        "sequence": _insert_batch.excluded.sequence,
        "trace_context": _insert_batch.excluded.trace_context,
    },
    where=(timers.c.state == FIRED) & (timers.c.armed_by != _insert_batch.excluded.armed_by),
).returning(_timer_id)

# The inner SELECT takes the earliest due, unclaimed rows and locks them; SKIP LOCKED lets a
# second replica take the next rows instead of waiting, and the lease written here keeps a
# third from re-claiming them after this transaction commits.
_now = sa.bindparam("now", type_=sa.DateTime(timezone=True))
_claimable = (
    timers.c.state == PENDING,
    timers.c.fire_at <= sa.bindparam("handoffs_until", type_=sa.DateTime(timezone=True)),
    sa.or_(timers.c.fire_at <= _now, timers.c.purpose == _HANDOFF),
    sa.or_(timers.c.claimed_until.is_(None), timers.c.claimed_until <= _now),
)
_due = (
    sa.select(timers.c.timer_id)
    .where(*_claimable)
    .order_by(timers.c.fire_at)
    .limit(_param("limit"))
    .with_for_update(skip_locked=True)
    .subquery("due")
)
# Claimable, by tenant: the same rows, each numbered by its place among its tenant's (its
# turn); the claim takes the first `limit` by turn, then fire time. Every claimable row is read
# and sorted (a window function, which FOR UPDATE cannot go with, so the rows picked are locked
# by the statement around it): the Firer asks for this only in a crowd, where the fire-time
# order would give the whole claim to the tenant with the most timers due.
_turns = (
    sa.select(
        timers.c.timer_id,
        timers.c.fire_at,
        sa.func.row_number()
        .over(partition_by=timers.c.tenant_id, order_by=(timers.c.fire_at, timers.c.timer_id))
        .label("turn"),
    )
    .where(*_claimable)
    .subquery("turns")
)
_picked = (
    sa.select(_turns.c.timer_id)
    .order_by(_turns.c.turn, _turns.c.fire_at, _turns.c.timer_id)
    .limit(_param("limit"))
)
_due_by_tenant = (
    sa.select(timers.c.timer_id)
    .where(timers.c.timer_id.in_(_picked), *_claimable)
    .with_for_update(skip_locked=True)
    .subquery("due")
)

# The updated table under another name, so the subquery reads scheduler.timers on its own
# instead of being correlated with the row being updated.
# (An Alias at run time; typed as a plain named FROM clause, which update() does not take.)
_t = cast("sa.Alias[Any]", timers.alias("t"))


def _claim(due: sa.Subquery) -> sa.Update:
    return (
        sa.update(_t)
        .values(claimed_until=sa.bindparam("lease_until"))
        .where(_t.c.timer_id == due.c.timer_id)
        .returning(
            sa.cast(_t.c.timer_id, sa.Text).label("timer_id"),
            *(_t.c[column.name] for column in _COLUMNS[1:]),
        )
    )


_CLAIM = _claim(_due)
_CLAIM_BY_TENANT = _claim(_due_by_tenant)

# The parameters of an UPDATE are never named after a column of it: executed with such a
# key, SQLAlchemy takes it for a value to SET.
_MARK_FIRED = (
    sa.update(timers)
    .values(state=FIRED, fired_at=sa.bindparam("now"), claimed_until=sa.null())
    .where(
        timers.c.timer_id == sa.any_(sa.cast(_param("ids"), pg.ARRAY(pg.UUID))),
        timers.c.state == PENDING,
        timers.c.claimed_until == sa.bindparam("claim_ends", type_=sa.DateTime(timezone=True)),
    )
)

_NEXT = (
    sa.select(timers.c.fire_at, timers.c.claimed_until)
    .where(timers.c.state == PENDING)
    .order_by(timers.c.fire_at)
    .limit(sa.literal_column("64"))
)

# Served by the partial index on fire_at: the cost does not depend on how many timers pend.
_UPCOMING = (
    sa.select(
        timers.c.fire_at,
        sa.func.greatest(timers.c.fire_at, timers.c.claimed_until).label("attention"),
        sa.and_(timers.c.purpose == _HANDOFF, timers.c.claimed_until.is_(None)).label(
            "may_fire_early"
        ),
    )
    .where(timers.c.state == PENDING, timers.c.fire_at < sa.bindparam("until"))
    .order_by(timers.c.fire_at)
    .limit(_param("limit"))
)

_CANCEL = (
    sa.update(timers)
    .values(state=CANCELED, fired_at=sa.bindparam("now"))
    .where(timers.c.timer_id == _uuid("id"), timers.c.state == PENDING)
    .returning(*_COLUMNS)
)

_GET = sa.select(*_COLUMNS).where(timers.c.timer_id == _uuid("timer_id"))

_LIST_FIRST = (
    sa.select(*_COLUMNS)
    .where(timers.c.state == PENDING)
    .order_by(timers.c.fire_at, timers.c.timer_id)
    .limit(_param("limit"))
)
_LIST_AFTER = (
    sa.select(*_COLUMNS)
    .where(
        timers.c.state == PENDING,
        sa.tuple_(timers.c.fire_at, timers.c.timer_id)
        > sa.tuple_(_param("fire_at"), _uuid("timer_id")),
    )
    .order_by(timers.c.fire_at, timers.c.timer_id)
    .limit(_param("limit"))
)

_PRUNE = sa.delete(timers).where(
    timers.c.state != PENDING, timers.c.fired_at < sa.bindparam("before")
)


def _batch_json(timers: Sequence[Timer]) -> str:
    """The `timers` parameter of _ARM_MANY: the batch as one JSON array of records."""
    return json.dumps(
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
            for t in timers
        ],
        separators=(",", ":"),
    )


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
            rows = await conn.execute(_ARM_MANY, {"timers": _batch_json(unique)})
            return {row[0] for row in rows}

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease: timedelta,
        handoffs_until: datetime | None = None,
        by_tenant: bool = False,
    ) -> Sequence[Timer]:
        params = {
            "now": now,
            "handoffs_until": max(now, handoffs_until or now),
            "limit": limit,
            "lease_until": now + lease,
        }
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM_BY_TENANT if by_tenant else _CLAIM, params)).all()
        return sorted((_timer(r) for r in rows), key=lambda t: t.key.fire_at)

    async def mark_fired(
        self, timer_ids: Sequence[str], now: datetime, claimed_until: datetime
    ) -> int:
        async with self._engine.begin() as conn:
            marked = await conn.execute(
                _MARK_FIRED,
                {"ids": list(timer_ids), "now": now, "claim_ends": claimed_until},
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
            row = (await conn.execute(_CANCEL, {"id": timer_id, "now": now})).first()
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
