"""The ServiceCallStore over Postgres: one row per call (state as jsonb), outbox and inbox.

Facts from Kafka (`transact` with an event id) are applied in small batches, several calls per
transaction: on a 2-core machine a transaction per message costs ~6 round trips and a commit
each, and that, not Postgres, capped a burst of hand-offs at ~300 messages/s. See
`_Batcher` for why a batch keeps the inbox, version and per-call order guarantees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mesh import tracing
from mesh.logs import get_logger
from orchestrator.adapters import codec
from orchestrator.adapters.driver_sql import for_driver
from orchestrator.adapters.relay import NOTIFY_CHANNEL
from orchestrator.adapters.tables import inbox, outbox, service_call_tags, service_calls
from orchestrator.domain.decide import watchdog_due
from orchestrator.domain.queues import DEFAULT_QUEUE_ID
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

log = get_logger(__name__)


_TAG_COUNT_BOUND = 10_000
# How long a Scheduled call waits past its hand-off time for the scheduler's DueTimeReached
# before the watchdog hands it off itself (HANDOFF_BACKSTOP_S; decide.watchdog_due).
DEFAULT_HANDOFF_BACKSTOP = timedelta(seconds=30)
# Rows the watchdog's one-time pass (see `_backfill_scheduled`) reads per sweep.
_BACKFILL_PAGE = 5_000


def _columns(state: ServiceCallState, now: datetime, handoff_backstop: timedelta) -> dict[str, Any]:
    """The queryable columns, derived from the state so they can never disagree with it."""
    columns: dict[str, Any] = {
        "status": status_of(state).value,
        "version": state.version,
        "state": codec.encode(state),
        "updated_at": now,
        "watchdog_at": watchdog_due(state, handoff_backstop),
        # Always written, so a call leaving its hold clears it (the dispatcher's index).
        "held_reason": state.held_reason if isinstance(state, Scheduled) else None,
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


# The state as the BASIC view needs it, projected in Postgres so that a page of calls never
# carries their request bodies (up to MAX_BODY_BYTES each) or the attempts' response
# snippets to us: both emptied, everything else (the status, times, counts) as stored.
def _basic_state() -> sa.Label[object]:
    c = service_calls.c
    a = (
        sa.func.jsonb_array_elements(
            c.state.op("->", return_type=pg.JSONB)(sa.literal("attempts", sa.Text))
        )
        .table_valued(sa.column("attempt", pg.JSONB), with_ordinality="n")
        .render_derived(name="a")
    )
    attempts = (
        sa.select(
            sa.func.jsonb_agg(
                pg.aggregate_order_by(
                    a.c.attempt.op("||")(sa.literal({"response_snippet": ""}, pg.JSONB)), a.c.n
                )
            )
        )
        .select_from(a)
        .scalar_subquery()
    )
    no_body = sa.func.jsonb_set(
        c.state,
        sa.literal(["spec", "request", "body"], pg.ARRAY(sa.Text)),
        sa.literal("", pg.JSONB),
    )
    return sa.func.jsonb_set(
        no_body,
        sa.literal(["attempts"], pg.ARRAY(sa.Text)),
        sa.func.coalesce(attempts, sa.literal([], pg.JSONB)),
        type_=pg.JSONB,
    ).label("state")


_BASIC_STATE = _basic_state()

_NIL_UUID = "00000000-0000-0000-0000-000000000000"


# One page of the primary key after the last one seen; of it, the Scheduled calls without a
# watchdog time get handoff_at + backstop (the cast is exact: the codec writes ISO 8601 with
# an offset). A call changed meanwhile is skipped or re-checked under its row lock by
# Postgres; the version is left alone, so no concurrent transaction's guard fails.
def _backfill_scheduled() -> sa.Select[int, str, str]:
    c = service_calls.c
    page = (
        sa.select(c.tenant_id, c.service_call_id)
        .where(
            sa.tuple_(c.tenant_id, c.service_call_id)
            > sa.tuple_(
                sa.bindparam("after_tenant_id", type_=sa.Text),
                sa.cast(
                    sa.bindparam("after_service_call_id", type_=sa.Text), pg.UUID(as_uuid=False)
                ),
            )
        )
        .order_by(c.tenant_id, c.service_call_id)
        .limit(sa.bindparam("page"))
        .cte("page")
    )
    s = cast(sa.Alias, service_calls.alias("s"))
    handoff_at = s.c.state.op("->>", return_type=sa.Text)(sa.literal("handoff_at", sa.Text))
    backfilled = (
        sa.update(s)
        .values(
            watchdog_at=sa.cast(handoff_at, sa.DateTime(timezone=True))
            + sa.bindparam("backstop", type_=sa.Interval)
        )
        .where(
            s.c.tenant_id == page.c.tenant_id,
            s.c.service_call_id == page.c.service_call_id,
            s.c.status == "SCHEDULED",
            s.c.watchdog_at.is_(None),
            handoff_at.is_not(None),
        )
        .returning(sa.literal(1))
        .cte("backfilled")
    )
    service_call_id = sa.cast(page.c.service_call_id, sa.Text).label("service_call_id")
    return (
        sa.select(
            sa.select(sa.func.count())
            .select_from(backfilled)
            .scalar_subquery()
            .label("backfilled"),
            page.c.tenant_id,
            service_call_id,
        )
        .order_by(page.c.tenant_id.desc(), service_call_id.desc())
        .limit(1)
    )


_BACKFILL_SCHEDULED = _backfill_scheduled()


_decode = codec.decode

_KEY = (
    service_calls.c.tenant_id == sa.bindparam("tenant_id"),
    service_calls.c.service_call_id == sa.bindparam("service_call_id"),
)

_GET_STATE = sa.select(service_calls.c.state).where(*_KEY)

# FOR UPDATE serialises every change of one call; the outbox relay's ordering argument
# (relay.py) rests on it.
_LOCK_STATE = sa.select(service_calls.c.state).where(*_KEY).with_for_update()

# RETURNING, not rowcount: the driver reports -1 for INSERT ... ON CONFLICT.
_MARK_EVENT = pg_insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id)

_QUEUE = sa.insert(outbox)

# Sent in the writing transaction, so it reaches the relay when that commits.
_NOTIFY_RELAY = sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, ""))

_OVERDUE_WATCHDOGS = (
    sa.select(
        service_calls.c.tenant_id,
        service_calls.c.service_call_id,
        service_calls.c.version,
        service_calls.c.watchdog_at,
        service_calls.c.state,
    )
    .where(service_calls.c.watchdog_at <= sa.bindparam("now"))
    .order_by(service_calls.c.watchdog_at)
    .limit(sa.bindparam("limit"))
)

# A tag's calls, counted up to a bound (`_rarest_tag`).
_COUNT_TAG = sa.select(sa.func.count()).select_from(
    sa.select(sa.literal(1))
    .where(
        service_call_tags.c.tenant_id == sa.bindparam("tenant_id"),
        service_call_tags.c.tag == sa.bindparam("tag"),
    )
    .limit(_TAG_COUNT_BOUND)
    .subquery()
)


class PostgresServiceCallStore:
    def __init__(
        self,
        engine: AsyncEngine,
        max_batch: int = 64,
        concurrent_batches: int = 3,
        handoff_backstop: timedelta = DEFAULT_HANDOFF_BACKSTOP,
        max_create_batch: int = 1000,
        concurrent_creates: int = 4,
    ) -> None:
        self._engine = engine
        self._handoff_backstop = handoff_backstop
        # Position of the one-time pass over the calls (`_backfill_scheduled`); None once done.
        self._backfill_after: tuple[str, str] | None = ("", _NIL_UUID)
        self._batcher = (
            _Batcher(self, self._transact_batch, max_batch, concurrent_batches)
            if max_batch > 1
            else None
        )
        self._connections = _Connections(
            engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self._creates = (
            _Batcher(self, self._create_batch, max_create_batch, concurrent_creates)
            if max_create_batch > 1
            else None
        )

    async def close(self) -> None:
        await self._connections.close()

    async def get(self, tenant_id: str, service_call_id: str) -> ServiceCallState | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _GET_STATE, {"tenant_id": tenant_id, "service_call_id": service_call_id}
                )
            ).first()
        return None if row is None else _decode(row.state)

    async def list(self, query: ListQuery) -> Page:
        c = service_calls.c
        sort = c.created_at if query.order_by == "create_time" else c.due_at
        order_id = c.service_call_id
        state = c.state if query.full else _BASIC_STATE
        stmt = sa.select(state, sort.label("sort_value"), c.service_call_id).where(
            c.tenant_id == query.tenant_id
        )
        driving_tag = None
        if query.tags and query.order_by == "create_time":
            driving_tag = await self._rarest_tag(query.tenant_id, query.tags)
            if driving_tag is None:
                return Page(items=[], next_cursor=None)  # some tag is on no call at all
        if driving_tag is not None:
            # Driven by one tag's rows, already in page order; the call must carry the others.
            t = service_call_tags.c
            sort, order_id = t.created_at, t.service_call_id
            stmt = (
                sa.select(state, sort.label("sort_value"), c.service_call_id)
                .select_from(
                    service_call_tags.join(
                        service_calls,
                        sa.and_(c.tenant_id == t.tenant_id, c.service_call_id == t.service_call_id),
                    )
                )
                .where(t.tenant_id == query.tenant_id, t.tag == driving_tag)
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
            key = sa.tuple_(sort, order_id)
            position = sa.tuple_(
                sa.literal(query.after.sort_value),
                sa.cast(query.after.service_call_id, c.service_call_id.type),
            )
            stmt = stmt.where(key < position if query.descending else key > position)
        if query.descending:
            stmt = stmt.order_by(sort.desc(), order_id.desc())
        else:
            stmt = stmt.order_by(sort.asc(), order_id.asc())
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

    async def _rarest_tag(self, tenant_id: str, tags: frozenset[str]) -> str | None:
        """The tag with the fewest calls (counted up to a bound, so this stays cheap), which
        makes the smallest range to drive a page by; None when one of them has no calls."""
        if len(tags) == 1:
            return next(iter(tags))
        counts = {}
        async with self._engine.connect() as conn:
            for tag in sorted(tags):
                counts[tag] = (
                    await conn.execute(_COUNT_TAG, {"tenant_id": tenant_id, "tag": tag})
                ).scalar_one()
        rarest = min(counts, key=lambda tag: counts[tag])
        return None if counts[rarest] == 0 else rarest

    async def overdue_watchdogs(self, now: datetime, limit: int) -> Sequence[ServiceCallState]:
        if self._backfill_after is not None:
            await self._backfill_scheduled()
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_OVERDUE_WATCHDOGS, {"now": now, "limit": limit})).all()
        due: list[ServiceCallState] = []
        repairs: list[dict[str, Any]] = []
        for row in rows:
            state = _decode(row.state)
            due_at = watchdog_due(state, self._handoff_backstop)
            if due_at is not None and due_at <= now:
                due.append(state)
            if due_at != row.watchdog_at:
                # Written by a replica older than migration 0005, which does not know the
                # column (see its docstring), or with another HANDOFF_BACKSTOP_S; left alone
                # it would be read on every sweep.
                repairs.append(
                    {
                        "b_tenant_id": row.tenant_id,
                        "b_service_call_id": str(row.service_call_id),
                        "b_version": row.version,
                        "watchdog_at": due_at,
                    }
                )
        if repairs:
            async with self._engine.begin() as conn:
                await conn.execute(_guarded_update(("watchdog_at",)), repairs)
            log.info("watchdog_at rewritten from the state", calls=len(repairs))
        return due

    async def _backfill_scheduled(self) -> None:
        """Gives Scheduled calls written before the hand-off backstop existed (watchdog_at
        NULL) their backstop, one page of the primary key per sweep, once per process.

        No migration: the backstop is a setting, and one pass in pages holds no long lock.
        Rows an older replica writes during a rolling upgrade still get the scheduler's
        hand-off; they get the backstop with their next write or the next process's pass.
        """
        assert self._backfill_after is not None
        tenant_id, service_call_id = self._backfill_after
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    _BACKFILL_SCHEDULED,
                    {
                        "after_tenant_id": tenant_id,
                        "after_service_call_id": service_call_id,
                        "page": _BACKFILL_PAGE,
                        "backstop": self._handoff_backstop,
                    },
                )
            ).first()
        if row is None:
            self._backfill_after = None
            return
        self._backfill_after = (row.tenant_id, row.service_call_id)
        if row.backfilled:
            log.info("hand-off backstop set on older Scheduled calls", calls=row.backfilled)

    async def transact(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None = None,
        *,
        new_call: bool = False,
    ) -> Transition | None:
        # Taken here, in the caller's task: batches are written from another task, whose
        # context is not this caller's.
        trace = tracing.current_carrier()
        if event_id is not None and self._batcher is not None:
            return await self._batcher.submit(
                _Pending(tenant_id, service_call_id, step, event_id, trace)
            )
        if new_call and event_id is None and self._creates is not None:
            return await self._creates.submit(
                _Pending(tenant_id, service_call_id, step, None, trace)
            )
        return await self._transact_one(tenant_id, service_call_id, step, event_id, trace)

    async def _create_batch(self, batch: Sequence[_Pending]) -> Sequence[_Outcome]:
        """Group commit of submits: runs each step on no state and inserts every new call,
        its tags and its outbox rows with ONE statement (`_INSERT_NEW_CALLS`).

        A step is only right for a call that did not exist, so the statement inserts with
        ON CONFLICT DO NOTHING and says which calls it inserted; any other item (its id was
        taken: an idempotency key seen before, or a second item with one id in this batch;
        a step that wrote nothing) is answered by `_transact_one` on its real state after
        this batch has committed. A step that raises fails its own item only.
        """
        outcomes: list[_Outcome] = [_ALONE] * len(batch)
        seen: set[tuple[str, str]] = set()
        new: list[tuple[int, _Pending, Transition]] = []
        for n, p in enumerate(batch):
            key = (p.tenant_id, p.service_call_id)
            if key in seen:
                continue  # alone, after the first one with this id has committed
            seen.add(key)
            try:
                transition = p.step(None)
            except Exception as e:
                outcomes[n] = _Raised(e)
                continue
            if transition.events and transition.state is not None:
                new.append((n, p, transition))
        if not new:
            return outcomes
        inserted = await self._insert_new_calls(
            _new_call_params([(p, t) for _, p, t in new], self._handoff_backstop)
        )
        for n, p, transition in new:
            if (p.tenant_id, p.service_call_id) in inserted:
                outcomes[n] = transition
        return outcomes

    async def _insert_new_calls(self, params: dict[str, Any]) -> set[tuple[str, str]]:
        """Runs `_INSERT_NEW_CALLS`; the (tenant, id) of the calls it inserted."""
        async with self._connections.connection() as conn:
            # One statement in autocommit is its own transaction; psycopg returns its rows
            # only once Postgres says ReadyForQuery, which it sends after the commit. So no
            # caller hears of a call that a crash could still take away.
            statement = _INSERT_NEW_CALLS_ON_DRIVER
            cursor = await conn.execute(statement.sql, statement.params(params), prepare=True)
            return {(t, c) for t, c, _notified in await cursor.fetchall()}

    async def _transact_one(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None,
        trace: tracing.Carrier | None = None,
    ) -> Transition | None:
        # Two submits with one idempotency key race to INSERT the same primary key: the loser
        # gets a unique violation, and on the retry it sees the winner's row and compares
        # fingerprints like any later submit would.
        for _ in range(3):
            try:
                async with self._engine.begin() as conn:
                    return await self._transact(
                        conn, tenant_id, service_call_id, step, event_id, trace
                    )
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
        trace: tracing.Carrier | None = None,
    ) -> Transition | None:
        if event_id is not None:
            marked = await conn.execute(_MARK_EVENT, {"event_id": event_id})
            if marked.first() is None:
                return None
        row = (
            await conn.execute(
                _LOCK_STATE, {"tenant_id": tenant_id, "service_call_id": service_call_id}
            )
        ).first()
        before = None if row is None else _decode(row.state)
        transition = step(before)
        messages = await self._write(conn, tenant_id, service_call_id, before, transition, trace)
        if messages:
            await conn.execute(_QUEUE, messages)
            await conn.execute(_NOTIFY_RELAY)
        return transition

    async def _write(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        service_call_id: str,
        before: ServiceCallState | None,
        transition: Transition,
        trace: tracing.Carrier | None = None,
    ) -> _OutboxRows:
        """Writes the state a transition leads to; returns its outbox rows (the caller
        inserts them, so a batch inserts all of its rows in one statement)."""
        if not transition.events or transition.state is None:
            return []
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
                    **_queue_columns(after),
                    **_columns(after, now, self._handoff_backstop),
                )
            )
            if after.spec.tags:
                await conn.execute(
                    sa.insert(service_call_tags),
                    [
                        {
                            "tenant_id": tenant_id,
                            "tag": tag,
                            "created_at": after.spec.created_at,
                            "service_call_id": service_call_id,
                        }
                        for tag in sorted(after.spec.tags)
                    ],
                )
        else:
            updated = await conn.execute(
                sa.update(service_calls)
                .where(
                    service_calls.c.tenant_id == tenant_id,
                    service_calls.c.service_call_id == service_call_id,
                    service_calls.c.version == before.version,
                )
                .values(**_columns(after, now, self._handoff_backstop))
            )
            if updated.rowcount != 1:
                raise ConcurrentUpdateError(f"{tenant_id}/{service_call_id} changed concurrently")
        return _outbox_rows(transition, trace)

    async def _transact_batch(self, batch: Sequence[_Pending]) -> Sequence[Transition | None]:
        """Applies facts about distinct calls in ONE transaction: one inbox insert, one
        locking read, one update per changed call, one outbox insert, one NOTIFY."""
        async with self._engine.begin() as conn:
            ids = sorted({p.event_id for p in batch if p.event_id is not None})
            fresh = {
                r.event_id
                for r in await conn.execute(
                    pg_insert(inbox)
                    .values([{"event_id": e} for e in ids])
                    .on_conflict_do_nothing()
                    .returning(inbox.c.event_id)
                )
            }
            todo = [p for p in batch if p.event_id in fresh]
            c = service_calls.c
            # Rows are locked in key order (LockRows sits above the Sort), so two batches
            # that share calls (replicas during a rebalance) queue instead of deadlocking.
            rows: Sequence[Any] = []
            if todo:
                result = await conn.execute(
                    sa.select(c.tenant_id, c.service_call_id, c.state)
                    .where(
                        sa.tuple_(c.tenant_id, c.service_call_id).in_(
                            [(p.tenant_id, p.service_call_id) for p in todo]
                        )
                    )
                    .order_by(c.tenant_id, c.service_call_id)
                    .with_for_update()
                )
                rows = result.all()
            states = {(r.tenant_id, str(r.service_call_id)): r.state for r in rows}
            results: dict[int, Transition] = {}
            messages: _OutboxRows = []
            # One UPDATE per shape of changed columns, each sent once with many rows
            # (executemany): per-statement overhead, not Postgres, is what a batch saves.
            updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            # Input order: the outbox ids of one batch follow the order the facts arrived.
            for p in todo:
                raw = states.get((p.tenant_id, p.service_call_id))
                before = None if raw is None else _decode(raw)
                transition = p.step(before)
                results[id(p)] = transition
                if before is None or not transition.events or transition.state is None:
                    messages += await self._write(
                        conn, p.tenant_id, p.service_call_id, before, transition, p.trace
                    )
                    continue
                columns = _columns(
                    transition.state, _event_time(transition), self._handoff_backstop
                )
                updates.setdefault(tuple(sorted(columns)), []).append(
                    {
                        **columns,
                        "b_tenant_id": p.tenant_id,
                        "b_service_call_id": p.service_call_id,
                        "b_version": before.version,
                    }
                )
                messages += _outbox_rows(transition, p.trace)
            for shape, params in updates.items():
                updated = await conn.execute(_guarded_update(shape), params)
                if updated.rowcount != len(params):
                    raise ConcurrentUpdateError("a call of the batch changed concurrently")
            if messages:
                await conn.execute(_QUEUE, messages)
                await conn.execute(_NOTIFY_RELAY)
        return [results.get(id(p)) for p in batch]


_OutboxRows = list[dict[str, Any]]


def _outbox_rows(transition: Transition, trace: tracing.Carrier | None = None) -> _OutboxRows:
    return [
        {"topic": m.topic, "key": m.key, "payload": m.value, "trace_context": trace}
        for m in transition.messages
    ]


@functools.cache
def _guarded_update(shape: tuple[str, ...]) -> sa.Update:
    c = service_calls.c
    return (
        sa.update(service_calls)
        .where(
            c.tenant_id == sa.bindparam("b_tenant_id"),
            c.service_call_id == sa.bindparam("b_service_call_id"),
            c.version == sa.bindparam("b_version"),
        )
        .values({name: sa.bindparam(name) for name in shape})
    )


# Every new call of a group commit, its tags and its outbox rows, in one statement whose text
# never changes, so each connection prepares it once. The rows travel as two JSON documents:
# json.dumps is C, where psycopg's dumping of 18 Python lists as arrays cost more than the
# rest of a submit's SQL (profile in docs/intake.md). Outbox rows are inserted in input
# order, and only for the calls the INSERT inserted.
_TIMESTAMPTZ = sa.DateTime(timezone=True)


def _insert_new_calls() -> sa.Select[str, str, int]:
    n = (
        sa.func.jsonb_to_recordset(sa.cast(sa.bindparam("calls", type_=sa.Text), pg.JSONB))
        .table_valued(
            sa.column("tenant_id", sa.Text),
            sa.column("service_call_id", pg.UUID(as_uuid=False)),
            sa.column("status", sa.Text),
            sa.column("version", sa.BigInteger),
            sa.column("due_at", _TIMESTAMPTZ),
            sa.column("attempt", sa.Integer),
            sa.column("tags", pg.ARRAY(sa.Text)),
            sa.column("idempotency_key", sa.Text),
            sa.column("state", pg.JSONB),
            sa.column("created_at", _TIMESTAMPTZ),
            sa.column("updated_at", _TIMESTAMPTZ),
            sa.column("completed_at", _TIMESTAMPTZ),
            sa.column("watchdog_at", _TIMESTAMPTZ),
            sa.column("held_reason", sa.Text),
            sa.column("queue_id", sa.Text),
            sa.column("ordering_key", sa.Text),
            sa.column("n", sa.Integer),
        )
        .render_derived(name="n", with_types=True)
    )
    new = sa.select(n).cte("new")
    columns = [c for c in new.c if c.name != "n"]
    inserted = (
        pg.insert(service_calls)
        .from_select([c.name for c in columns], sa.select(*columns).order_by(new.c.n))
        .on_conflict_do_nothing()
        .returning(
            service_calls.c.tenant_id,
            service_calls.c.service_call_id,
            service_calls.c.created_at,
            service_calls.c.tags,
        )
        .cte("inserted")
    )
    i = inserted.alias("i")
    t = sa.func.unnest(i.c.tags).table_valued("tag").render_derived(name="t")
    tagged = (
        sa.insert(service_call_tags)
        .from_select(
            ["tenant_id", "tag", "created_at", "service_call_id"],
            # A set-returning function in FROM sees the items before it (implicitly LATERAL),
            # so this is the comma join "FROM inserted AS i, unnest(i.tags) AS t(tag)".
            sa.select(i.c.tenant_id, t.c.tag, i.c.created_at, i.c.service_call_id)
            .select_from(i)
            .join(t, sa.true()),
        )
        .cte("tagged")
    )
    m = (
        sa.func.jsonb_to_recordset(sa.cast(sa.bindparam("messages", type_=sa.Text), pg.JSONB))
        .table_valued(
            sa.column("tenant_id", sa.Text),
            sa.column("service_call_id", pg.UUID(as_uuid=False)),
            sa.column("topic", sa.Text),
            sa.column("key", sa.Text),
            sa.column("payload", sa.Text),
            sa.column("n", sa.Integer),
            sa.column("trace_context", pg.JSONB),
        )
        .render_derived(name="m", with_types=True)
    )
    queued = (
        sa.insert(outbox)
        .from_select(
            ["topic", "key", "payload", "trace_context"],
            sa.select(
                m.c.topic,
                m.c.key,
                sa.func.decode(m.c.payload, sa.literal("base64", sa.Text), type_=sa.LargeBinary),
                m.c.trace_context,
            )
            .select_from(
                m.join(
                    i,
                    sa.and_(
                        m.c.tenant_id == i.c.tenant_id, m.c.service_call_id == i.c.service_call_id
                    ),
                )
            )
            .order_by(m.c.n),
        )
        .returning(sa.literal(1))
        .cte("queued")
    )
    notify = (
        sa.select(
            sa.func.pg_notify(sa.bindparam("channel", type_=sa.Text), sa.literal("", sa.Text))
        )
        .select_from(queued)
        .limit(1)
        .subquery("q")
    )
    return sa.select(
        i.c.tenant_id,
        sa.cast(i.c.service_call_id, sa.Text),
        sa.select(sa.func.count()).select_from(notify).scalar_subquery(),
    ).add_cte(tagged)


_INSERT_NEW_CALLS = _insert_new_calls()


# The one statement the store runs on the driver (orchestrator/adapters/driver_sql.py): a
# lone submit is a batch of one, and SQLAlchemy's execute around it measured 0.71 ms CPU a
# submit against 0.43 ms this way (in-process, one submit at a time).
_INSERT_NEW_CALLS_ON_DRIVER = for_driver(_INSERT_NEW_CALLS)


def _new_call_params(
    new: Sequence[tuple[_Pending, Transition]], handoff_backstop: timedelta
) -> dict[str, Any]:
    calls: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for p, transition in new:
        after = transition.state
        assert after is not None
        columns = _columns(after, _event_time(transition), handoff_backstop)
        calls.append(
            {
                **columns,
                "tenant_id": p.tenant_id,
                "service_call_id": p.service_call_id,
                "tags": sorted(after.spec.tags),
                "idempotency_key": after.spec.idempotency_key,
                "created_at": after.spec.created_at,
                **_queue_columns(after),
                "n": len(calls),
            }
        )
        for m in transition.messages:
            messages.append(
                {
                    "tenant_id": p.tenant_id,
                    "service_call_id": p.service_call_id,
                    "topic": m.topic,
                    "key": m.key,
                    "payload": base64.b64encode(m.value).decode("ascii"),
                    "n": len(messages),
                    "trace_context": p.trace,
                }
            )
    return {
        "calls": json.dumps(calls, default=_json_time, separators=(",", ":")),
        "messages": json.dumps(messages, separators=(",", ":")),
        "channel": NOTIFY_CHANNEL,
    }


def _queue_columns(state: ServiceCallState) -> dict[str, Any]:
    """The call's queue and ordering key, written once on insert (they never change)."""
    return {
        "queue_id": state.spec.queue_id or DEFAULT_QUEUE_ID,
        "ordering_key": state.spec.ordering_key,
    }


