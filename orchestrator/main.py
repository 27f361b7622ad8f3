"""Composition root of the orchestrator: `python -m orchestrator [serve|serve-api|migrate]`.

`serve` runs the public API and every background loop (outbox relay, watchdog, Kafka
consumer) in one process, plus API_WORKERS - 1 child processes that `serve-api`: the public
API only, each on its own port (orchestrator/api_workers.py)."""

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
from mesh.config import CommonConfig, ConfigError, Env
from mesh.db import make_engine
from mesh.grpc_server import GrpcServer
from mesh.kafka import MAX_MESSAGE_BYTES, ConsumerRunner, KafkaEventBus
from mesh.lifecycle import Lifecycle, Loop, service_main
from mesh.logs import get_logger
from mesh.metrics import (
    METRICS_OFF,
    ConsumerLag,
    GrpcMetrics,
    MetricsConfig,
    new_registry,
    sample_every,
    serve_metrics,
)
from mesh.secrets import SecretBox, fingerprint_key_from_env
from mesh.topics import Topics
from orchestrator import admin
from orchestrator.adapters.messages import outbox_messages
from orchestrator.adapters.parking import PostgresParkingLot
from orchestrator.adapters.relay import INBOX_RETENTION, OutboxRelay
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.adapters.tenants import PostgresKeyLookup
from orchestrator.api_workers import (
    PARENT_PID_ENV,
    WORKER_INDEX_ENV,
    ApiWorkers,
    default_base_port,
    die_with_parent,
    worker_ports,
)
from orchestrator.auth import Authenticator
from orchestrator.consumer import CallEventHandler
from orchestrator.domain.model import Timing
from orchestrator.domain.validation import Limits
from orchestrator.grpc_api import ServiceCallApi
from orchestrator.metrics import (
    CountedParkingLot,
    MeasuredOrchestrator,
    MeasuredStore,
    OrchestratorMetrics,
    RelayCounts,
    TableSampler,
)
from orchestrator.page_tokens import PageTokens
from orchestrator.parking import Parking
from orchestrator.service import Orchestrator
from orchestrator.watchdog import Watchdog
from servicecall.v1 import service_call_service_pb2, service_call_service_pb2_grpc

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = service_call_service_pb2.DESCRIPTOR.services_by_name["ServiceCallService"].full_name
# More processes than cores only add switching; this bounds a typo, not a machine.
MAX_API_WORKERS = 64


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    common: CommonConfig
    timing: Timing
    limits: Limits
    page_token_secret: bytes
    max_snippet_bytes: int
    consumer_group: str
    secrets: SecretBox
    # Keys the idempotency fingerprints (IDEMPOTENCY_KEY, else derived from MESH_SECRET_KEY).
    fingerprint_key: bytes
    api_key_cache_s: float
    # How often each replica sweeps for calls past their dispatch lease or attempt deadline
    # (orchestrator/watchdog.py), and how many it reads at a time.
    watchdog_interval_s: float
    watchdog_batch: int
    # How long past its hand-off time a Scheduled call waits for the scheduler's
    # DueTimeReached before the watchdog hands it off itself (a lost timer request or fact).
    handoff_backstop: timedelta
    # How long applied event ids are kept for deduplication (orchestrator/adapters/relay.py).
    inbox_retention: timedelta
    # Processes serving the public API: this one (on GRPC_PORT) and API_WORKERS - 1 children
    # on `api_worker_ports`. The background loops run in this process only, whatever the count.
    api_workers: int = 1
    api_worker_ports: tuple[int, ...] = ()
    # METRICS_PORT of this process; each API worker serves its own metrics on
    # `api_worker_metrics_ports` (the same rule as its gRPC port), so Prometheus scrapes each.
    metrics: MetricsConfig = METRICS_OFF
    api_worker_metrics_ports: tuple[int, ...] = ()
    # How often the gauges read from tables (outbox age, parked messages) are sampled.
    metrics_sample_s: float = 5.0

    @classmethod
    def from_env(cls, env: Env) -> OrchestratorConfig:
        watchdog_interval_s = env.number("WATCHDOG_INTERVAL_S", 1.0)
        if watchdog_interval_s <= 0:
            raise ConfigError(f"WATCHDOG_INTERVAL_S must be positive, got {watchdog_interval_s}")
        watchdog_batch = env.integer("WATCHDOG_BATCH", 256)
        if watchdog_batch < 1:
            raise ConfigError(f"WATCHDOG_BATCH must be at least 1, got {watchdog_batch}")
        handoff_backstop = env.seconds("HANDOFF_BACKSTOP_S", 30.0)
        if handoff_backstop <= timedelta(0):
            raise ConfigError("HANDOFF_BACKSTOP_S must be positive")
        handoff_early_max = env.seconds("HANDOFF_EARLY_MAX_S", 15.0)
        if handoff_early_max < timedelta(0):
            raise ConfigError("HANDOFF_EARLY_MAX_S must not be negative")
        common = CommonConfig.from_env(env, "orchestrator", 50051)
        api_workers = env.integer("API_WORKERS", 1)
        if not 1 <= api_workers <= MAX_API_WORKERS:
            raise ConfigError(f"API_WORKERS must be 1 to {MAX_API_WORKERS}, got {api_workers}")
        base_port = env.integer("API_WORKER_BASE_PORT", default_base_port(common.grpc_port))
        api_worker_ports = worker_ports(common.grpc_port, api_workers, base_port)
        if common.grpc_port in api_worker_ports or not all(
            0 < port < 65536 for port in api_worker_ports
        ):
            raise ConfigError(
                f"API worker ports {api_worker_ports} (from API_WORKER_BASE_PORT={base_port}) "
                f"must be valid ports other than GRPC_PORT={common.grpc_port}"
            )
        metrics = MetricsConfig.from_env(env)
        api_worker_metrics_ports = (
            worker_ports(metrics.port, api_workers) if metrics.enabled else ()
        )
        if set(api_worker_metrics_ports) & {common.grpc_port, metrics.port, *api_worker_ports}:
            raise ConfigError(
                f"API worker metrics ports {api_worker_metrics_ports} (METRICS_PORT + 100...) "
                "clash with a gRPC or metrics port"
            )
        return cls(
            common=common,
            timing=Timing(
                handoff_lead=env.seconds("HANDOFF_LEAD_S", 2.0),
                dispatch_lease=env.seconds("DISPATCH_LEASE_S", 30.0),
                attempt_grace=env.seconds("ATTEMPT_GRACE_S", 30.0),
                # At least the scheduler's HANDOFF_PULL_MAX_S: a hand-off pulled further is
                # only re-armed for its fire time, never lost (decide.py, _fire_timer).
                handoff_early_max=handoff_early_max,
            ),
            limits=Limits(
                max_body_bytes=env.integer("MAX_BODY_BYTES", 1024 * 1024),
                max_headers=env.integer("MAX_HEADERS", 100),
                max_header_bytes=env.integer("MAX_HEADER_BYTES", 64 * 1024),
                # The producer's message.max.bytes as well: keep it at or below the brokers'
                # message.max.bytes minus their margin (docs/operations.md, size limits).
                max_message_bytes=env.integer("MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES),
            ),
            inbox_retention=env.seconds("INBOX_RETENTION_S", INBOX_RETENTION.total_seconds()),
            # Tokens only need to survive between two list calls; replicas must share it.
            page_token_secret=env.text("PAGE_TOKEN_SECRET", "dev-only-page-token-secret").encode(),
            max_snippet_bytes=env.integer("MAX_SNIPPET_BYTES", 1024),
            consumer_group=env.text("ORCHESTRATOR_GROUP", "orchestrator"),
            secrets=SecretBox.from_env(env.values),
            fingerprint_key=fingerprint_key_from_env(env.values),
            api_key_cache_s=env.number("API_KEY_CACHE_S", 30.0),
            watchdog_interval_s=watchdog_interval_s,
            watchdog_batch=watchdog_batch,
            handoff_backstop=handoff_backstop,
            api_workers=api_workers,
            api_worker_ports=api_worker_ports,
            metrics=metrics,
            api_worker_metrics_ports=api_worker_metrics_ports,
            metrics_sample_s=env.number("METRICS_SAMPLE_S", 5.0),
        )


@dataclass(frozen=True, slots=True)
class ApiProcess:
    """What one API-serving process is made of; `serve` and `serve_api` both build it here."""

    engine: AsyncEngine
    clock: SystemClock
    store: PostgresServiceCallStore
    orchestrator: Orchestrator
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
    )
    api = ServiceCallApi(
        orchestrator,
        ids,
        PageTokens(config.page_token_secret),
        Authenticator(PostgresKeyLookup(engine), ttl=config.api_key_cache_s),
    )
    server = GrpcServer(
        common.grpc_host,
        common.grpc_port,
        [partial(service_call_service_pb2_grpc.add_ServiceCallServiceServicer_to_server, api)],
        [SERVICE_NAME],
        interceptors=[GrpcMetrics(metrics.registry)],
    )
    return ApiProcess(engine, clock, store, orchestrator, server, metrics)


