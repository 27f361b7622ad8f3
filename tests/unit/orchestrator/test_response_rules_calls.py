"""#18's response rules of a call from the API to the stored spec and back: read from a
submit (a range's `last` 0 is `first` alone; an empty message is no rules), refused when bad
(field paths as the API reports them, nothing stored), a keyed resubmit with other rules is
a conflict, shown on the call, sent to the executor as ExecutionRequested.success_statuses,
kept by a replay, and carried by a schedule's call template to every occurrence."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from mesh.clock import Uuid7Gen
from mesh.topics import Topics
from orchestrator.domain.commands import FireTimer, SubmitServiceCall, TimerPurpose
from orchestrator.domain.decide import decide
from orchestrator.domain.errors import IdempotencyConflict
from orchestrator.domain.idempotency import service_call_id_for
from orchestrator.domain.model import ResponseRules
from orchestrator.domain.schedules import Schedule, occurrence_key
from orchestrator.domain.states import Failed, Scheduled, ServiceCallState
from orchestrator.domain.validation import Limits
from orchestrator.mapping import (
    outbox_messages,
    schedule_draft_from_proto,
    schedule_to_proto,
    service_call_to_proto,
    submission_from_proto,
)
from orchestrator.ports import Accepted, Invalid, Replay, ScheduleDraft, Submission
from orchestrator.service_layer.schedules import Schedules
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import schedule_pb2 as sched
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from tests.builders import T0, new_tenant
from tests.fakes.clock import FakeClock
from tests.fakes.schedules import InMemoryScheduleStore
from tests.fakes.store import InMemoryServiceCallStore
from tests.schedule_builders import draft
from tests.services import orchestrator_over
from tests.unit.domain.builders import DUE, SPEC, TIMING, apply, events_of, step
from tests.unit.orchestrator.test_replay import World
from tests.unit.orchestrator.test_schedules_service import BOX, materialiser_over

RULES = ResponseRules(success_statuses=((200, 299), (404, 404)), retryable_statuses=((409, 409),))
TOPICS = Topics.with_prefix("t.")


def _proto(rules: api.ResponseRules | None = None) -> api.ServiceCall:
    call = api.ServiceCall(request=api.HttpRequest(url="https://example.test/"))
    if rules is not None:
        call.response_rules.CopyFrom(rules)
    return call


def _submission(rules: api.ResponseRules | None) -> Submission:
    submission = submission_from_proto("acme", _proto(rules), None, header_key=None)
    assert isinstance(submission, Submission), submission
    return submission


def test_the_api_s_rules_reach_the_submission_with_last_0_as_first_alone() -> None:
    given = api.ResponseRules(
        success_statuses=[api.StatusRange(first=200, last=299), api.StatusRange(first=404)],
        retryable_statuses=[api.StatusRange(first=409)],
    )
    assert _submission(given).response_rules == RULES


def test_no_rules_an_empty_message_and_empty_retryable_mean_the_defaults() -> None:
    assert _submission(None).response_rules is None
    assert _submission(api.ResponseRules()).response_rules is None
    only_success = api.ResponseRules(success_statuses=[api.StatusRange(first=410)])
    assert _submission(only_success).response_rules == ResponseRules(((410, 410),), None)


async def test_bad_rules_are_refused_with_their_paths_and_nothing_is_stored() -> None:
    world = World()
    bad = replace(
        world.submission(key="bad"),
        response_rules=ResponseRules(
            success_statuses=((200, 299), (404, 404), (500, 450)),
            retryable_statuses=((600, 600), (250, 250)),
        ),
    )
    outcome = await world.orchestrator.submit(bad, "test")
    assert isinstance(outcome, Invalid)
    assert [v.field for v in outcome.violations] == [
        "service_call.response_rules.success_statuses[2].last",
        "service_call.response_rules.retryable_statuses[0].first",
    ]
    assert world.store.calls == {}


async def test_a_keyed_resubmit_with_other_rules_is_a_conflict() -> None:
    world = World()
    first = replace(world.submission(key="k1"), response_rules=RULES)
    created = await world.orchestrator.submit(first, "test")
    assert isinstance(created, Accepted) and created.created
    again = await world.orchestrator.submit(first, "test")
    assert isinstance(again, Accepted) and not again.created
    for changed in (
        replace(first, response_rules=None),
        replace(first, response_rules=replace(RULES, retryable_statuses=None)),
        replace(first, response_rules=replace(RULES, success_statuses=((200, 299),))),
    ):
        assert isinstance(await world.orchestrator.submit(changed, "test"), IdempotencyConflict)


async def test_the_rules_are_stored_and_shown() -> None:
    world = World()
    state = await world.submit(replace(world.submission(), response_rules=RULES))
    stored = await world.store.get(world.tenant_id, state.spec.service_call_id)
    assert stored is not None and stored.spec.response_rules == RULES
    for view in (svc.BASIC, svc.FULL):
        shown = service_call_to_proto(stored, view).response_rules
        assert [(r.first, r.last) for r in shown.success_statuses] == [(200, 299), (404, 404)]
        assert [(r.first, r.last) for r in shown.retryable_statuses] == [(409, 409)]
    plain = await world.submit()
    assert not service_call_to_proto(plain).HasField("response_rules")


def _execution_requests(spec_rules: ResponseRules | None) -> list[pb.ExecutionRequested]:
    before = step(
        None, SubmitServiceCall(spec=replace(SPEC, response_rules=spec_rules), due_at=DUE), T0
    )
    assert isinstance(before, Scheduled) and before.handoff_at is not None
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=before.handoff_at)
    events = events_of(decide(before, fire, before.handoff_at, TIMING))
    after = apply(before, events)
    out = outbox_messages(before, after, events, "corr", TOPICS, 256)
    envelopes = [pb.Envelope.FromString(m.value) for m in out]
    return [e.execution_requested for e in envelopes if e.HasField("execution_requested")]


def test_the_executor_is_told_the_success_statuses_only() -> None:
    [request] = _execution_requests(RULES)
    assert [(r.first, r.last) for r in request.success_statuses] == [(200, 299), (404, 404)]
    [default] = _execution_requests(None)
    assert list(default.success_statuses) == []
    # Retryable statuses alone: the executor keeps its default success (200-299).
    [retry_only] = _execution_requests(ResponseRules(retryable_statuses=((409, 409),)))
    assert list(retry_only.success_statuses) == []


async def test_a_replay_keeps_the_rules() -> None:
    world = World()
    original: ServiceCallState = await world.finish(
        await world.submit(replace(world.submission(), response_rules=RULES)), 400
    )
    assert isinstance(original, Failed)
    outcome = await world.orchestrator.replay(
        Replay(world.tenant_id, original.spec.service_call_id, None, None), "test"
    )
    assert isinstance(outcome, Accepted)
    assert outcome.state.spec.response_rules == RULES


# Schedules: the template carries the rules to each occurrence.


def test_a_schedule_s_template_reads_and_shows_the_rules() -> None:
    template = _proto(api.ResponseRules(success_statuses=[api.StatusRange(first=404)]))
    got = schedule_draft_from_proto(
        "acme", sched.Schedule(cron="@every 1s", call_template=template)
    )
    assert isinstance(got, ScheduleDraft) and got.template is not None
    assert got.template.response_rules == ResponseRules(((404, 404),))


async def test_each_occurrence_of_a_schedule_has_the_template_s_rules() -> None:
    clock = FakeClock(T0)
    calls = InMemoryServiceCallStore()
    orchestrator = orchestrator_over(calls, clock)
    store = InMemoryScheduleStore()
    schedules = Schedules(store, orchestrator, clock, Uuid7Gen(), BOX, Limits())
    tenant = new_tenant()
    base = draft(tenant)
    assert base.template is not None
    made = await schedules.create(
        replace(base, template=replace(base.template, response_rules=RULES))
    )
    assert isinstance(made, Schedule), made
    assert made.template.response_rules == RULES
    shown = schedule_to_proto(made).call_template.response_rules
    assert [(r.first, r.last) for r in shown.success_statuses] == [(200, 299), (404, 404)]
    bad = await schedules.create(
        replace(base, template=replace(base.template, response_rules=ResponseRules(((99, 99),))))
    )
    assert isinstance(bad, Invalid)
    assert [v.field for v in bad.violations] == [
        "schedule.call_template.response_rules.success_statuses[0].first"
    ]
    materialiser = materialiser_over(store, orchestrator, clock)
    result = await materialiser.run_pass()
    assert result.made == 3
    for n in (1, 2, 3):
        key = occurrence_key(made.schedule_id, T0 + timedelta(seconds=n))
        call = calls.calls[(tenant, service_call_id_for(tenant, key))]
        assert call.spec.response_rules == RULES
