"""Composition root of the executor: `python -m executor`."""

from __future__ import annotations

import gc
import os
from datetime import timedelta
from functools import partial

from executor.adapters.h1_client import H1Client
from executor.adapters.kafka_queue import KafkaEventQueue
from executor.adapters.metrics import ExecutorMetrics
from executor.adapters.resolver import Resolver
from executor.adapters.signing_keys import SigningKeysFile
from executor.adapters.sleeper import LoopSleeper, PreciseSleeper
from executor.config import ExecutorConfig
from executor.entrypoints.execution_requests import execution_requests
from executor.entrypoints.grpc_api import SERVICE_NAME, ExecutorApi
from executor.mapping import ReportEnvelopes
from executor.ports import (
    AttemptObserver,
    AttemptPorts,
    EventQueue,
    HttpClient,
    SecretOpener,
    SigningKeys,
    Sleeper,
)
from executor.service_layer.attempts import Attempts, AttemptSettings
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots
from mesh import tracing
from mesh.clock import SystemClock, Uuid7Gen
from mesh.config import Env
from mesh.grpc_server import GrpcServer
from mesh.kafka import ConsumerRunner, Handler, tenant_share
from mesh.lifecycle import Drain, Lifecycle, service_main
from mesh.logs import get_logger
from mesh.metrics import ConsumerLag, GrpcMetrics, new_registry, serve_metrics
from mesh.ports import Clock, IdGen
from mesh.topics import Topics
from servicecall.internal.v1 import executor_service_pb2_grpc

log = get_logger("executor")


def tune_gc(gen0_threshold: int) -> None:
    """Fewer, cheaper garbage collections. An executor at full rate holds thousands of live
    attempts (tasks, futures, messages) and allocates a few hundred objects per call; with the
    default thresholds (700, 10, 10) a full collection, re-scanning all of them, came every few
    tens of milliseconds. Freezing what start-up built keeps it out of every later full
    collection. The gen-0 threshold trades throughput for pauses (each young collection scans
    up to that many objects, and nothing is sent meanwhile): EXECUTOR_GC_GEN0, measured in
    docs/executor.md and docs/timing.md."""
    gc.freeze()
    gc.set_threshold(gen0_threshold, 50, 100)


def ask_for_priority(nice: int, rt_priority: int = 0) -> None:
    """Sets this thread's nice value and, with `rt_priority`, the SCHED_FIFO policy; threads
    started later (librdkafka's, gRPC's, asyncio's workers) inherit both, so call it before any
    of them exist. All threads alike, on purpose: the loop thread waits for the GIL held by
    the others, and a lower-priority holder would make it wait behind ordinary processes."""
    if nice != 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except PermissionError:
            log.warning("EXECUTOR_NICE not applied: no permission (needs CAP_SYS_NICE)", nice=nice)
    if rt_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
        except PermissionError:
            log.warning(
                "EXECUTOR_RT_PRIORITY not applied: no permission (needs CAP_SYS_NICE)",
                rt_priority=rt_priority,
            )


