"""Completion callbacks and max_lateness through the whole mesh, JSON and gRPC through Envoy:
a failing call's failure callback reaches the sink signed (Standard Webhooks, the tenant's
secret) carrying the parent's outcome, and is itself a call that names its parent; a
succeeding call's callback says SUCCEEDED; a call the mesh comes to send too late (its
scheduler stopped past the call's max_lateness) fails with the reason, unsent, and its
callback says so."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import standardwebhooks
from google.protobuf.duration_pb2 import Duration

from meshctl import mesh, processes
from meshctl.layout import Layout
from meshctl.sink import Arrival, Sink
from orchestrator.domain.idempotency import service_call_id_for
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.e2e.conftest import CallEvents, JsonClient, tenant_channel
from tests.e2e.test_executor_paths import (
    _add_signing_keys,
    _new_signing_secret,
    fetch,
    submit,
    tenant,
)
from tests.fakes.executor.webhook_verifier import verify
from tests.waiting import eventually

# Two quick attempts, so a failing call ends within a second.
FEW_ATTEMPTS = {"maxAttempts": 2, "minBackoff": "0.2s", "maxBackoff": "0.2s", "jitter": 0}


def _name(t: str, call_id: str) -> str:
    return f"tenants/{t}/service-calls/{call_id}"


async def _arrival(sink: Sink, path: str, timeout: float = 60.0) -> Arrival:
    arrivals = await sink.wait_for(lambda seen: any(a.path == path for a in seen), timeout)
    [arrival] = [a for a in arrivals if a.path == path]
    return arrival


def _verified(arrival: Arrival, secret: str, callback_id: str) -> dict[str, Any]:
    """The callback's body, once its signature checks out with the tenant's secret (both by
    our verifier written from the spec and by the reference library)."""
    headers = dict(arrival.headers)
    assert arrival.method == "POST"
    assert arrival.header("content-type") == "application/json"
    assert arrival.header("webhook-id") == callback_id
    verify(secret, headers, arrival.body, now=arrival.arrived_at)
    standardwebhooks.Webhook(secret).verify(arrival.body, headers)
    # Tampering is caught: the signature covers the body.
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(arrival.body + b" ", headers)
    body: dict[str, Any] = json.loads(arrival.body)
    return body


async def test_a_failing_call_s_failure_callback_arrives_signed_json(
    json_api: JsonClient, sink: Sink, call_events: CallEvents, running_mesh: Layout
) -> None:
    t = tenant()
    secret = _new_signing_secret()
    _add_signing_keys(running_mesh, t, [secret])
    target = f"/target/{uuid.uuid4().hex}"
    hook = f"/hooks/failed/{uuid.uuid4().hex}"
    sink.failing.add(target)
    parent = submit(
        json_api,
        t,
        {"url": sink.url(target)},
        retryPolicy=FEW_ATTEMPTS,
        tags=["orders"],
        failureCallbackUrl=sink.url(hook),
    )
    shown = fetch(json_api, t, parent)
    assert shown["failureCallbackUrl"] == sink.url(hook)
    assert shown.get("callbackUrl", "") == ""

    arrival = await _arrival(sink, hook)

    callback_id = service_call_id_for(t, f"failure-callback:{parent}")
    body = _verified(arrival, secret, callback_id)
    assert body["service_call"] == _name(t, parent)
    assert body["state"] == "FAILED"
    assert body["attempt_count"] == 2
    assert body["response_status"] == 500
    assert body["tags"] == ["orders"]
    assert "no attempts left" in body["status_reason"]
    assert len(sink.matching(target)) == 2
    # The callback is a call of its own, linked to its parent, with its own attempts.
    await call_events.completed(callback_id, timeout=60)
    callback = fetch(json_api, t, callback_id)
    assert callback["callbackOf"] == _name(t, parent)
    assert callback["state"] == "SUCCEEDED"
    assert callback["request"]["url"] == sink.url(hook)
    assert [a["responseStatus"] for a in callback["attempts"]] == [200]
    assert callback["idempotencyKey"] == f"failure-callback:{parent}"
    # It has no callbacks of its own: nothing ever calls back about it.
    for kind in ("callback", "failure-callback"):
        missing = service_call_id_for(t, f"{kind}:{callback_id}")
        gone = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{missing}")
        assert gone.status == 404
    sink.failing.discard(target)


async def test_a_failing_call_s_failure_callback_arrives_signed_grpc(
    running_mesh: Layout, sink: Sink, call_events: CallEvents, key_ring: KeyRing
) -> None:
    t = tenant()
    secret = _new_signing_secret()
    _add_signing_keys(running_mesh, t, [secret])
    target = f"/target/{uuid.uuid4().hex}"
    hook = f"/hooks/failed/{uuid.uuid4().hex}"
    sink.failing.add(target)
    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
        parent = await stub.SubmitServiceCall(
            svc.SubmitServiceCallRequest(
                tenant_id=t,
                service_call=api.ServiceCall(
                    request=api.HttpRequest(url=sink.url(target)),
                    retry_policy=api.RetryPolicy(
                        max_attempts=2,
                        min_backoff=Duration(nanos=200_000_000),
                        max_backoff=Duration(nanos=200_000_000),
                        jitter=0,
                    ),
                    failure_callback_url=sink.url(hook),
                ),
            )
        )
        assert parent.failure_callback_url == sink.url(hook)

        arrival = await _arrival(sink, hook)

        callback_id = service_call_id_for(t, f"failure-callback:{parent.service_call_id}")
        body = _verified(arrival, secret, callback_id)
        assert (body["service_call"], body["state"]) == (parent.name, "FAILED")
        await call_events.completed(callback_id, timeout=60)
        callback = await stub.GetServiceCall(
            svc.GetServiceCallRequest(tenant_id=t, service_call_id=callback_id)
        )
        assert callback.callback_of == parent.name
        assert callback.state == api.ServiceCall.SUCCEEDED
    sink.failing.discard(target)


async def test_a_succeeding_call_s_callback_says_succeeded_and_no_failure_callback_is_made(
    json_api: JsonClient, sink: Sink, call_events: CallEvents, running_mesh: Layout
) -> None:
    t = tenant()
    secret = _new_signing_secret()
    _add_signing_keys(running_mesh, t, [secret])
    target = f"/target/{uuid.uuid4().hex}"
    hook = f"/hooks/done/{uuid.uuid4().hex}"
    failed_hook = f"/hooks/failed/{uuid.uuid4().hex}"
    parent = submit(
        json_api,
        t,
        {"url": sink.url(target)},
        callbackUrl=sink.url(hook),
        failureCallbackUrl=sink.url(failed_hook),
    )

    arrival = await _arrival(sink, hook)

    callback_id = service_call_id_for(t, f"callback:{parent}")
    body = _verified(arrival, secret, callback_id)
    assert body["service_call"] == _name(t, parent)
    assert body["state"] == "SUCCEEDED"
    assert (body["attempt_count"], body["response_status"], body["status_reason"]) == (1, 200, "")
    assert json.loads(body["response_snippet"])["path"] == target
    await call_events.completed(callback_id, timeout=60)
    assert fetch(json_api, t, callback_id)["callbackOf"] == _name(t, parent)
    # Both were looked at together (one summary): the failure callback is not made.
    failure_id = service_call_id_for(t, f"failure-callback:{parent}")
    gone = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{failure_id}")
    assert gone.status == 404
    assert sink.matching(failed_hook) == []


@pytest.fixture
def scheduler_stopped(running_mesh: Layout) -> Iterator[None]:
    """The test mesh's scheduler stopped (by its pid file, never by name); started again after
    the test whatever happened, so the other tests find a whole mesh."""
    pid_file = running_mesh.run_dir / "scheduler.pid"
    assert processes.stop(pid_file, str(running_mesh.run_dir)), "the scheduler was not running"
    try:
        yield
    finally:
        if processes.running_pid(pid_file, str(running_mesh.run_dir)) is None:
            mesh.start_services(running_mesh, only=("scheduler",))
            mesh.wait_healthy(running_mesh, only=("scheduler",))


async def test_a_call_that_cannot_be_sent_in_time_fails_with_the_reason(
    json_api: JsonClient,
    sink: Sink,
    call_events: CallEvents,
    running_mesh: Layout,
    scheduler_stopped: None,
) -> None:
    t = tenant()
    target = f"/target/{uuid.uuid4().hex}"
    hook = f"/hooks/done/{uuid.uuid4().hex}"
    # Due in 3 s (past the hand-off lead, so the scheduler's timer hands it off), at most 1 s
    # late: with the scheduler down, that timer cannot fire in time.
    created = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {
            "serviceCall": {
                "request": {"url": sink.url(target)},
                "maxLateness": "1s",
                "callbackUrl": sink.url(hook),
            },
            "delay": "3s",
        },
    )
    assert created.status == 201, created.body
    parent = created.body["serviceCallId"]
    assert created.body["maxLateness"] == "1s"
    due = datetime.fromisoformat(created.body["scheduleTime"]).timestamp()
    # No event says "the bound has passed": the clock is the condition.
    await eventually(lambda: time.time() > due + 2, timeout=30)
    assert fetch(json_api, t, parent)["state"] == "SCHEDULED"
    mesh.start_services(running_mesh, only=("scheduler",))
    mesh.wait_healthy(running_mesh, only=("scheduler",))

    done = await call_events.completed(parent, timeout=60)

    assert done.completed.state == api.ServiceCall.FAILED
    assert done.completed.attempt_count == 0
    failed = fetch(json_api, t, parent)
    assert failed["state"] == "FAILED"
    reason = failed["statusReason"]
    assert reason.startswith("not sent: ") and "past its due time" in reason
    assert reason.endswith("over max_lateness 1s")
    assert failed.get("attempts", []) == []
    assert sink.matching(target) == []  # never sent
    # Its completion callback tells the same story.
    body = json.loads((await _arrival(sink, hook)).body)
    assert (body["state"], body["status_reason"], body["attempt_count"]) == ("FAILED", reason, 0)
