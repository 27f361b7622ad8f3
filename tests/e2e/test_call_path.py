"""A call travels end to end: JSON or gRPC in, HTTP at the target, the result in Postgres."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from meshctl.layout import Layout
from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.e2e.conftest import CallEvents, JsonClient, tenant_channel


def tenant() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


async def test_json_call_through_envoy_reaches_the_target_exactly_and_succeeds(
    json_api: JsonClient, sink: Sink, call_events: CallEvents, running_mesh: Layout
) -> None:
    t = tenant()
    path = f"/hooks/{uuid.uuid4().hex}"
    body = b'{"order": 42, "note": "caf\xc3\xa9"}'
    created = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {
            "serviceCall": {
                "request": {
                    "httpMethod": "PUT",
                    "url": sink.url(path) + "?a=1&b=two",
                    "headers": {"Content-Type": "application/json", "X-Custom": "v1"},
                    "body": base64.b64encode(body).decode(),
                },
                "tags": ["e2e", "json"],
            }
        },
    )
    assert created.status == 201, created.body
    call_id = created.body["serviceCallId"]
    assert created.headers["location"] == f"/v1/tenants/{t}/service-calls/{call_id}"

    completed = await call_events.completed(call_id)
    assert completed.completed.state == api.ServiceCall.SUCCEEDED

    [arrival] = sink.matching(path)
    assert arrival.method == "PUT"
    assert arrival.query == "a=1&b=two"
    assert arrival.body == body
    assert arrival.header("Content-Type") == "application/json"
    assert arrival.header("X-Custom") == "v1"
    assert arrival.header("Idempotency-Key") == call_id

    fetched = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{call_id}?view=FULL")
    assert fetched.status == 200
    assert fetched.body["state"] == "SUCCEEDED"
    [attempt] = fetched.body["attempts"]
    assert attempt["responseStatus"] == 200
    assert attempt["outcome"] == "SUCCEEDED"
    assert path in attempt["responseSnippet"]

    # The record lives in Postgres, not in a process: read it back with SQL.
    with psycopg.connect(running_mesh.database_url) as conn:
        row = conn.execute(
            "SELECT status, attempt FROM orchestrator.service_calls"
            " WHERE tenant_id = %s AND service_call_id = %s",
            (t, call_id),
        ).fetchone()
    assert row == ("SUCCEEDED", 1)


async def test_grpc_call_due_later_is_never_sent_early(
    grpc_api: svc_grpc.ServiceCallServiceAsyncStub, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    path = f"/later/{uuid.uuid4().hex}"
    due = datetime.now(UTC) + timedelta(seconds=3)
    schedule_time = Timestamp()
    schedule_time.FromDatetime(due)
    call = svc.SubmitServiceCallRequest(
        tenant_id=t,
        service_call=api.ServiceCall(
            request=api.HttpRequest(http_method=api.POST, url=sink.url(path), body=b"later"),
            schedule_time=schedule_time,
        ),
    )
    response = grpc_api.SubmitServiceCall(call)
    created = await response
    metadata = dict(await response.initial_metadata())
    assert metadata["location"] == f"/v1/tenants/{t}/service-calls/{created.service_call_id}"
    assert created.state == api.ServiceCall.SCHEDULED

    completed = await call_events.completed(created.service_call_id)
    assert completed.completed.state == api.ServiceCall.SUCCEEDED
    [arrival] = sink.matching(path)
    assert arrival.arrived_at >= due.timestamp(), "a request reached the target before its due time"

    fetched = await grpc_api.GetServiceCall(
        svc.GetServiceCallRequest(
            tenant_id=t, service_call_id=created.service_call_id, view=svc.FULL
        )
    )
    assert fetched.state == api.ServiceCall.SUCCEEDED
    assert fetched.attempts[0].start_time.ToDatetime(tzinfo=UTC) >= due


async def test_target_answering_500_ends_failed_when_no_retry_is_allowed(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    created = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {
            "serviceCall": {
                "request": {"url": sink.url(f"/status/500?{uuid.uuid4().hex}")},
                "retryPolicy": {"maxAttempts": 1},
            }
        },
    )
    assert created.status == 201, created.body
    call_id = created.body["serviceCallId"]
    completed = await call_events.completed(call_id)
    assert completed.completed.state == api.ServiceCall.FAILED
    fetched = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{call_id}?view=FULL")
    assert fetched.body["state"] == "FAILED"
    [attempt] = fetched.body["attempts"]
    assert attempt["responseStatus"] == 500
    assert attempt["outcome"] == "FAILED"


async def test_failed_attempt_is_retried_with_the_same_idempotency_key(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    marker = uuid.uuid4().hex
    created = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {
            "serviceCall": {
                "request": {"url": sink.url(f"/status/503?{marker}")},
                "retryPolicy": {"maxAttempts": 2, "minBackoff": "0.2s", "jitter": 0},
            }
        },
    )
    call_id = created.body["serviceCallId"]
    completed = await call_events.completed(call_id)
    assert completed.completed.state == api.ServiceCall.FAILED
    assert completed.completed.attempt_count == 2
    arrivals = [a for a in sink.arrivals if a.query == marker]
    assert len(arrivals) == 2
    assert {a.header("Idempotency-Key") for a in arrivals} == {call_id}
    assert [a.header("X-ServiceCall-Attempt") for a in arrivals] == ["1", "2"]


async def test_bad_input_is_a_400_with_field_violations_and_stores_nothing(
    json_api: JsonClient, running_mesh: Layout
) -> None:
    t = tenant()
    response = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {"serviceCall": {"request": {"url": "ftp://example.test/x", "headers": {"Bad Name": "v"}}}},
    )
    assert response.status == 400
    fields = {v["field"] for v in response.body["details"][0]["fieldViolations"]}
    assert "service_call.request.url" in fields
    with psycopg.connect(running_mesh.database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM orchestrator.service_calls WHERE tenant_id = %s", (t,)
        ).fetchone()
    assert count == (0,)


async def test_unknown_call_is_not_found_on_both_faces(
    json_api: JsonClient, grpc_api: svc_grpc.ServiceCallServiceAsyncStub
) -> None:
    missing = str(uuid.uuid4())
    assert json_api.request("GET", f"/v1/tenants/{tenant()}/service-calls/{missing}").status == 404
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await grpc_api.GetServiceCall(
            svc.GetServiceCallRequest(tenant_id=tenant(), service_call_id=missing)
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_internal_services_are_not_reachable_through_envoy(json_api: JsonClient) -> None:
    response = json_api.request("POST", "/servicecall.internal.v1.TimerService/ListTimers", {})
    assert response.status == 404
    started = time.monotonic()
    assert json_api.request("GET", "/v1/anything-else").status == 404
    assert time.monotonic() - started < 5


async def test_native_grpc_through_envoy_shares_the_public_listener(
    running_mesh: Layout, sink: Sink, key_ring: KeyRing
) -> None:
    # One listener serves JSON and gRPC; the JSON-only status rewrite must not touch gRPC.
    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
        call = stub.SubmitServiceCall(
            svc.SubmitServiceCallRequest(
                tenant_id=tenant(),
                service_call=api.ServiceCall(request=api.HttpRequest(url=sink.url("/via-envoy"))),
                delay=Duration(seconds=3600),
            )
        )
        created = await call
        assert created.state == api.ServiceCall.SCHEDULED
        location = dict(await call.initial_metadata())["location"]
        assert str(location).endswith(created.service_call_id)
