"""The executor's attempt use case and Kafka handler wired to fakes, and builders of
execution-request messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import grpc

from executor.domain.signing import SigningSecret
from executor.entrypoints.execution_requests import execution_requests
from executor.entrypoints.grpc_api import ExecutorApi
from executor.mapping import ReportEnvelopes
from executor.ports import AttemptObserver, AttemptPorts, HttpClient
from executor.service_layer.attempts import Attempts, AttemptSettings
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots
from mesh.kafka import ReceivedMessage, UnreadableMessageError
from mesh.secrets import SecretBox, header_binding
from mesh.timeconv import to_duration, to_timestamp
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2 as xpb
from servicecall.v1 import service_call_pb2 as api
from tests.fakes.executor.ports import (
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


class Consumer:
    """Stands in for the ConsumerRunner around the executor's Kafka handler: hands it each
    message, and drops an unreadable one as the runner without a parking lot does (mesh/kafka.py,
    `_give_up`). Shutdown reaches the held attempts through it (`abandon_all`), and `_http`
    swaps the HTTP client the attempts use."""

    def __init__(self, attempts: Attempts) -> None:
        self.attempts = attempts
        self._handler = execution_requests(attempts, default_snippet_bytes=16)

    async def __call__(self, message: ReceivedMessage) -> None:
        try:
            await self._handler(message)
        except UnreadableMessageError:
            return

    def abandon_all(self) -> int:
        return self.attempts.abandon_all()

    def __len__(self) -> int:
        return len(self.attempts)

    @property
    def _http(self) -> HttpClient:
        return self.attempts._http

    @_http.setter
    def _http(self, http: HttpClient) -> None:
        self.attempts._http = http


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    target: Target = field(default_factory=Target)
    journal: list[str] = field(default_factory=list)
    executions: Executions = field(default_factory=Executions)
    limits: SendingSlots = field(default_factory=lambda: SendingSlots(512, 512, 512))
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
        self.attempts = Attempts(
            AttemptPorts(
                queue=self.bus,
                reports=ReportEnvelopes(TOPIC, "exec-1"),
                http=self.http,
                clock=self.clock,
                ids=SeqIds(),
                sleeper=self.sleeper,
                secrets=BOX,
                signing=self.signing,
                observer=self.observer,
            ),
            self.executions,
            self.limits,
            AttemptSettings(started_after=self.started_after, report_defer=self.report_defer),
        )
        self.handler = Consumer(self.attempts)

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
    send_deadline: datetime | None = None,
) -> pb.Envelope:
    request = api.HttpRequest(
        http_method=method,
        url=url,
        headers=headers if headers is not None else {"X-Trace": "abc"},
        body=body,
    )
    if timeout is not None:
        request.attempt_timeout.CopyFrom(to_duration(timeout))
    envelope = pb.Envelope(
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
    if send_deadline is not None:
        envelope.execution_requested.send_deadline.CopyFrom(to_timestamp(send_deadline))
    return envelope


def received(envelope: pb.Envelope | bytes, offset: int = 0) -> ReceivedMessage:
    value = envelope if isinstance(envelope, bytes) else envelope.SerializeToString()
    return ReceivedMessage("t.execution-requests", 0, offset, "acme/call-1", value)
