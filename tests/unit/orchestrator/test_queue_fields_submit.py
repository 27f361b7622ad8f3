"""#18's fields of a submitted call (queue, ordering_key) from the API to the stored spec and
back (with held_reason), their place in the fingerprint, and what a keyed resubmit makes of
them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from orchestrator.domain.errors import IdempotencyConflict
from orchestrator.domain.idempotency import fingerprint
from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest
from orchestrator.mapping import service_call_to_proto, submission_from_proto
from orchestrator.ports import Accepted, Submission
from servicecall.v1 import service_call_pb2 as api
from tests.builders import FINGERPRINT_KEY
from tests.stored_state_cases import QUEUE_FIELD_CASES
from tests.unit.orchestrator.test_replay import World


def _proto(**fields: object) -> api.ServiceCall:
    return api.ServiceCall(request=api.HttpRequest(url="https://example.test/"), **fields)  # type: ignore[arg-type]


def test_the_api_s_fields_reach_the_submission_and_default_is_no_queue() -> None:
    given = submission_from_proto("acme", _proto(queue="emails", ordering_key="k"), None, None)
    assert isinstance(given, Submission)
    assert (given.queue_id, given.ordering_key) == ("emails", "k")
    for unset in (_proto(), _proto(queue="default")):
        plain = submission_from_proto("acme", unset, None, None)
        assert isinstance(plain, Submission)
        assert (plain.queue_id, plain.ordering_key) == (None, None)


def test_the_fields_are_shown_with_default_for_no_queue() -> None:
    held = service_call_to_proto(QUEUE_FIELD_CASES["held_with_key_scheduled"])
    assert held.queue == "emails-eu" and held.ordering_key == "customer/42 ünï"
    assert held.held_reason == 'held by paused queue "emails-eu"'
    only_key = service_call_to_proto(QUEUE_FIELD_CASES["key_only_dispatched"])
    assert only_key.queue == "default" and only_key.held_reason == ""


def test_the_fields_are_in_the_fingerprint_only_when_set() -> None:
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
    assert plain == of(queue_id=None, ordering_key=None)
    variants = [of(queue_id="q"), of(ordering_key="q"), of(queue_id="q", ordering_key="k")]
    assert len({plain, *variants}) == len(variants) + 1


async def test_a_keyed_resubmit_with_another_ordering_key_is_a_conflict() -> None:
    world = World()
    first = replace(world.submission(key="k1"), ordering_key="a")
    created = await world.orchestrator.submit(first, "test")
    assert isinstance(created, Accepted) and created.created
    assert created.state.spec.ordering_key == "a"
    again = await world.orchestrator.submit(first, "test")
    assert isinstance(again, Accepted) and not again.created
    for changed in (replace(first, ordering_key="b"), replace(first, ordering_key=None)):
        assert isinstance(await world.orchestrator.submit(changed, "test"), IdempotencyConflict)
