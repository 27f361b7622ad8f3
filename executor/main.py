"""Composition root of the executor: `python -m executor`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from functools import partial

from executor.adapters.h1_client import H1Client
from executor.adapters.kafka_queue import KafkaEventQueue
from executor.adapters.resolver import Resolver
from executor.adapters.signing_keys import SigningKeysFile
from executor.adapters.sleeper import LoopSleeper, PreciseSleeper
from executor.config import ExecutorConfig
from executor.grpc_api import SERVICE_NAME, ExecutorApi
from executor.handler import ExecutionHandler
from executor.limits import Limits
from executor.metrics import ExecutorMetrics
from executor.registry import Executions
from mesh import tracing
from mesh.clock import SystemClock, Uuid7Gen
from mesh.config import Env
from mesh.grpc_server import GrpcServer
from mesh.kafka import ConsumerRunner, tenant_share
from mesh.lifecycle import service_main, stop_on_signals, supervise
from mesh.logs import get_logger
from mesh.metrics import ConsumerLag, GrpcMetrics, new_registry, serve_metrics
from mesh.topics import Topics
from servicecall.internal.v1 import executor_service_pb2_grpc

log = get_logger("executor")


async def drain(consuming: asyncio.Task[None], handler: ExecutionHandler, timeout: float) -> None:
    """Lets a stopped consumer finish its held attempts for up to `timeout` seconds, then
    abandons the rest: their offsets stay uncommitted, so another executor gets them again
    (and the orchestrator's lease or watchdog covers an attempt cut off mid-request)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(consuming), timeout=timeout)
    if not consuming.done():
        log.warning("drain timeout; abandoning held attempts", abandoned=handler.abandon_all())
    with contextlib.suppress(Exception):
        await consuming


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
    limits = Limits(
        config.max_in_flight, config.max_in_flight_per_tenant, config.max_in_flight_per_host
    )
    metrics = ExecutorMetrics(new_registry(), executions, limits)
    handler = ExecutionHandler(
        bus=bus,
        http=http,
        clock=SystemClock(),
        ids=Uuid7Gen(),
        sleeper=PreciseSleeper(),
        coarse_sleeper=LoopSleeper(),
        limits=limits,
        secrets=config.secrets,
        signing=SigningKeysFile(config.signing_keys_file),
        executions=executions,
        events_topic=topics.execution_events,
        executor_id=config.executor_id,
        default_snippet_bytes=config.default_snippet_bytes,
        started_after=config.started_after,
        report_defer=config.report_defer,
        observer=metrics,
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
        handler,
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
    stop = stop_on_signals()
    metrics_server = await serve_metrics(metrics.registry, config.metrics)
    await server.start()
    tune_gc(config.gc_gen0_threshold)
    consuming = asyncio.create_task(consumer.run(), name="consumer")
    log.info(
        "executor ready",
        port=server.bound_port,
        executor_id=config.executor_id,
        egress_allow=[str(n) for n in config.egress_allowlist],
    )
    crashed = await supervise([consuming], stop)
    log.info("executor stopping", held=len(executions))
    await server.set_serving(False)
    consumer.stop()
    await drain(consuming, handler, config.drain_timeout_s)
    await http.close()
    await bus.close()
    await server.stop(grace=1.0)
    await stop_tracing()
    if metrics_server is not None:
        await metrics_server.close()
    log.info("executor stopped")
    if crashed:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    config = ExecutorConfig.from_env(Env(os.environ))
    service_main("executor", config.common.log_level, lambda: serve(config), argv=argv)
