"""In-memory QueueStore and QueueConfigs with the Postgres adapters' semantics: the backlog a
claim reads is computed from an InMemoryServiceCallStore's calls, as the Postgres store reads
service_calls; a claimed queue is skipped by another claim and a change waits for it."""

from __future__ import annotations

import asyncio
import builtins
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from orchestrator.domain.queues import (
    DEFAULT_QUEUE_ID,
    FOLLOWER_REASON_PREFIX,
    KeyHistory,
    Queue,
    default_queue,
)
from orchestrator.domain.states import (
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Succeeded,
)
from orchestrator.ports import (
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
from tests.fakes.store import InMemoryServiceCallStore

Key = tuple[str, str]


@dataclass
class InMemoryQueueStore:
    calls: InMemoryServiceCallStore
    rows: dict[Key, Queue] = field(default_factory=dict)
    _locks: defaultdict[Key, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    async def create(self, queue: Queue) -> bool:
        key = (queue.tenant_id, queue.queue_id)
        if key in self.rows:
            return False
        self.rows[key] = queue
        return True

    async def get(self, tenant_id: str, queue_id: str) -> Queue | None:
        return self.rows.get((tenant_id, queue_id))

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> QueuePage:
        ids = sorted(q for t, q in self.rows if t == tenant_id and q > (after or ""))
        items = [self.rows[(tenant_id, q)] for q in ids[:page_size]]
        more = len(ids) > page_size and items
        return QueuePage(items, items[-1].queue_id if more else None)

    async def all(self) -> Sequence[Queue]:
        return list(self.rows.values())

    async def change(
        self, tenant_id: str, queue_id: str, step: QueueStep
    ) -> Queue | QueueRefusal | Invalid:
        key = (tenant_id, queue_id)
        async with self._locks[key]:
            current = self.rows.get(key)
            if current is None and queue_id != DEFAULT_QUEUE_ID:
                return QueueNotFound(tenant_id, queue_id)
            base = current or default_queue(tenant_id)
            outcome = step(base)
            if isinstance(outcome, Queue) and outcome != base:
                self.rows[key] = outcome
            return outcome

    async def delete(self, tenant_id: str, queue_id: str) -> Queue | QueueRefusal:
        key = (tenant_id, queue_id)
        async with self._locks[key]:
            current = self.rows.get(key)
            if current is None:
                return QueueNotFound(tenant_id, queue_id)
            pending = self._of_queue(tenant_id, queue_id, Scheduled)
            if pending:
                return QueueNotEmpty(queue_id, len(pending))
            del self.rows[key]
            return current

    async def pending_ids(self, tenant_id: str, queue_id: str, limit: int) -> Sequence[str]:
        pending = self._of_queue(tenant_id, queue_id, Scheduled)
        pending.sort(key=_place)
        return [s.spec.service_call_id for s in pending[:limit]]

    async def claim_held(self, limit: int, page: int, dispatch: Dispatch) -> int:
        queues: list[Key] = []
        for state in self.calls.calls.values():
            key = (state.spec.tenant_id, state.spec.queue_id or DEFAULT_QUEUE_ID)
            if _held(state) and key not in queues:
                queues.append(key)
        claimed = 0
        for key in sorted(queues)[:limit]:
            lock = self._locks[key]
            if lock.locked():
                continue  # another claim (or a change) holds it
            async with lock:
                claimed += 1
                await self._dispatch_one(key, page, dispatch)
        return claimed

    async def _dispatch_one(self, key: Key, page: int, dispatch: Dispatch) -> None:
        tenant_id, queue_id = key
        row = self.rows.get(key)
        queue = row or replace(default_queue(tenant_id), queue_id=queue_id)
        states = self._of_queue(tenant_id, queue_id, Scheduled)
        every_held = sorted(
            (s for s in states if isinstance(s, Scheduled) and _held(s)), key=_place
        )
        keys_seen: set[str] = set()
        readable: list[Scheduled] = []
        for s in every_held:
            key_ = s.spec.ordering_key
            # As the adapter: a call behind an earlier held call of its key whose reason
            # already says so is not read.
            behind = key_ is not None and key_ in keys_seen
            if key_ is not None:
                keys_seen.add(key_)
            if (
                behind
                and s.attempt == 1
                and s.spec.replay_of is None
                and (s.held_reason or "").startswith(FOLLOWER_REASON_PREFIX)
            ):
                continue
            readable.append(s)
        held = readable[:page]
        if not held:
            return
        in_flight = len(self._of_queue(tenant_id, queue_id, Dispatched | Running))
        histories = {
            k: self._history(tenant_id, queue_id, k)
            for k in {s.spec.ordering_key for s in held if s.spec.ordering_key is not None}
        }
        backlog = QueueBacklog(
            queue,
            [
                HeldCall(
                    service_call_id=s.spec.service_call_id,
                    due_at=s.due_at,
                    attempt=s.attempt,
                    ordering_key=s.spec.ordering_key,
                    replay_of=s.spec.replay_of,
                    held_reason=s.held_reason or "",
                )
                for s in held
                if isinstance(s, Scheduled)
            ],
            in_flight,
            histories,
        )
        tat = await dispatch(backlog)
        if row is not None and key in self.rows:
            self.rows[key] = replace(self.rows[key], tat=tat)

    def _history(self, tenant_id: str, queue_id: str, key: str) -> KeyHistory:
        calls = [
            s
            for s in self.calls.calls.values()
            if s.spec.tenant_id == tenant_id
            and (s.spec.queue_id or DEFAULT_QUEUE_ID) == queue_id
            and s.spec.ordering_key == key
        ]
        busy = next(
            (
                s.spec.service_call_id
                for s in calls
                if isinstance(s, Dispatched | Running)
                or (isinstance(s, Scheduled) and s.attempt > 1)
            ),
            None,
        )
        waiting = sorted(
            (s for s in calls if isinstance(s, Scheduled) and s.attempt == 1), key=_place
        )
        finished = sorted(
            (s for s in calls if isinstance(s, Succeeded | Failed)), key=lambda s: s.completed_at
        )
        failed = (
            finished[-1].spec.service_call_id
            if finished and isinstance(finished[-1], Failed)
            else None
        )
        head = waiting[0].spec.service_call_id if waiting else None
        return KeyHistory(busy=busy, head=head, last_finished_failed=failed)

    def _of_queue(
        self, tenant_id: str, queue_id: str, kind: object
    ) -> builtins.list[ServiceCallState]:
        return [
            s
            for s in self.calls.calls.values()
            if s.spec.tenant_id == tenant_id
            and (s.spec.queue_id or DEFAULT_QUEUE_ID) == queue_id
            and isinstance(s, kind)  # type: ignore[arg-type]
        ]


def _held(state: ServiceCallState) -> bool:
    return isinstance(state, Scheduled) and state.held_reason is not None


def _place(state: ServiceCallState) -> tuple[object, str]:
    assert isinstance(state, Scheduled | Dispatched | Running)
    return (state.due_at, state.spec.service_call_id)


@dataclass
class InMemoryQueueConfigs:
    """QueueConfigs over a queue store, refreshed only when told (tests refresh at will)."""

    store: InMemoryQueueStore | None = None
    interval: timedelta = timedelta(0)
    seen: dict[Key, Queue] = field(default_factory=dict)

    def get(self, tenant_id: str, queue_id: str) -> Queue | None:
        return self.seen.get((tenant_id, queue_id))

    async def refresh(self) -> None:
        if self.store is not None:
            self.seen = {(q.tenant_id, q.queue_id): q for q in await self.store.all()}
