"""Schedules through orchestrator/mapping.py: a request's bad fields named by their API path
(the template's under `schedule.call_template.`), the update mask read, and a schedule shown
with its template's secret headers redacted."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2

from orchestrator.domain.schedules import MissedOccurrencePolicy
from orchestrator.mapping import (
    schedule_draft_from_proto,
    schedule_fields_from_mask,
    schedule_to_proto,
)
from orchestrator.ports import SCHEDULE_FIELDS, ScheduleDraft
from servicecall.v1 import schedule_pb2 as sched
from servicecall.v1 import service_call_pb2 as api
from tests.builders import new_tenant
from tests.schedule_builders import schedule


def _proto(**fields: object) -> sched.Schedule:
    call = api.ServiceCall(
        request=api.HttpRequest(
            url="https://example.test/tick", headers={"Authorization": "Bearer s3cret"}
        ),
        tags=["nightly"],
        callback_url="https://example.test/done",
        max_lateness=duration_pb2.Duration(seconds=90),
        # Not the template's to set: ignored.
        idempotency_key="ignored",
    )
    call.schedule_time.GetCurrentTime()
    return sched.Schedule(cron="@every 1s", call_template=call, **fields)  # type: ignore[arg-type]


def test_a_create_request_becomes_a_draft() -> None:
    tenant = new_tenant()
    draft = schedule_draft_from_proto(
        tenant, _proto(schedule_id="nightly", missed_occurrence_policy=sched.Schedule.SKIP)
    )
    assert isinstance(draft, ScheduleDraft)
    assert (draft.schedule_id, draft.cron, draft.time_zone) == ("nightly", "@every 1s", "")
    assert draft.missed_policy is MissedOccurrencePolicy.SKIP
    assert draft.template is not None
    assert draft.template.request.headers == (("Authorization", "Bearer s3cret"),)
    assert draft.template.idempotency_key is None and draft.template.due is None
    assert draft.template.callback_url == "https://example.test/done"
    assert draft.template.max_lateness == timedelta(seconds=90)


def test_an_unset_policy_is_fire_latest() -> None:
    draft = schedule_draft_from_proto(new_tenant(), _proto())
    assert isinstance(draft, ScheduleDraft)
    assert draft.missed_policy is MissedOccurrencePolicy.FIRE_LATEST


def test_template_problems_are_named_under_call_template() -> None:
    bad = _proto()
    bad.call_template.request.attempt_timeout.FromTimedelta(timedelta(seconds=-1))
    bad.call_template.retry_policy.min_backoff.FromTimedelta(timedelta(seconds=-1))
    problems = schedule_draft_from_proto(new_tenant(), bad)
    assert isinstance(problems, list)
    assert {p.field for p in problems} == {
        "schedule.call_template.request.attempt_timeout",
        "schedule.call_template.retry_policy.min_backoff",
    }


def test_a_missing_schedule_is_named() -> None:
    problems = schedule_draft_from_proto(new_tenant(), None)
    assert isinstance(problems, list) and [p.field for p in problems] == ["schedule"]


def test_an_update_reads_only_the_masked_fields() -> None:
    bad = _proto(missed_occurrence_policy=99)
    bad.call_template.request.attempt_timeout.FromTimedelta(timedelta(seconds=-1))
    draft = schedule_draft_from_proto(new_tenant(), bad, frozenset({"description"}))
    assert isinstance(draft, ScheduleDraft) and draft.template is None


def test_the_update_mask() -> None:
    assert schedule_fields_from_mask([]) == SCHEDULE_FIELDS
    assert schedule_fields_from_mask(["cron", "time_zone"]) == frozenset({"cron", "time_zone"})
    problems = schedule_fields_from_mask(["cron", "state", "schedule_id"])
    assert isinstance(problems, list)
    assert [p.field for p in problems] == ["update_mask", "update_mask"]


def test_a_schedule_is_shown_with_its_secret_headers_redacted() -> None:
    made = schedule(new_tenant(), "nightly")
    shown = schedule_to_proto(made)
    assert shown.name == f"tenants/{made.tenant_id}/schedules/nightly"
    assert shown.state == sched.Schedule.ACTIVE
    assert shown.etag == 'W/"1"'
    assert "s3cret" not in shown.call_template.request.headers["Authorization"]
    assert shown.call_template.request.headers["content-type"] == "application/json"
    assert shown.call_template.callback_url == "https://example.test/done"
    assert shown.call_template.max_lateness.ToTimedelta() == timedelta(seconds=90)
    assert shown.HasField("next_occurrence_time")
    assert not shown.HasField("last_occurrence_time")
    assert not shown.HasField("end_time")
