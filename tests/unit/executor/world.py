"""A handler wired to fakes, and builders of execution-request messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import grpc

from executor.domain.signing import SigningSecret
from executor.grpc_api import ExecutorApi
from executor.handler import ExecutionHandler
from executor.limits import Limits
from executor.ports import AttemptObserver
from executor.registry import Executions
from mesh.kafka import ReceivedMessage
from mesh.secrets import SecretBox, header_binding
from mesh.timeconv import to_duration, to_timestamp
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2 as xpb
from servicecall.v1 import service_call_pb2 as api
from tests.unit.executor.fakes import (
    T0,
    FakeBus,
    FakeClock,
    FakeHttpClient,
    FakeSleeper,
    SeqIds,
    Target,
)

PORT = 18080
TOPIC = "t.execution-events"
MESH_KEY = bytes(range(32))
BOX = SecretBox({1: MESH_KEY}, current=1)


def seal(name: str, value: str, call: str = "call-1", tenant: str = "acme") -> bytes:
    """Seals a header value as the orchestrator does for this call."""
    return BOX.seal(value.encode(), header_binding(tenant, call, name))


@dataclass
class FakeSigningKeys:
    keys: dict[str, tuple[SigningSecret, ...]] = field(default_factory=dict)

    def secrets_for(self, tenant_id: str) -> tuple[SigningSecret, ...]:
        return self.keys.get(tenant_id, ())


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    target: Target = field(default_factory=Target)
    journal: list[str] = field(default_factory=list)
    executions: Executions = field(default_factory=Executions)
    limits: Limits = field(default_factory=lambda: Limits(512, 512, 512))
    started_after: timedelta | None = None
    report_defer: timedelta | None = None
    observer: AttemptObserver | None = None

    def __post_init__(self) -> None:
        self.signing = FakeSigningKeys()
        self.bus = FakeBus(journal=self.journal)
        self.sleeper = FakeSleeper(self.clock)
        self.http = FakeHttpClient(
            self.target,
            PORT,
            allowlist=(),
            dns={"target.example": ("93.184.215.14",)},
            journal=self.journal,
        )
        self.handler = ExecutionHandler(
            bus=self.bus,
            http=self.http,
            clock=self.clock,
            ids=SeqIds(),
            sleeper=self.sleeper,
            limits=self.limits,
            secrets=BOX,
            signing=self.signing,
            executions=self.executions,
            events_topic=TOPIC,
            executor_id="exec-1",
            default_snippet_bytes=16,
            started_after=self.started_after,
            report_defer=self.report_defer,
            observer=self.observer,
        )

    def results(self) -> list[pb.Envelope]:
        return [
            e
            for e in self.bus.envelopes()
            if e.WhichOneof("payload") in ("execution_succeeded", "execution_failed")
        ]

    async def listed(self) -> xpb.ListExecutionsResponse:
        return await ExecutorApi(self.executions, "exec-1").ListExecutions(
            xpb.ListExecutionsRequest(), cast(grpc.aio.ServicerContext[object, object], None)
        )


def request_envelope(
    *,
    url: str = f"http://target.example:{PORT}/echo",
    not_before: datetime = T0,
    method: api.HttpMethod.ValueType = api.POST,
    headers: dict[str, str] | None = None,
    body: bytes = b'{"hello":"world"}',
    attempt: int = 2,
    snippet_bytes: int = 0,
    timeout: timedelta | None = timedelta(seconds=5),
    sealed: dict[str, bytes] | None = None,
) -> pb.Envelope:
    request = api.HttpRequest(
        http_method=method,
        url=url,
        headers=headers if headers is not None else {"X-Trace": "abc"},
        body=body,
    )
    if timeout is not None:
        request.attempt_timeout.CopyFrom(to_duration(timeout))
    return pb.Envelope(
        event_id="req-1",
        tenant_id="acme",
        service_call_id="call-1",
        correlation_id="corr-1",
        sequence=7,
        occurred_at=to_timestamp(T0 - timedelta(seconds=2)),
        execution_requested=pb.ExecutionRequested(
            attempt=attempt,
            not_before=to_timestamp(not_before),
            lease_expire_time=to_timestamp(not_before + timedelta(seconds=30)),
            request=request,
            idempotency_key="idem-call-1",
            max_response_snippet_bytes=snippet_bytes,
            sealed_headers=sealed or {},
        ),
    )


def received(envelope: pb.Envelope | bytes, offset: int = 0) -> ReceivedMessage:
    value = envelope if isinstance(envelope, bytes) else envelope.SerializeToString()
    return ReceivedMessage("t.execution-requests", 0, offset, "acme/call-1", value)
