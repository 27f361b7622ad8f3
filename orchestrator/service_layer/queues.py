"""The queue use cases (QueueService) and the queue dispatcher's pass, which releases held
calls within their queue's limits and their ordering keys' sequence.

A call is held when its hand-off comes while its queue gates it (domain/queues.queue_gate: the
queue is paused or limited, or the call has an ordering key): it stays SCHEDULED with a
`held_reason` and no timer. Every orchestrator replica runs the dispatcher; each pass claims
the queues that have held calls and that no other replica holds, and for each one releases,
in due-time order, the calls that may go now (ReleaseServiceCall through the ordinary use
cases, so the outbox and the executor's hand-off follow as for any call), each with its send
time from the queue's rate (GCRA, domain/queues.release_times). Calls whose send time is
further than the hand-off lead keep their place for a later pass.

Pause, resume, create and update answer only once every process can have seen the change
(two QueueConfigs.interval): a call handed to an executor before that is sent.
"""

from __future__ import annotations

import asyncio
import builtins
from datetime import datetime, timedelta

from mesh.logs import get_logger
from mesh.ports import Clock
from orchestrator.domain.queues import (
    DEFAULT_QUEUE_ID,
    QUEUE_FIELDS,
    Queue,
    QueueState,
    concurrency_reason,
    default_queue,
    may_start,
    ordering_reason,
    paused_reason,
    rate_reason,
    release_times,
    slots,
    updated,
    validate_queue,
    validate_queue_id,
    with_state,
)
from orchestrator.domain.states import Canceled, Dispatched, Failed
from orchestrator.domain.validation import FieldViolation, validate_tenant_id
from orchestrator.ports import (
    HeldCall,
    Invalid,
    QueueBacklog,
    QueueConfigs,
    QueueExists,
    QueueNotEmpty,
    QueueNotFound,
    QueuePage,
    QueueRefusal,
    QueueStore,
    QueueVersionMismatch,
)
from orchestrator.service_layer.services import Orchestrator

log = get_logger(__name__)

# Held calls read per queue and pass, and reasons rewritten per queue and pass (each is a
# write of the call: bounded so a large backlog's new reasons come over a few passes).
HELD_PAGE = 500
MAX_REASON_UPDATES = 100
PURGE_PAGE = 500


