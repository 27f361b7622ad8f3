"""The ScheduleStore over Postgres (table `schedules`, migration 0009), and the stored form of a
schedule's call template.

Client changes (`change`) lock the row, run the use case's pure step on it and write what it
gives, guarded by the version it read. The materialiser's claim takes the due ACTIVE rows with
`FOR UPDATE SKIP LOCKED` and holds them while their calls are submitted (in other
transactions), then writes each one's next and last occurrence and commits: two replicas
never hold one schedule at once, a client change waits for a claim (and a claim skips a row
a client holds), and a claim cut short commits nothing, so its redo makes the same
occurrences again, which the calls' deterministic ids make harmless.

Template format versions (a change is a new version: keep reading the old ones, add golden
files in tests/golden/orchestrator/schedule_template_v<N>/):
- 1 ({"v": 1, ...}): "request" and "retry_policy" exactly as a call's state stores them
  (adapters/codec.py), "tags" sorted, "callback_url" and "failure_callback_url" (null: none),
  "max_lateness" in integer microseconds (null: none). Secret header values are sealed.
- 2 ({"v": 2, ...}): version 1 and "response_rules" (#18), as a call's state stores them
  (codec.py, format 5), written only when the template has them: a template without them is
  version 1's but for "v". Version 1 reads with none.
- 3 ({"v": 3, ...}): version 2 and "queue_id" and "ordering_key" (#18's queues for schedules),
  each written only when set (absent: `default`, no key). Versions 1 and 2 read with
  neither. (A version of its own so that a process that does not know them refuses such a
  template rather than making its occurrences outside their queue.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.adapters.codec import (
    decode_request,
    decode_response_rules,
    decode_retry_policy,
    encode_request,
    encode_response_rules,
    encode_retry_policy,
)
from orchestrator.adapters.tables import schedules
from orchestrator.domain.schedules import (
    CallTemplate,
    MissedOccurrencePolicy,
    Recurrence,
    Schedule,
    ScheduleState,
)
from orchestrator.ports import (
    Advance,
    ConcurrentUpdateError,
    Invalid,
    ScheduleNotFound,
    SchedulePage,
    ScheduleRefusal,
    ScheduleStep,
)

TEMPLATE_FORMAT_VERSION = 3

_MICROSECOND = timedelta(microseconds=1)


class UnreadableTemplateError(ValueError):
    """A stored call template that no known format version describes."""


def encode_template(template: CallTemplate) -> dict[str, Any]:
    lateness = template.max_lateness
    out: dict[str, Any] = {
        "v": TEMPLATE_FORMAT_VERSION,
        "request": encode_request(template.request),
        "tags": sorted(template.tags),
        "retry_policy": encode_retry_policy(template.retry_policy),
        "callback_url": template.callback_url,
        "failure_callback_url": template.failure_callback_url,
        "max_lateness": None if lateness is None else lateness // _MICROSECOND,
    }
    if template.response_rules is not None:
        out["response_rules"] = encode_response_rules(template.response_rules)
    if template.queue_id is not None:
        out["queue_id"] = template.queue_id
    if template.ordering_key is not None:
        out["ordering_key"] = template.ordering_key
    return out


def decode_template(data: Any) -> CallTemplate:
    try:
        version = data["v"]
        if version in (1, 2, 3):
            lateness = data["max_lateness"]
            rules = data.get("response_rules")
            return CallTemplate(
                request=decode_request(data["request"]),
                tags=frozenset(data["tags"]),
                retry_policy=decode_retry_policy(data["retry_policy"]),
                callback_url=data["callback_url"],
                failure_callback_url=data["failure_callback_url"],
                max_lateness=None if lateness is None else timedelta(microseconds=lateness),
                response_rules=None if rules is None else decode_response_rules(rules),
                queue_id=data.get("queue_id"),
                ordering_key=data.get("ordering_key"),
            )
    except (KeyError, TypeError, ValueError) as e:
        raise UnreadableTemplateError(f"stored call template not readable: {e!r}") from e
    raise UnreadableTemplateError(f"unknown stored call template format version {version!r}")


def _row_values(schedule: Schedule) -> dict[str, Any]:
    recurrence = schedule.recurrence
    return {
        "tenant_id": schedule.tenant_id,
        "schedule_id": schedule.schedule_id,
        "cron": recurrence.cron,
        "time_zone": recurrence.time_zone,
        "start_at": recurrence.start_at,
        "end_at": recurrence.end_at,
        "anchor_at": recurrence.anchor,
        "missed_policy": schedule.missed_policy.value,
        "description": schedule.description,
        "state": schedule.state.value,
        "next_occurrence_at": schedule.next_occurrence_at,
        "last_occurrence_at": schedule.last_occurrence_at,
        "version": schedule.version,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
        "template": encode_template(schedule.template),
    }


def _from_row(row: Row[Any]) -> Schedule:
    return Schedule(
        tenant_id=row.tenant_id,
        schedule_id=row.schedule_id,
        recurrence=Recurrence(
            cron=row.cron,
            time_zone=row.time_zone,
            start_at=row.start_at,
            end_at=row.end_at,
            anchor=row.anchor_at,
        ),
        template=decode_template(row.template),
        missed_policy=MissedOccurrencePolicy(row.missed_policy),
        description=row.description,
        state=ScheduleState(row.state),
        next_occurrence_at=row.next_occurrence_at,
        last_occurrence_at=row.last_occurrence_at,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_c = schedules.c
_KEY = (
    _c.tenant_id == sa.bindparam("b_tenant_id"),
    _c.schedule_id == sa.bindparam("b_schedule_id"),
)

# RETURNING, not rowcount: the driver reports -1 for INSERT ... ON CONFLICT.
_CREATE = pg_insert(schedules).on_conflict_do_nothing().returning(_c.schedule_id)

_GET = sa.select(schedules).where(*_KEY)

# Waits for a claim that holds the row (and makes a claim skip it meanwhile).
_LOCK = sa.select(schedules).where(*_KEY).with_for_update()

# Every column but the key, guarded by the version the change was decided on.
_WRITE = sa.update(schedules).where(*_KEY, _c.version == sa.bindparam("b_version"))

_DELETE = sa.delete(schedules).where(*_KEY).returning(*schedules.c)

_LIST = (
    sa.select(schedules)
    .where(_c.tenant_id == sa.bindparam("tenant_id"), _c.schedule_id > sa.bindparam("after"))
    .order_by(_c.schedule_id)
    .limit(sa.bindparam("limit"))
)

# Read through the partial index schedules_due. SKIP LOCKED: a row another replica's pass (or
# a client's change) holds is theirs; it is taken by a later pass if still due.
_CLAIM_DUE = (
    sa.select(schedules)
    .where(_c.state == ScheduleState.ACTIVE.value, _c.next_occurrence_at <= sa.bindparam("until"))
    .order_by(_c.next_occurrence_at)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True)
)

_ADVANCE = sa.update(schedules).where(*_KEY)


class PostgresScheduleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, schedule: Schedule) -> bool:
        async with self._engine.begin() as conn:
            row = (await conn.execute(_CREATE, _row_values(schedule))).first()
        return row is not None

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(_GET, {"b_tenant_id": tenant_id, "b_schedule_id": schedule_id})
            ).first()
        return None if row is None else _from_row(row)

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> SchedulePage:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    _LIST, {"tenant_id": tenant_id, "after": after or "", "limit": page_size + 1}
                )
            ).all()
        items = [_from_row(r) for r in rows[:page_size]]
        more = len(rows) > page_size and items
        return SchedulePage(items, items[-1].schedule_id if more else None)

    async def change(
        self, tenant_id: str, schedule_id: str, step: ScheduleStep
    ) -> Schedule | ScheduleRefusal | Invalid:
        key = {"b_tenant_id": tenant_id, "b_schedule_id": schedule_id}
        async with self._engine.begin() as conn:
            row = (await conn.execute(_LOCK, key)).first()
            if row is None:
                return ScheduleNotFound(tenant_id, schedule_id)
            current = _from_row(row)
            outcome = step(current)
            if not isinstance(outcome, Schedule) or outcome == current:
                return outcome
            values = _row_values(outcome)
            del values["tenant_id"], values["schedule_id"]
            written = await conn.execute(_WRITE, {**key, "b_version": current.version, **values})
            if written.rowcount != 1:  # cannot happen under the row lock; never write blind
                raise ConcurrentUpdateError(f"schedule {tenant_id}/{schedule_id} changed")
        return outcome

    async def delete(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    _DELETE, {"b_tenant_id": tenant_id, "b_schedule_id": schedule_id}
                )
            ).first()
        return None if row is None else _from_row(row)

    async def claim_due(self, until: datetime, limit: int, advance: Advance) -> int:
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM_DUE, {"until": until, "limit": limit})).all()
            if not rows:
                return 0
            claimed = [_from_row(r) for r in rows]
            advanced = await asyncio.gather(*(advance(s) for s in claimed))
            await conn.execute(
                _ADVANCE,
                [
                    {
                        "b_tenant_id": s.tenant_id,
                        "b_schedule_id": s.schedule_id,
                        "next_occurrence_at": s.next_occurrence_at,
                        "last_occurrence_at": s.last_occurrence_at,
                        "state": s.state.value,
                    }
                    for s in advanced
                ],
            )
        return len(claimed)
