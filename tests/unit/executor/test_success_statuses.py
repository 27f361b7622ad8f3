"""A call's own success statuses (ResponseRules.success_statuses, sent as
ExecutionRequested.success_statuses): read from the request (`last` 0 is `first` alone), and
a response counts as success exactly when its status is in them; without them, 200-299.
A 3xx counted as success is a success, and still not followed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from executor.domain.outcome import AttemptError, Failed, Succeeded, classify_response, is_success
from executor.mapping import order_from_envelope
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api
from tests.fakes.executor.world import PORT, World, received, request_envelope

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
RULES = ((200, 204), (302, 302), (404, 404), (410, 419))


def _with_rules(*ranges: tuple[int, int], url: str | None = None) -> pb.Envelope:
    envelope = request_envelope(url=url) if url else request_envelope()
    envelope.execution_requested.success_statuses.extend(
        api.StatusRange(first=first, last=last) for first, last in ranges
    )
    return envelope


def test_the_ranges_are_read_from_the_request_with_last_0_as_first_alone() -> None:
    order = order_from_envelope(_with_rules((200, 204), (404, 0)), 16)
    assert order is not None and order.success_statuses == ((200, 204), (404, 404))
    plain = order_from_envelope(request_envelope(), 16)
    assert plain is not None and plain.success_statuses == ()


@pytest.mark.parametrize(
    ("status", "success"),
    [
        (199, False),
        (200, True),
        (204, True),
        (205, False),  # just past a range's end
        (299, False),  # 2xx, but the call named its own success statuses
        (301, False),
        (302, True),  # a 3xx the call counts as success
        (303, False),
        (403, False),
        (404, True),
        (405, False),
        (409, False),
        (410, True),  # both ends of a range
        (419, True),
        (420, False),
        (500, False),
    ],
)
def test_a_status_succeeds_exactly_when_it_is_in_the_call_s_ranges(
    status: int, success: bool
) -> None:
    outcome = classify_response(status, None, NOW, RULES)
    assert isinstance(outcome, Succeeded) is success
    assert is_success(status, RULES) is success
    if not success:
        assert isinstance(outcome, Failed) and outcome.error is AttemptError.HTTP_STATUS


@pytest.mark.parametrize(
    ("status", "success"), [(199, False), (200, True), (299, True), (300, False)]
)
def test_without_ranges_the_default_is_200_to_299(status: int, success: bool) -> None:
    assert isinstance(classify_response(status, None, NOW), Succeeded) is success
    assert isinstance(classify_response(status, None, NOW, ()), Succeeded) is success


def test_a_failing_status_keeps_the_default_s_retryable_hint_and_retry_after() -> None:
    # Which failures are retried under the call's retryable_statuses is the orchestrator's
    # to decide; the executor reports what it always did.
    outcome = classify_response(503, "7", NOW, ((404, 404),))
    assert outcome == Failed(503, AttemptError.HTTP_STATUS, True, timedelta(seconds=7))
    assert classify_response(200, None, NOW, ((404, 404),)) == Failed(
        200, AttemptError.HTTP_STATUS, False, None
    )


async def test_a_404_counted_as_success_is_reported_succeeded() -> None:
    world = World()
    url = f"http://target.example:{PORT}/status/404"
    await world.handler(received(_with_rules((404, 404), url=url)))
    [result] = world.results()
    assert result.WhichOneof("payload") == "execution_succeeded"
    assert result.execution_succeeded.result.response_status == 404


async def test_a_302_counted_as_success_is_not_followed() -> None:
    world = World()
    url = f"http://target.example:{PORT}/status/302"
    await world.handler(received(_with_rules((302, 302), url=url)))
    [result] = world.results()
    assert result.WhichOneof("payload") == "execution_succeeded"
    assert result.execution_succeeded.result.response_status == 302
    assert len(world.http.requests) == 1


async def test_without_ranges_a_404_still_fails() -> None:
    world = World()
    await world.handler(received(request_envelope(url=f"http://target.example:{PORT}/status/404")))
    [result] = world.results()
    assert result.WhichOneof("payload") == "execution_failed"
    assert result.execution_failed.retryable is False
