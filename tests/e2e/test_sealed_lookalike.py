"""A header value that merely looks sealed (`sealed:...`) goes through the mesh untouched."""

from __future__ import annotations

import uuid

from meshctl.layout import Layout
from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from tests.e2e.conftest import CallEvents, JsonClient


async def test_a_header_that_looks_sealed_reaches_the_target_as_sent(
    json_api: JsonClient, sink: Sink, call_events: CallEvents, running_mesh: Layout
) -> None:
    # Regression: at hand-off the outbox mapping took "sealed:abc" for ciphertext and raised
    # binascii.Error; the orchestrator's consumer retried that fact forever and the call never
    # completed (nor did any call batched with it).
    tenant = f"e2e-sealed-{uuid.uuid4().hex[:10]}"
    path = f"/ok/{uuid.uuid4().hex}"
    created = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls",
        {
            "serviceCall": {
                "request": {
                    "url": sink.url(path),
                    # A clear header that looks sealed, and a secret one that does too (sealed
                    # at submit like any secret header, opened by the executor).
                    "headers": {"X-Note": "sealed:abc", "X-Session-Token": "sealed:xyz"},
                },
            },
            "delay": "2s",
        },
    )
    assert created.status == 201, created.body

    completed = await call_events.completed(created.body["serviceCallId"], timeout=60)

    assert completed.completed.state == api.ServiceCall.SUCCEEDED
    [arrival] = sink.matching(path)
    assert arrival.header("X-Note") == "sealed:abc"
    assert arrival.header("X-Session-Token") == "sealed:xyz"
