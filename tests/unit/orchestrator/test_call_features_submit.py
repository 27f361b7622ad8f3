"""#17's fields of a submitted call (callback_url, failure_callback_url, max_lateness) from the
API to the stored spec and back, their validation, their place in the fingerprint, and what a
replay keeps of them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from orchestrator.domain.errors import IdempotencyConflict
from orchestrator.domain.idempotency import fingerprint
from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest
from orchestrator.domain.states import Failed, Scheduled, ServiceCallState
from orchestrator.domain.validation import DEFAULT_LIMITS, FieldViolation, validate_submission
from orchestrator.mapping import service_call_to_proto, submission_from_proto
from orchestrator.ports import Accepted, Invalid, Replay, Submission
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from tests.builders import FINGERPRINT_KEY
from tests.unit.orchestrator.test_replay import World

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOOK = "https://hooks.example.test/done"
FAILED_HOOK = "https://hooks.example.test/failed"


def _proto(**fields: object) -> api.ServiceCall:
    return api.ServiceCall(request=api.HttpRequest(url="https://example.test/"), **fields)  # type: ignore[arg-type]


def test_the_api_s_fields_reach_the_submission() -> None:
    call = _proto(
        callback_url=HOOK, failure_callback_url=FAILED_HOOK, max_lateness=Duration(seconds=90)
    )
    submission = submission_from_proto("acme", call, None, header_key=None)
    assert isinstance(submission, Submission)
    assert submission.callback_url == HOOK
    assert submission.failure_callback_url == FAILED_HOOK
    assert submission.max_lateness == timedelta(seconds=90)
    # The links only the mesh sets are never read from a client.
    linked = _proto(callback_of="tenants/acme/service-calls/x", schedule="tenants/acme/schedules/s")
    submission = submission_from_proto("acme", linked, None, header_key=None)
    assert isinstance(submission, Submission)
    assert submission.callback_of is None and submission.schedule_id is None


def test_unset_fields_are_none_and_a_negative_max_lateness_is_a_violation() -> None:
    unset = submission_from_proto("acme", _proto(), None, header_key=None)
    assert isinstance(unset, Submission)
    assert (unset.callback_url, unset.failure_callback_url, unset.max_lateness) == (None,) * 3
    negative = submission_from_proto(
        "acme", _proto(max_lateness=Duration(seconds=-1)), None, header_key=None
    )
    assert negative == [FieldViolation("service_call.max_lateness", "must not be negative")]


def _violations(**fields: object) -> list[FieldViolation]:
    return validate_submission(
        tenant_id="acme",
        request=HttpRequest("POST", "https://example.test/", (), b"", timedelta(seconds=1)),
        tags=(),
        idempotency_key=None,
        retry_policy=DEFAULT_RETRY_POLICY,
        due_at=NOW,
        now=NOW,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.test/x",
        "/relative",
        "https://user:pw@hooks.example.test/",
        "https://hooks.example.test/#frag",
        "https://hooks.example.test/a b",
        "https://hooks.example.test/" + "x" * DEFAULT_LIMITS.max_url_length,
        "http://:80/",
    ],
)
def test_callback_urls_obey_the_request_url_s_rules(url: str) -> None:
    [request_problem] = [
        v
        for v in validate_submission(
            tenant_id="acme",
            request=HttpRequest("POST", url, (), b"", timedelta(seconds=1)),
            tags=(),
            idempotency_key=None,
            retry_policy=DEFAULT_RETRY_POLICY,
            due_at=NOW,
            now=NOW,
        )
        if v.field == "service_call.request.url"
    ]
    assert _violations(callback_url=url, failure_callback_url=url) == [
        FieldViolation("service_call.callback_url", request_problem.description),
        FieldViolation("service_call.failure_callback_url", request_problem.description),
    ]


def test_good_callback_urls_pass() -> None:
    assert _violations(callback_url=HOOK, failure_callback_url="http://127.0.0.1:9/x?y=1") == []


@pytest.mark.parametrize(
    ("max_lateness", "ok"),
    [
        (timedelta(seconds=1), True),
        (timedelta(days=30), True),
        (timedelta(milliseconds=999), False),
        (timedelta(0), False),
        (timedelta(days=30, microseconds=1), False),
    ],
)
def test_max_lateness_is_bounded(max_lateness: timedelta, ok: bool) -> None:
    violations = _violations(max_lateness=max_lateness)
    assert [v.field for v in violations] == ([] if ok else ["service_call.max_lateness"])


def test_the_fields_are_in_the_fingerprint_and_a_call_without_them_keeps_its_own() -> None:
    request = HttpRequest("POST", "https://example.test/", (), b"", timedelta(seconds=1))

    def of(**fields: object) -> str:
        return fingerprint(
            request,
            (),
            DEFAULT_RETRY_POLICY,
            None,
            key=FINGERPRINT_KEY,
            **fields,  # type: ignore[arg-type]
        )

    plain = fingerprint(request, (), DEFAULT_RETRY_POLICY, None, key=FINGERPRINT_KEY)
    # Pinned: fingerprints already stored must still match after this change.
    assert plain == of() == of(callback_url=None, max_lateness=None, schedule_id=None)
    variants = [
        of(callback_url=HOOK),
        of(failure_callback_url=HOOK),
        of(callback_url=HOOK, failure_callback_url=HOOK),
        of(max_lateness=timedelta(seconds=1)),
        of(max_lateness=timedelta(seconds=2)),
        of(callback_of="abc"),
        of(schedule_id="abc"),
        of(replay_of="abc"),
    ]
    assert len({plain, *variants}) == len(variants) + 1


async def test_a_keyed_resubmit_with_another_callback_is_a_conflict() -> None:
    world = World()
    first = replace(world.submission(key="k1"), callback_url=HOOK, max_lateness=timedelta(hours=1))
    created = await world.orchestrator.submit(first, "test")
    assert isinstance(created, Accepted) and created.created
    again = await world.orchestrator.submit(first, "test")
    assert isinstance(again, Accepted) and not again.created
    for changed in (
        replace(first, callback_url=FAILED_HOOK),
        replace(first, callback_url=None),
        replace(first, failure_callback_url=HOOK),
        replace(first, max_lateness=timedelta(hours=2)),
    ):
        assert isinstance(await world.orchestrator.submit(changed, "test"), IdempotencyConflict)


async def test_bad_fields_are_refused_and_nothing_is_stored() -> None:
    world = World()
    bad = replace(world.submission(key="k2"), callback_url="ftp://x/", max_lateness=timedelta(0))
    outcome = await world.orchestrator.submit(bad, "test")
    assert isinstance(outcome, Invalid)
    assert [v.field for v in outcome.violations] == [
        "service_call.callback_url",
        "service_call.max_lateness",
    ]
    assert await world.store.get(world.tenant_id, "whatever") is None


async def test_the_fields_are_stored_in_the_spec_and_shown() -> None:
    world = World()
    submission = replace(
        world.submission(due=timedelta(hours=1)),
        callback_url=HOOK,
        failure_callback_url=FAILED_HOOK,
        max_lateness=timedelta(minutes=2),
    )
    state = await world.submit(submission)
    stored = await world.store.get(world.tenant_id, state.spec.service_call_id)
    assert stored is not None
    assert stored.spec.callback_url == HOOK
    assert stored.spec.failure_callback_url == FAILED_HOOK
    assert stored.spec.max_lateness == timedelta(minutes=2)
    for view in (svc.BASIC, svc.FULL):
        shown = service_call_to_proto(stored, view)
        assert shown.callback_url == HOOK
        assert shown.failure_callback_url == FAILED_HOOK
        assert shown.max_lateness == Duration(seconds=120)
        assert shown.callback_of == "" and shown.schedule == ""


def test_the_mesh_s_links_are_shown_as_resource_names() -> None:
    world = World()
    spec = replace(world.submission_spec(), callback_of="p-1", schedule_id="s-1")
    state = Scheduled(spec=spec, version=1, attempts=(), due_at=NOW, attempt=1, handoff_at=None)
    shown = service_call_to_proto(state)
    assert shown.callback_of == f"tenants/{world.tenant_id}/service-calls/p-1"
    assert shown.schedule == f"tenants/{world.tenant_id}/schedules/s-1"
    plain = service_call_to_proto(replace(state, spec=world.submission_spec()))
    assert not plain.HasField("max_lateness")
    assert (plain.callback_url, plain.failure_callback_url) == ("", "")


async def test_a_replay_keeps_callbacks_and_max_lateness_but_not_the_mesh_s_links() -> None:
    world = World()
    submission = replace(
        world.submission(),
        callback_url=HOOK,
        failure_callback_url=FAILED_HOOK,
        max_lateness=timedelta(minutes=3),
        # As the mesh's own use cases would set them (a callback, an occurrence).
        callback_of="0b6f1c2e-4d5a-4e7b-9c1d-2f3a4b5c6d7e",
        schedule_id="nightly",
    )
    original: ServiceCallState = await world.finish(await world.submit(submission), 400)
    assert isinstance(original, Failed)
    outcome = await world.orchestrator.replay(
        Replay(world.tenant_id, original.spec.service_call_id, None, None), "test"
    )
    assert isinstance(outcome, Accepted)
    spec = outcome.state.spec
    assert (spec.callback_url, spec.failure_callback_url, spec.max_lateness) == (
        HOOK,
        FAILED_HOOK,
        timedelta(minutes=3),
    )
    assert spec.callback_of is None and spec.schedule_id is None
    assert spec.replay_of == original.spec.service_call_id