async def serve(config: ExecutorConfig) -> None:
    ask_for_priority(config.nice, config.rt_priority)
    common = config.common
    topics = Topics.with_prefix(common.topic_prefix)
    # After ask_for_priority: an exporting provider starts a thread, which inherits it.
    stop_tracing = tracing.start(common.service_name, os.environ)
    executions = Executions(config.finished_remembered, config.finished_bytes)
    # A short linger batches Started and results into fewer produce requests (measured in
    # docs/executor.md); it no longer delays any request, which goes out before Started is
    # acknowledged, only the offset commit behind the acks.
    bus = KafkaEventQueue(
        common.kafka_bootstrap, f"executor-{config.executor_id}", linger_ms=config.kafka_linger_ms
    )
    await bus.start()
    http = H1Client.create(
        config.egress_allowlist,
        config.max_response_bytes,
        pool_size=config.max_in_flight,
        max_headers=config.max_response_headers,
        max_header_bytes=config.max_response_header_bytes,
        resolver=Resolver(
            threads=config.dns_threads,
            per_tenant=config.dns_lookups_per_tenant,
            timeout_s=config.dns_timeout_s,
        ),
    )
    slots = SendingSlots(
        config.max_in_flight, config.max_in_flight_per_tenant, config.max_in_flight_per_host
    )
    metrics = ExecutorMetrics(new_registry(), executions, slots)
    attempts = Attempts(
        AttemptPorts(
            queue=bus,
            reports=ReportEnvelopes(topics.execution_events, config.executor_id),
            http=http,
            clock=SystemClock(),
            ids=Uuid7Gen(),
            sleeper=PreciseSleeper(),
            coarse_sleeper=LoopSleeper(),
            secrets=config.secrets,
            signing=SigningKeysFile(config.signing_keys_file),
            observer=metrics,
        ),
        executions,
        slots,
        AttemptSettings(started_after=config.started_after, report_defer=config.report_defer),
    )
    server = GrpcServer(
        common.grpc_host,
        common.grpc_port,
        [
            partial(
                executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server,
                ExecutorApi(executions, config.executor_id),
            )
        ],
        [SERVICE_NAME],
        interceptors=[GrpcMetrics(metrics.registry)],
    )
    consumer = ConsumerRunner(
        common.kafka_bootstrap,
        config.consumer_group,
        [topics.execution_requests],
        execution_requests(attempts, config.default_snippet_bytes),
        # Back-pressure: the consumer holds at most this many requests, whatever they wait for.
        max_in_flight=config.max_held,
        max_bytes_in_flight=config.max_held_bytes,
        # Fair sharing: a tenant at its share (a flood to a slow target) waits in its own
        # queue; the other tenants' requests are still taken and sent on time.
        share_of=tenant_share,
        max_in_flight_per_share=config.max_held_per_tenant,
        max_bytes_per_share=config.max_held_bytes_per_tenant,
        on_health=partial(server.set_ready, "consumer"),
        # A partition taken away by a rebalance goes to another executor with the attempts
        # held for it: stop ours rather than both performing them (docs/executor.md).
        cancel_on_revoke=True,
        # Calls are independent and each may wait for its not-before time: run them side by
        # side; a call's own attempts are sequenced by the orchestrator, not by partition order.
        ordered_by_key=False,
        client_id=f"executor-{config.executor_id}",
        # Static membership: a restarted executor gets its partitions back at once, so the
        # attempts it held are redelivered without waiting out the session timeout.
        group_instance_id=common.group_instance_id,
        # A request whose result was acknowledged but whose offset was not yet committed is
        # sent again if this process dies: commit far more often than the services whose
        # redeliveries only cost a dedupe (a bench kill showed 2 such repeats at 100 ms).
        commit_interval_s=0.01,
        consumer_factory=ConsumerLag(metrics.registry, config.consumer_group).consumer_factory(),
    )
    close_metrics = await serve_metrics(metrics.registry, config.metrics)
    await Lifecycle(
        "executor",
        server,
        loops={"consumer": lambda _stop: consumer.run()},
        on_stop=[consumer.stop],
        # The consumer stopped, the held attempts finish (or are abandoned), then what they
        # used closes: the producer's close flushes their last reports.
        drain=Drain(
            attempts, config.drain_timeout_s, what="attempts", release=[http.close, bus.close]
        ),
        grace=1.0,
        closers=[stop_tracing, close_metrics],
        after_start=[partial(tune_gc, config.gc_gen0_threshold)],
        ready={
            "executor_id": config.executor_id,
            "egress_allow": [str(n) for n in config.egress_allowlist],
        },
    ).run()


def execution_handler(
    *,
    bus: EventQueue,
    http: HttpClient,
    clock: Clock,
    ids: IdGen,
    sleeper: Sleeper,
    limits: SendingSlots,
    secrets: SecretOpener,
    signing: SigningKeys,
    executions: Executions,
    events_topic: str,
    executor_id: str,
    default_snippet_bytes: int = 1024,
    started_after: timedelta | None = None,
    report_defer: timedelta | None = None,
    coarse_sleeper: Sleeper | None = None,
    observer: AttemptObserver | None = None,
) -> Handler:
    """The `execution-requests` handler wired from its parts in one call, as `serve` wires it:
    for a bench or a test that runs an executor inside its own process."""
    attempts = Attempts(
        AttemptPorts(
            queue=bus,
            reports=ReportEnvelopes(events_topic, executor_id),
            http=http,
            clock=clock,
            ids=ids,
            sleeper=sleeper,
            coarse_sleeper=coarse_sleeper,
            secrets=secrets,
            signing=signing,
            observer=observer,
        ),
        executions,
        limits,
        AttemptSettings(started_after=started_after, report_defer=report_defer),
    )
    return execution_requests(attempts, default_snippet_bytes)


def main(argv: list[str] | None = None) -> None:
    config = ExecutorConfig.from_env(Env(os.environ))
    service_main("executor", config.common.log_level, lambda: serve(config), argv=argv)
