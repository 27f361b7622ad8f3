"""User-defined success rules (#18) through the whole mesh, JSON through Envoy: a call that
counts 404 as success ends SUCCEEDED on a 404; a call whose retryable statuses are [429]
fails after one attempt on a 503 (no longer retried); a call retryable on [409] is retried
on 409s up to max_attempts; bad rules are refused with their field paths, nothing stored."""

from __future__ import annotations

import uuid
from typing import Any

from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from tests.e2e.conftest import CallEvents, JsonClient
from tests.e2e.test_executor_paths import fetch, submit, tenant

QUICK = {"maxAttempts": 3, "minBackoff": "0.1s", "maxBackoff": "0.1s", "jitter": 0}


def _target(sink: Sink, status: int) -> tuple[str, str]:
    """A path of its own that the sink answers with `status`, and its URL."""
    path = f"/status/{status}/{uuid.uuid4().hex}"
    return path, sink.url(path)


async def _ended(call_events: CallEvents, json_api: JsonClient, t: str, call_id: str) -> Any:
    await call_events.completed(call_id, timeout=60)
    return fetch(json_api, t, call_id)


def _attempts(call: dict[str, Any]) -> list[tuple[str, int]]:
    return [(a["outcome"], a.get("responseStatus", 0)) for a in call["attempts"]]


async def test_a_404_counted_as_success_ends_succeeded(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    path, url = _target(sink, 404)
    rules = {"successStatuses": [{"first": 404}]}
    call_id = submit(json_api, t, {"url": url}, retryPolicy=QUICK, responseRules=rules)

    call = await _ended(call_events, json_api, t, call_id)

    assert call["state"] == "SUCCEEDED"
    assert _attempts(call) == [("SUCCEEDED", 404)]
    assert len(sink.matching(path)) == 1
    # Shown as given, each range with its last status spelled out (Envoy prints the empty
    # retryable list too).
    shown = call["responseRules"]
    assert shown["successStatuses"] == [{"first": 404, "last": 404}]
    assert shown.get("retryableStatuses", []) == []


async def test_without_rules_the_same_404_fails(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    _path, url = _target(sink, 404)
    call_id = submit(json_api, t, {"url": url}, retryPolicy=QUICK)

    call = await _ended(call_events, json_api, t, call_id)

    assert call["state"] == "FAILED"
    assert _attempts(call) == [("FAILED", 404)]
    assert "responseRules" not in call


async def test_a_503_outside_the_retryable_statuses_fails_after_one_attempt(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    path, url = _target(sink, 503)
    rules = {"retryableStatuses": [{"first": 429}]}
    call_id = submit(json_api, t, {"url": url}, retryPolicy=QUICK, responseRules=rules)

    call = await _ended(call_events, json_api, t, call_id)

    assert call["state"] == "FAILED"
    assert _attempts(call) == [("FAILED", 503)]
    assert "not retryable" in call["statusReason"]
    assert len(sink.matching(path)) == 1


async def test_a_409_in_the_retryable_statuses_is_retried_up_to_max_attempts(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    path, url = _target(sink, 409)
    rules = {"retryableStatuses": [{"first": 409}, {"first": 500, "last": 599}]}
    call_id = submit(json_api, t, {"url": url}, retryPolicy=QUICK, responseRules=rules)

    call = await _ended(call_events, json_api, t, call_id)

    assert call["state"] == "FAILED"
    assert _attempts(call) == [("FAILED", 409)] * 3
    assert "no attempts left (max_attempts=3)" in call["statusReason"]
    assert len(sink.matching(path)) == 3
    completed = await call_events.completed(call_id)
    assert completed.completed.state == api.ServiceCall.FAILED
    assert completed.completed.attempt_count == 3


def test_bad_rules_are_refused_with_their_field_paths(json_api: JsonClient, sink: Sink) -> None:
    t = tenant()
    rules = {
        "successStatuses": [
            {"first": 200, "last": 299},
            {"first": 404},
            {"first": 500, "last": 450},
        ],
        "retryableStatuses": [{"first": 250}],
    }
    response = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {"serviceCall": {"request": {"url": sink.url("/never")}, "responseRules": rules}},
    )
    assert response.status == 400, response.body
    [detail] = response.body["details"]
    assert [v["field"] for v in detail["fieldViolations"]] == [
        "service_call.response_rules.success_statuses[2].last"
    ]
    listed = json_api.request("GET", f"/v1/tenants/{t}/service-calls")
    assert listed.status == 200 and listed.body.get("serviceCalls", []) == []
