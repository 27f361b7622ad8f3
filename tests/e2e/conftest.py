"""e2e fixtures: the whole mesh as processes, a loopback sink, clients for both faces."""

from __future__ import annotations

import json
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
from tests.kafka_helpers import TopicReader


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: Any


class JsonClient:
    """Plain HTTP/1.1 JSON, as curl would send it, to Envoy's public port."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> HttpResponse:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", **(headers or {})},
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
def json_api(running_mesh: Layout) -> JsonClient:
    return JsonClient(running_mesh.public_url)


@pytest.fixture(scope="session")
def grpc_channel(running_mesh: Layout) -> Iterator[grpc.aio.Channel]:
    # Direct to the orchestrator, bypassing Envoy: the gRPC face of the same service.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running_mesh.orchestrator_port}")
    yield channel


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