class Queues:
    """Create, read, change, pause, resume, purge and delete queues."""

    def __init__(
        self, store: QueueStore, configs: QueueConfigs, calls: Orchestrator, clock: Clock
    ) -> None:
        self._store = store
        self._configs = configs
        self._calls = calls
        self._clock = clock

    async def create(self, draft: Queue) -> Queue | Invalid | QueueExists:
        problems = validate_tenant_id(draft.tenant_id) + validate_queue(draft)
        if problems:
            return Invalid(tuple(problems))
        if draft.queue_id == DEFAULT_QUEUE_ID:
            return QueueExists(draft.tenant_id, draft.queue_id)
        now = self._clock.now()
        queue = Queue(
            tenant_id=draft.tenant_id,
            queue_id=draft.queue_id,
            max_dispatches_per_second=draft.max_dispatches_per_second,
            max_burst_size=draft.max_burst_size,
            max_concurrent_dispatches=draft.max_concurrent_dispatches,
            ordering_failure_policy=draft.ordering_failure_policy,
            version=1,
            created_at=now,
            updated_at=now,
        )
        if not await self._store.create(queue):
            return QueueExists(draft.tenant_id, draft.queue_id)
        # Answered once every process can submit to it (their views refresh every interval).
        await self._seen_everywhere()
        return queue

    async def get(self, tenant_id: str, queue_id: str) -> Queue | Invalid | QueueNotFound:
        if problems := self._ids(tenant_id, queue_id):
            return Invalid(tuple(problems))
        queue = await self._store.get(tenant_id, queue_id)
        if queue is None:
            if queue_id == DEFAULT_QUEUE_ID:
                return default_queue(tenant_id)
            return QueueNotFound(tenant_id, queue_id)
        return queue

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> QueuePage:
        """The tenant's queues by id; `default` among them whether it has a row or not."""
        page = await self._store.list(tenant_id, page_size, after)
        items = list(page.items)
        has_default = any(q.queue_id == DEFAULT_QUEUE_ID for q in items)
        # `default` sorts where its id falls: in the page that spans it.
        spans = (after is None or after < DEFAULT_QUEUE_ID) and (
            page.next_after is None or page.next_after >= DEFAULT_QUEUE_ID
        )
        next_after = page.next_after
        if not has_default and spans and await self._store.get(tenant_id, DEFAULT_QUEUE_ID) is None:
            items.append(default_queue(tenant_id))
            items.sort(key=lambda q: q.queue_id)
            if len(items) > page_size:
                # A page never holds more than asked: the last one moves to the next page.
                items.pop()
                next_after = items[-1].queue_id
        return QueuePage(items, next_after)

    async def update(
        self,
        draft: Queue,
        fields: frozenset[str],
        expected_version: int | None,
    ) -> Queue | Invalid | QueueRefusal:
        problems = self._ids(draft.tenant_id, draft.queue_id)
        if not problems:
            problems = [p for p in validate_queue(draft) if p.field.split(".")[-1] in fields]
        if problems:
            return Invalid(tuple(problems))
        now = self._clock.now()

        def step(current: Queue) -> Queue | QueueRefusal | Invalid:
            if expected_version is not None and expected_version != current.version:
                return QueueVersionMismatch(expected_version, current.version)
            return updated(current, draft, fields or QUEUE_FIELDS, now)

        outcome = await self._store.change(draft.tenant_id, draft.queue_id, step)
        if isinstance(outcome, Queue):
            await self._seen_everywhere()
        return outcome

    async def pause(
        self, tenant_id: str, queue_id: str, expected_version: int | None
    ) -> Queue | Invalid | QueueRefusal:
        return await self._set_state(tenant_id, queue_id, QueueState.PAUSED, expected_version)

    async def resume(
        self, tenant_id: str, queue_id: str, expected_version: int | None
    ) -> Queue | Invalid | QueueRefusal:
        return await self._set_state(tenant_id, queue_id, QueueState.RUNNING, expected_version)

    async def delete(self, tenant_id: str, queue_id: str) -> Queue | Invalid | QueueRefusal:
        if problems := self._ids(tenant_id, queue_id):
            return Invalid(tuple(problems))
        if queue_id == DEFAULT_QUEUE_ID:
            return QueueNotEmpty(queue_id, 0)
        outcome = await self._store.delete(tenant_id, queue_id)
        if isinstance(outcome, Queue):
            await self._configs.refresh()
        return outcome

    async def purge(
        self, tenant_id: str, queue_id: str, correlation_id: str
    ) -> int | Invalid | QueueNotFound:
        """Cancels every SCHEDULED call of the queue (held or waiting for its time) through
        the ordinary cancel; a call handed off meanwhile is refused there and not counted."""
        if problems := self._ids(tenant_id, queue_id):
            return Invalid(tuple(problems))
        if queue_id != DEFAULT_QUEUE_ID and await self._store.get(tenant_id, queue_id) is None:
            return QueueNotFound(tenant_id, queue_id)
        canceled = 0
        tried: set[str] = set()
        while True:
            ids = [
                i
                for i in await self._store.pending_ids(tenant_id, queue_id, PURGE_PAGE)
                if i not in tried
            ]
            if not ids:
                return canceled
            tried.update(ids)
            outcomes = await asyncio.gather(
                *(
                    self._calls.cancel(
                        tenant_id, i, f'purged from queue "{queue_id}"', correlation_id
                    )
                    for i in ids
                )
            )
            canceled += sum(isinstance(o, Canceled) for o in outcomes)

    async def _set_state(
        self, tenant_id: str, queue_id: str, state: QueueState, expected_version: int | None
    ) -> Queue | Invalid | QueueRefusal:
        if problems := self._ids(tenant_id, queue_id):
            return Invalid(tuple(problems))
        now = self._clock.now()

        def step(current: Queue) -> Queue | QueueRefusal | Invalid:
            if expected_version is not None and expected_version != current.version:
                return QueueVersionMismatch(expected_version, current.version)
            return with_state(current, state, now)

        outcome = await self._store.change(tenant_id, queue_id, step)
        if isinstance(outcome, Queue):
            # "Paused" is said only once every process has seen it: their views refresh every
            # interval, so after one interval no process hands off a call of this queue.
            await self._seen_everywhere()
        return outcome

    async def _seen_everywhere(self) -> None:
        # Two intervals, not one: another process's refresh may have read just before the
        # commit, and its next read starts one interval plus a query's time later.
        await self._configs.refresh()
        await asyncio.sleep(2 * self._configs.interval.total_seconds())

    @staticmethod
    def _ids(tenant_id: str, queue_id: str) -> builtins.list[FieldViolation]:
        return validate_tenant_id(tenant_id) + validate_queue_id(queue_id, "queue_id")


