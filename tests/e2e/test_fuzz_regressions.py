"""Minimal reproducers of what the fuzzer (tests/e2e/test_fuzz.py) and its follow-up probes
found: each input must get a 4xx with a google.rpc.Status body (over gRPC: INVALID_ARGUMENT),
never a 5xx / UNKNOWN, and nothing that later breaks the orchestrator may be stored."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from meshctl.layout import Layout
from tests.conftest import KeyRing
from tests.e2e.conftest import HttpResponse, JsonClient

# Duration's JSON maximum is 315,576,000,000 s (~10,000 years): Envoy accepts it, and adding
# it to now() overflows Python's datetime (year 9999).
HUGE = "315576000000s"
SERVICE = "servicecall.v1.ServiceCallService"


def _tenant() -> str:
    return f"reg-{uuid.uuid4().hex[:10]}"


def _submit(json_api: JsonClient, tenant: str, body: dict[str, Any]) -> HttpResponse:
    return json_api.request("POST", f"/v1/tenants/{tenant}/service-calls", body)


def _later(tenant: str, json_api: JsonClient) -> str:
    body = {"serviceCall": {"request": {"url": "http://127.0.0.1:9/never"}}, "delay": "3600s"}
    response = _submit(json_api, tenant, body)
    assert response.status == 201, response.body
    return str(response.body["serviceCallId"])


def _assert_invalid(response: HttpResponse) -> None:
    assert response.status == 400, response.body
    assert response.body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0], response.body


def test_submit_with_a_delay_past_the_datetime_range(json_api: JsonClient) -> None:
    # Was 500 "OverflowError: date value out of range" (orchestrator/service.py, now + delay).
    body = {"serviceCall": {"request": {"url": "http://127.0.0.1:9/never"}}, "delay": HUGE}
    _assert_invalid(_submit(json_api, _tenant(), body))


def test_reschedule_with_a_delay_past_the_datetime_range(json_api: JsonClient) -> None:
    # Was 500 "OverflowError" (orchestrator/grpc_api.py, datetime.now(UTC) + delay).
    tenant = _tenant()
    call_id = _later(tenant, json_api)
    path = f"/v1/tenants/{tenant}/service-calls/{call_id}:reschedule"
    _assert_invalid(json_api.request("POST", path, {"delay": HUGE}))


def test_reschedule_with_a_non_ascii_digit_etag(json_api: JsonClient) -> None:
    # Was 500 "ValueError: invalid literal for int()": '²'.isdigit() is True, int('²') fails
    # (orchestrator/mapping.py, version_from_etag).
    tenant = _tenant()
    call_id = _later(tenant, json_api)
    path = f"/v1/tenants/{tenant}/service-calls/{call_id}:reschedule"
    _assert_invalid(json_api.request("POST", path, {"delay": "60s", "etag": "²"}))


def test_cancel_with_a_nul_in_the_reason(json_api: JsonClient) -> None:
    # Was 500 "psycopg UntranslatableCharacter": Postgres text cannot hold NUL.
    tenant = _tenant()
    call_id = _later(tenant, json_api)
    path = f"/v1/tenants/{tenant}/service-calls/{call_id}:cancel"
    _assert_invalid(json_api.request("POST", path, {"reason": "a\u0000b"}))
    state = json_api.request("GET", f"/v1/tenants/{tenant}/service-calls/{call_id}")
    assert state.body["state"] == "SCHEDULED"


def test_list_with_a_nul_in_a_tag_filter(json_api: JsonClient) -> None:
    # Was 500 "psycopg DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes".
    tenant = _tenant()
    _assert_invalid(json_api.request("GET", f"/v1/tenants/{tenant}/service-calls?tags=a%00b"))


def test_a_retry_backoff_past_the_datetime_range_is_refused(json_api: JsonClient) -> None:
    # Was 201: stored, and when the first attempt failed, orchestrator/domain/retry.py
    # (retry_at = now + delay) raised OverflowError in the execution-events consumer, which
    # then retried that message for ever and stalled its Kafka partition for every tenant.
    # Due in an hour here, so this test cannot jam the test mesh even while the bug stands.
    body = {
        "serviceCall": {
            "request": {"url": "http://127.0.0.1:9/never"},
            "retryPolicy": {"minBackoff": HUGE, "maxBackoff": HUGE},
        },
        "delay": "3600s",
    }
    _assert_invalid(_submit(json_api, _tenant(), body))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\n\x01\xff", id="invalid-utf8-in-tenant_id"),
        pytest.param(b"\n\x0bfuzz-te", id="truncated"),
    ],
)
async def test_grpc_request_that_does_not_parse_is_invalid_argument(
    payload: bytes, running_mesh: Layout, key_ring: KeyRing
) -> None:
    # Was UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>" on every method:
    # grpc.aio turns a request deserializer's exception into UNKNOWN.
    metadata = (("authorization", f"Bearer {key_ring.for_tenant(_tenant())}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_mesh.orchestrator_port}") as ch:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
            f"/{SERVICE}/ListServiceCalls", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(payload, metadata=metadata, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()


def test_a_schedule_time_far_in_the_past_runs_now(json_api: JsonClient) -> None:
    # Was 500 "OverflowError: date value out of range" (found by `make fuzz`): year 1 minus
    # the hand-off lead is no datetime. A due time in the past means now.
    body = {
        "serviceCall": {
            "request": {"url": "http://127.0.0.1:9/never"},
            "scheduleTime": "0001-01-01T00:00:00Z",
            "retryPolicy": {"maxAttempts": 1},
        }
    }
    response = _submit(json_api, _tenant(), body)
    assert response.status == 201, response.body
    assert response.body["scheduleTime"] > "2026-"
