"""BatchSubmitServiceCalls through Envoy, JSON and gRPC: one answer per item, each on its own."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from meshctl.layout import Layout
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.e2e.conftest import JsonClient, tenant_channel

NEVER = "http://127.0.0.1:9/never"  # due in an hour: nothing is sent during the test
OTHER = "http://127.0.0.1:9/other"
INVALID = "ftp://127.0.0.1:9/not-http"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def new_tenant() -> str:
    return f"batch-{uuid.uuid4().hex[:10]}"


def json_item(url: str = NEVER, key: str = "", body: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"request": {"url": url}, "tags": ["batch"]}
    if key:
        call["idempotencyKey"] = key
    if body:
        call["request"]["body"] = body  # bytes in proto3 JSON: base64
    return {"serviceCall": call, "delay": "3600s"}


def grpc_item(url: str = NEVER, key: str = "") -> svc.BatchSubmitServiceCallsRequest.Item:
    return svc.BatchSubmitServiceCallsRequest.Item(
        service_call=api.ServiceCall(
            request=api.HttpRequest(url=url), idempotency_key=key, tags=["batch"]
        ),
        delay=Duration(seconds=3600),
    )


def batch_path(tenant: str) -> str:
    return f"/v1/tenants/{tenant}/service-calls:batchSubmit"


def stored_ids(json_api: JsonClient, tenant: str) -> set[str]:
    listed = json_api.request("GET", f"/v1/tenants/{tenant}/service-calls?pageSize=1000")
    assert listed.status == 200, listed.body
    return {c["serviceCallId"] for c in listed.body["serviceCalls"]}


def test_json_batch_answers_each_item_and_stores_only_the_good_ones(
    json_api: JsonClient,
) -> None:
    tenant = new_tenant()
    response = json_api.request(
        "POST",
        batch_path(tenant),
        {
            "items": [
                json_item(key="a", body="aGVsbG8="),
                json_item(url=INVALID),
                json_item(key="a", body="aGVsbG8="),  # same key, same request
                json_item(key="a", url=OTHER),  # same key, different request
                json_item(),
            ]
        },
    )

    assert response.status == 200, response.body
    first, invalid, again, conflict, plain = response.body["results"]
    assert (first["created"], again["created"], plain["created"]) == (True, False, True)
    assert again["serviceCall"]["serviceCallId"] == first["serviceCall"]["serviceCallId"]
    assert first["serviceCall"]["idempotencyKey"] == "a"
    assert first["serviceCall"]["state"] == "SCHEDULED"
    # The BASIC view: no request body in the answer; GetServiceCall FULL has it.
    assert not first["serviceCall"]["request"].get("body")
    # A failed item carries a google.rpc.Status, readable as JSON like any API error.
    assert "serviceCall" not in invalid and invalid["created"] is False
    assert invalid["error"]["code"] == code_pb2.INVALID_ARGUMENT
    [detail] = invalid["error"]["details"]
    assert detail["@type"] == BAD_REQUEST
    assert [v["field"] for v in detail["fieldViolations"]] == ["items[1].service_call.request.url"]
    assert "items[1].service_call.request.url" in invalid["error"]["message"]
    assert conflict["error"]["code"] == code_pb2.ALREADY_EXISTS
    assert "different request" in conflict["error"]["message"]

    good = {first["serviceCall"]["serviceCallId"], plain["serviceCall"]["serviceCallId"]}
    assert stored_ids(json_api, tenant) == good
    full = json_api.request(
        "GET",
        f"/v1/tenants/{tenant}/service-calls/{first['serviceCall']['serviceCallId']}?view=FULL",
    )
    assert full.status == 200 and full.body["request"]["body"] == "aGVsbG8="
    assert full.body["request"]["url"] == NEVER  # the conflicting item changed nothing


async def test_grpc_batch_through_envoy_answers_each_item(
    running_mesh: Layout, key_ring: KeyRing, json_api: JsonClient
) -> None:
    tenant = new_tenant()
    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
        response = await stub.BatchSubmitServiceCalls(
            svc.BatchSubmitServiceCallsRequest(
                tenant_id=tenant,
                items=[
                    grpc_item(key="a"),
                    grpc_item(url=INVALID),
                    grpc_item(key="a"),
                    grpc_item(key="a", url=OTHER),
                    grpc_item(),
                ],
            )
        )
        first, invalid, again, conflict, plain = response.results
        assert [r.created for r in response.results] == [True, False, False, False, True]
        assert again.service_call.service_call_id == first.service_call.service_call_id
        assert invalid.error.code == code_pb2.INVALID_ARGUMENT
        bad = error_details_pb2.BadRequest()
        assert invalid.error.details[0].Unpack(bad)
        assert [v.field for v in bad.field_violations] == ["items[1].service_call.request.url"]
        assert conflict.error.code == code_pb2.ALREADY_EXISTS
        for result in (first, plain):
            got = await stub.GetServiceCall(
                svc.GetServiceCallRequest(
                    tenant_id=tenant, service_call_id=result.service_call.service_call_id
                )
            )
            assert got.state == api.ServiceCall.SCHEDULED
    assert stored_ids(json_api, tenant) == {
        first.service_call.service_call_id,
        plain.service_call.service_call_id,
    }


async def test_more_than_a_thousand_items_are_refused_whole(
    running_mesh: Layout, key_ring: KeyRing, json_api: JsonClient
) -> None:
    tenant = new_tenant()
    too_many = json_api.request(
        "POST", batch_path(tenant), {"items": [json_item() for _ in range(1001)]}
    )
    assert too_many.status == 400, too_many.body
    assert too_many.body["code"] == code_pb2.INVALID_ARGUMENT
    [detail] = too_many.body["details"]
    assert [v["field"] for v in detail["fieldViolations"]] == ["items"]
    empty = json_api.request("POST", batch_path(tenant), {"items": []})
    assert empty.status == 400 and empty.body["code"] == code_pb2.INVALID_ARGUMENT

    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.BatchSubmitServiceCalls(
                svc.BatchSubmitServiceCallsRequest(
                    tenant_id=tenant, items=[grpc_item() for _ in range(1001)]
                )
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad) and bad.field_violations[0].field == "items"
    assert stored_ids(json_api, tenant) == set()


def test_a_batch_for_another_tenant_is_not_found(json_api: JsonClient) -> None:
    owner, stranger = new_tenant(), new_tenant()
    json_api.key_ring.for_tenant(owner)
    response = json_api.request(
        "POST", batch_path(owner), {"items": [json_item()]}, as_tenant=stranger
    )
    assert response.status == 404
    assert stored_ids(json_api, owner) == set()
