"""The public API's rules through Envoy (JSON) and gRPC: auth, tenancy, idempotency, paging."""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest

from meshctl.layout import Layout
from meshctl.sink import Sink
from orchestrator.adapters.tenants import TenantAdmin
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.e2e.conftest import CallEvents, HttpResponse, JsonClient


def new_tenant() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


def later_call(url: str = "http://127.0.0.1:9/never", **extra: Any) -> dict[str, Any]:
    """A call due in an hour: it stays SCHEDULED for the whole test."""
    return {"serviceCall": {"request": {"url": url}, **extra}, "delay": "3600s"}


def submit(json_api: JsonClient, tenant: str, body: dict[str, Any], **kw: Any) -> HttpResponse:
    return json_api.request("POST", f"/v1/tenants/{tenant}/service-calls", body, **kw)


def violations(response: HttpResponse) -> dict[str, str]:
    assert response.status == 400, response.body
    [detail] = response.body["details"]
    return {v["field"]: v["description"] for v in detail["fieldViolations"]}


# -- authentication and tenancy ------------------------------------------------------------


def test_requests_without_a_valid_key_are_unauthenticated(json_api: JsonClient) -> None:
    tenant = new_tenant()
    path = f"/v1/tenants/{tenant}/service-calls"
    for headers in (
        {},
        {"authorization": "Bearer sck_0123456789abcdef_" + "A" * 43},
        {"authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = json_api.request("GET", path, headers=headers, anonymous=True)
        assert response.status == 401, (headers, response.body)
        assert response.body["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_grpc_without_a_key_is_unauthenticated(running_mesh: Layout) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_mesh.orchestrator_port}") as ch:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.ListServiceCalls(svc.ListServiceCallsRequest(tenant_id=new_tenant()))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_revoked_key_stops_working(json_api: JsonClient, running_mesh: Layout) -> None:
    tenant = new_tenant()
    admin = TenantAdmin(running_mesh.database_url)
    admin.create_tenant(tenant)
    key = admin.create_key(tenant)
    headers = {"authorization": f"Bearer {key.text}"}
    path = f"/v1/tenants/{tenant}/service-calls"
    assert json_api.request("GET", path, headers=headers).status == 200
    assert admin.revoke_key(key.key_id)
    # The test mesh runs with API_KEY_CACHE_S=0, so revocation applies at once.
    assert json_api.request("GET", path, headers=headers).status == 401


def test_another_tenants_calls_are_indistinguishable_from_missing_ones(
    json_api: JsonClient,
) -> None:
    owner, stranger = new_tenant(), new_tenant()
    created = submit(json_api, owner, later_call(tags=["secret-project"]))
    call_id = created.body["serviceCallId"]
    path = f"/v1/tenants/{owner}/service-calls/{call_id}"
    missing = f"/v1/tenants/{owner}/service-calls/{uuid.uuid4()}"

    as_stranger = json_api.request("GET", path, as_tenant=stranger)
    truly_missing = json_api.request("GET", missing, as_tenant=owner)
    assert as_stranger.status == truly_missing.status == 404
    assert as_stranger.body["message"].replace(call_id, "X") == truly_missing.body[
        "message"
    ].replace(missing.rsplit("/", 1)[1], "X")
    for method, suffix in (("POST", ":cancel"), ("POST", ":run"), ("POST", ":reschedule")):
        response = json_api.request(method, path + suffix, {"delay": "10s"}, as_tenant=stranger)
        assert response.status == 404, suffix
    assert (
        json_api.request("GET", f"/v1/tenants/{owner}/service-calls", as_tenant=stranger).status
        == 404
    )
    assert submit(json_api, owner, later_call(), as_tenant=stranger).status == 404
    # ... and the owner still sees its call, untouched; the stranger's list is empty.
    assert json_api.request("GET", path).body["state"] == "SCHEDULED"
    assert (
        json_api.request("GET", f"/v1/tenants/{stranger}/service-calls").body["serviceCalls"] == []
    )


# -- idempotency --------------------------------------------------------------------------


def test_same_key_same_request_returns_the_existing_call(json_api: JsonClient) -> None:
    tenant = new_tenant()
    body = later_call(idempotencyKey="order-1")
    first, again = submit(json_api, tenant, body), submit(json_api, tenant, body)
    assert (first.status, again.status) == (201, 200)
    assert first.body["serviceCallId"] == again.body["serviceCallId"]
    via_header = submit(json_api, tenant, later_call(), headers={"Idempotency-Key": "order-2"})
    assert via_header.status == 201 and via_header.body["idempotencyKey"] == "order-2"


def test_same_key_different_request_is_a_conflict_that_says_why(json_api: JsonClient) -> None:
    tenant = new_tenant()
    assert submit(json_api, tenant, later_call(idempotencyKey="k")).status == 201
    conflict = submit(
        json_api, tenant, later_call(url="http://127.0.0.1:9/other", idempotencyKey="k")
    )
    assert conflict.status == 409
    assert "different request" in conflict.body["message"]


def test_concurrent_submits_with_one_key_create_exactly_one_call(
    json_api: JsonClient, running_mesh: Layout
) -> None:
    tenant = new_tenant()
    body = later_call(idempotencyKey="race")
    json_api.key_ring.for_tenant(tenant)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: submit(json_api, tenant, body), range(32)))
    assert sorted({r.status for r in responses}) == [200, 201]
    assert [r.status for r in responses].count(201) == 1
    assert len({r.body["serviceCallId"] for r in responses}) == 1
    with psycopg.connect(running_mesh.database_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM orchestrator.service_calls WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert rows == (1,)


# -- due times and limits -----------------------------------------------------------------


async def test_a_due_time_in_the_past_runs_now(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    created = submit(
        json_api,
        new_tenant(),
        {
            "serviceCall": {
                "request": {"url": sink.url(f"/past/{uuid.uuid4().hex}")},
                "scheduleTime": past,
            }
        },
    )
    assert created.status == 201
    assert (await call_events.completed(created.body["serviceCallId"])).completed.state == 4


def test_limits_are_clear_errors_and_store_nothing(
    json_api: JsonClient, running_mesh: Layout
) -> None:
    tenant = new_tenant()
    too_far = (datetime.now(UTC) + timedelta(days=31)).isoformat().replace("+00:00", "Z")
    far = submit(
        json_api,
        tenant,
        {"serviceCall": {"request": {"url": "http://127.0.0.1:9/"}, "scheduleTime": too_far}},
    )
    assert "service_call.schedule_time" in violations(far)
    big = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    large = submit(
        json_api, tenant, {"serviceCall": {"request": {"url": "http://127.0.0.1:9/", "body": big}}}
    )
    assert large.status == 400, large.body
    both = submit(
        json_api,
        tenant,
        {
            "serviceCall": {"request": {"url": "http://127.0.0.1:9/"}, "scheduleTime": too_far},
            "delay": "1s",
        },
    )
    assert "delay" in violations(both)
    with psycopg.connect(running_mesh.database_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM orchestrator.service_calls WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert rows == (0,)


# -- reading ------------------------------------------------------------------------------


def test_basic_view_leaves_out_body_and_attempts(json_api: JsonClient) -> None:
    tenant = new_tenant()
    body = base64.b64encode(b"payload").decode()
    created = submit(json_api, tenant, later_call())
    created = submit(
        json_api,
        tenant,
        {
            "serviceCall": {"request": {"url": "http://127.0.0.1:9/", "body": body}},
            "delay": "3600s",
        },
    )
    path = f"/v1/tenants/{tenant}/service-calls/{created.body['serviceCallId']}"
    assert json_api.request("GET", path).body["request"]["body"] == ""
    assert json_api.request("GET", path + "?view=FULL").body["request"]["body"] == body


def test_list_filters_and_pages_with_tamper_evident_tokens(json_api: JsonClient) -> None:
    tenant = new_tenant()
    ids = [
        submit(json_api, tenant, later_call(tags=["batch", f"n{i % 2}"])).body["serviceCallId"]
        for i in range(5)
    ]
    base = f"/v1/tenants/{tenant}/service-calls"
    seen: list[str] = []
    token = ""
    while True:
        page = json_api.request("GET", f"{base}?pageSize=2&tags=batch&pageToken={token}")
        assert page.status == 200, page.body
        seen += [c["serviceCallId"] for c in page.body["serviceCalls"]]
        token = page.body["nextPageToken"]
        if not token:
            break
        last_token = token
    assert seen == ids  # creation order, each exactly once
    n0 = json_api.request("GET", f"{base}?tags=batch&tags=n0").body["serviceCalls"]
    assert [c["serviceCallId"] for c in n0] == ids[0::2]
    assert json_api.request("GET", f"{base}?states=CANCELED").body["serviceCalls"] == []

    tampered = last_token[:-2] + ("A" if last_token[-2] != "A" else "B") + last_token[-1]
    assert "page_token" in violations(
        json_api.request("GET", f"{base}?pageSize=2&tags=batch&pageToken={tampered}")
    )
    other_filter = json_api.request("GET", f"{base}?pageSize=2&tags=n1&pageToken={last_token}")
    assert "page_token" in violations(other_filter)
    assert "page_size" in violations(json_api.request("GET", f"{base}?pageSize=1001"))


# -- changing a call ----------------------------------------------------------------------


async def test_cancel_reschedule_and_run_now(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    tenant = new_tenant()
    base = f"/v1/tenants/{tenant}/service-calls"
    to_cancel = submit(json_api, tenant, later_call()).body
    canceled = json_api.request(
        "POST", f"{base}/{to_cancel['serviceCallId']}:cancel", {"reason": "no longer needed"}
    )
    assert canceled.status == 200 and canceled.body["state"] == "CANCELED"
    again = json_api.request("POST", f"{base}/{to_cancel['serviceCallId']}:cancel", {})
    assert (
        again.status == 400 and again.body["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    )

    path = f"/v1/tenants/{tenant}/service-calls"
    call = submit(json_api, tenant, later_call(url=sink.url(f"/run-now/{uuid.uuid4().hex}"))).body
    stale = json_api.request(
        "POST", f"{path}/{call['serviceCallId']}:reschedule", {"delay": "7200s", "etag": 'W/"999"'}
    )
    assert stale.status == 409, stale.body
    moved = json_api.request(
        "POST",
        f"{path}/{call['serviceCallId']}:reschedule",
        {"delay": "7200s", "etag": call["etag"]},
    )
    assert moved.status == 200 and moved.body["scheduleTime"] > call["scheduleTime"]
    ran = json_api.request("POST", f"{path}/{call['serviceCallId']}:run", {})
    assert ran.status == 200
    assert (await call_events.completed(call["serviceCallId"])).completed.state == 4
    late = json_api.request("POST", f"{path}/{call['serviceCallId']}:cancel", {})
    assert late.status == 400
