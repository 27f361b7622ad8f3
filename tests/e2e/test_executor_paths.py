"""The executor through the whole mesh: each answer a target can give ends in the right state
with the right attempts; requests are signed per tenant; secret headers reach the target and
nothing else in clear. Targets are a loopback sink; refused targets are loopback-like
addresses (0.0.0.0) that the policy blocks, so no test can send a packet off this machine."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web

from mesh.topics import Topics
from meshctl.layout import Layout
from meshctl.sink import Arrival, Sink
from meshctl.topic_reader import read_whole_topic
from servicecall.v1 import service_call_pb2 as api
from tests.e2e.conftest import CallEvents, JsonClient
from tests.fakes.executor.webhook_verifier import verify


class ScriptedSink(Sink):
    """meshctl's sink plus the answers only these tests need:

    /reset/<id> drops the connection without answering · /flaky/<n>/<id> answers 503 to the
    first n arrivals, then 200 · /slow-once/<ms>/<id> waits on its first arrival only ·
    /redirect-blocked/<id> answers 302 to an address the egress policy refuses.
    """

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        seen = len(self.matching(request.path))
        match parts:
            case ["reset", *_]:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=200)
            case ["flaky", failures, *_] if seen <= int(failures):
                return web.json_response({"try": seen}, status=503)
            case ["slow-once", ms, *_] if seen == 1:
                await asyncio.sleep(int(ms) / 1000)
            case ["redirect-blocked", *_]:
                raise web.HTTPFound("http://0.0.0.0:9/metadata")
        return await super()._answer(request)


@pytest.fixture(scope="module")
async def scripted_sink() -> AsyncIterator[ScriptedSink]:
    sink = ScriptedSink()
    await sink.start()
    yield sink
    await sink.stop()


def tenant() -> str:
    return f"e2e-x-{uuid.uuid4().hex[:10]}"


def submit(json_api: JsonClient, t: str, request: dict[str, Any], **call: Any) -> str:
    created = json_api.request(
        "POST", f"/v1/tenants/{t}/service-calls", {"serviceCall": {"request": request, **call}}
    )
    assert created.status == 201, created.body
    call_id: str = created.body["serviceCallId"]
    return call_id


def fetch(json_api: JsonClient, t: str, call_id: str) -> dict[str, Any]:
    fetched = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{call_id}?view=FULL")
    assert fetched.status == 200, fetched.body
    body: dict[str, Any] = fetched.body
    return body


@dataclass(frozen=True)
class Case:
    path: str
    policy: dict[str, Any]
    state: str
    # Per attempt: (outcome, responseStatus, error)
    attempts: list[tuple[str, int, str]]
    arrivals: int
    timeout: str | None = None
    check: Callable[[dict[str, Any], list[Arrival]], None] = field(default=lambda _c, _a: None)


def _retry_after_honoured(call: dict[str, Any], arrivals: list[Arrival]) -> None:
    assert call["attempts"][0]["retryAfter"] == "1s"
    # The target asked for 1 s; min_backoff was 0.1 s.
    assert arrivals[1].arrived_at - arrivals[0].arrived_at >= 1.0


def _snippet_bounded(call: dict[str, Any], _arrivals: list[Arrival]) -> None:
    assert len(call["attempts"][0]["responseSnippet"]) <= 1024


FAST = {"minBackoff": "0.1s", "maxBackoff": "0.2s", "jitter": 0}
CASES = {
    "200": Case("/ok", {"maxAttempts": 3}, "SUCCEEDED", [("SUCCEEDED", 200, "")], 1),
    "500 retried until attempts run out": Case(
        "/status/500",
        {"maxAttempts": 3, **FAST},
        "FAILED",
        [("FAILED", 500, "http_status")] * 3,
        3,
    ),
    "429 with Retry-After": Case(
        "/status/429/retry-after/1",
        {"maxAttempts": 2, **FAST, "maxBackoff": "5s"},
        "FAILED",
        [("FAILED", 429, "http_status")] * 2,
        2,
        check=_retry_after_honoured,
    ),
    "503 twice, then 200": Case(
        "/flaky/2",
        {"maxAttempts": 5, **FAST},
        "SUCCEEDED",
        [("FAILED", 503, "http_status"), ("FAILED", 503, "http_status"), ("SUCCEEDED", 200, "")],
        3,
    ),
    "slow target times out": Case(
        "/slow/3000",
        {"maxAttempts": 2, **FAST},
        "FAILED",
        [("FAILED", 0, "timeout")] * 2,
        2,
        timeout="0.3s",
    ),
    "connection reset": Case(
        "/reset",
        {"maxAttempts": 2, **FAST},
        "FAILED",
        [("FAILED", 0, "connection_error")] * 2,
        2,
    ),
    "oversized body is cut, status decides": Case(
        "/big/3000000",
        {"maxAttempts": 2},
        "SUCCEEDED",
        [("SUCCEEDED", 200, "")],
        1,
        check=_snippet_bounded,
    ),
    "redirect to a blocked address is not followed": Case(
        "/redirect-blocked",
        {"maxAttempts": 3, **FAST},
        "FAILED",
        [("FAILED", 302, "http_status")],
        1,
    ),
    "404 is not retried": Case(
        "/status/404", {"maxAttempts": 3, **FAST}, "FAILED", [("FAILED", 404, "http_status")], 1
    ),
    "409 retried when the call says so": Case(
        "/status/409",
        {"maxAttempts": 2, **FAST, "retryableStatusCodes": [409]},
        "FAILED",
        [("FAILED", 409, "http_status")] * 2,
        2,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_each_answer_ends_in_the_right_state_with_the_right_attempts(
    name: str, json_api: JsonClient, scripted_sink: ScriptedSink, call_events: CallEvents
) -> None:
    case = CASES[name]
    t = tenant()
    path = f"{case.path}/{uuid.uuid4().hex}"
    request: dict[str, Any] = {"url": scripted_sink.url(path), "body": "e30="}
    if case.timeout:
        request["attemptTimeout"] = case.timeout
    call_id = submit(json_api, t, request, retryPolicy=case.policy)

    completed = await call_events.completed(call_id, timeout=60)
    call = fetch(json_api, t, call_id)
    assert call["state"] == case.state
    assert completed.completed.state == api.ServiceCall.State.Value(case.state)
    got = [(a["outcome"], a.get("responseStatus", 0), a.get("error", "")) for a in call["attempts"]]
    assert got == case.attempts
    assert [a["attemptNumber"] for a in call["attempts"]] == list(range(1, len(got) + 1))
    arrivals = scripted_sink.matching(path)
    assert len(arrivals) == case.arrivals
    assert {a.header("Idempotency-Key") for a in arrivals} == {call_id}
    assert [a.header("X-ServiceCall-Attempt") for a in arrivals] == [
        str(i) for i in range(1, case.arrivals + 1)
    ]
    case.check(call, arrivals)


async def test_a_target_the_egress_policy_refuses_fails_at_once(
    json_api: JsonClient, call_events: CallEvents
) -> None:
    t = tenant()
    # 0.0.0.0 is "this host" to Linux, so even a broken policy would stay on this machine.
    call_id = submit(
        json_api, t, {"url": "http://0.0.0.0:9/latest/meta-data"}, retryPolicy={"maxAttempts": 3}
    )
    await call_events.completed(call_id, timeout=60)
    call = fetch(json_api, t, call_id)
    assert call["state"] == "FAILED"
    [attempt] = call["attempts"]
    assert (attempt["outcome"], attempt["error"]) == ("FAILED", "egress_denied")


def _new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _add_signing_keys(layout: Layout, tenant_id: str, secrets: list[str]) -> None:
    """Writes the tenant's secrets into the executor's keys file (replaced by rename, as an
    operator would), then waits out the executor's re-read interval."""
    path = layout.run_dir / "webhook-signing-keys.json"
    document = json.loads(path.read_text()) if path.exists() else {}
    document[tenant_id] = secrets
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.chmod(0o600)
    tmp.replace(path)
    time.sleep(1.2)


