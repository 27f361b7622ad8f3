"""A client's trace reaches the target: the `traceparent` sent with a submit, through Envoy's
JSON face or as gRPC metadata, arrives on the request to the target with the same trace id,
across the outbox, Kafka, a durable timer and the executor, with the mesh's exporter off."""

from __future__ import annotations

import secrets
import uuid

from google.protobuf.duration_pb2 import Duration

from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.e2e.conftest import CallEvents, JsonClient


def client_traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def trace_id_of(header: str | None) -> str | None:
    return None if header is None else header.split("-")[1]


async def test_traceparent_sent_through_envoy_json_reaches_the_target(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    tenant = f"e2e-{uuid.uuid4().hex[:10]}"
    path = f"/traced/{uuid.uuid4().hex}"
    trace_id, traceparent = client_traceparent()
    created = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls",
        {"serviceCall": {"request": {"url": sink.url(path)}}},
        headers={"traceparent": traceparent},
    )
    assert created.status == 201, created.body
    await call_events.completed(created.body["serviceCallId"])
    [arrival] = sink.matching(path)
    assert trace_id_of(arrival.header("traceparent")) == trace_id


async def test_traceparent_in_grpc_metadata_survives_a_durable_timer(
    grpc_api: svc_grpc.ServiceCallServiceAsyncStub, sink: Sink, call_events: CallEvents
) -> None:
    tenant = f"e2e-{uuid.uuid4().hex[:10]}"
    path = f"/traced/{uuid.uuid4().hex}"
    trace_id, traceparent = client_traceparent()
    created = await grpc_api.SubmitServiceCall(
        svc.SubmitServiceCallRequest(
            tenant_id=tenant,
            service_call=api.ServiceCall(
                request=api.HttpRequest(http_method=api.POST, url=sink.url(path))
            ),
            # Past the test mesh's hand-off lead (1 s): the scheduler arms a timer first.
            delay=Duration(seconds=2),
        ),
        metadata=(("traceparent", traceparent),),
    )
    await call_events.completed(created.service_call_id)
    [arrival] = sink.matching(path)
    assert trace_id_of(arrival.header("traceparent")) == trace_id


async def test_a_traceparent_the_call_spec_sets_is_the_one_the_target_gets(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    tenant = f"e2e-{uuid.uuid4().hex[:10]}"
    path = f"/traced/{uuid.uuid4().hex}"
    _, callers = client_traceparent()
    _, in_spec = client_traceparent()
    created = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls",
        {"serviceCall": {"request": {"url": sink.url(path), "headers": {"traceparent": in_spec}}}},
        headers={"traceparent": callers},
    )
    assert created.status == 201, created.body
    await call_events.completed(created.body["serviceCallId"])
    [arrival] = sink.matching(path)
    assert arrival.header("traceparent") == in_spec


async def test_without_a_traceparent_none_is_invented(
    json_api: JsonClient, sink: Sink, call_events: CallEvents
) -> None:
    # The exporter is off in the test mesh: no trace, no header (tracing costs nothing).
    tenant = f"e2e-{uuid.uuid4().hex[:10]}"
    path = f"/untraced/{uuid.uuid4().hex}"
    created = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls",
        {"serviceCall": {"request": {"url": sink.url(path)}}},
    )
    assert created.status == 201, created.body
    await call_events.completed(created.body["serviceCallId"])
    [arrival] = sink.matching(path)
    assert arrival.header("traceparent") is None
