"""The ServiceCallStore over Postgres: one row per call (state as jsonb), outbox and inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.adapters import codec
from orchestrator.adapters.relay import NOTIFY_CHANNEL
from orchestrator.adapters.tables import inbox, outbox, service_calls
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Succeeded,
    status_of,
)
from orchestrator.ports import ConcurrentUpdateError, Cursor, ListQuery, Page, Step, Transition


def _columns(state: ServiceCallState, now: datetime) -> dict[str, Any]:
    """The queryable columns, derived from the state so they can never disagree with it."""
    columns: dict[str, Any] = {
        "status": status_of(state).value,
        "version": state.version,
        "state": codec.encode(state),
        "updated_at": now,
    }
    match state:
        case Scheduled() | Dispatched() | Running():
            columns["due_at"] = state.due_at
            columns["attempt"] = state.attempt
        case Succeeded() | Failed():
            columns["completed_at"] = state.completed_at
            columns["attempt"] = len(state.attempts)
        case Canceled():
            columns["completed_at"] = state.canceled_at
            columns["attempt"] = len(state.attempts)
    return columns


def _decode(data: Any) -> ServiceCallState:
    state: ServiceCallState = codec.decode(ServiceCallState, data)
    return state


class PostgresServiceCallStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant_id: str, service_call_id: str) -> ServiceCallState | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(service_calls.c.state).where(
                        service_calls.c.tenant_id == tenant_id,
                        service_calls.c.service_call_id == service_call_id,
                    )
                )
            ).first()
        return None if row is None else _decode(row.state)

    async def list(self, query: ListQuery) -> Page:
        c = service_calls.c
        sort = c.created_at if query.order_by == "create_time" else c.due_at
        stmt = sa.select(c.state, sort.label("sort_value"), c.service_call_id).where(
            c.tenant_id == query.tenant_id
        )
        if query.statuses:
            stmt = stmt.where(c.status.in_(sorted(s.value for s in query.statuses)))
        if query.tags:
            stmt = stmt.where(c.tags.contains(sorted(query.tags)))
        if query.created_from is not None:
            stmt = stmt.where(c.created_at >= query.created_from)
        if query.created_before is not None:
            stmt = stmt.where(c.created_at < query.created_before)
        if query.due_from is not None:
            stmt = stmt.where(c.due_at >= query.due_from)
        if query.due_before is not None:
            stmt = stmt.where(c.due_at < query.due_before)
        if query.after is not None:
            key = sa.tuple_(sort, c.service_call_id)
            position = sa.tuple_(
                sa.literal(query.after.sort_value),
                sa.cast(query.after.service_call_id, c.service_call_id.type),
            )
            stmt = stmt.where(key < position if query.descending else key > position)
        if query.descending:
            stmt = stmt.order_by(sort.desc(), c.service_call_id.desc())
        else:
            stmt = stmt.order_by(sort.asc(), c.service_call_id.asc())
        stmt = stmt.limit(query.page_size + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
        items = [_decode(r.state) for r in rows]
        cursor = None
        if more and rows:
            last = rows[-1]
            cursor = Cursor(sort_value=last.sort_value, service_call_id=str(last.service_call_id))
        return Page(items=items, next_cursor=cursor)

    async def transact(
        self, tenant_id: str, service_call_id: str, step: Step, event_id: str | None = None
    ) -> Transition | None:
        # Two submits with one idempotency key race to INSERT the same primary key: the loser
        # gets a unique violation, and on the retry it sees the winner's row and compares
        # fingerprints like any later submit would.
        for _ in range(3):
            try:
                async with self._engine.begin() as conn:
                    return await self._transact(conn, tenant_id, service_call_id, step, event_id)
            except (IntegrityError, ConcurrentUpdateError):
                continue
        raise ConcurrentUpdateError(f"{tenant_id}/{service_call_id} kept changing under us")

    async def _transact(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None,
    ) -> Transition | None:
        if event_id is not None:
            # RETURNING, not rowcount: the driver reports -1 for INSERT ... ON CONFLICT.
            marked = await conn.execute(
                pg_insert(inbox)
                .values(event_id=event_id)
                .on_conflict_do_nothing()
                .returning(inbox.c.event_id)
            )
            if marked.first() is None:
                return None
        # FOR UPDATE serialises every change of one call; the outbox relay's ordering
        # argument (relay.py) rests on it.
        row = (
            await conn.execute(
                sa.select(service_calls.c.state)
                .where(
                    service_calls.c.tenant_id == tenant_id,
                    service_calls.c.service_call_id == service_call_id,
                )
                .with_for_update()
            )
        ).first()
        before = None if row is None else _decode(row.state)
        transition = step(before)
        if not transition.events or transition.state is None:
            return transition
        after = transition.state
        now = _event_time(transition)
        if before is None:
            await conn.execute(
                sa.insert(service_calls).values(
                    tenant_id=tenant_id,
                    service_call_id=service_call_id,
                    tags=sorted(after.spec.tags),
                    idempotency_key=after.spec.idempotency_key,
                    created_at=after.spec.created_at,
                    **_columns(after, now),
                )
            )
        else:
            updated = await conn.execute(
                sa.update(service_calls)
                .where(
                    service_calls.c.tenant_id == tenant_id,
                    service_calls.c.service_call_id == service_call_id,
                    service_calls.c.version == before.version,
                )
                .values(**_columns(after, now))
            )
            if updated.rowcount != 1:
                raise ConcurrentUpdateError(f"{tenant_id}/{service_call_id} changed concurrently")
        if transition.messages:
            await conn.execute(
                sa.insert(outbox),
                [{"topic": m.topic, "key": m.key, "payload": m.value} for m in transition.messages],
            )
            await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))
        return transition


def _event_time(transition: Transition) -> datetime:
    return max(event.at for event in transition.events)