async def test_requests_are_signed_with_both_secrets_during_a_rotation(
    json_api: JsonClient,
    scripted_sink: ScriptedSink,
    call_events: CallEvents,
    running_mesh: Layout,
) -> None:
    t = tenant()
    new, old = _new_signing_secret(), _new_signing_secret()
    _add_signing_keys(running_mesh, t, [new, old])
    path = f"/flaky/1/{uuid.uuid4().hex}"
    body = b'{"event": "signed"}'
    call_id = submit(
        json_api,
        t,
        {"url": scripted_sink.url(path), "body": base64.b64encode(body).decode()},
        retryPolicy={"maxAttempts": 2, **FAST},
    )
    await call_events.completed(call_id, timeout=60)
    arrivals = scripted_sink.matching(path)
    assert len(arrivals) == 2
    for arrival in arrivals:
        headers = dict(arrival.headers)
        assert arrival.body == body
        # The id is the call's idempotency key: the same on the retry, as the spec asks.
        assert arrival.header("webhook-id") == call_id
        for secret in (new, old):
            verify(secret, headers, arrival.body, now=arrival.arrived_at)
            standardwebhooks.Webhook(secret).verify(arrival.body, headers)
    # Another tenant's calls are not signed.
    other = tenant()
    unsigned = f"/ok/{uuid.uuid4().hex}"
    await call_events.completed(submit(json_api, other, {"url": scripted_sink.url(unsigned)}))
    [plain] = scripted_sink.matching(unsigned)
    assert plain.header("webhook-signature") is None
    # The signing secrets live in the executor's file only.
    _assert_nowhere_in_clear(running_mesh, [new[6:], old[6:]])


