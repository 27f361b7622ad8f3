"""Fuzzing the public API: schemathesis through Envoy, malformed protobuf straight at gRPC.

Whatever arrives, the API answers with a 2xx or a 4xx whose JSON body is a google.rpc.Status
(never a 5xx; over gRPC never INTERNAL or UNKNOWN), and nothing it did not accept is stored.
Findings are collected rather than raised at the first one, so one run reports every distinct
bug (failed cases print as curl commands). FUZZ_EXAMPLES (default 300) is the number of
generated requests per face, spread over the operations; `make fuzz` runs 3000.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
import requests
import schemathesis
from google.protobuf import empty_pb2
from google.protobuf import message as pb_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.specs.openapi import checks as openapi_checks
from schemathesis.specs.openapi.schemas import OpenApiSchema

from meshctl.layout import Layout
from servicecall.v1 import queue_pb2 as queue_api
from servicecall.v1 import queue_service_pb2 as queue_svc
from servicecall.v1 import schedule_pb2 as schedule_api
from servicecall.v1 import schedule_service_pb2 as schedule_svc
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from tests.conftest import KeyRing

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
# Fixed for the session, new per session: the database may hold earlier sessions' rows.
TENANT = f"fuzz-{uuid.uuid4().hex[:12]}"
# A loopback port where nothing listens: a fuzzed call that is accepted and falls due fails
# at once, and no fuzzed URL ever leaves the machine.
SAFE_TARGET = "127.0.0.1:9"
SERVICE = "servicecall.v1.ServiceCallService"
# Calls made before fuzzing, so that Get/Cancel/Reschedule/Run reach real rows, not only 404s.
SEEDED_CALLS = 4
# Schedules are fuzzed under a tenant of their own: the calls an accepted schedule makes are
# not calls the API was asked for, and would otherwise blur the check that only accepted
# calls are stored.
SCHEDULE_TENANT = f"fuzz-s-{uuid.uuid4().hex[:12]}"
SCHEDULE_SERVICE = "servicecall.v1.ScheduleService"
SEEDED_SCHEDULES = 2
# Queues likewise: pausing or purging a queue must not touch the fuzzed calls' tenant.
QUEUE_TENANT = f"fuzz-q-{uuid.uuid4().hex[:12]}"
QUEUE_SERVICE = "servicecall.v1.QueueService"
SEEDED_QUEUES = ("seed-a", "seed-b")

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Findings:
    """What one fuzz run saw: volume by status, and distinct failures with a reproducer."""

    statuses: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)
    created_ids: set[str] = field(default_factory=set)
    created_schedule_ids: set[str] = field(default_factory=set)
    created_queue_ids: set[str] = field(default_factory=set)

    def fail(self, signature: str, reproducer: str) -> None:
        self.failures.setdefault(signature, reproducer)

    def report(self) -> str:
        lines = [f"{len(self.failures)} distinct failure(s):"]
        lines += [f"- {sig}\n    {repro}" for sig, repro in sorted(self.failures.items())]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_key(key_ring: KeyRing) -> str:
    return key_ring.for_tenant(TENANT)


@pytest.fixture(scope="module")
def schedule_key(key_ring: KeyRing) -> str:
    return key_ring.for_tenant(SCHEDULE_TENANT)


@pytest.fixture(scope="module")
def seeded_schedule_ids(running_mesh: Layout, schedule_key: str) -> Iterator[list[str]]:
    """Schedules made before fuzzing (hourly, so they make nothing during the run); at the
    end every schedule of the tenant is deleted, so that none goes on making calls for the
    rest of the session."""
    base = f"{running_mesh.public_url}/v1/tenants/{SCHEDULE_TENANT}/schedules"
    auth = {"authorization": f"Bearer {schedule_key}"}
    ids = []
    for _ in range(SEEDED_SCHEDULES):
        response = requests.post(
            base,
            json={
                "cron": "@every 1h",
                "callTemplate": {"request": {"url": f"http://{SAFE_TARGET}/"}},
            },
            headers=auth,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["scheduleId"])
    yield ids
    with requests.Session() as session:
        for schedule_id in _stored_schedule_ids(running_mesh.database_url):
            session.delete(f"{base}/{schedule_id}", headers=auth, timeout=30)


@pytest.fixture(scope="module")
def queue_key(key_ring: KeyRing) -> str:
    return key_ring.for_tenant(QUEUE_TENANT)


@pytest.fixture(scope="module")
def seeded_queue_ids(running_mesh: Layout, queue_key: str) -> list[str]:
    """Queues made before fuzzing, so that Get/Update/Pause/Resume/Purge/Delete reach rows."""
    base = f"{running_mesh.public_url}/v1/tenants/{QUEUE_TENANT}/queues"
    for queue_id in SEEDED_QUEUES:
        response = requests.post(
            base,
            json={"queueId": queue_id, "maxDispatchesPerSecond": 10},
            headers={"authorization": f"Bearer {queue_key}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
    return [*SEEDED_QUEUES, "default"]


@pytest.fixture(scope="module")
def api_schema(running_mesh: Layout) -> OpenApiSchema:
    # The document as Envoy serves it, so the fuzzer tests what clients are told.
    return schemathesis.openapi.from_url(f"{running_mesh.public_url}/openapi.json")


@pytest.fixture(scope="module")
def seeded_ids(running_mesh: Layout, fuzz_key: str) -> list[str]:
    ids = []
    for _ in range(SEEDED_CALLS):
        response = requests.post(
            f"{running_mesh.public_url}/v1/tenants/{TENANT}/service-calls",
            json={"serviceCall": {"request": {"url": f"http://{SAFE_TARGET}/"}}, "delay": "3600s"},
            headers={"authorization": f"Bearer {fuzz_key}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["serviceCallId"])
    # The last one is finished (canceled), so that replays get past FAILED_PRECONDITION.
    response = requests.post(
        f"{running_mesh.public_url}/v1/tenants/{TENANT}/service-calls/{ids[-1]}:cancel",
        json={},
        headers={"authorization": f"Bearer {fuzz_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return ids


def _stored_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT service_call_id::text FROM orchestrator.service_calls WHERE tenant_id = %s",
            (TENANT,),
        ).fetchall()
    return {row[0] for row in rows}


def _stored_schedule_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT schedule_id FROM orchestrator.schedules WHERE tenant_id = %s",
            (SCHEDULE_TENANT,),
        ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture(scope="module")
def findings(
    running_mesh: Layout, seeded_ids: list[str], seeded_schedule_ids: list[str]
) -> Iterator[Findings]:
    found = Findings(created_ids=set(seeded_ids), created_schedule_ids=set(seeded_schedule_ids))
    yield found
    volume = ", ".join(f"{k}: {v}" for k, v in sorted(found.statuses.items()))
    print(f"\nfuzz volume by outcome ({sum(found.statuses.values())} requests): {volume}")


# -- keeping fuzzed calls on the machine ----------------------------------------------------------


def _safe_url(url: Any) -> Any:
    """A URL the orchestrator might accept, pointed at SAFE_TARGET: path and query stay
    fuzzed, the host never does. Anything that is not a string is left to be rejected."""
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        rest = url[url.index(parts.netloc) + len(parts.netloc) :] if parts.netloc else ""
    except ValueError:
        return url
    safe = f"{scheme}://{SAFE_TARGET}{rest}"
    try:
        host = urlsplit(safe).hostname
    except ValueError:
        host = None
    return safe if host == SAFE_TARGET.split(":", maxsplit=1)[0] else f"http://{SAFE_TARGET}/"


# The URLs a call carries: where its request goes, and where its callbacks go.
CALLBACK_URL_FIELDS = ("callbackUrl", "callback_url", "failureCallbackUrl", "failure_callback_url")


def _keep_call_on_loopback(call: Any) -> None:
    if not isinstance(call, dict):
        return
    request = call.get("request")
    if isinstance(request, dict) and "url" in request:
        request["url"] = _safe_url(request["url"])
    for name in CALLBACK_URL_FIELDS:
        if name in call:
            call[name] = _safe_url(call[name])


def keep_on_loopback(case: Case[Any]) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    items = body.get("items")
    # A batch's items are submits of their own: each one's URLs are kept on loopback too.
    for submit in [body, *(items if isinstance(items, list) else [])]:
        if not isinstance(submit, dict):
            continue
        for call_key in ("serviceCall", "service_call"):
            _keep_call_on_loopback(submit.get(call_key))
    # A schedule (its body is the Schedule itself) makes calls from its template.
    for template_key in ("callTemplate", "call_template"):
        _keep_call_on_loopback(body.get(template_key))


# -- checks ----------------------------------------------------------------------------------------

SCHEMA_CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


def _reproducer(case: Case[Any], headers: dict[str, str], base_url: str) -> str:
    return case.as_curl_command(headers=headers).replace(case.operation.base_url or "", base_url)


def check_http(
    case: Case[Any],
    response: Response,
    headers: dict[str, str],
    base_url: str,
    found: Findings,
) -> None:
    label = f"{case.method} {case.operation.path}"
    found.statuses[f"HTTP {response.status_code}"] += 1
    repro = _reproducer(case, headers, base_url)
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if response.status_code >= 500:
        message = body.get("message", "") if isinstance(body, dict) else response.text[:120]
        found.fail(f"{label}: {response.status_code} {message[:80]}", repro)
        return
    if response.status_code >= 400:
        ok = (
            response.headers.get("content-type", [""])[0].startswith("application/json")
            and isinstance(body, dict)
            and isinstance(body.get("code"), int)
            and isinstance(body.get("message"), str)
        )
        if not ok:
            found.fail(f"{label}: {response.status_code} without a JSON Status body", repro)
        return
    if response.status_code == 201 and isinstance(body, dict):
        if "scheduleId" in body:
            found.created_schedule_ids.add(str(body["scheduleId"]))
        elif "queueId" in body:
            found.created_queue_ids.add(str(body["queueId"]))
        else:
            found.created_ids.add(str(body.get("serviceCallId")))
    if isinstance(body, dict) and isinstance(body.get("results"), list):  # a batch's answers
        for result in body["results"]:
            if isinstance(result, dict) and isinstance(result.get("serviceCall"), dict):
                found.created_ids.add(str(result["serviceCall"].get("serviceCallId")))
    try:
        case.validate_response(response, checks=SCHEMA_CHECKS, headers=headers)
    except AssertionError as error:  # schemathesis raises a FailureGroup (an AssertionError)
        found.fail(f"{label}: {response.status_code} not as documented: {str(error)[:160]}", repro)


# -- HTTP through Envoy ----------------------------------------------------------------------------

OPERATIONS = [
    ("POST", "/v1/tenants/{tenantId}/service-calls"),
    ("POST", "/v1/tenants/{tenantId}/service-calls:batchSubmit"),
    ("GET", "/v1/tenants/{tenantId}/service-calls"),
    ("GET", "/v1/tenants/{tenantId}/service-calls/{serviceCallId}"),
    ("POST", "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:cancel"),
    ("POST", "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:reschedule"),
    ("POST", "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:run"),
    ("POST", "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:replay"),
    ("POST", "/v1/tenants/{tenantId}/schedules"),
    ("GET", "/v1/tenants/{tenantId}/schedules"),
    ("GET", "/v1/tenants/{tenantId}/schedules/{scheduleId}"),
    ("PATCH", "/v1/tenants/{tenantId}/schedules/{scheduleId}"),
    ("POST", "/v1/tenants/{tenantId}/schedules/{scheduleId}:pause"),
    ("POST", "/v1/tenants/{tenantId}/schedules/{scheduleId}:resume"),
    ("DELETE", "/v1/tenants/{tenantId}/schedules/{scheduleId}"),
    ("POST", "/v1/tenants/{tenantId}/queues"),
    ("GET", "/v1/tenants/{tenantId}/queues"),
    ("GET", "/v1/tenants/{tenantId}/queues/{queueId}"),
    ("PATCH", "/v1/tenants/{tenantId}/queues/{queueId}"),
    ("POST", "/v1/tenants/{tenantId}/queues/{queueId}:pause"),
    ("POST", "/v1/tenants/{tenantId}/queues/{queueId}:resume"),
    ("POST", "/v1/tenants/{tenantId}/queues/{queueId}:purge"),
    ("DELETE", "/v1/tenants/{tenantId}/queues/{queueId}"),
]
# The id a path names: fixed to a seeded row most of the time, so cases reach real rows.
ID_PARAMETERS = ("serviceCallId", "scheduleId", "queueId")


def _case_strategies(
    schema: OpenApiSchema, method: str, path: str, tenant: str, key: str, seeded: list[str]
) -> st.SearchStrategy[tuple[Case[Any], dict[str, str]]]:
    operation = schema[path][method]
    auth = {"Authorization": f"Bearer {key}"}
    id_parameter = next((p for p in ID_PARAMETERS if "{" + p + "}" in path), None)
    ids: list[str | None] = [*seeded, None] if id_parameter else [None]

    def own(mode: GenerationMode, row_id: str | None) -> st.SearchStrategy[Case[Any]]:
        fixed = {"tenantId": tenant} | ({id_parameter: row_id} if id_parameter and row_id else {})
        return operation.as_strategy(mode, path_parameters=fixed)

    def with_headers(
        strategy: st.SearchStrategy[Case[Any]], headers: dict[str, str]
    ) -> st.SearchStrategy[tuple[Case[Any], dict[str, str]]]:
        return strategy.map(lambda case: (case, headers))

    as_the_fuzz_tenant = [
        with_headers(own(mode, call_id), auth)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for call_id in ids
    ]
    return st.one_of(
        st.one_of(*as_the_fuzz_tenant),
        st.one_of(*as_the_fuzz_tenant),  # weighted: most cases get past auth
        # Any tenant in the path with the fuzz tenant's key: must look missing, never break.
        with_headers(operation.as_strategy(GenerationMode.POSITIVE), auth),
        # No key, and the fuzzer's own idea of an Authorization header.
        with_headers(operation.as_strategy(GenerationMode.NEGATIVE), {}),
        with_headers(own(GenerationMode.POSITIVE, ids[0]), {}),
    )


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_http_fuzz(
    method: str,
    path: str,
    api_schema: OpenApiSchema,
    running_mesh: Layout,
    fuzz_key: str,
    seeded_ids: list[str],
    schedule_key: str,
    seeded_schedule_ids: list[str],
    queue_key: str,
    seeded_queue_ids: list[str],
    findings: Findings,
) -> None:
    base_url = running_mesh.public_url
    if "/schedules" in path:
        strategy = _case_strategies(
            api_schema, method, path, SCHEDULE_TENANT, schedule_key, seeded_schedule_ids
        )
    elif "/queues" in path:
        strategy = _case_strategies(
            api_schema, method, path, QUEUE_TENANT, queue_key, seeded_queue_ids
        )
    else:
        strategy = _case_strategies(api_schema, method, path, TENANT, fuzz_key, seeded_ids)
    session = requests.Session()
    before = len(findings.failures)

    @settings(FUZZ_SETTINGS, max_examples=max(10, EXAMPLES // len(OPERATIONS)))
    @given(drawn=strategy)
    def run(drawn: tuple[Case[Any], dict[str, str]]) -> None:
        case, headers = drawn
        keep_on_loopback(case)
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        except requests.RequestException as error:
            findings.fail(f"{method} {path}: transport error {type(error).__name__}", str(error))
            return
        check_http(case, response, headers, base_url, findings)

    run()
    new = {k: v for k, v in findings.failures.items() if k.startswith(f"{method} {path}:")}
    assert len(findings.failures) == before, Findings(failures=new).report()


# -- malformed protobuf straight at the orchestrator ---------------------------------------------

REQUESTS: dict[str, type[pb_message.Message]] = {
    "SubmitServiceCall": svc.SubmitServiceCallRequest,
    "BatchSubmitServiceCalls": svc.BatchSubmitServiceCallsRequest,
    "GetServiceCall": svc.GetServiceCallRequest,
    "ListServiceCalls": svc.ListServiceCallsRequest,
    "CancelServiceCall": svc.CancelServiceCallRequest,
    "RescheduleServiceCall": svc.RescheduleServiceCallRequest,
    "RunServiceCall": svc.RunServiceCallRequest,
    "ReplayServiceCall": svc.ReplayServiceCallRequest,
}
SCHEDULE_REQUESTS: dict[str, type[pb_message.Message]] = {
    "CreateSchedule": schedule_svc.CreateScheduleRequest,
    "GetSchedule": schedule_svc.GetScheduleRequest,
    "ListSchedules": schedule_svc.ListSchedulesRequest,
    "UpdateSchedule": schedule_svc.UpdateScheduleRequest,
    "PauseSchedule": schedule_svc.PauseScheduleRequest,
    "ResumeSchedule": schedule_svc.ResumeScheduleRequest,
    "DeleteSchedule": schedule_svc.DeleteScheduleRequest,
}
QUEUE_REQUESTS: dict[str, type[pb_message.Message]] = {
    "CreateQueue": queue_svc.CreateQueueRequest,
    "GetQueue": queue_svc.GetQueueRequest,
    "ListQueues": queue_svc.ListQueuesRequest,
    "UpdateQueue": queue_svc.UpdateQueueRequest,
    "DeleteQueue": queue_svc.DeleteQueueRequest,
    "PauseQueue": queue_svc.PauseQueueRequest,
    "ResumeQueue": queue_svc.ResumeQueueRequest,
    "PurgeQueue": queue_svc.PurgeQueueRequest,
}
GRPC_METHODS = [*REQUESTS, *SCHEDULE_REQUESTS, *QUEUE_REQUESTS]
RESPONSES: dict[str, type[pb_message.Message]] = {
    "ListServiceCalls": svc.ListServiceCallsResponse,
    "BatchSubmitServiceCalls": svc.BatchSubmitServiceCallsResponse,
    "ListSchedules": schedule_svc.ListSchedulesResponse,
    "CreateSchedule": schedule_api.Schedule,
    "GetSchedule": schedule_api.Schedule,
    "UpdateSchedule": schedule_api.Schedule,
    "PauseSchedule": schedule_api.Schedule,
    "ResumeSchedule": schedule_api.Schedule,
    "DeleteSchedule": empty_pb2.Empty,
    "ListQueues": queue_svc.ListQueuesResponse,
    "CreateQueue": queue_api.Queue,
    "GetQueue": queue_api.Queue,
    "UpdateQueue": queue_api.Queue,
    "PauseQueue": queue_api.Queue,
    "ResumeQueue": queue_api.Queue,
    "PurgeQueue": queue_svc.PurgeQueueResponse,
    "DeleteQueue": empty_pb2.Empty,
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _varint((number << 3) | wire_type)
    if wire_type == 0:
        return key + _varint(int.from_bytes(payload[:9] or b"\0", "little") & (2**64 - 1))
    if wire_type == 1:
        return key + payload[:8].ljust(8, b"\0")
    if wire_type == 5:
        return key + payload[:4].ljust(4, b"\0")
    if wire_type == 2:
        return key + _varint(len(payload)) + payload
    return key + payload  # 3/4 (groups), 6/7 (invalid): whatever follows


def _valid_schedule_request(name: str, seeded: list[str]) -> pb_message.Message:
    """As `_valid_request`, for the ScheduleService: hourly, so nothing is made meanwhile."""
    message = SCHEDULE_REQUESTS[name](tenant_id=SCHEDULE_TENANT)
    if isinstance(message, schedule_svc.CreateScheduleRequest | schedule_svc.UpdateScheduleRequest):
        message.schedule.cron = "@every 1h"
        message.schedule.call_template.request.url = f"http://{SAFE_TARGET}/grpc-fuzz-schedule"
        if isinstance(message, schedule_svc.UpdateScheduleRequest):
            message.schedule_id = seeded[0]
    elif name != "ListSchedules":
        message.schedule_id = seeded[0]  # type: ignore[attr-defined]
    return message


def _valid_queue_request(name: str, seeded: list[str]) -> pb_message.Message:
    """As `_valid_request`, for the QueueService."""
    message = QUEUE_REQUESTS[name](tenant_id=QUEUE_TENANT)
    if isinstance(message, queue_svc.CreateQueueRequest):
        message.queue.queue_id = "grpc-fuzz"
        message.queue.max_dispatches_per_second = 3
    elif isinstance(message, queue_svc.UpdateQueueRequest):
        message.queue_id = seeded[0]
        message.queue.max_concurrent_dispatches = 4
    elif name != "ListQueues":
        message.queue_id = seeded[0]  # type: ignore[attr-defined]
    return message


def _valid_request(name: str, seeded: list[str]) -> pb_message.Message:
    """A request that passes auth and id checks, so garbage appended to it gets far in."""
    message = REQUESTS[name](tenant_id=TENANT)
    if name == "SubmitServiceCall":
        assert isinstance(message, svc.SubmitServiceCallRequest)
        message.service_call.request.url = f"http://{SAFE_TARGET}/grpc-fuzz"
        message.delay.FromSeconds(3600)
    elif name == "BatchSubmitServiceCalls":
        assert isinstance(message, svc.BatchSubmitServiceCallsRequest)
        item = message.items.add()
        item.service_call.request.url = f"http://{SAFE_TARGET}/grpc-fuzz-batch"
        item.delay.FromSeconds(3600)
    elif name == "ReplayServiceCall":
        message.service_call_id = seeded[-1]  # type: ignore[attr-defined]  # the canceled one
    elif name != "ListServiceCalls":
        message.service_call_id = seeded[0]  # type: ignore[attr-defined]
    if name == "RescheduleServiceCall":
        assert isinstance(message, svc.RescheduleServiceCallRequest)
        message.delay.FromSeconds(7200)
    return message


def _payloads(valid: bytes) -> st.SearchStrategy[bytes]:
    fields = st.builds(
        _field,
        st.integers(min_value=1, max_value=20),
        st.integers(min_value=0, max_value=7),
        st.binary(max_size=64),
    )
    wrong_strings = st.builds(  # invalid UTF-8 (and NUL) in the string fields
        lambda number, junk: _field(number, 2, junk),
        st.integers(min_value=1, max_value=11),
        st.sampled_from([b"\xff", b"\xc3\x28", b"a\x00b", b"\xed\xa0\x80", b"\x00"]),
    )
    nested = st.builds(  # a message field holding garbage (e.g. service_call, delay, request)
        lambda number, inner: _field(number, 2, inner),
        st.integers(min_value=1, max_value=11),
        st.lists(fields, max_size=4).map(b"".join),
    )
    return st.one_of(
        st.binary(max_size=256),  # random bytes
        st.integers(min_value=0, max_value=max(0, len(valid) - 1)).map(lambda n: valid[:n]),
        st.lists(fields, min_size=1, max_size=6).map(lambda fs: valid + b"".join(fs)),
        st.lists(st.one_of(wrong_strings, nested), min_size=1, max_size=3).map(
            lambda fs: valid + b"".join(fs)
        ),
        st.lists(fields, min_size=1, max_size=6).map(b"".join),
    )


@pytest.mark.parametrize("method", GRPC_METHODS)
def test_grpc_fuzz(
    method: str,
    running_mesh: Layout,
    fuzz_key: str,
    seeded_ids: list[str],
    schedule_key: str,
    seeded_schedule_ids: list[str],
    queue_key: str,
    seeded_queue_ids: list[str],
    findings: Findings,
) -> None:
    if method in SCHEDULE_REQUESTS:
        service, key = SCHEDULE_SERVICE, schedule_key
        valid = _valid_schedule_request(method, seeded_schedule_ids).SerializeToString()
    elif method in QUEUE_REQUESTS:
        service, key = QUEUE_SERVICE, queue_key
        valid = _valid_queue_request(method, seeded_queue_ids).SerializeToString()
    else:
        service, key = SERVICE, fuzz_key
        valid = _valid_request(method, seeded_ids).SerializeToString()
    loop = asyncio.new_event_loop()

    async def open_channel() -> grpc.aio.Channel:  # an aio channel binds to the running loop
        return grpc.aio.insecure_channel(f"127.0.0.1:{running_mesh.orchestrator_port}")

    channel = loop.run_until_complete(open_channel())
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{service}/{method}", request_serializer=None, response_deserializer=None
    )
    with_key = (("authorization", f"Bearer {key}"),)
    before = len(findings.failures)

    async def send(payload: bytes, metadata: tuple[tuple[str, str], ...]) -> None:
        try:
            raw = await call(payload, metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            findings.statuses[f"gRPC {code.name}"] += 1
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                findings.fail(
                    f"gRPC {method}: {code.name} {error.details()}",
                    f"payload={payload!r} authenticated={bool(metadata)}",
                )
            return
        findings.statuses["gRPC OK"] += 1
        response = RESPONSES.get(method, api.ServiceCall).FromString(raw)
        if method == "CreateSchedule" and isinstance(response, schedule_api.Schedule):
            findings.created_schedule_ids.add(response.schedule_id)
        if method == "CreateQueue" and isinstance(response, queue_api.Queue):
            findings.created_queue_ids.add(response.queue_id)
        if method in ("SubmitServiceCall", "ReplayServiceCall") and isinstance(
            response, api.ServiceCall
        ):
            findings.created_ids.add(response.service_call_id)
        if isinstance(response, svc.BatchSubmitServiceCallsResponse):
            for result in response.results:
                if result.HasField("service_call"):
                    findings.created_ids.add(result.service_call.service_call_id)

    @settings(FUZZ_SETTINGS, max_examples=max(10, EXAMPLES // len(GRPC_METHODS)))
    @given(payload=_payloads(valid), authenticated=st.sampled_from([True, True, True, False]))
    def run(payload: bytes, authenticated: bool) -> None:
        loop.run_until_complete(send(payload, with_key if authenticated else ()))

    try:
        run()
    finally:
        loop.run_until_complete(channel.close())
        loop.close()
    new = {k: v for k, v in findings.failures.items() if k.startswith(f"gRPC {method}:")}
    assert len(findings.failures) == before, Findings(failures=new).report()


# -- nothing invalid stored ------------------------------------------------------------------------


def test_only_accepted_calls_were_stored_and_each_reads_back(
    running_mesh: Layout, fuzz_key: str, findings: Findings
) -> None:
    """Runs after the fuzz tests (file order): every row of the fuzz tenant is a call the API
    said it accepted, and each decodes and reads back through the API, in full."""
    stored = _stored_ids(running_mesh.database_url)
    assert stored, "the fuzz runs stored nothing at all: the fuzzer never got past validation"
    headers = {"authorization": f"Bearer {fuzz_key}"}
    base = f"{running_mesh.public_url}/v1/tenants/{TENANT}/service-calls"
    # The mesh makes rows of its own: the completion callbacks of accepted calls that asked for
    # them (their callbackOf names the call).
    accepted_names = {f"tenants/{TENANT}/service-calls/{i}" for i in findings.created_ids}
    unexplained = set()
    for call_id in stored - findings.created_ids:
        response = requests.get(f"{base}/{call_id}", headers=headers, timeout=30)
        if response.status_code != 200 or response.json()["callbackOf"] not in accepted_names:
            unexplained.add(call_id)
    assert not unexplained, f"rows nobody was told were created: {sorted(unexplained)[:10]}"
    broken = {}
    with requests.Session() as session:
        for call_id in sorted(stored):
            response = session.get(f"{base}/{call_id}?view=FULL", headers=headers, timeout=30)
            if response.status_code != 200 or response.json().get("serviceCallId") != call_id:
                broken[call_id] = (response.status_code, response.text[:200])
        # And paging over all of them decodes every row too.
        seen: set[str] = set()
        token = ""
        while True:
            response = session.get(
                base,
                params={"pageSize": "1000", "pageToken": token, "view": "FULL"},
                headers=headers,
                timeout=30,
            )
            assert response.status_code == 200, response.text[:300]
            page = response.json()
            seen |= {c["serviceCallId"] for c in page["serviceCalls"]}
            token = page["nextPageToken"]
            if not token:
                break
    assert not broken, f"stored calls that do not read back: {broken}"
    assert stored <= seen
    print(f"\n{len(stored)} fuzz-tenant calls stored, all accepted and all readable")


def test_only_accepted_schedules_were_stored_and_each_reads_back(
    running_mesh: Layout, schedule_key: str, findings: Findings
) -> None:
    """As above, for the schedules the fuzz runs made."""
    stored = _stored_schedule_ids(running_mesh.database_url)
    unexplained = stored - findings.created_schedule_ids
    assert not unexplained, f"schedules nobody was told were created: {sorted(unexplained)[:10]}"
    headers = {"authorization": f"Bearer {schedule_key}"}
    base = f"{running_mesh.public_url}/v1/tenants/{SCHEDULE_TENANT}/schedules"
    with requests.Session() as session:
        for schedule_id in sorted(stored):
            response = session.get(f"{base}/{schedule_id}", headers=headers, timeout=30)
            assert response.status_code == 200, (schedule_id, response.text[:200])
            assert response.json()["scheduleId"] == schedule_id
    print(f"\n{len(stored)} fuzz-tenant schedules stored, all accepted and all readable")


def _stored_queue_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT queue_id FROM orchestrator.queues WHERE tenant_id = %s", (QUEUE_TENANT,)
        ).fetchall()
    return {row[0] for row in rows}


def test_only_accepted_queues_were_stored_and_each_reads_back(
    running_mesh: Layout, queue_key: str, seeded_queue_ids: list[str], findings: Findings
) -> None:
    """As above, for the queues the fuzz runs made (`default` gets a row when first changed)."""
    stored = _stored_queue_ids(running_mesh.database_url)
    unexplained = stored - findings.created_queue_ids - set(seeded_queue_ids)
    assert not unexplained, f"queues nobody was told were created: {sorted(unexplained)[:10]}"
    headers = {"authorization": f"Bearer {queue_key}"}
    base = f"{running_mesh.public_url}/v1/tenants/{QUEUE_TENANT}/queues"
    with requests.Session() as session:
        for queue_id in sorted(stored):
            response = session.get(f"{base}/{queue_id}", headers=headers, timeout=30)
            assert response.status_code == 200, (queue_id, response.text[:200])
            assert response.json()["queueId"] == queue_id
    print(f"\n{len(stored)} fuzz-tenant queues stored, all accepted and all readable")