def _json_time(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Connections:
    """Connections of the group commit's own, outside SQLAlchemy's pool: autocommit, the
    insert prepared on each, no checkout or ping per batch. At most `concurrent_creates` are
    in use at once (the batcher's slots); one that failed is closed, not reused."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._idle: list[psycopg.AsyncConnection[tuple[Any, ...]]] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
        conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        try:
            yield conn
        except BaseException:
            await conn.close()
            raise
        self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


def _event_time(transition: Transition) -> datetime:
    return max(event.at for event in transition.events)


@dataclass(eq=False)
class _Pending:
    tenant_id: str
    service_call_id: str
    step: Step
    event_id: str | None
    # The W3C trace context of the caller (a gRPC request, a Kafka message), for its outbox rows.
    trace: tracing.Carrier | None = None
    done: asyncio.Future[Transition | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True, slots=True)
class _Raised:
    """A batch item whose step raised: it fails alone."""

    error: Exception


class _Alone:
    """A batch item the batch did not settle: it runs on its own transaction after it."""


_ALONE = _Alone()
_Outcome = Transition | None | _Raised | _Alone
BatchWriter = Callable[[Sequence[_Pending]], Awaitable[Sequence[_Outcome]]]


class _Batcher:
    """Gathers the items that arrive while a batch is being written into the next batch:
    facts from Kafka (`_transact_batch`) or new calls (`_create_batch`, group commit).

    Why the guarantees hold with batches:
    - Per-call order: the consumer hands over a call's next message only after its previous
      one returned (ConsumerRunner keeps one in flight per key), so a fact is applied before
      its successor is even read. The watchdog (orchestrator/entrypoints/watchdog.py) applies
      its timers beside the consumer, so a batch can hold two facts about one call: both
      steps then see the same state, the second update fails its version guard, and the
      fallback below applies them one after the other.
    - Exactly once: the inbox insert of a batch returns the ids not seen before; only those
      are applied, in the same transaction that marks them.
    - Version guard: each changed call is updated `WHERE version = before.version` under the
      row lock taken by the batch. If any guard fails, or anything else goes wrong, the whole
      batch rolls back (nothing of it was applied) and each fact is retried on its own
      transaction, the unbatched path, which has its own retry loop.
    """

    def __init__(
        self,
        store: PostgresServiceCallStore,
        write: BatchWriter,
        max_batch: int,
        concurrent: int,
    ) -> None:
        self._store = store
        self._write = write
        self._max = max_batch
        self._queue: list[_Pending] = []
        self._slots = asyncio.Semaphore(concurrent)
        self._flusher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    async def submit(self, pending: _Pending) -> Transition | None:
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await pending.done

    async def _flush(self) -> None:
        # Yield once first: the consumer dispatches a whole poll's messages in one loop turn,
        # so by the time this runs they are all queued.
        await asyncio.sleep(0)
        while self._queue:
            await self._slots.acquire()
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            task = asyncio.create_task(self._apply(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _apply(self, batch: list[_Pending]) -> None:
        try:
            outcomes: Sequence[_Outcome]
            try:
                outcomes = await self._write(batch)
            except Exception as e:
                # Any failure, not only a guard or a database error: a step that raises (a fact
                # the core or the mapping cannot handle) must fail its own fact alone, not the
                # other tenants' facts batched with it.
                log.info("batch rolled back; applying its items one by one", error=type(e).__name__)
                outcomes = [_ALONE] * len(batch)
            # The settled ones first: their callers need not wait for the others' retries.
            alone = [p for p, o in zip(batch, outcomes, strict=True) if isinstance(o, _Alone)]
            for p, outcome in zip(batch, outcomes, strict=True):
                self._settle(p, outcome)
            for p in alone:
                self._settle(p, await self._one(p))
        except BaseException as e:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._slots.release()

    @staticmethod
    def _settle(p: _Pending, outcome: _Outcome) -> None:
        if p.done.done() or isinstance(outcome, _Alone):
            return
        if isinstance(outcome, _Raised):
            p.done.set_exception(outcome.error)
        else:
            p.done.set_result(outcome)

    async def _one(self, p: _Pending) -> Transition | None:
        try:
            return await self._store._transact_one(
                p.tenant_id, p.service_call_id, p.step, p.event_id, p.trace
            )
        except Exception as e:
            with contextlib.suppress(asyncio.InvalidStateError):
                p.done.set_exception(e)
            return None