async def test_secret_headers_reach_the_target_and_nothing_else_in_clear(
    json_api: JsonClient,
    scripted_sink: ScriptedSink,
    call_events: CallEvents,
    running_mesh: Layout,
) -> None:
    """Needs both halves: the orchestrator seals secret headers into sealed_headers, the
    executor opens them. Without sealing the Kafka check fails; without opening, the target
    check does."""
    t = tenant()
    token, api_key = f"tok-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    path = f"/ok/{uuid.uuid4().hex}"
    created = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {
            "serviceCall": {
                "request": {
                    "url": scripted_sink.url(path),
                    "headers": {"Authorization": f"Bearer {token}", "X-Api-Key": api_key},
                },
            }
        },
    )
    assert created.status == 201, created.body
    call_id = created.body["serviceCallId"]
    completed = await call_events.completed(call_id, timeout=60)
    assert completed.completed.state == api.ServiceCall.SUCCEEDED

    [arrival] = scripted_sink.matching(path)
    assert arrival.header("Authorization") == f"Bearer {token}"
    assert arrival.header("X-Api-Key") == api_key
    fetched = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{call_id}?view=FULL")
    listed = json_api.request("GET", f"/v1/tenants/{t}/service-calls")
    for response in (created, fetched, listed):
        assert token not in json.dumps(response.body)
        assert api_key not in json.dumps(response.body)
    _assert_nowhere_in_clear(running_mesh, [token, api_key])


def _assert_nowhere_in_clear(layout: Layout, secrets: list[str]) -> None:
    """No mesh topic's payload and no service log holds any of `secrets`."""
    for topic in Topics.with_prefix(layout.topic_prefix).all():
        for value in read_whole_topic(layout.kafka_bootstrap, topic):
            for secret in secrets:
                assert secret.encode() not in value, f"{topic} holds a secret"
    for log in (layout.run_dir / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{log.name} holds a secret"
