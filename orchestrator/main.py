"""Composition root of the orchestrator: `python -m orchestrator [serve|serve-api|migrate|admin]`.

`serve` runs the public API and every background loop (outbox relay, watchdog, Kafka
consumer, schedule materialiser) in one process, plus API_WORKERS - 1 child processes that
`serve-api`: the public API only, each on its own port (orchestrator/entrypoints/api_workers.py).
The only module that imports both adapters and entry points: it builds the one and hands them
to the other."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh import tracing
from mesh.clock import SystemClock, Uuid7Gen
from mesh.config import CommonConfig, Env
from mesh.db import make_engine
from mesh.grpc_server import GrpcServer
from mesh.kafka import ConsumerRunner, KafkaEventBus, tenant_share
from mesh.lifecycle import Lifecycle, Loop, service_main
from mesh.logs import get_logger
from mesh.metrics import ConsumerLag, GrpcMetrics, new_registry, sample_every, serve_metrics
from mesh.topics import Topics
from orchestrator.adapters.metrics import (
    CountedParkingLot,
    MeasuredStore,
    OccurrenceCounts,
    OrchestratorMetrics,
    RelayCounts,
    TableSampler,
)
from orchestrator.adapters.parking import ParkingAdmin, PostgresParkingLot
from orchestrator.adapters.queues import PostgresQueueStore, StoredQueueConfigs
from orchestrator.adapters.relay import OutboxRelay
from orchestrator.adapters.schedules import PostgresScheduleStore
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.adapters.tenants import PostgresKeyLookup, TenantAdmin
from orchestrator.config import OrchestratorConfig
from orchestrator.entrypoints import admin
from orchestrator.entrypoints.api_workers import (
    PARENT_PID_ENV,
    WORKER_INDEX_ENV,
    ApiWorkers,
    die_with_parent,
)
from orchestrator.entrypoints.callbacks import CompletionHandler
from orchestrator.entrypoints.consumer import CallEventHandler
from orchestrator.entrypoints.grpc_api import ServiceCallApi
from orchestrator.entrypoints.page_tokens import PageTokens
from orchestrator.entrypoints.parking import Parking
from orchestrator.entrypoints.queue_dispatcher import QueueDispatchLoop, QueueViewRefresher
from orchestrator.entrypoints.queues_api import QueueApi
from orchestrator.entrypoints.schedule_loop import ScheduleLoop
from orchestrator.entrypoints.schedules_api import ScheduleApi
from orchestrator.entrypoints.watchdog import Watchdog
from orchestrator.mapping import outbox_messages
from orchestrator.service_layer.auth import Authenticator
from orchestrator.service_layer.callbacks import Callbacks
from orchestrator.service_layer.queues import QueueDispatcher, Queues
from orchestrator.service_layer.schedules import Materialiser, Schedules
from orchestrator.service_layer.services import MeasuredOrchestrator, Orchestrator
from servicecall.v1 import (
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    service_call_service_pb2,
    service_call_service_pb2_grpc,
)

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = service_call_service_pb2.DESCRIPTOR.services_by_name["ServiceCallService"].full_name
SCHEDULE_SERVICE_NAME = schedule_service_pb2.DESCRIPTOR.services_by_name[
    "ScheduleService"
].full_name
QUEUE_SERVICE_NAME = queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name


@dataclass(frozen=True, slots=True)
class ApiProcess:
    """What one API-serving process is made of; `serve` and `serve_api` both build it here."""

    engine: AsyncEngine
    clock: SystemClock
    store: PostgresServiceCallStore
    orchestrator: Orchestrator
    schedule_store: PostgresScheduleStore
    queue_store: PostgresQueueStore
    queue_configs: StoredQueueConfigs
    server: GrpcServer
    metrics: OrchestratorMetrics


def build_api(config: OrchestratorConfig) -> ApiProcess:
    common = config.common
    topics = Topics.with_prefix(common.topic_prefix)
    engine = make_engine(common.database_url)
    ids = Uuid7Gen()
    clock = SystemClock()
    store = PostgresServiceCallStore(engine, handoff_backstop=config.handoff_backstop)
    metrics = OrchestratorMetrics(new_registry())
    queue_store = PostgresQueueStore(engine)
    queue_configs = StoredQueueConfigs(queue_store, timedelta(seconds=config.queue_refresh_s))
    orchestrator: Orchestrator = MeasuredOrchestrator(
        metrics,
        store=MeasuredStore(store, metrics),
        clock=clock,
        ids=ids,
        timing=config.timing,
        limits=config.limits,
        to_messages=partial(
            outbox_messages, topics=topics, max_snippet_bytes=config.max_snippet_bytes
        ),
        secrets=config.secrets,
        fingerprint_key=config.fingerprint_key,
        queues=queue_configs,
    )
    page_tokens = PageTokens(config.page_token_secret)
    authenticator = Authenticator(PostgresKeyLookup(engine), ttl=config.api_key_cache_s)
    api = ServiceCallApi(orchestrator, ids, page_tokens, authenticator)
    schedule_store = PostgresScheduleStore(engine)
    schedules = Schedules(schedule_store, orchestrator, clock, ids, config.secrets, config.limits)
    schedule_api = ScheduleApi(schedules, ids, page_tokens, authenticator)
    queue_api = QueueApi(
        Queues(queue_store, queue_configs, orchestrator, clock), ids, page_tokens, authenticator
    )
    server = GrpcServer(
        common.grpc_host,
        common.grpc_port,
        [
            partial(service_call_service_pb2_grpc.add_ServiceCallServiceServicer_to_server, api),
            partial(schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server, schedule_api),
            partial(queue_service_pb2_grpc.add_QueueServiceServicer_to_server, queue_api),
        ],
        [SERVICE_NAME, SCHEDULE_SERVICE_NAME, QUEUE_SERVICE_NAME],
        interceptors=[GrpcMetrics(metrics.registry)],
    )
    return ApiProcess(
        engine,
        clock,
        store,
        orchestrator,
        schedule_store,
        queue_store,
        queue_configs,
        server,
        metrics,
    )


async def serve_api(config: OrchestratorConfig, index: int) -> None:
    """One extra API worker: the public API and health on its own port, no background loop."""
    stop_tracing = tracing.start(config.common.service_name, os.environ)
    api = build_api(config)
    closers = [api.store.close, api.engine.dispose, stop_tracing]
    closers.append(await serve_metrics(api.metrics.registry, config.metrics))
    # Every process that decides keeps its view of the queues fresh (the gate, a submit's queue).
    loops: dict[str, Loop] = {"queue-view": QueueViewRefresher(api.queue_configs).run}
    await Lifecycle(
        f"orchestrator api worker {index}", api.server, loops=loops, closers=closers
    ).run()


async def serve(config: OrchestratorConfig) -> None:
    common = config.common
    topics = Topics.with_prefix(common.topic_prefix)
    stop_tracing = tracing.start(common.service_name, os.environ)
    api = build_api(config)
    engine, store, orchestrator, server = api.engine, api.store, api.orchestrator, api.server
    bus = KafkaEventBus(
        common.kafka_bootstrap, "orchestrator", max_message_bytes=config.limits.max_message_bytes
    )
    await bus.start()
    metrics = api.metrics
    parking = Parking(
        CountedParkingLot(PostgresParkingLot(engine), metrics), orchestrator, config.consumer_group
    )
    relay = OutboxRelay(
        common.database_url,
        bus,
        refuse=parking.refuse_outbox_row,
        inbox_retention=config.inbox_retention,
    )
    watchdog = Watchdog(
        orchestrator,
        store,
        api.clock,
        interval_s=config.watchdog_interval_s,
        batch_size=config.watchdog_batch,
    )
    consumer = ConsumerRunner(
        common.kafka_bootstrap,
        config.consumer_group,
        [topics.timer_events, topics.execution_events],
        CallEventHandler(orchestrator),
        max_in_flight=config.consumer_max_in_flight,
        # Fair sharing: a tenant with a crowd of facts (20k hand-offs due at one instant)
        # takes at most its share of the handlers; the rest of its facts wait in its own
        # queue, read ahead from Kafka, while another tenant's fact is applied as soon as it
        # is read. The read-ahead is deep (facts are small) so that the crowd waits here,
        # where tenants take turns, rather than in Kafka's partitions, first come first served.
        share_of=tenant_share,
        max_in_flight_per_share=config.consumer_max_per_tenant,
        max_waiting=config.consumer_max_waiting,
        max_bytes_in_flight=config.consumer_max_bytes,
        client_id="orchestrator",
        group_instance_id=common.group_instance_id,
        park=parking.park_message,
        on_health=partial(server.set_ready, "consumer"),
        consumer_factory=ConsumerLag(metrics.registry, config.consumer_group).consumer_factory(),
    )
    # Completion callbacks: the call events topic's `completed` summaries, in a group of
    # their own (orchestrator/entrypoints/callbacks.py).
    callback_group = f"{config.consumer_group}-callbacks"
    callback_consumer = ConsumerRunner(
        common.kafka_bootstrap,
        callback_group,
        [topics.call_events],
        CompletionHandler(Callbacks(orchestrator)),
        client_id="orchestrator-callbacks",
        group_instance_id=(
            f"{common.group_instance_id}-callbacks" if common.group_instance_id else None
        ),
        park=Parking(
            CountedParkingLot(PostgresParkingLot(engine), metrics), orchestrator, callback_group
        ).park_message,
        on_health=partial(server.set_ready, "callback-consumer"),
        # No lag gauge of its own: a second ConsumerLag would register the same metric name
        # in this registry (mesh.metrics), which refuses it.
    )
    # Every replica materialises: SKIP LOCKED claims and the occurrences' derived call ids
    # make that safe (orchestrator/service_layer/schedules.py).
    materialiser = Materialiser(
        api.schedule_store,
        orchestrator,
        api.clock,
        config.secrets,
        lookahead=config.schedule_lookahead,
        missed_after=config.schedule_missed_after,
        limit=config.schedule_pass_limit,
        observer=OccurrenceCounts(metrics.registry),
    )
    schedule_loop = ScheduleLoop(materialiser, poll_s=config.schedule_poll_s)
    # Every replica dispatches held calls: each queue is claimed by one pass at a time.
    queue_dispatcher = QueueDispatcher(
        api.queue_store, orchestrator, api.clock, config.timing.handoff_lead
    )
    RelayCounts(relay, metrics.registry)
    sampler = TableSampler(engine, metrics)
    loops: dict[str, Loop] = {
        "outbox-relay": relay.run,
        "consumer": lambda _stop: consumer.run(),
        "callback-consumer": lambda _stop: callback_consumer.run(),
        "watchdog": watchdog.run,
        "schedules": schedule_loop.run,
        "queue-view": QueueViewRefresher(api.queue_configs).run,
        "queue-dispatcher": QueueDispatchLoop(queue_dispatcher, config.queue_dispatch_s).run,
    }
    if config.metrics.enabled:  # nobody reads the sampled gauges otherwise
        loops["metrics-sampler"] = partial(
            sample_every, config.metrics_sample_s, sampler.sample, what="orchestrator tables"
        )
    if config.api_worker_ports:
        workers = ApiWorkers(
            config.api_worker_ports,
            [sys.executable, "-m", "orchestrator", "serve-api"],
            os.environ,
            metrics_ports=config.api_worker_metrics_ports,
        )
        loops["api-workers"] = workers.run
    closers = [bus.close, store.close, engine.dispose, stop_tracing]
    closers.append(await serve_metrics(metrics.registry, config.metrics))
    await Lifecycle(
        "orchestrator",
        server,
        loops=loops,
        on_stop=[consumer.stop, callback_consumer.stop],
        closers=closers,
    ).run()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["admin"]:
        url = Env(os.environ).text("DATABASE_URL", CommonConfig.DEFAULT_DATABASE_URL)
        raise SystemExit(admin.run(TenantAdmin(url), ParkingAdmin(url), args[1:]))
    env = Env(os.environ)
    config = OrchestratorConfig.from_env(env)
    if args[:1] == ["serve-api"]:
        # Started by `serve` (API_WORKERS): never outlive it. Started by hand: the caller's.
        if PARENT_PID_ENV in env.values:
            die_with_parent(env.integer(PARENT_PID_ENV, 0))
        index = env.integer(WORKER_INDEX_ENV, 0)
        # Every line a worker logs says which worker it is (they share the main one's log).
        structlog.contextvars.bind_contextvars(api_worker=index)
    else:
        index = 0
    service_main(
        "orchestrator",
        config.common.log_level,
        lambda: serve(config),
        config.common.database_url,
        MIGRATIONS,
        argv,
        commands={"serve-api": lambda: serve_api(config, index)},
    )
