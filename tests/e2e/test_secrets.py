"""Secret headers are never returned, stored, published or logged in clear."""

from __future__ import annotations

import uuid

import psycopg

from meshctl.layout import Layout
from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from tests.e2e.conftest import CallEvents, JsonClient


async def test_secret_header_is_nowhere_in_clear_but_api_shows_it_redacted(
    json_api: JsonClient, sink: Sink, call_events: CallEvents, running_mesh: Layout
) -> None:
    tenant = f"e2e-{uuid.uuid4().hex[:10]}"
    token = f"tok-{uuid.uuid4().hex}"
    api_key = f"key-{uuid.uuid4().hex}"
    created = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls",
        {
            "serviceCall": {
                "request": {
                    "url": sink.url(f"/secret/{uuid.uuid4().hex}"),
                    "headers": {"Authorization": f"Bearer {token}", "X-Api-Key": api_key},
                },
                "retryPolicy": {"maxAttempts": 1},
            }
        },
    )
    assert created.status == 201, created.body
    call_id = created.body["serviceCallId"]
    await call_events.completed(call_id)

    fetched = json_api.request("GET", f"/v1/tenants/{tenant}/service-calls/{call_id}?view=FULL")
    assert fetched.body["request"]["headers"] == {
        "Authorization": "[REDACTED]",
        "X-Api-Key": "[REDACTED]",
    }
    for response in (created, fetched):
        assert token not in str(response.body) and api_key not in str(response.body)

    with psycopg.connect(running_mesh.database_url) as conn:
        for sql in (
            "SELECT state::text FROM orchestrator.service_calls",
            "SELECT encode(payload, 'escape') FROM orchestrator.outbox",
        ):
            stored = "\n".join(row[0] for row in conn.execute(sql))
            assert token not in stored and api_key not in stored, sql

    for log in (running_mesh.run_dir / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert token not in text and api_key not in text, log.name

    # Kafka carries exactly the outbox payloads checked above; the completed event is there.
    assert (await call_events.completed(call_id)).completed.state in (
        api.ServiceCall.SUCCEEDED,
        api.ServiceCall.FAILED,
    )
