"""Size limits through Envoy: a call whose execution request Kafka would refuse is a 400 that
names the field, and nothing is stored (issue #12 defect 2)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import psycopg

from meshctl.layout import Layout
from tests.e2e.conftest import HttpResponse, JsonClient

URL = "http://127.0.0.1:9/never"


def submit(json_api: JsonClient, tenant: str, request: dict[str, Any]) -> HttpResponse:
    return json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls",
        {"serviceCall": {"request": {"url": URL, **request}}, "delay": "3600s"},
    )


def violations(response: HttpResponse) -> dict[str, str]:
    assert response.status == 400, response.body
    [detail] = response.body["details"]
    return {v["field"]: v["description"] for v in detail["fieldViolations"]}


def stored(layout: Layout, tenant: str) -> int:
    with psycopg.connect(layout.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM orchestrator.service_calls WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_body_within_its_limit_but_too_large_for_a_message_is_refused(
    json_api: JsonClient, running_mesh: Layout
) -> None:
    tenant = f"size-{uuid.uuid4().hex[:10]}"
    # Exactly the body limit (1 MiB): accepted before, then refused by Kafka forever.
    body = base64.b64encode(b"x" * (1024 * 1024)).decode()
    found = violations(submit(json_api, tenant, {"body": body}))
    assert set(found) == {"service_call.request.body"}
    assert found["service_call.request.body"].startswith("body plus headers and URL is ")
    assert stored(running_mesh, tenant) == 0


def test_too_many_or_too_large_headers_are_refused(
    json_api: JsonClient, running_mesh: Layout
) -> None:
    tenant = f"size-{uuid.uuid4().hex[:10]}"
    many = {f"X-H{i}": "v" for i in range(101)}
    assert (
        "at most 100"
        in violations(submit(json_api, tenant, {"headers": many}))["service_call.request.headers"]
    )
    large = {"X-A": "a" * 40_000, "X-B": "b" * 30_000}
    assert (
        "at most 65536"
        in violations(submit(json_api, tenant, {"headers": large}))["service_call.request.headers"]
    )
    assert stored(running_mesh, tenant) == 0
    # Within the limits, the same tenant's call is accepted.
    assert submit(json_api, tenant, {"headers": {"X-H": "v"}}).status == 201