async def serve_api(config: OrchestratorConfig, index: int) -> None:
    """One extra API worker: the public API and health on its own port, no background loop."""
    stop_tracing = tracing.start(config.common.service_name, os.environ)
    api = build_api(config)
    metrics_server = await serve_metrics(api.metrics.registry, config.metrics)
    await Lifecycle(
        f"orchestrator api worker {index}",
        api.server,
        loops={},
        closers=[
            api.store.close,
            api.engine.dispose,
            stop_tracing,
            *([metrics_server.close] if metrics_server else []),
        ],
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
        client_id="orchestrator",
        group_instance_id=common.group_instance_id,
        park=parking.park_message,
        on_health=partial(server.set_ready, "consumer"),
        consumer_factory=ConsumerLag(metrics.registry, config.consumer_group).consumer_factory(),
    )
    RelayCounts(relay, metrics.registry)
    sampler = TableSampler(engine, metrics)
    loops: dict[str, Loop] = {
        "outbox-relay": relay.run,
        "consumer": lambda _stop: consumer.run(),
        "watchdog": watchdog.run,
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
    metrics_server = await serve_metrics(metrics.registry, config.metrics)
    await Lifecycle(
        "orchestrator",
        server,
        loops=loops,
        on_stop=[consumer.stop],
        closers=[
            bus.close,
            store.close,
            engine.dispose,
            stop_tracing,
            *([metrics_server.close] if metrics_server else []),
        ],
    ).run()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["admin"]:
        url = Env(os.environ).text("DATABASE_URL", CommonConfig.DEFAULT_DATABASE_URL)
        raise SystemExit(admin.run(url, args[1:]))
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
