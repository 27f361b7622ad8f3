"""Dead letters and replay through Envoy (JSON and gRPC): a call to a target that is down
ends FAILED, is listed with the FAILED filter (the tenant's dead letters), and once the
target works again its replay SUCCEEDS, linked to it, idempotent by key."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from meshctl.layout import Layout
from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.e2e.conftest import CallEvents, JsonClient, tenant_channel

# Two quick attempts, so the call fails within a second.
FEW_ATTEMPTS = {"maxAttempts": 2, "minBackoff": "0.2s", "jitter": 0}


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def test_a_dead_letter_is_listed_and_its_replay_succeeds_json(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    t = tenant()
    base = f"/v1/tenants/{t}/service-calls"
    path = f"/replay/{uuid.uuid4().hex}"
    sink.failing.add(path)
    created = json_api.request(
        "POST",
        base,
        {
            "serviceCall": {
                "request": {"url": sink.url(path), "body": "aGk="},
                "retryPolicy": FEW_ATTEMPTS,
                "tags": ["orders"],
            }
        },
    )
    assert created.status == 201, created.body
    original = created.body["serviceCallId"]
    done = await call_events.completed(original)
    assert done.completed.state == api.ServiceCall.FAILED
    assert done.completed.attempt_count == 2

    # The dead letters: the FAILED filter; a call still waiting is not among them.
    waiting = json_api.request(
        "POST",
        base,
        {"serviceCall": {"request": {"url": sink.url("/never")}}, "delay": "3600s"},
    ).body["serviceCallId"]
    dead = json_api.request("GET", f"{base}?states=FAILED").body["serviceCalls"]
    assert [c["serviceCallId"] for c in dead] == [original]
    assert dead[0]["statusReason"]

    # Not finished: refused, with a reason.
    refused = json_api.request("POST", f"{base}/{waiting}:replay", {})
    assert refused.status == 400, refused.body
    assert refused.body["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "can be replayed" in refused.body["message"]

    # Another tenant's key cannot replay it: 404, as GET answers.
    hidden = json_api.request("POST", f"{base}/{original}:replay", {}, as_tenant=tenant())
    assert hidden.status == 404

    sink.failing.discard(path)
    replayed = json_api.request(
        "POST", f"{base}/{original}:replay", {}, headers={"Idempotency-Key": "replay-1"}
    )
    assert replayed.status == 201, replayed.body
    replay = replayed.body
    assert replay["serviceCallId"] != original
    assert replay["replayOf"] == f"tenants/{t}/service-calls/{original}"
    assert replayed.headers["location"] == f"{base}/{replay['serviceCallId']}"
    assert replay["tags"] == ["orders"]
    assert replay["retryPolicy"]["maxAttempts"] == 2
    done = await call_events.completed(replay["serviceCallId"])
    assert done.completed.state == api.ServiceCall.SUCCEEDED
    fetched = json_api.request("GET", f"{base}/{replay['serviceCallId']}").body
    assert fetched["state"] == "SUCCEEDED"
    assert fetched["replayOf"] == replay["replayOf"]
    [arrival] = [
        a for a in sink.matching(path) if a.header("Idempotency-Key") == replay["serviceCallId"]
    ]
    assert arrival.body == b"hi"

    again = json_api.request(
        "POST", f"{base}/{original}:replay", {}, headers={"Idempotency-Key": "replay-1"}
    )
    assert again.status == 200, again.body
    assert again.body["serviceCallId"] == replay["serviceCallId"]
    # The original is still the dead letter it was; a replay in the listing shows its link.
    listed = json_api.request("GET", base).body["serviceCalls"]
    assert {c["serviceCallId"]: c.get("replayOf", "") for c in listed} == {
        original: "",
        waiting: "",
        replay["serviceCallId"]: replay["replayOf"],
    }


async def test_a_dead_letter_is_listed_and_its_replay_succeeds_grpc(
    running_mesh: Layout, sink: Sink, call_events: CallEvents, key_ring: KeyRing
) -> None:
    t = tenant()
    path = f"/replay/{uuid.uuid4().hex}"
    sink.failing.add(path)
    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
        original = await stub.SubmitServiceCall(
            svc.SubmitServiceCallRequest(
                tenant_id=t,
                service_call=api.ServiceCall(
                    request=api.HttpRequest(url=sink.url(path)),
                    retry_policy=api.RetryPolicy(
                        max_attempts=2, min_backoff=Duration(nanos=200_000_000), jitter=0
                    ),
                ),
            )
        )
        done = await call_events.completed(original.service_call_id)
        assert done.completed.state == api.ServiceCall.FAILED

        dead = await stub.ListServiceCalls(
            svc.ListServiceCallsRequest(tenant_id=t, states=[api.ServiceCall.FAILED])
        )
        assert [c.service_call_id for c in dead.service_calls] == [original.service_call_id]

        sink.failing.discard(path)
        request = svc.ReplayServiceCallRequest(
            tenant_id=t, service_call_id=original.service_call_id, idempotency_key="grpc-replay"
        )
        replay = await stub.ReplayServiceCall(request)
        assert replay.replay_of == original.name
        assert replay.service_call_id != original.service_call_id
        done = await call_events.completed(replay.service_call_id)
        assert done.completed.state == api.ServiceCall.SUCCEEDED
        fetched = await stub.GetServiceCall(
            svc.GetServiceCallRequest(tenant_id=t, service_call_id=replay.service_call_id)
        )
        assert fetched.state == api.ServiceCall.SUCCEEDED
        assert fetched.replay_of == original.name
        again = await stub.ReplayServiceCall(request)
        assert again.service_call_id == replay.service_call_id

        # A replay of a call not finished is refused.
        waiting = await stub.SubmitServiceCall(
            svc.SubmitServiceCallRequest(
                tenant_id=t,
                service_call=api.ServiceCall(request=api.HttpRequest(url=sink.url("/never"))),
                delay=Duration(seconds=3600),
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ReplayServiceCall(
                svc.ReplayServiceCallRequest(tenant_id=t, service_call_id=waiting.service_call_id)
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
