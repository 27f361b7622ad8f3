"""e2e fixtures: the whole mesh as processes, a loopback sink, clients for both faces."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from mesh.topics import Topics
from meshctl.layout import Layout
from meshctl.sink import Sink
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.kafka_helpers import TopicReader


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: Any


_TENANT_PATH = re.compile(r"/v1/tenants/([^/?]+)")


class JsonClient:
    """Plain HTTP/1.1 JSON, as curl would send it, to Envoy's public port. Unless told
    otherwise it authenticates as the tenant named in the path, like that tenant's client."""

    def __init__(self, base_url: str, key_ring: KeyRing) -> None:
        self.base_url = base_url
        self.key_ring = key_ring

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        as_tenant: str | None = None,
        anonymous: bool = False,
    ) -> HttpResponse:
        data = None if body is None else json.dumps(body).encode()
        auth: dict[str, str] = {}
        match = _TENANT_PATH.match(path)
        tenant = as_tenant or (match.group(1) if match else None)
        if tenant and not anonymous:
            auth["authorization"] = f"Bearer {self.key_ring.for_tenant(tenant)}"
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", **auth, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status, response_headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as e:
            raw, status, response_headers = e.read(), e.code, dict(e.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return HttpResponse(status, {k.lower(): v for k, v in response_headers.items()}, parsed)


@pytest.fixture(scope="session")
def json_api(running_mesh: Layout, key_ring: KeyRing) -> JsonClient:
    return JsonClient(running_mesh.public_url, key_ring)


class TenantKeyInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the API key of the tenant named in each request, as that tenant's client would."""

    def __init__(self, key_ring: KeyRing) -> None:
        self._key_ring = key_ring

    async def intercept_unary_unary(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        tenant = getattr(request, "tenant_id", "")
        if tenant and metadata.get("authorization") is None:
            metadata.add("authorization", f"Bearer {self._key_ring.for_tenant(tenant)}")
        return await continuation(
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            ),
            request,
        )


def tenant_channel(target: str, key_ring: KeyRing) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, interceptors=[TenantKeyInterceptor(key_ring)])


@pytest.fixture(scope="session")
async def grpc_channel(running_mesh: Layout, key_ring: KeyRing) -> AsyncIterator[grpc.aio.Channel]:
    # Direct to the orchestrator, bypassing Envoy: the gRPC face of the same service. Made
    # inside the session's event loop: a grpc.aio channel belongs to the loop it is made in,
    # and a sync fixture that ran before any async one would make it in another loop.
    channel = tenant_channel(f"127.0.0.1:{running_mesh.orchestrator_port}", key_ring)
    yield channel
    await channel.close()


@pytest.fixture
def grpc_api(grpc_channel: grpc.aio.Channel) -> svc_grpc.ServiceCallServiceAsyncStub:
    return svc_grpc.ServiceCallServiceStub(grpc_channel)


@pytest.fixture(scope="session")
async def sink() -> AsyncIterator[Sink]:
    sink = Sink()
    await sink.start()
    yield sink
    await sink.stop()


class CallEvents:
    """Follows the mesh's call-events topic: tests wait on the event that a call completed."""

    def __init__(self, reader: TopicReader) -> None:
        self._reader = reader

    async def completed(self, service_call_id: str, timeout: float = 30.0) -> pb.Envelope:
        seen = 0
        while True:
            records = await self._reader.wait_for(seen + 1, timeout)
            for record in records[seen:]:
                envelope = pb.Envelope.FromString(record.value)
                if (
                    envelope.service_call_id == service_call_id
                    and envelope.WhichOneof("payload") == "completed"
                ):
                    return envelope
            seen = len(records)


@pytest.fixture(scope="session")
def call_events(running_mesh: Layout) -> Iterator[CallEvents]:
    reader = TopicReader(
        running_mesh.kafka_bootstrap, Topics.with_prefix(running_mesh.topic_prefix).call_events
    )
    yield CallEvents(reader)
    reader.close()
