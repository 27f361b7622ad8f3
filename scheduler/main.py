"""Composition root of the scheduler: `python -m scheduler [serve|migrate]`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

from mesh import tracing
from mesh.clock import SystemClock, Uuid7Gen
from mesh.config import CommonConfig, ConfigError, Env
from mesh.db import make_engine
from mesh.grpc_server import GrpcServer
from mesh.kafka import ConsumerRunner, KafkaEventBus
from mesh.lifecycle import Lifecycle, Loop, service_main
from mesh.metrics import (
    METRICS_OFF,
    ConsumerLag,
    GrpcMetrics,
    MetricsConfig,
    new_registry,
    sample_every,
    serve_metrics,
)
from mesh.topics import Topics
from scheduler.adapters.store import PostgresTimerStore
from scheduler.consumer import TimerRequestHandler
from scheduler.firing import Firer
from scheduler.grpc_api import TimerApi
from scheduler.metrics import MeasuredTimerStore, PendingSampler, SchedulerMetrics
from servicecall.internal.v1 import timer_service_pb2, timer_service_pb2_grpc

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = timer_service_pb2.DESCRIPTOR.services_by_name["TimerService"].full_name


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    common: CommonConfig
    batch_size: int
    claim_lease: timedelta
    max_sleep: timedelta
    window_span: timedelta
    window_capacity: int
    handoff_pull_rate: float
    handoff_pull_max: timedelta
    consumer_group: str
    metrics: MetricsConfig = METRICS_OFF
    # How often the pending-timers gauge is sampled: one count over the index of pending
    # timers, ~135 ms at 500k pending (docs/observability.md), hence not every scrape.
    metrics_sample_s: float = 15.0

    @classmethod
    def from_env(cls, env: Env) -> SchedulerConfig:
        config = cls(
            common=CommonConfig.from_env(env, "scheduler", 50052),
            batch_size=env.integer("FIRE_BATCH_SIZE", 500),
            claim_lease=env.seconds("CLAIM_LEASE_S", 10.0),
            # How often the firing loop re-reads the near-term window from Postgres even when
            # nothing woke it: the bound on noticing timers another replica armed or left.
            max_sleep=env.seconds("MAX_SLEEP_S", 1.0),
            window_span=env.seconds("WINDOW_SPAN_S", 300.0),
            # Bounded memory: the window never holds more, however many timers are pending.
            # Also what the crowded-hand-off rule can see ahead (scheduler/domain/window.py):
            # at least HANDOFF_PULL_RATE x HANDOFF_PULL_MAX_S.
            window_capacity=env.integer("WINDOW_CAPACITY", 16384),
            # Hand-offs per second the pipeline (orchestrator, Kafka) is counted on for when
            # many calls are due together, and how early that may fire one (at most the
            # orchestrator's HANDOFF_EARLY_MAX_S); 0 turns the rule off. docs/timing.md.
            handoff_pull_rate=env.number("HANDOFF_PULL_RATE", 1000.0),
            handoff_pull_max=env.seconds("HANDOFF_PULL_MAX_S", 10.0),
            consumer_group=env.text("SCHEDULER_GROUP", "scheduler"),
            metrics=MetricsConfig.from_env(env),
            metrics_sample_s=env.number("METRICS_SAMPLE_S", 15.0),
        )
        if config.handoff_pull_rate < 0:
            raise ConfigError("HANDOFF_PULL_RATE must not be negative (0 turns it off)")
        if config.handoff_pull_max < timedelta(0):
            raise ConfigError("HANDOFF_PULL_MAX_S must not be negative")
        if config.window_capacity < 1:
            raise ConfigError("WINDOW_CAPACITY must be positive")
        return config


async def serve(config: SchedulerConfig) -> None:
    common = config.common
    topics = Topics.with_prefix(common.topic_prefix)
    stop_tracing = tracing.start(common.service_name, os.environ)
    engine = make_engine(common.database_url)
    bus = KafkaEventBus(common.kafka_bootstrap, "scheduler")
    await bus.start()
    clock = SystemClock()
    metrics = SchedulerMetrics(new_registry())
    store = MeasuredTimerStore(PostgresTimerStore(engine), metrics)
    firer = Firer(
        store,
        bus,
        clock,
        topics,
        batch_size=config.batch_size,
        claim_lease=config.claim_lease,
        max_sleep=config.max_sleep,
        window_span=config.window_span,
        window_capacity=config.window_capacity,
        handoff_pull_rate=config.handoff_pull_rate,
        handoff_pull_max=config.handoff_pull_max,
    )
    api = TimerApi(store, firer, clock, Uuid7Gen())
    server = GrpcServer(
        common.grpc_host,
        common.grpc_port,
        [partial(timer_service_pb2_grpc.add_TimerServiceServicer_to_server, api)],
        [SERVICE_NAME],
        interceptors=[GrpcMetrics(metrics.registry)],
    )
    consumer = ConsumerRunner(
        common.kafka_bootstrap,
        config.consumer_group,
        [topics.timer_requests],
        TimerRequestHandler(store, firer),
        client_id="scheduler",
        group_instance_id=common.group_instance_id,
        # No parking table here: a timer request that cannot be armed after the bounded
        # tries is logged and dropped, and the orchestrator's hand-off backstop takes over.
        on_health=partial(server.set_ready, "consumer"),
        consumer_factory=ConsumerLag(metrics.registry, config.consumer_group).consumer_factory(),
    )
    loops: dict[str, Loop] = {"firer": firer.run, "consumer": lambda _stop: consumer.run()}
    if config.metrics.enabled:  # nobody reads the sampled gauge otherwise
        pending = PendingSampler(engine, metrics)
        loops["metrics-sampler"] = partial(
            sample_every, config.metrics_sample_s, pending.sample, what="pending timers"
        )
    metrics_server = await serve_metrics(metrics.registry, config.metrics)
    await Lifecycle(
        "scheduler",
        server,
        loops=loops,
        on_stop=[consumer.stop],
        closers=[
            bus.close,
            engine.dispose,
            stop_tracing,
            *([metrics_server.close] if metrics_server else []),
        ],
    ).run()


def main(argv: list[str] | None = None) -> None:
    config = SchedulerConfig.from_env(Env(os.environ))
    service_main(
        "scheduler",
        config.common.log_level,
        lambda: serve(config),
        config.common.database_url,
        MIGRATIONS,
        argv,
    )
