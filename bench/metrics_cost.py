"""What the metrics cost on the hot paths, in-process: each recording step timed alone, and a
scrape. `python -m bench.metrics_cost` prints microseconds per operation (median of 5 runs).

Not a mesh benchmark: it isolates what the instrumentation adds to one RPC, one attempt, one
transition, so that the figures do not drown in the noise of a whole mesh (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from prometheus_client import generate_latest

from executor.adapters.metrics import ExecutorMetrics
from executor.ports import HttpResponse
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots
from mesh.metrics import ConsumerLag, GrpcMetrics, new_registry
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.domain.events import ExecutionSucceeded
from orchestrator.domain.model import ExecutionResult
from orchestrator.ports import Invalid, Transition

N = 200_000
RUNS = 5


def per_op_us(fn: Callable[[], object], n: int = N) -> float:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


async def per_rpc_us(behavior: Any, n: int = N // 4) -> float:
    class Context:
        def code(self) -> None:
            return None

    context = Context()
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(n):
            await behavior(None, context)
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


async def grpc_costs() -> tuple[float, float]:
    async def answer(_request: object, _context: object) -> bytes:
        return b""

    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(answer)

    async def continuation(_details: object) -> Any:
        return handler

    class Details:
        method = "/servicecall.v1.ServiceCallService/GetServiceCall"

    wrapped = await GrpcMetrics(new_registry()).intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert wrapped is not None
    bare = await per_rpc_us(answer)
    measured = await per_rpc_us(wrapped.unary_unary)
    return bare, measured


def stats_document(partitions: int) -> str:
    topics = {
        f"servicecall.topic-{t}": {
            "partitions": {
                str(p): {"consumer_lag": p, "hi_offset": 1000, "committed_offset": 1000 - p}
                | {f"field_{i}": i for i in range(40)}
                for p in [-1, *range(partitions)]
            }
        }
        for t in range(2)
    }
    return json.dumps({"name": "rdkafka", "brokers": {}, "topics": topics})


def main() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    limits = SendingSlots(512, 256, 128)
    executor = ExecutorMetrics(new_registry(), Executions(), limits)
    reply = HttpResponse(200, (), b"")
    sent = now + timedelta(microseconds=700)
    ended = sent + timedelta(milliseconds=3)
    attempt = per_op_us(lambda: executor.attempt(now, sent, ended, reply))

    orchestrator = OrchestratorMetrics(new_registry())
    result = ExecutionResult(200, "", "", False, None, now)
    done = Transition(None, (ExecutionSucceeded(at=now, attempt=1, result=result),))
    transition = per_op_us(lambda: orchestrator.observe_transition(done))
    submit = per_op_us(lambda: orchestrator.observe_submit(Invalid(())))

    bare, measured = asyncio.run(grpc_costs())

    lag = ConsumerLag(executor.registry, "executor")
    document = stats_document(12)
    stats = per_op_us(lambda: lag.on_stats(document), n=2000)
    lag.on_stats(document)
    scrape = per_op_us(lambda: generate_latest(executor.registry), n=2000)

    print("what (python -m bench.metrics_cost)                     us/op (median of 5)")
    print(f"executor: lateness + duration per attempt              {attempt:8.2f}")
    print(f"orchestrator: a finished call's transition             {transition:8.2f}")
    print(f"orchestrator: a submit's outcome                       {submit:8.2f}")
    print(f"gRPC: a trivial unary handler, bare                    {bare:8.2f}")
    print(f"gRPC: the same through GrpcMetrics                     {measured:8.2f}")
    print(f"kafka: one statistics document (2 topics x 12 parts)   {stats:8.2f}  (every 5 s)")
    print(f"scrape: the executor's whole registry                  {scrape:8.2f}  (every 5 s)")


if __name__ == "__main__":
    main()
