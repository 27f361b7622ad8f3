"""A schedule's call template may name a queue and an ordering key (#18's queues for
schedules): read from the API and shown back, refused when the queue does not exist or the
key is malformed (nothing stored), carried to every occurrence's call; a queue deleted later
makes its occurrences skipped, not sent outside their queue."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import pytest

from mesh.clock import Uuid7Gen
from orchestrator.domain.idempotency import service_call_id_for
from orchestrator.domain.queues import DEFAULT_QUEUE_ID, Queue
from orchestrator.domain.schedules import Schedule, occurrence_key
from orchestrator.domain.validation import Limits
from orchestrator.mapping import schedule_draft_from_proto, schedule_to_proto
from orchestrator.ports import Invalid, ScheduleDraft
from orchestrator.service_layer.queues import Queues
from orchestrator.service_layer.schedules import Materialiser, Schedules
from servicecall.v1 import schedule_pb2 as sched
from servicecall.v1 import service_call_pb2 as api
from tests.builders import T0, new_tenant
from tests.fakes.clock import FakeClock
from tests.fakes.queues import InMemoryQueueConfigs, InMemoryQueueStore
from tests.fakes.schedules import InMemoryScheduleStore
from tests.fakes.store import InMemoryServiceCallStore
from tests.schedule_builders import draft
from tests.services import orchestrator_over
from tests.unit.orchestrator.test_schedules_service import BOX, materialiser_over


@dataclass
class World:
    clock: FakeClock
    calls: InMemoryServiceCallStore
    queues: Queues
    schedules: Schedules
    materialiser: Materialiser


@pytest.fixture
def world() -> World:
    clock = FakeClock(T0)
    calls = InMemoryServiceCallStore()
    queue_store = InMemoryQueueStore(calls)
    configs = InMemoryQueueConfigs(queue_store)
    orchestrator = orchestrator_over(calls, clock, configs)
    store = InMemoryScheduleStore()
    return World(
        clock,
        calls,
        Queues(queue_store, configs, orchestrator, clock),
        Schedules(store, orchestrator, clock, Uuid7Gen(), BOX, Limits()),
        materialiser_over(store, orchestrator, clock),
    )


def queued(tenant_id: str, queue_id: str | None, key: str | None) -> ScheduleDraft:
    made = draft(tenant_id)
    assert made.template is not None
    return replace(made, template=replace(made.template, queue_id=queue_id, ordering_key=key))


def test_the_api_s_queue_and_key_reach_the_template_and_are_shown_back() -> None:
    tenant = new_tenant()
    given = sched.Schedule(
        cron="@every 1s",
        call_template=api.ServiceCall(
            request=api.HttpRequest(url="https://example.test/tick"),
            queue="billing",
            ordering_key="customer-7",
        ),
    )
    read = schedule_draft_from_proto(tenant, given)
    assert isinstance(read, ScheduleDraft) and read.template is not None
    assert (read.template.queue_id, read.template.ordering_key) == ("billing", "customer-7")
    # `default`, named or not, is one queue: the template keeps none.
    given.call_template.queue = DEFAULT_QUEUE_ID
    given.call_template.ordering_key = ""
    read = schedule_draft_from_proto(tenant, given)
    assert isinstance(read, ScheduleDraft) and read.template is not None
    assert (read.template.queue_id, read.template.ordering_key) == (None, None)


async def test_a_template_s_queue_must_exist_and_its_key_be_well_formed(world: World) -> None:
    tenant = new_tenant()
    unknown = await world.schedules.create(queued(tenant, "nope", None))
    assert isinstance(unknown, Invalid)
    assert [v.field for v in unknown.violations] == ["schedule.call_template.queue"]
    assert "nope" in unknown.violations[0].description
    bad_key = await world.schedules.create(queued(tenant, None, "x" * 1000))
    assert isinstance(bad_key, Invalid)
    assert [v.field for v in bad_key.violations] == ["schedule.call_template.ordering_key"]
    page = await world.schedules.list(tenant, 10, None)
    assert page.items == []  # nothing stored

    assert isinstance(await world.queues.create(Queue(tenant_id=tenant, queue_id="nope")), Queue)
    made = await world.schedules.create(queued(tenant, "nope", "k"))
    assert isinstance(made, Schedule)
    assert (made.template.queue_id, made.template.ordering_key) == ("nope", "k")
    shown = schedule_to_proto(made).call_template
    assert (shown.queue, shown.ordering_key) == ("nope", "k")


async def test_an_update_of_the_template_checks_its_queue_too(world: World) -> None:
    tenant = new_tenant()
    made = await world.schedules.create(draft(tenant))
    assert isinstance(made, Schedule)
    assert schedule_to_proto(made).call_template.queue == DEFAULT_QUEUE_ID
    changed = await world.schedules.update(
        replace(queued(tenant, "later", None), schedule_id=made.schedule_id),
        frozenset({"call_template"}),
        None,
    )
    assert isinstance(changed, Invalid)
    assert [v.field for v in changed.violations] == ["schedule.call_template.queue"]


async def test_every_occurrence_s_call_is_in_the_template_s_queue_and_key(world: World) -> None:
    tenant = new_tenant()
    assert isinstance(await world.queues.create(Queue(tenant_id=tenant, queue_id="q")), Queue)
    made = await world.schedules.create(queued(tenant, "q", "one-at-a-time"))
    assert isinstance(made, Schedule)
    result = await world.materialiser.run_pass()
    assert result.made == 3  # the occurrences within the 3 s lookahead
    calls = [c for (t, _), c in world.calls.calls.items() if t == tenant]
    assert len(calls) == 3
    assert {(c.spec.queue_id, c.spec.ordering_key) for c in calls} == {("q", "one-at-a-time")}


async def test_a_deleted_queue_s_occurrences_are_skipped_not_sent_elsewhere(world: World) -> None:
    tenant = new_tenant()
    assert isinstance(await world.queues.create(Queue(tenant_id=tenant, queue_id="q")), Queue)
    made = await world.schedules.create(queued(tenant, "q", None))
    assert isinstance(made, Schedule)
    assert isinstance(await world.queues.delete(tenant, "q"), Queue)
    result = await world.materialiser.run_pass()
    assert (result.made, result.skipped) == (0, 3)
    first = made.next_occurrence_at
    assert first is not None
    key = occurrence_key(made.schedule_id, first)
    assert (tenant, service_call_id_for(tenant, key)) not in world.calls.calls
    # The schedule still moves on: a queue made again takes the occurrences after it.
    moved = await world.schedules.get(tenant, made.schedule_id)
    assert moved is not None and moved.next_occurrence_at == first + timedelta(seconds=3)
