"""Queues over Postgres (#18): the QueueStore (orchestrator.queues, and the queue's calls in
orchestrator.service_calls for the dispatcher's backlog and purge) and QueueConfigs, the
view of every queue each process keeps and refreshes.

The dispatcher's claim of a queue is a transaction-scoped advisory lock taken with
`pg_try_advisory_xact_lock` (a queue another replica holds is skipped, like FOR UPDATE SKIP
LOCKED), then the queue's row, if it has one, read FOR UPDATE: `default` (and the calls a
deleted queue left behind) have held calls but no row, and creating one would change what
GetQueue says of `default`. A client's change of the queue locks the row too, so a pause
and a dispatcher pass of one queue are serialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Row
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.logs import get_logger
from orchestrator.adapters.tables import queues, service_calls
from orchestrator.domain.queues import (
    DEFAULT_QUEUE_ID,
    FOLLOWER_REASON_PREFIX,
    KeyHistory,
    OrderingFailurePolicy,
    Queue,
    QueueState,
    default_queue,
)
from orchestrator.ports import (
    ConcurrentUpdateError,
    Dispatch,
    HeldCall,
    Invalid,
    QueueBacklog,
    QueueNotEmpty,
    QueueNotFound,
    QueuePage,
    QueueRefusal,
    QueueStep,
)

log = get_logger(__name__)

DEFAULT_REFRESH_INTERVAL = timedelta(milliseconds=200)

_q = queues.c
_c = service_calls.c

_KEY = (_q.tenant_id == sa.bindparam("b_tenant_id"), _q.queue_id == sa.bindparam("b_queue_id"))

_CREATE = pg_insert(queues).on_conflict_do_nothing().returning(_q.queue_id)
_GET = sa.select(queues).where(*_KEY)
_LOCK = sa.select(queues).where(*_KEY).with_for_update()
_INSERT = sa.insert(queues)
_WRITE = sa.update(queues).where(*_KEY, _q.version == sa.bindparam("b_version"))
_DELETE = sa.delete(queues).where(*_KEY)
_ALL = sa.select(queues)
_LIST = (
    sa.select(queues)
    .where(_q.tenant_id == sa.bindparam("tenant_id"), _q.queue_id > sa.bindparam("after"))
    .order_by(_q.queue_id)
    .limit(sa.bindparam("limit"))
)
_WRITE_TAT = sa.update(queues).where(*_KEY).values(tat=sa.bindparam("tat"))

_IN_QUEUE = (
    _c.tenant_id == sa.bindparam("b_tenant_id"),
    _c.queue_id == sa.bindparam("b_queue_id"),
)

# Through service_calls_by_queue_status_due.
_PENDING = (
    sa.select(sa.cast(_c.service_call_id, sa.Text).label("service_call_id"))
    .where(*_IN_QUEUE, _c.status == "SCHEDULED")
    .order_by(_c.due_at, _c.service_call_id)
    .limit(sa.bindparam("limit"))
)
_IN_FLIGHT = (
    sa.select(sa.func.count())
    .select_from(service_calls)
    .where(*_IN_QUEUE, _c.status.in_(["DISPATCHED", "RUNNING"]))
)

# The queues with held calls, through the partial index service_calls_held.
_HELD_QUEUES = (
    sa.select(_c.tenant_id, _c.queue_id)
    .where(_c.held_reason.is_not(None))
    .group_by(_c.tenant_id, _c.queue_id)
    .limit(sa.bindparam("limit"))
)

_TRY_CLAIM = sa.select(
    sa.func.pg_try_advisory_xact_lock(
        sa.func.hashtextextended(
            sa.literal("queue/", sa.Text)
            + sa.bindparam("b_tenant_id", type_=sa.Text)
            + sa.literal("/", sa.Text)
            + sa.bindparam("b_queue_id", type_=sa.Text),
            0,
        )
    )
)

_replay_of = _c.state["spec"]["replay_of"].astext
# A held call of an ordering key behind an earlier held call of its key cannot go in this pass
# (one call of a key at a time, in due order): once its reason says so, it is not read, so a
# key blocked with thousands held takes a row of the page, not the whole page, from the
# other keys. Retries and replays are read whatever their place (domain/queues.may_start).
# Through service_calls_by_key_due, one probe per keyed row.
_e = service_calls.alias("earlier")
_behind_its_key = (
    sa.select(sa.literal(1))
    .where(
        _e.c.tenant_id == _c.tenant_id,
        _e.c.queue_id == _c.queue_id,
        _e.c.ordering_key == _c.ordering_key,
        _e.c.status.in_(["SCHEDULED", "DISPATCHED", "RUNNING"]),
        _e.c.held_reason.is_not(None),
        sa.tuple_(_e.c.due_at, _e.c.service_call_id) < sa.tuple_(_c.due_at, _c.service_call_id),
    )
    .exists()
)
_HELD = (
    sa.select(
        sa.cast(_c.service_call_id, sa.Text).label("service_call_id"),
        _c.due_at,
        _c.attempt,
        _c.ordering_key,
        _c.held_reason,
        _replay_of.label("replay_of"),
    )
    .where(
        *_IN_QUEUE,
        _c.held_reason.is_not(None),
        sa.or_(
            _c.ordering_key.is_(None),
            _c.attempt > 1,
            _replay_of.is_not(None),
            ~_behind_its_key,
            ~_c.held_reason.startswith(FOLLOWER_REASON_PREFIX, autoescape=True),
        ),
    )
    .order_by(_c.due_at, _c.service_call_id)
    .limit(sa.bindparam("limit"))
)


def _key_history() -> sa.Select[Any]:
    """Per ordering key (the `keys` array): the call in flight or retrying, the first call not
    yet started, and the latest finished call when it failed (domain/queues.KeyHistory)."""
    keys = (
        sa.func.unnest(sa.bindparam("keys", type_=pg.ARRAY(sa.Text)))
        .table_valued(sa.column("k", sa.Text))
        .render_derived(name="keys")
    )
    of_key = (*_IN_QUEUE, _c.ordering_key == keys.c.k)
    busy = (
        sa.select(sa.cast(_c.service_call_id, sa.Text))
        .where(
            *of_key,
            sa.or_(
                _c.status.in_(["DISPATCHED", "RUNNING"]),
                sa.and_(_c.status == "SCHEDULED", _c.attempt > 1),
            ),
        )
        .limit(1)
        .scalar_subquery()
    )
    head = (
        sa.select(sa.cast(_c.service_call_id, sa.Text))
        .where(*of_key, _c.status == "SCHEDULED", _c.attempt == 1)
        .order_by(_c.due_at, _c.service_call_id)
        .limit(1)
        .scalar_subquery()
    )
    failed = (
        sa.select(
            sa.case((_c.status == "FAILED", sa.cast(_c.service_call_id, sa.Text)), else_=None)
        )
        .where(*of_key, _c.status.in_(["SUCCEEDED", "FAILED"]))
        .order_by(_c.completed_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return sa.select(
        keys.c.k.label("k"), busy.label("busy"), head.label("head"), failed.label("failed")
    )


_KEY_HISTORY = _key_history()


def _row_values(queue: Queue) -> dict[str, Any]:
    assert queue.created_at is not None and queue.updated_at is not None
    return {
        "tenant_id": queue.tenant_id,
        "queue_id": queue.queue_id,
        "max_dispatches_per_second": queue.max_dispatches_per_second,
        "max_burst_size": queue.max_burst_size,
        "max_concurrent_dispatches": queue.max_concurrent_dispatches,
        "ordering_failure_policy": queue.ordering_failure_policy.value,
        "state": queue.state.value,
        "version": queue.version,
        "created_at": queue.created_at,
        "updated_at": queue.updated_at,
        "tat": queue.tat,
    }


def _from_row(row: Row[Any]) -> Queue:
    return Queue(
        tenant_id=row.tenant_id,
        queue_id=row.queue_id,
        max_dispatches_per_second=row.max_dispatches_per_second,
        max_burst_size=row.max_burst_size,
        max_concurrent_dispatches=row.max_concurrent_dispatches,
        ordering_failure_policy=OrderingFailurePolicy(row.ordering_failure_policy),
        state=QueueState(row.state),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        tat=row.tat,
    )


class PostgresQueueStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, queue: Queue) -> bool:
        async with self._engine.begin() as conn:
            row = (await conn.execute(_CREATE, _row_values(queue))).first()
        return row is not None

    async def get(self, tenant_id: str, queue_id: str) -> Queue | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(_GET, {"b_tenant_id": tenant_id, "b_queue_id": queue_id})
            ).first()
        return None if row is None else _from_row(row)

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> QueuePage:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    _LIST, {"tenant_id": tenant_id, "after": after or "", "limit": page_size + 1}
                )
            ).all()
        items = [_from_row(r) for r in rows[:page_size]]
        more = len(rows) > page_size and items
        return QueuePage(items, items[-1].queue_id if more else None)

    async def all(self) -> Sequence[Queue]:
        async with self._engine.connect() as conn:
            return [_from_row(r) for r in (await conn.execute(_ALL)).all()]

    async def change(
        self, tenant_id: str, queue_id: str, step: QueueStep
    ) -> Queue | QueueRefusal | Invalid:
        key = {"b_tenant_id": tenant_id, "b_queue_id": queue_id}
        async with self._engine.begin() as conn:
            row = (await conn.execute(_LOCK, key)).first()
            if row is None and queue_id != DEFAULT_QUEUE_ID:
                return QueueNotFound(tenant_id, queue_id)
            current = default_queue(tenant_id) if row is None else _from_row(row)
            outcome = step(current)
            if not isinstance(outcome, Queue) or outcome == current:
                return outcome
            if row is None:
                # `default`'s first change: two at once race to insert; the loser retries.
                inserted = await conn.execute(_CREATE, _row_values(outcome))
                if inserted.first() is None:
                    raise ConcurrentUpdateError(f"queue {tenant_id}/{queue_id} created meanwhile")
                return outcome
            values = _row_values(outcome)
            del values["tenant_id"], values["queue_id"], values["tat"]
            written = await conn.execute(_WRITE, {**key, "b_version": current.version, **values})
            if written.rowcount != 1:  # cannot happen under the row lock; never write blind
                raise ConcurrentUpdateError(f"queue {tenant_id}/{queue_id} changed")
        return outcome

    async def delete(self, tenant_id: str, queue_id: str) -> Queue | QueueRefusal:
        key = {"b_tenant_id": tenant_id, "b_queue_id": queue_id}
        async with self._engine.begin() as conn:
            row = (await conn.execute(_LOCK, key)).first()
            if row is None:
                return QueueNotFound(tenant_id, queue_id)
            # Under the row lock; a submit another process lets through meanwhile (its view
            # still has the queue) makes a call of a queue without a row, which is sent as
            # `default`'s would be.
            pending = (await conn.execute(_PENDING, {**key, "limit": 1_000})).all()
            if pending:
                return QueueNotEmpty(queue_id, len(pending))
            await conn.execute(_DELETE, key)
        return _from_row(row)

    async def pending_ids(self, tenant_id: str, queue_id: str, limit: int) -> Sequence[str]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    _PENDING, {"b_tenant_id": tenant_id, "b_queue_id": queue_id, "limit": limit}
                )
            ).all()
        return [r.service_call_id for r in rows]

    async def claim_held(self, limit: int, page: int, dispatch: Dispatch) -> int:
        async with self._engine.connect() as conn:
            candidates = (await conn.execute(_HELD_QUEUES, {"limit": limit})).all()
        claimed = 0
        for tenant_id, queue_id in candidates:
            if await self._dispatch_one(tenant_id, queue_id, page, dispatch):
                claimed += 1
        return claimed

    async def _dispatch_one(
        self, tenant_id: str, queue_id: str, page: int, dispatch: Dispatch
    ) -> bool:
        key = {"b_tenant_id": tenant_id, "b_queue_id": queue_id}
        async with self._engine.begin() as conn:
            if not (await conn.execute(_TRY_CLAIM, key)).scalar_one():
                return False  # another replica's pass holds it
            row = (await conn.execute(_LOCK, key)).first()
            queue = (
                replace(default_queue(tenant_id), queue_id=queue_id)
                if row is None
                else _from_row(row)
            )
            held = [
                HeldCall(
                    service_call_id=r.service_call_id,
                    due_at=r.due_at,
                    attempt=r.attempt,
                    ordering_key=r.ordering_key,
                    replay_of=r.replay_of,
                    held_reason=r.held_reason,
                )
                for r in (await conn.execute(_HELD, {**key, "limit": page})).all()
            ]
            if not held:
                return True
            in_flight = 0
            if queue.max_concurrent_dispatches > 0:
                in_flight = (await conn.execute(_IN_FLIGHT, key)).scalar_one()
            ordering_keys = sorted({c.ordering_key for c in held if c.ordering_key is not None})
            histories = {}
            if ordering_keys:
                for r in (await conn.execute(_KEY_HISTORY, {**key, "keys": ordering_keys})).all():
                    histories[r.k] = KeyHistory(
                        busy=r.busy, head=r.head, last_finished_failed=r.failed
                    )
            tat = await dispatch(QueueBacklog(queue, held, in_flight, histories))
            if row is not None and tat != queue.tat:
                await conn.execute(_WRITE_TAT, {**key, "tat": tat})
        return True


class StoredQueueConfigs:
    """QueueConfigs over a QueueStore: every queue's row, read whole every `interval` by the
    refresher (orchestrator/entrypoints/queue_dispatcher.py) and at once after a change made
    in this process. One small query: queues are few per tenant."""

    def __init__(
        self, store: PostgresQueueStore, interval: timedelta = DEFAULT_REFRESH_INTERVAL
    ) -> None:
        self._store = store
        self._interval = interval
        self._queues: dict[tuple[str, str], Queue] = {}

    @property
    def interval(self) -> timedelta:
        return self._interval

    def get(self, tenant_id: str, queue_id: str) -> Queue | None:
        return self._queues.get((tenant_id, queue_id))

    async def refresh(self) -> None:
        self._queues = {(q.tenant_id, q.queue_id): q for q in await self._store.all()}
