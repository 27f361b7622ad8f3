"""Composition root of the scheduler: `python -m scheduler [serve|migrate]`."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial
from pathlib import Path

from mesh import tracing
from mesh.clock import SystemClock, Uuid7Gen
from mesh.config import Env
from mesh.db import make_engine
from mesh.grpc_server import GrpcServer
from mesh.kafka import ConsumerRunner, KafkaEventBus
from mesh.lifecycle import Lifecycle, Loop, service_main
from mesh.metrics import ConsumerLag, GrpcMetrics, new_registry, sample_every, serve_metrics
from mesh.ports import Clock, EventBus
from mesh.topics import Topics
from scheduler.adapters.fired_timers import KafkaFiredTimers
from scheduler.adapters.metrics import MeasuredTimerStore, PendingSampler, SchedulerMetrics
from scheduler.adapters.store import PostgresTimerStore
from scheduler.config import SchedulerConfig
from scheduler.entrypoints.grpc_api import TimerApi
from scheduler.entrypoints.timer_requests import TimerRequestHandler
from scheduler.ports import TimerStore
from scheduler.service_layer.firing import Firer, Sleeper
from servicecall.internal.v1 import timer_service_pb2, timer_service_pb2_grpc

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = timer_service_pb2.DESCRIPTOR.services_by_name["TimerService"].full_name


class KafkaFirer(Firer):
    """The firing loop announcing fired timers on `topics.timer_events` through `bus`: what
    the scheduler runs (and what tests build over a bus of their own)."""

    def __init__(
        self,
        store: TimerStore,
        bus: EventBus,
        clock: Clock,
        topics: Topics,
        batch_size: int = 500,
        claim_lease: timedelta = timedelta(seconds=10),
        max_sleep: timedelta = timedelta(seconds=1),
        retention: timedelta = timedelta(hours=1),
        window_span: timedelta = timedelta(minutes=5),
        window_capacity: int = 16384,
        handoff_pull_rate: float = 0.0,
        handoff_pull_max: timedelta = timedelta(0),
        sleeper: Sleeper | None = None,
    ) -> None:
        super().__init__(
            store,
            KafkaFiredTimers(bus, topics.timer_events),
            clock,
            batch_size=batch_size,
            claim_lease=claim_lease,
            max_sleep=max_sleep,
            retention=retention,
            window_span=window_span,
            window_capacity=window_capacity,
            handoff_pull_rate=handoff_pull_rate,
            handoff_pull_max=handoff_pull_max,
            sleeper=sleeper,
        )


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
    firer = KafkaFirer(
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
    close_metrics = await serve_metrics(metrics.registry, config.metrics)
    await Lifecycle(
        "scheduler",
        server,
        loops=loops,
        on_stop=[consumer.stop],
        closers=[
            bus.close,
            engine.dispose,
            stop_tracing,
            close_metrics,
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