class QueueDispatcher:
    """One pass over the queues with held calls (see the module docstring)."""

    def __init__(
        self,
        store: QueueStore,
        calls: Orchestrator,
        clock: Clock,
        handoff_lead: timedelta,
        max_queues: int = 100,
    ) -> None:
        self._store = store
        self._calls = calls
        self._clock = clock
        self._lead = handoff_lead
        # A rate-limited queue's first send time is this far ahead of the release: the time a
        # hand-off needs to reach an executor (outbox, broker, consumer). A call released to
        # go "now" would reach the target that much late while the next one, released with
        # a later send time, arrives on time: two sends closer than the rate allows.
        self._margin = handoff_lead / 2
        self._max_queues = max_queues

    async def run_once(self) -> int:
        """Claims and dispatches the queues with held calls; how many were claimed."""
        return await self._store.claim_held(self._max_queues, HELD_PAGE, self.dispatch)

    async def dispatch(self, backlog: QueueBacklog) -> datetime | None:
        """Releases what may go of one claimed queue; the rate limiter's new state."""
        queue = backlog.queue
        now = self._clock.now()
        reasons: dict[str, tuple[HeldCall, str]] = {}
        if queue.paused:
            for call in backlog.held:
                reasons[call.service_call_id] = (call, paused_reason(queue.queue_id))
            await self._hold(queue, reasons)
            return queue.tat
        free = slots(queue.max_concurrent_dispatches, backlog.in_flight)
        chosen: list[HeldCall] = []
        # A key's call chosen in this pass is its new head: the key's others wait for it.
        started: dict[str, str] = {}
        seen: set[str] = set()
        for call in backlog.held:
            key = call.ordering_key
            if key is not None and key in seen and call.attempt == 1 and call.replay_of is None:
                # Behind an earlier held call of its key: it waits for that one whatever
                # happens to it this pass. Released now, that call is named (and this one read
                # again next pass, as the key's first held); still held, the reason says
                # "the calls before it", which the store reads past (adapters/queues).
                reasons[call.service_call_id] = (call, ordering_reason(started.get(key), key))
                continue
            if key is not None:
                seen.add(key)
                waits_for = started.get(key)
                history = backlog.keys.get(key)
                if waits_for is None and history is not None:
                    waits_for = may_start(
                        call.service_call_id,
                        call.replay_of,
                        call.attempt > 1,
                        history,
                        queue.ordering_failure_policy,
                    )
                if waits_for is not None:
                    reasons[call.service_call_id] = (call, ordering_reason(waits_for, key))
                    continue
            if free is not None and len(chosen) >= free:
                reasons[call.service_call_id] = (call, concurrency_reason(queue.queue_id))
                continue
            chosen.append(call)
            if key is not None:
                started[key] = call.service_call_id
        margin = self._margin if queue.max_dispatches_per_second > 0 else timedelta(0)
        times, tat = release_times(
            queue.tat,
            now + margin,
            queue.max_dispatches_per_second,
            queue.burst,
            len(chosen),
            self._lead - margin,
        )
        released = await asyncio.gather(
            *(
                self._calls.release(queue.tenant_id, call.service_call_id, call.attempt, send_at)
                for call, send_at in zip(chosen, times, strict=False)
            )
        )
        # Refused: canceled, rescheduled or run meanwhile (NotHeld); its slot of the rate is
        # left unused rather than risk sending faster.
        refused = sum(not isinstance(o, Dispatched | Failed) for o in released)
        if refused:
            log.info("releases refused", queue=queue.queue_id, refused=refused)
        for call in chosen[len(times) :]:
            reasons[call.service_call_id] = (call, rate_reason(queue.queue_id))
        await self._hold(queue, reasons)
        return tat

    async def _hold(self, queue: Queue, reasons: dict[str, tuple[HeldCall, str]]) -> None:
        changed = [(c, r) for c, r in reasons.values() if c.held_reason != r]
        await asyncio.gather(
            *(
                self._calls.hold(queue.tenant_id, c.service_call_id, c.attempt, r)
                for c, r in changed[:MAX_REASON_UPDATES]
            )
        )
