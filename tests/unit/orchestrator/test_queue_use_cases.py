"""The queue use cases over fakes: `default` is implicit (shown, listed, not creatable, not
deletable), update follows its mask and etag, create and delete refuse what they must."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.domain.queues import DEFAULT_QUEUE_ID, OrderingFailurePolicy, Queue
from orchestrator.domain.states import Dispatched
from orchestrator.ports import (
    Invalid,
    QueueExists,
    QueueNotEmpty,
    QueueNotFound,
    QueueVersionMismatch,
)
from orchestrator.service_layer.queues import Queues
from tests.builders import new_tenant
from tests.contracts.queues import Harness, submit
from tests.fakes.clock import FakeClock
from tests.fakes.queues import InMemoryQueueConfigs, InMemoryQueueStore
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over


@pytest.fixture
def h() -> tuple[Queues, Harness]:
    calls = InMemoryServiceCallStore()
    store = InMemoryQueueStore(calls)
    configs = InMemoryQueueConfigs(store)
    clock = FakeClock()
    orchestrator = orchestrator_over(calls, clock, configs)
    return Queues(store, configs, orchestrator, clock), Harness(store, orchestrator, configs, clock)


def draft(tenant: str, queue_id: str, **settings: object) -> Queue:
    return Queue(tenant_id=tenant, queue_id=queue_id, **settings)  # type: ignore[arg-type]


async def test_default_is_shown_and_listed_before_it_has_a_row(h: tuple[Queues, Harness]) -> None:
    queues, _ = h
    t = new_tenant()
    got = await queues.get(t, DEFAULT_QUEUE_ID)
    assert isinstance(got, Queue) and got.version == 0 and not got.gates
    assert isinstance(await queues.create(draft(t, "zeta")), Queue)
    assert isinstance(await queues.create(draft(t, "alpha")), Queue)
    page = await queues.list(t, 50, None)
    assert [q.queue_id for q in page.items] == ["alpha", "default", "zeta"]
    first = await queues.list(t, 1, None)
    assert [q.queue_id for q in first.items] == ["alpha"]
    second = await queues.list(t, 1, first.next_after)
    assert [q.queue_id for q in second.items] == ["default"]
    third = await queues.list(t, 1, second.next_after)
    assert [q.queue_id for q in third.items] == ["zeta"] and third.next_after is None


@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_pages_of_queues_never_hold_more_than_asked(
    h: tuple[Queues, Harness], page_size: int
) -> None:
    # `default` has no row until it is changed, and is slotted into the page that spans it.
    queues, _ = h
    t = new_tenant()
    for queue_id in ("a", "b", "e", "f", "g"):
        assert isinstance(await queues.create(draft(t, queue_id)), Queue)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await queues.list(t, page_size, after)
        assert 0 < len(page.items) <= page_size
        seen += [q.queue_id for q in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ["a", "b", "default", "e", "f", "g"]


async def test_default_cannot_be_created_or_deleted(h: tuple[Queues, Harness]) -> None:
    queues, _ = h
    t = new_tenant()
    assert isinstance(await queues.create(draft(t, DEFAULT_QUEUE_ID)), QueueExists)
    assert isinstance(await queues.delete(t, DEFAULT_QUEUE_ID), QueueNotEmpty)


async def test_update_follows_its_mask_and_its_etag(h: tuple[Queues, Harness]) -> None:
    queues, _ = h
    t = new_tenant()
    made = await queues.create(draft(t, "q", max_dispatches_per_second=2.0))
    assert isinstance(made, Queue) and made.version == 1
    changed = await queues.update(
        draft(t, "q", max_concurrent_dispatches=3, max_dispatches_per_second=99.0),
        frozenset({"max_concurrent_dispatches"}),
        made.version,
    )
    assert isinstance(changed, Queue)
    assert (changed.max_concurrent_dispatches, changed.max_dispatches_per_second) == (3, 2.0)
    stale = await queues.update(
        draft(t, "q", ordering_failure_policy=OrderingFailurePolicy.SKIP),
        frozenset({"ordering_failure_policy"}),
        made.version,
    )
    assert stale == QueueVersionMismatch(1, 2)
    bad = await queues.update(draft(t, "q", max_burst_size=-1), frozenset({"max_burst_size"}), None)
    assert isinstance(bad, Invalid)
    # A bad value in a field the mask does not name is not read.
    ignored = await queues.update(
        draft(t, "q", max_burst_size=-1, max_concurrent_dispatches=5),
        frozenset({"max_concurrent_dispatches"}),
        None,
    )
    assert isinstance(ignored, Queue) and ignored.max_burst_size == 0
    assert isinstance(await queues.update(draft(t, "nope"), frozenset(), None), QueueNotFound)


async def test_pausing_default_gives_it_a_row_and_gates_its_calls(
    h: tuple[Queues, Harness],
) -> None:
    queues, harness = h
    t = new_tenant()
    paused = await queues.pause(t, DEFAULT_QUEUE_ID, None)
    assert isinstance(paused, Queue) and paused.paused and paused.created_at is not None
    call = await submit(harness, t)
    assert getattr(call, "held_reason", None) == 'held by paused queue "default"'
    again = await queues.pause(t, DEFAULT_QUEUE_ID, None)
    assert again == paused  # pausing a paused queue changes nothing
    resumed = await queues.resume(t, DEFAULT_QUEUE_ID, paused.version)
    assert isinstance(resumed, Queue) and not resumed.paused
    later = await submit(harness, t, due=timedelta(0))
    assert isinstance(later, Dispatched)  # a running, unlimited queue: the old path


async def test_bad_ids_are_invalid_before_any_lookup(h: tuple[Queues, Harness]) -> None:
    queues, _ = h
    assert isinstance(await queues.get("t", "a\x00b"), Invalid)
    assert isinstance(await queues.purge("t", "UPPER", "c"), Invalid)
    assert isinstance(await queues.create(draft("t", "")), Invalid)
