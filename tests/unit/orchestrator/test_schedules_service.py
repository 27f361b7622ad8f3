"""The schedule use cases and the materialiser, over in-memory stores and a fake clock: what
create validates, what pause, resume, update and delete do to the schedule and to the calls it
made, and that every occurrence's call is made once however often (or however concurrently)
a pass runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from mesh.clock import Uuid7Gen
from mesh.secrets import SecretBox, header_binding
from orchestrator.domain.idempotency import service_call_id_for
from orchestrator.domain.model import DEFAULT_TIMING, SEALED_PREFIX, HttpRequest
from orchestrator.domain.schedules import (
    MissedOccurrencePolicy,
    Schedule,
    ScheduleState,
    occurrence_key,
)
from orchestrator.domain.states import Canceled, Dispatched, Scheduled
from orchestrator.domain.validation import Limits
from orchestrator.ports import (
    Advance,
    Invalid,
    ScheduleEnded,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleStore,
    ScheduleVersionMismatch,
)
from orchestrator.service_layer.schedules import Materialiser, PassResult, Schedules
from orchestrator.service_layer.sealing import open_secret_headers
from orchestrator.service_layer.services import Orchestrator
from tests.builders import T0, new_tenant
from tests.fakes.clock import FakeClock
from tests.fakes.schedules import InMemoryScheduleStore
from tests.fakes.store import InMemoryServiceCallStore
from tests.schedule_builders import REQUEST, draft
from tests.services import orchestrator_over

SECONDS = [timedelta(seconds=n) for n in range(100)]
BOX = SecretBox({1: bytes(32)}, current=1)  # the one tests.services.orchestrator_over uses


def materialiser_over(
    store: ScheduleStore, orchestrator: Orchestrator, clock: FakeClock
) -> Materialiser:
    """A materialiser as these tests run it: a 3 s lookahead, missed after 5 s."""
    return Materialiser(
        store,
        orchestrator,
        clock,
        BOX,
        lookahead=timedelta(seconds=3),
        missed_after=timedelta(seconds=5),
        limit=10,
    )


@dataclass
class World:
    clock: FakeClock
    calls: InMemoryServiceCallStore
    store: InMemoryScheduleStore
    orchestrator: Orchestrator
    schedules: Schedules

    def materialiser(
        self, orchestrator: Orchestrator | None = None, store: object = None
    ) -> Materialiser:
        return materialiser_over(
            store or self.store,  # type: ignore[arg-type]
            orchestrator or self.orchestrator,
            self.clock,
        )

    async def run_pass(self) -> PassResult:
        return await self.materialiser().run_pass()

    async def create(self, tenant_id: str, **changes: Any) -> Schedule:
        made = await self.schedules.create(draft(tenant_id, **changes))
        assert isinstance(made, Schedule), made
        return made

    def call_of(self, made: Schedule, occurrence: datetime) -> object:
        call_id = service_call_id_for(made.tenant_id, occurrence_key(made.schedule_id, occurrence))
        return self.calls.calls.get((made.tenant_id, call_id))


def with_lead(orchestrator: Orchestrator, lead: timedelta) -> Orchestrator:
    """The same use cases with another hand-off lead."""
    return Orchestrator(
        store=orchestrator._store,
        clock=orchestrator._clock,
        ids=Uuid7Gen(),
        timing=replace(DEFAULT_TIMING, handoff_lead=lead),
        limits=orchestrator._limits,
        to_messages=orchestrator._to_messages,
        secrets=BOX,
        fingerprint_key=orchestrator._fingerprint_key,
    )


@pytest.fixture
def world() -> World:
    clock = FakeClock(T0)
    calls = InMemoryServiceCallStore()
    # A lead shorter than the occurrences' spacing: each call made by a pass waits for its
    # hand-off timer (SCHEDULED, cancelable) rather than being handed off at once.
    orchestrator = with_lead(orchestrator_over(calls, clock), timedelta(milliseconds=500))
    store = InMemoryScheduleStore()
    schedules = Schedules(store, orchestrator, clock, Uuid7Gen(), BOX, Limits())
    return World(clock, calls, store, orchestrator, schedules)


# Create.


async def test_create_names_every_bad_field_at_once_and_stores_nothing(world: World) -> None:
    tenant = new_tenant()
    bad = draft(
        tenant,
        "Not_An_Id",
        cron="every day at noon",
        time_zone="Mars/Olympus_Mons",
        description="x" * 1001,
    )
    assert bad.template is not None
    bad = replace(bad, template=replace(bad.template, request=replace(REQUEST, url="ftp://x/y")))
    outcome = await world.schedules.create(bad)
    assert isinstance(outcome, Invalid)
    assert {v.field for v in outcome.violations} == {
        "schedule.schedule_id",
        "schedule.cron",
        "schedule.time_zone",
        "schedule.call_template.request.url",
        "schedule.description",
    }
    assert world.store.rows == {}


async def test_create_needs_a_call_template(world: World) -> None:
    outcome = await world.schedules.create(draft(new_tenant(), template=None))
    assert isinstance(outcome, Invalid)
    assert [v.field for v in outcome.violations] == ["schedule.call_template"]


async def test_a_created_schedule_is_active_from_its_first_occurrence(world: World) -> None:
    made = await world.create(new_tenant())
    assert made.state is ScheduleState.ACTIVE
    assert made.next_occurrence_at == T0 + SECONDS[1]  # @every counts from creation
    assert made.last_occurrence_at is None
    assert made.version == 1
    assert len(made.schedule_id) == 36  # a UUIDv7 when none is given
    assert await world.store.get(made.tenant_id, made.schedule_id) == made


async def test_a_taken_schedule_id_is_already_exists(world: World) -> None:
    tenant = new_tenant()
    first = await world.create(tenant, schedule_id="nightly")
    outcome = await world.schedules.create(draft(tenant, "nightly", description="another"))
    assert outcome == ScheduleExists(tenant, "nightly")
    assert await world.store.get(tenant, "nightly") == first


async def test_a_schedule_whose_end_leaves_no_occurrence_is_refused(world: World) -> None:
    outcome = await world.schedules.create(
        draft(new_tenant(), start_at=T0 - SECONDS[10], end_at=T0 - SECONDS[5])
    )
    assert isinstance(outcome, Invalid)
    assert [v.field for v in outcome.violations] == ["schedule.end_time"]


async def test_template_secret_headers_are_sealed_to_the_schedule_at_rest(world: World) -> None:
    made = await world.create(new_tenant(), schedule_id="sealed")
    headers = dict(made.template.request.headers)
    assert headers["Authorization"].startswith(SEALED_PREFIX)
    assert "s3cret" not in headers["Authorization"]
    assert headers["content-type"] == "application/json"
    # Bound to the schedule: it opens for it, and for no call of the same tenant.
    opened = open_secret_headers(made.template.request, made.tenant_id, "schedule:sealed", BOX)
    assert opened is not None and dict(opened.headers)["Authorization"] == "Bearer s3cret"
    assert open_secret_headers(made.template.request, made.tenant_id, "sealed", BOX) is None


# The materialiser.


async def test_a_pass_makes_each_occurrence_within_the_lookahead_as_an_ordinary_call(
    world: World,
) -> None:
    made = await world.create(new_tenant())
    result = await world.run_pass()
    assert (result.claimed, result.made, result.existing) == (1, 3, 0)
    for n in (1, 2, 3):
        occurrence = T0 + SECONDS[n]
        call = world.call_of(made, occurrence)
        assert isinstance(call, Scheduled)
        assert call.due_at == occurrence  # sent at the occurrence, not before
        assert call.spec.idempotency_key == occurrence_key(made.schedule_id, occurrence)
        assert call.spec.tags == frozenset({"nightly"})
        # Sealed again, to the call: never in clear at rest, opened by the executor only.
        sealed = dict(call.spec.request.headers)["Authorization"]
        assert sealed.startswith(SEALED_PREFIX) and "s3cret" not in sealed
        opened = open_secret_headers(
            call.spec.request, call.spec.tenant_id, call.spec.service_call_id, BOX
        )
        assert opened is not None and opened.headers == REQUEST.headers
    assert len(world.calls.calls) == 3
    after = await world.store.get(made.tenant_id, made.schedule_id)
    assert after is not None
    assert after.next_occurrence_at == T0 + SECONDS[4]
    assert after.last_occurrence_at == T0 + SECONDS[3]
    assert after.version == made.version  # the materialiser's progress is no client change


async def test_passes_make_each_occurrence_once(world: World) -> None:
    made = await world.create(new_tenant())
    await world.run_pass()
    again = await world.run_pass()
    assert (again.claimed, again.made) == (0, 0)
    world.clock.advance(SECONDS[1])
    later = await world.run_pass()
    assert later.made == 1 and world.call_of(made, T0 + SECONDS[4]) is not None
    assert len(world.calls.calls) == 4


class CrashBeforeCommit:
    """A schedule store whose claims make their calls, then die before they commit (the
    orchestrator killed between the submits and the schedule's write)."""

    def __init__(self, store: InMemoryScheduleStore) -> None:
        self._store = store

    async def claim_due(self, until: datetime, limit: int, advance: Advance) -> int:
        async def then_crash(schedule: Schedule) -> Schedule:
            await advance(schedule)
            raise ConnectionError("killed before the commit")

        return await self._store.claim_due(until, limit, then_crash)


async def test_a_pass_redone_after_a_crash_makes_no_call_twice(world: World) -> None:
    made = await world.create(new_tenant())
    with pytest.raises(ConnectionError):
        await world.materialiser(store=CrashBeforeCommit(world.store)).run_pass()
    assert len(world.calls.calls) == 3
    assert await world.store.get(made.tenant_id, made.schedule_id) == made  # not advanced
    redo = await world.run_pass()
    assert (redo.made, redo.existing) == (0, 3)
    assert len(world.calls.calls) == 3


async def test_two_replicas_passing_at_once_make_each_occurrence_once(world: World) -> None:
    tenant = new_tenant()
    for n in range(5):
        await world.create(tenant, schedule_id=f"s-{n}")
    other_replica = with_lead(world.orchestrator, timedelta(milliseconds=500))
    first, second = await asyncio.gather(
        world.materialiser().run_pass(), world.materialiser(other_replica).run_pass()
    )
    assert first.made + second.made == 15
    assert first.claimed + second.claimed == 5
    assert len(world.calls.calls) == 15


async def test_an_invalid_occurrence_is_skipped_and_the_schedule_goes_on(world: World) -> None:
    made = await world.create(new_tenant())
    # Today's limits refuse what the template was created under (an operator lowered one).
    strict = Orchestrator(
        store=world.calls,
        clock=world.clock,
        ids=Uuid7Gen(),
        timing=world.orchestrator._timing,
        limits=Limits(max_body_bytes=4),
        to_messages=world.orchestrator._to_messages,
        secrets=BOX,
        fingerprint_key=world.orchestrator._fingerprint_key,
    )
    result = await world.materialiser(strict).run_pass()
    assert (result.made, result.skipped) == (0, 3)
    after = await world.store.get(made.tenant_id, made.schedule_id)
    assert after is not None and after.next_occurrence_at == T0 + SECONDS[4]


async def test_after_an_outage_fire_latest_makes_the_latest_missed_occurrence_only(
    world: World,
) -> None:
    made = await world.create(new_tenant())
    world.clock.advance(SECONDS[60])  # down for a minute
    result = await world.run_pass()
    # Missed: before now - 5 s (T0+1 .. T0+54); the latest of them is made, then the ones
    # within 5 s and the lookahead (T0+55 .. T0+63).
    assert result.missed == 53
    assert result.made == 10
    assert world.call_of(made, T0 + SECONDS[54]) is not None
    assert world.call_of(made, T0 + SECONDS[53]) is None


async def test_after_an_outage_skip_makes_none_of_the_missed(world: World) -> None:
    made = await world.create(new_tenant(), missed_policy=MissedOccurrencePolicy.SKIP)
    world.clock.advance(SECONDS[60])
    result = await world.run_pass()
    assert (result.missed, result.made) == (54, 9)
    assert world.call_of(made, T0 + SECONDS[54]) is None


# Pause and resume.


async def test_pause_stops_the_calls_and_cancels_those_made_for_coming_occurrences(
    world: World,
) -> None:
    made = await world.create(new_tenant())
    await world.run_pass()  # calls for T0+1, T0+2, T0+3
    world.clock.advance(timedelta(milliseconds=1500))
    paused = await world.schedules.pause(made.tenant_id, made.schedule_id, 1, "corr")
    assert isinstance(paused, Schedule)
    assert paused.state is ScheduleState.PAUSED and paused.next_occurrence_at is None
    assert paused.version == 2
    assert isinstance(world.call_of(made, T0 + SECONDS[1]), Scheduled)  # past: left alone
    for n in (2, 3):
        assert isinstance(world.call_of(made, T0 + SECONDS[n]), Canceled)
    world.clock.advance(SECONDS[30])
    assert (await world.run_pass()).made == 0
    assert len(world.calls.calls) == 3


async def test_pause_of_a_paused_schedule_changes_nothing(world: World) -> None:
    made = await world.create(new_tenant())
    first = await world.schedules.pause(made.tenant_id, made.schedule_id, None, "c")
    again = await world.schedules.pause(made.tenant_id, made.schedule_id, None, "c")
    assert again == first


async def test_resume_makes_calls_from_the_first_occurrence_after_now(world: World) -> None:
    made = await world.create(new_tenant())
    await world.run_pass()
    world.clock.advance(timedelta(milliseconds=500))
    await world.schedules.pause(made.tenant_id, made.schedule_id, None, "c")
    world.clock.advance(SECONDS[10])  # now T0 + 10.5 s
    resumed = await world.schedules.resume(made.tenant_id, made.schedule_id, 2)
    assert isinstance(resumed, Schedule)
    assert resumed.state is ScheduleState.ACTIVE
    assert resumed.next_occurrence_at == T0 + SECONDS[11]
    result = await world.run_pass()
    assert result.made == 3 and result.missed == 0
    for n in range(4, 11):  # fell while paused: never made
        assert world.call_of(made, T0 + SECONDS[n]) is None
    assert world.call_of(made, T0 + SECONDS[11]) is not None


async def test_resume_of_an_active_schedule_changes_nothing(world: World) -> None:
    made = await world.create(new_tenant())
    assert await world.schedules.resume(made.tenant_id, made.schedule_id, None) == made


async def test_a_stale_etag_is_refused_and_changes_nothing(world: World) -> None:
    made = await world.create(new_tenant())
    outcome = await world.schedules.pause(made.tenant_id, made.schedule_id, 7, "c")
    assert outcome == ScheduleVersionMismatch(7, 1)
    assert await world.store.get(made.tenant_id, made.schedule_id) == made


async def test_an_ended_schedule_cannot_be_paused_or_resumed(world: World) -> None:
    made = await world.create(new_tenant(), end_at=T0 + timedelta(milliseconds=2500))
    await world.run_pass()  # T0+1, T0+2; none after
    ended = await world.store.get(made.tenant_id, made.schedule_id)
    assert ended is not None and ended.state is ScheduleState.ENDED
    assert await world.schedules.pause(made.tenant_id, made.schedule_id, None, "c") == (
        ScheduleEnded()
    )
    assert await world.schedules.resume(made.tenant_id, made.schedule_id, None) == ScheduleEnded()


async def test_another_tenant_s_schedule_is_not_found(world: World) -> None:
    made = await world.create(new_tenant())
    other = new_tenant()
    assert await world.schedules.get(other, made.schedule_id) is None
    assert await world.schedules.pause(other, made.schedule_id, None, "c") == ScheduleNotFound(
        other, made.schedule_id
    )
    assert await world.schedules.delete(other, made.schedule_id, "c") == ScheduleNotFound(
        other, made.schedule_id
    )
    assert await world.store.get(made.tenant_id, made.schedule_id) == made


# Update.


async def test_update_follows_the_new_definition_from_after_the_last_call_made(
    world: World,
) -> None:
    made = await world.create(new_tenant())
    await world.run_pass()  # up to T0+3
    world.clock.advance(timedelta(milliseconds=200))
    new_url = "https://example.test/new"
    changed = draft(made.tenant_id, made.schedule_id, cron="@every 2s", description="two")
    assert changed.template is not None
    changed = replace(
        changed, template=replace(changed.template, request=replace(REQUEST, url=new_url))
    )
    outcome = await world.schedules.update(
        changed, frozenset({"cron", "call_template", "description"}), 1
    )
    assert isinstance(outcome, Schedule)
    assert outcome.version == 2 and outcome.description == "two"
    assert outcome.recurrence.cron == "@every 2s"
    # Never before the last occurrence made: the calls made keep their definition.
    assert outcome.next_occurrence_at is not None
    assert outcome.next_occurrence_at > T0 + SECONDS[3]
    old = world.call_of(made, T0 + SECONDS[3])
    assert isinstance(old, Scheduled) and old.spec.request.url == REQUEST.url
    world.clock.advance(SECONDS[2])
    await world.run_pass()
    new = world.call_of(made, outcome.next_occurrence_at)
    assert isinstance(new, Scheduled) and new.spec.request.url == new_url


async def test_update_changes_only_the_masked_fields(world: World) -> None:
    made = await world.create(new_tenant())
    # Everything else in the draft differs, and is not read.
    changed = draft(made.tenant_id, made.schedule_id, cron="nonsense", description="new")
    outcome = await world.schedules.update(changed, frozenset({"description"}), None)
    assert isinstance(outcome, Schedule)
    assert outcome == replace(made, description="new", version=2, updated_at=T0)


async def test_an_update_that_keeps_the_recurrence_keeps_an_overdue_occurrence_due(
    world: World,
) -> None:
    made = await world.create(new_tenant())
    world.clock.advance(SECONDS[60])  # the materialiser was down
    changed = draft(made.tenant_id, made.schedule_id, description="renamed")
    outcome = await world.schedules.update(changed, frozenset({"description"}), None)
    assert isinstance(outcome, Schedule)
    assert outcome.next_occurrence_at == made.next_occurrence_at
    assert (await world.run_pass()).missed > 0  # judged by the policy, not dropped


async def test_an_ended_schedule_given_occurrences_again_is_active_again(world: World) -> None:
    made = await world.create(new_tenant(), end_at=T0 + timedelta(milliseconds=2500))
    await world.run_pass()
    world.clock.advance(SECONDS[5])
    changed = draft(made.tenant_id, made.schedule_id, end_at=T0 + SECONDS[60])
    outcome = await world.schedules.update(changed, frozenset({"end_time"}), None)
    assert isinstance(outcome, Schedule)
    assert outcome.state is ScheduleState.ACTIVE
    assert outcome.next_occurrence_at == T0 + SECONDS[6]


async def test_an_invalid_update_is_refused_and_changes_nothing(world: World) -> None:
    made = await world.create(new_tenant())
    changed = draft(made.tenant_id, made.schedule_id, cron="nonsense", time_zone="No/Where")
    outcome = await world.schedules.update(changed, frozenset({"cron", "time_zone"}), None)
    assert isinstance(outcome, Invalid)
    assert {v.field for v in outcome.violations} == {"schedule.cron", "schedule.time_zone"}
    assert await world.store.get(made.tenant_id, made.schedule_id) == made


async def test_update_with_a_stale_etag_is_refused(world: World) -> None:
    made = await world.create(new_tenant())
    changed = draft(made.tenant_id, made.schedule_id, description="new")
    outcome = await world.schedules.update(changed, frozenset({"description"}), 3)
    assert outcome == ScheduleVersionMismatch(3, 1)


async def test_updating_a_paused_schedule_keeps_it_paused(world: World) -> None:
    made = await world.create(new_tenant())
    await world.schedules.pause(made.tenant_id, made.schedule_id, None, "c")
    changed = draft(made.tenant_id, made.schedule_id, cron="@every 5s")
    outcome = await world.schedules.update(changed, frozenset({"cron"}), None)
    assert isinstance(outcome, Schedule)
    assert outcome.state is ScheduleState.PAUSED and outcome.next_occurrence_at is None


# Delete.


async def test_delete_removes_the_schedule_and_cancels_its_coming_calls(world: World) -> None:
    made = await world.create(new_tenant())
    await world.run_pass()
    world.clock.advance(timedelta(milliseconds=1500))
    assert await world.schedules.delete(made.tenant_id, made.schedule_id, "c") is None
    assert await world.store.get(made.tenant_id, made.schedule_id) is None
    assert isinstance(world.call_of(made, T0 + SECONDS[1]), Scheduled)
    assert isinstance(world.call_of(made, T0 + SECONDS[2]), Canceled)
    assert isinstance(world.call_of(made, T0 + SECONDS[3]), Canceled)
    world.clock.advance(SECONDS[10])
    assert (await world.run_pass()).claimed == 0
    assert await world.schedules.delete(made.tenant_id, made.schedule_id, "c") == (
        ScheduleNotFound(made.tenant_id, made.schedule_id)
    )


async def test_a_call_already_handed_off_is_left_to_run_by_a_pause(world: World) -> None:
    # The mesh's own lead (2 s): the calls due within it are handed off when made.
    world.schedules = Schedules(
        world.store,
        orchestrator_over(world.calls, world.clock),
        world.clock,
        Uuid7Gen(),
        BOX,
        Limits(),
    )
    made = await world.create(new_tenant())
    await world.materialiser(orchestrator_over(world.calls, world.clock)).run_pass()
    assert isinstance(world.call_of(made, T0 + SECONDS[2]), Dispatched)
    world.clock.advance(timedelta(milliseconds=500))
    paused = await world.schedules.pause(made.tenant_id, made.schedule_id, None, "c")
    assert isinstance(paused, Schedule) and paused.state is ScheduleState.PAUSED
    assert isinstance(world.call_of(made, T0 + SECONDS[2]), Dispatched)  # may be on the wire
    assert isinstance(world.call_of(made, T0 + SECONDS[3]), Canceled)


def test_the_template_s_secret_binding_is_not_a_call_s() -> None:
    # A call id is a UUID; "schedule:<id>" can never be one, so no call's sealed header and
    # no schedule's template header open for each other.
    assert header_binding("t", "schedule:x", "Authorization") != header_binding(
        "t", "x", "Authorization"
    )
    assert isinstance(REQUEST, HttpRequest)
