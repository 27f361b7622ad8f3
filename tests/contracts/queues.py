"""The QueueStore contract: the in-memory fake and the Postgres adapter both pass it.

Calls are made through the real use cases (tests/services.py) over the call store that goes
with the queue store, so a held call is held exactly as the mesh holds one: submitted due now
while its queue gates it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest

from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest
from orchestrator.domain.queues import (
    DEFAULT_QUEUE_ID,
    OrderingFailurePolicy,
    Queue,
    QueueState,
)
from orchestrator.domain.states import Dispatched, Scheduled, Succeeded
from orchestrator.ports import (
    Accepted,
    QueueBacklog,
    QueueConfigs,
    QueueNotEmpty,
    QueueNotFound,
    QueueStore,
    Submission,
)
from orchestrator.service_layer.services import Orchestrator
from tests.builders import new_tenant
from tests.fakes.clock import FakeClock


@dataclass
class Harness:
    """A queue store, the use cases over its call store, their view of the queues, a clock."""

    store: QueueStore
    calls: Orchestrator
    configs: QueueConfigs
    clock: FakeClock


def queue(tenant_id: str, queue_id: str, at: datetime, **changes: object) -> Queue:
    base = Queue(tenant_id=tenant_id, queue_id=queue_id, version=1, created_at=at, updated_at=at)
    return replace(base, **changes)  # type: ignore[arg-type]


async def submit(
    h: Harness,
    tenant_id: str,
    queue_id: str | None = None,
    key: str | None = None,
    due: timedelta = timedelta(0),
) -> Scheduled | Dispatched:
    outcome = await h.calls.submit(
        Submission(
            tenant_id=tenant_id,
            request=HttpRequest("POST", "https://example.test/q", (), b"", timedelta(seconds=5)),
            tags=frozenset(),
            idempotency_key=None,
            retry_policy=DEFAULT_RETRY_POLICY,
            due=h.clock.now() + due,
            queue_id=queue_id,
            ordering_key=key,
        ),
        "test",
    )
    assert isinstance(outcome, Accepted), outcome
    assert isinstance(outcome.state, Scheduled | Dispatched)
    return outcome.state


async def backlogs(store: QueueStore) -> dict[tuple[str, str], QueueBacklog]:
    seen: dict[tuple[str, str], QueueBacklog] = {}

    async def look(backlog: QueueBacklog) -> datetime | None:
        seen[(backlog.queue.tenant_id, backlog.queue.queue_id)] = backlog
        return backlog.queue.tat

    await store.claim_held(1000, 500, look)
    return seen


class QueueStoreContract:
    """Subclasses provide a `harness` fixture (stores of their own: claims see every tenant)."""

    async def test_a_created_queue_reads_back_equal(self, harness: Harness) -> None:
        made = queue(new_tenant(), "emails", harness.clock.now(), max_dispatches_per_second=2.5)
        assert await harness.store.create(made)
        assert not await harness.store.create(replace(made, max_burst_size=3))
        assert await harness.store.get(made.tenant_id, "emails") == made

    async def test_list_pages_by_queue_id_within_the_tenant(self, harness: Harness) -> None:
        tenant = new_tenant()
        for queue_id in ("c", "a", "b"):
            await harness.store.create(queue(tenant, queue_id, harness.clock.now()))
        await harness.store.create(queue(new_tenant(), "a", harness.clock.now()))
        first = await harness.store.list(tenant, 2, None)
        assert [q.queue_id for q in first.items] == ["a", "b"] and first.next_after == "b"
        last = await harness.store.list(tenant, 2, first.next_after)
        assert [q.queue_id for q in last.items] == ["c"] and last.next_after is None

    async def test_change_steps_default_from_its_defaults_and_creates_its_row(
        self, harness: Harness
    ) -> None:
        tenant = new_tenant()
        now = harness.clock.now()
        assert await harness.store.get(tenant, DEFAULT_QUEUE_ID) is None
        seen: list[Queue] = []

        def pause(current: Queue) -> Queue:
            seen.append(current)
            return replace(
                current, state=QueueState.PAUSED, version=1, created_at=now, updated_at=now
            )

        changed = await harness.store.change(tenant, DEFAULT_QUEUE_ID, pause)
        assert isinstance(changed, Queue) and changed.paused
        assert seen[0].version == 0 and seen[0].queue_id == DEFAULT_QUEUE_ID
        assert await harness.store.get(tenant, DEFAULT_QUEUE_ID) == changed
        missing = await harness.store.change(tenant, "nope", pause)
        assert missing == QueueNotFound(tenant, "nope")

    async def test_delete_refuses_a_queue_with_pending_calls(self, harness: Harness) -> None:
        tenant = new_tenant()
        await harness.store.create(queue(tenant, "q", harness.clock.now()))
        await harness.configs.refresh()
        call = await submit(harness, tenant, "q", due=timedelta(hours=1))
        assert await harness.store.pending_ids(tenant, "q", 10) == [call.spec.service_call_id]
        refused = await harness.store.delete(tenant, "q")
        assert isinstance(refused, QueueNotEmpty) and refused.pending == 1
        await harness.calls.cancel(tenant, call.spec.service_call_id, "gone", "test")
        assert await harness.store.pending_ids(tenant, "q", 10) == []
        assert isinstance(await harness.store.delete(tenant, "q"), Queue)
        assert await harness.store.get(tenant, "q") is None
        assert await harness.store.delete(tenant, "q") == QueueNotFound(tenant, "q")

    async def test_a_claim_reads_the_held_calls_in_due_order(self, harness: Harness) -> None:
        tenant = new_tenant()
        now = harness.clock.now()
        await harness.store.create(queue(tenant, "slow", now, max_dispatches_per_second=1.0))
        await harness.configs.refresh()
        later = await submit(harness, tenant, "slow", due=timedelta(seconds=1))
        first = await submit(harness, tenant, "slow")
        waiting = await submit(harness, tenant, "slow", due=timedelta(hours=1))
        assert later.held_reason is not None and first.held_reason is not None  # type: ignore[union-attr]
        assert waiting.held_reason is None  # type: ignore[union-attr]
        backlog = (await backlogs(harness.store))[(tenant, "slow")]
        assert backlog.queue.max_dispatches_per_second == 1.0
        assert [c.service_call_id for c in backlog.held] == [
            first.spec.service_call_id,
            later.spec.service_call_id,
        ]
        assert backlog.held[0].held_reason == 'waiting for queue "slow"\'s rate limit'

    async def test_default_s_held_calls_are_claimed_without_a_row(self, harness: Harness) -> None:
        tenant = new_tenant()
        call = await submit(harness, tenant, key="k")
        assert isinstance(call, Scheduled) and call.held_reason is not None
        backlog = (await backlogs(harness.store))[(tenant, DEFAULT_QUEUE_ID)]
        assert backlog.queue.version == 0
        assert backlog.keys["k"].head == call.spec.service_call_id
        assert backlog.keys["k"].busy is None and backlog.keys["k"].last_finished_failed is None
        assert await harness.store.get(tenant, DEFAULT_QUEUE_ID) is None

    async def test_key_history_names_the_busy_call_and_the_last_failure(
        self, harness: Harness
    ) -> None:
        tenant = new_tenant()
        await harness.store.create(
            queue(
                tenant, "q", harness.clock.now(), ordering_failure_policy=OrderingFailurePolicy.SKIP
            )
        )
        await harness.configs.refresh()
        a = await submit(harness, tenant, "q", key="k")
        b = await submit(harness, tenant, "q", key="k", due=timedelta(milliseconds=1))
        released = await harness.calls.release(
            tenant, a.spec.service_call_id, 1, harness.clock.now()
        )
        assert isinstance(released, Dispatched)
        backlog = (await backlogs(harness.store))[(tenant, "q")]
        assert [c.service_call_id for c in backlog.held] == [b.spec.service_call_id]
        assert backlog.keys["k"].busy == a.spec.service_call_id
        assert backlog.keys["k"].head == b.spec.service_call_id

    async def test_a_key_s_waiting_calls_do_not_fill_the_page(self, harness: Harness) -> None:
        # Regression: a key whose head cannot go (blocked, in flight) with a page's worth of
        # calls held behind it kept every other call of its queue from being read at all.
        tenant = new_tenant()
        key = [
            await submit(harness, tenant, key="k", due=timedelta(milliseconds=i)) for i in range(5)
        ]
        other = await submit(harness, tenant, due=timedelta(milliseconds=10), key="other")
        seen: list[QueueBacklog] = []

        async def look(backlog: QueueBacklog) -> datetime | None:
            seen.append(backlog)
            return backlog.queue.tat

        await harness.store.claim_held(1000, 3, look)
        (backlog,) = (b for b in seen if b.queue.tenant_id == tenant)
        assert [c.service_call_id for c in backlog.held] == [
            key[0].spec.service_call_id,
            other.spec.service_call_id,
        ]

    async def test_the_rate_state_a_dispatch_gives_is_written(self, harness: Harness) -> None:
        tenant = new_tenant()
        now = harness.clock.now()
        await harness.store.create(queue(tenant, "r", now, max_dispatches_per_second=1.0))
        await harness.configs.refresh()
        await submit(harness, tenant, "r")
        tat = now + timedelta(seconds=7)

        async def dispatch(backlog: QueueBacklog) -> datetime | None:
            return tat

        assert await harness.store.claim_held(1000, 10, dispatch) >= 1
        stored = await harness.store.get(tenant, "r")
        assert stored is not None and stored.tat == tat

    async def test_a_claimed_queue_is_skipped_by_another_claim(self, harness: Harness) -> None:
        tenant = new_tenant()
        await submit(harness, tenant, key="k")
        inside = asyncio.Event()
        go_on = asyncio.Event()
        claimed: list[str] = []

        async def slow(backlog: QueueBacklog) -> datetime | None:
            if backlog.queue.tenant_id == tenant:
                claimed.append("first")
                inside.set()
                await go_on.wait()
            return backlog.queue.tat

        async def second(backlog: QueueBacklog) -> datetime | None:
            if backlog.queue.tenant_id == tenant:
                claimed.append("second")
            return backlog.queue.tat

        first = asyncio.create_task(harness.store.claim_held(1000, 10, slow))
        await asyncio.wait_for(inside.wait(), 10)
        await harness.store.claim_held(1000, 10, second)
        go_on.set()
        await first
        assert claimed == ["first"]

    async def test_a_finished_call_is_no_longer_pending(self, harness: Harness) -> None:
        tenant = new_tenant()
        call = await submit(harness, tenant, key="k")
        assert await harness.store.pending_ids(tenant, DEFAULT_QUEUE_ID, 10) == [
            call.spec.service_call_id
        ]
        await harness.calls.release(tenant, call.spec.service_call_id, 1, harness.clock.now())
        assert await harness.store.pending_ids(tenant, DEFAULT_QUEUE_ID, 10) == []
        assert not isinstance(await harness.calls.get(tenant, call.spec.service_call_id), Succeeded)


__all__ = ["Harness", "QueueStoreContract", "pytest"]
