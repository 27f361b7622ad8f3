"""One call's spans from the orchestrator, the scheduler and the executor share one trace id.

The three services' parts run in this process (one in-memory exporter sees them all), wired
as their composition roots wire them, against the real Postgres and Kafka of the test mesh:
the gRPC API with its OpenTelemetry interceptor, the outbox relay, the scheduler's arming
consumer and firing loop, the executor's consumer and HTTP client, and the orchestrator's
consumer of their events. The call is due a little later, so it goes through a durable timer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from executor.adapters.h1_client import H1Client
from executor.adapters.kafka_queue import KafkaEventQueue
from executor.adapters.signing_keys import SigningKeysFile
from executor.adapters.sleeper import LoopSleeper, PreciseSleeper
from executor.domain.egress import parse_allowlist
from executor.main import execution_handler as ExecutionHandler  # noqa: N812
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots as Limits
from mesh.clock import SystemClock, Uuid7Gen
from mesh.config import Env
from mesh.db import make_engine
from mesh.kafka import ConsumerRunner, KafkaEventBus
from mesh.secrets import SecretBox
from mesh.topics import Topics
from meshctl.layout import Layout
from meshctl.sink import Sink
from orchestrator.adapters.relay import OutboxRelay
from orchestrator.config import OrchestratorConfig
from orchestrator.entrypoints.consumer import CallEventHandler
from orchestrator.main import build_api
from scheduler.adapters.store import PostgresTimerStore
from scheduler.entrypoints.timer_requests import TimerRequestHandler
from scheduler.main import KafkaFirer as Firer
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.kafka_helpers import create_topics
from tests.tracing_helpers import in_memory_spans
from tests.waiting import eventually

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@dataclass
class Mesh:
    topics: Topics
    port: int
    keys: KeyRing
    sink: Sink


async def _refuse(*_: object) -> None:
    raise AssertionError("no outbox row should be refused")


@pytest.fixture
async def mesh_in_process(infra: Layout, fresh_database: str) -> AsyncIterator[Mesh]:
    prefix = f"trace{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    create_topics(infra.kafka_bootstrap, list(topics.all()), partitions=1)
    bootstrap, url = infra.kafka_bootstrap, fresh_database
    secret = base64.b64encode(bytes(32)).decode()
    config = OrchestratorConfig.from_env(
        Env(
            {
                "DATABASE_URL": url,
                "KAFKA_BOOTSTRAP": bootstrap,
                "TOPIC_PREFIX": prefix,
                "GRPC_PORT": "0",
                "MESH_SECRET_KEY": secret,
                "HANDOFF_LEAD_S": "0.3",
                "API_KEY_CACHE_S": "0",
            }
        )
    )
    orchestrator = build_api(config)
    sink = Sink()
    await sink.start()
    stop = asyncio.Event()
    buses = [KafkaEventBus(bootstrap, "o-relay"), KafkaEventBus(bootstrap, "s-fire")]
    queue = KafkaEventQueue(bootstrap, "e-events")
    for bus in (*buses, queue):
        await bus.start()
    engine = make_engine(url)
    timers = PostgresTimerStore(engine)
    firer = Firer(timers, buses[1], SystemClock(), topics, max_sleep=timedelta(seconds=0.2))
    http = H1Client.create(parse_allowlist(["127.0.0.0/8"]), 1024 * 1024, 8)
    executor = ExecutionHandler(
        bus=queue,
        http=http,
        clock=SystemClock(),
        ids=Uuid7Gen(),
        sleeper=PreciseSleeper(),
        coarse_sleeper=LoopSleeper(),
        limits=Limits(8, 8, 8),
        secrets=SecretBox.from_env({"MESH_SECRET_KEY": secret}),
        signing=SigningKeysFile(None),
        executions=Executions(),
        events_topic=topics.execution_events,
        executor_id="trace-test",
    )
    group = uuid.uuid4().hex[:8]
    consumers = [
        ConsumerRunner(
            bootstrap,
            f"o-{group}",
            [topics.timer_events, topics.execution_events],
            CallEventHandler(orchestrator.orchestrator),
        ),
        ConsumerRunner(
            bootstrap, f"s-{group}", [topics.timer_requests], TimerRequestHandler(timers, firer)
        ),
        ConsumerRunner(
            bootstrap, f"e-{group}", [topics.execution_requests], executor, ordered_by_key=False
        ),
    ]
    relay = OutboxRelay(url, buses[0], refuse=_refuse)
    await orchestrator.server.start()
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(firer.run(stop)),
        *(asyncio.create_task(c.run()) for c in consumers),
    ]
    try:
        yield Mesh(topics, orchestrator.server.bound_port, KeyRing(url), sink)
    finally:
        stop.set()
        for consumer in consumers:
            consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await orchestrator.server.stop(1.0)
        await http.close()
        for bus in (*buses, queue):
            await bus.close()
        await sink.stop()
        await orchestrator.store.close()
        await orchestrator.engine.dispose()
        await engine.dispose()


async def test_one_calls_spans_share_the_callers_trace_id_across_the_three_services(
    mesh_in_process: Mesh,
) -> None:
    spans: InMemorySpanExporter = in_memory_spans()
    mesh = mesh_in_process
    tenant = f"trace-{uuid.uuid4().hex[:8]}"
    path = f"/traced/{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
        created = await stub.SubmitServiceCall(
            svc.SubmitServiceCallRequest(
                tenant_id=tenant,
                service_call=api.ServiceCall(
                    request=api.HttpRequest(http_method=api.POST, url=mesh.sink.url(path))
                ),
                # Later than the hand-off lead: the call waits in a durable timer.
                delay=Duration(nanos=800_000_000),
            ),
            metadata=(
                ("authorization", f"Bearer {mesh.keys.for_tenant(tenant)}"),
                ("traceparent", CLIENT_PARENT),
            ),
        )
    await mesh.sink.wait_for(lambda arrivals: any(a.path == path for a in arrivals))
    names = {
        "/servicecall.v1.ServiceCallService/SubmitServiceCall",
        "servicecall.relay publish",
        f"process {mesh.topics.timer_requests}",
        "servicecall.timer fire",
        f"process {mesh.topics.timer_events}",
        f"process {mesh.topics.execution_requests}",
        "POST",
        f"process {mesh.topics.execution_events}",
    }

    def of_the_call() -> list[str]:
        return [
            s.name
            for s in spans.get_finished_spans()
            if s.context is not None and f"{s.context.trace_id:032x}" == CLIENT_TRACE
        ]

    # The result event is applied after the target answered: wait for its span too.
    await eventually(lambda: names <= set(of_the_call()), timeout=30)
    assert created.service_call_id
    # Every hop continued the caller's trace: no span of the call started a trace of its own.
    traced = [s for s in spans.get_finished_spans() if s.name in names]
    assert {f"{s.context.trace_id:032x}" for s in traced if s.context} == {CLIENT_TRACE}
    # The outbox relay published the timer request and the execution request in that trace.
    assert of_the_call().count("servicecall.relay publish") >= 2

    [arrival] = mesh.sink.matching(path)
    sent = arrival.header("traceparent")
    assert sent is not None
    _, trace_id, parent_id, _ = sent.split("-")
    assert trace_id == CLIENT_TRACE
    [client_span] = [s for s in traced if s.name == "POST"]
    assert client_span.context is not None
    # The target's parent is the executor's HTTP client span.
    assert parent_id == f"{client_span.context.span_id:016x}"
    assert client_span.attributes is not None
    assert client_span.attributes["http.response.status_code"] == 200
