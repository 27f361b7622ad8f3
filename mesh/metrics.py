"""Prometheus metrics shared by the services: config, the /metrics server, RPC and lag metrics.

Each process builds one CollectorRegistry in its composition root and passes it to whatever
records metrics; nothing registers on prometheus_client's global default registry and
nothing starts on import. Label values are always drawn from small closed sets (RPC method
names, status codes, outcome names, topic partitions): never call ids, tenant ids or URLs.

The /metrics endpoint is served on the process's event loop rather than on the thread that
prometheus_client's start_http_server uses: collectors that read the loop's own structures
(held attempts, limits, consumer state) then never race it, and a scrape takes no GIL
hand-off from the loop that sends requests on the millisecond (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from confluent_kafka import Consumer
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from mesh.config import ConfigError, Env
from mesh.logs import get_logger

log = get_logger(__name__)

NAMESPACE = "servicecall"

# Request latencies, from well under a millisecond (a cached read) to a slow dependency.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# Due -> sent lateness: fine around the 1 ms goal (docs/timing.md), then coarse up to minutes
# so that a backlog (a stopped executor, a broker outage) still lands in a finite bucket.
LATENESS_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """METRICS_PORT: where this process serves /metrics; 0 turns the endpoint off (the metrics
    are still counted, which costs next to nothing). METRICS_HOST: the address it binds."""

    host: str
    port: int

    @classmethod
    def from_env(cls, env: Env) -> MetricsConfig:
        port = env.integer("METRICS_PORT", 0)
        if not 0 <= port < 65536:
            raise ConfigError(f"METRICS_PORT must be 0 (off) or a port, got {port}")
        return cls(host=env.text("METRICS_HOST", "127.0.0.1"), port=port)

    @property
    def enabled(self) -> bool:
        return self.port != 0


METRICS_OFF = MetricsConfig(host="127.0.0.1", port=0)


def new_registry() -> CollectorRegistry:
    """A registry of the process's own, with the standard process metrics (CPU seconds,
    resident memory, open fds) that every Prometheus dashboard expects."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """Serves `GET /metrics` (the registry in Prometheus' text format) on the event loop.

    A minimal HTTP/1.1 responder: one request per connection (Connection: close), which is
    how Prometheus scrapes work anyway; anything else than GET /metrics (or /) is a 404. A
    request head larger than 16 KiB or slower than 5 s is dropped.
    """

    _MAX_HEAD = 16 * 1024
    _READ_TIMEOUT_S = 5.0

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def bound_port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, reuse_address=True
        )
        log.info("metrics endpoint listening", address=f"{self._host}:{self.bound_port}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), timeout=self._READ_TIMEOUT_S
            )
            if len(head) > self._MAX_HEAD:
                return
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method in (b"GET", b"HEAD") and path in (b"/metrics", b"/"):
                # The classic text format (0.0.4), which every Prometheus version reads.
                body = generate_latest(self._registry)
                status, content_type = b"200 OK", CONTENT_TYPE_PLAIN_0_0_4.encode()
            else:
                body, status, content_type = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (b"" if method == b"HEAD" else body)
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that went away or sent nonsense gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve_metrics(
    registry: CollectorRegistry, config: MetricsConfig
) -> Callable[[], Awaitable[None]]:
    """Starts the endpoint when METRICS_PORT is set. Returns what closes it (nothing to close
    when it is not served), which the composition root runs last."""
    if not config.enabled:
        return _nothing_to_close
    server = MetricsServer(registry, config.host, config.port)
    await server.start()
    return server.close


async def _nothing_to_close() -> None:
    return None


# ---- gRPC -------------------------------------------------------------------------------------


class GrpcMetrics(grpc.aio.ServerInterceptor):
    """Requests, errors and latency per RPC method and status code (go-grpc-prometheus' names,
    under the mesh's namespace). Labels: the service and method names the server registered
    (a request for an unknown method is answered UNIMPLEMENTED before any handler and is not
    counted here) and the status code name: a closed set.

    Put it first in the server's interceptors: it then sees the code the client receives,
    after the other interceptors turned exceptions into codes.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counter(
            "grpc_server_handled",
            "RPCs completed, by method and status code (errors: grpc_code != OK).",
            ["grpc_service", "grpc_method", "grpc_code"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from receiving an RPC to its answer, by method (all codes).",
            ["grpc_service", "grpc_method"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Pre-bound children: one dict lookup per RPC instead of .labels() each time.
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def _count(self, method: str, code: str) -> Any:
        child = self._counters.get((method, code))
        if child is None:
            service, _, name = method.lstrip("/").rpartition("/")
            child = self._counters[(method, code)] = self._handled.labels(service, name, code)
        return child

    def _timer(self, method: str) -> Any:
        child = self._timers.get(method)
        if child is None:
            service, _, name = method.lstrip("/").rpartition("/")
            child = self._timers[method] = self._seconds.labels(service, name)
        return child

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        # Streaming RPCs (health Watch, reflection) live as long as their client: a latency
        # for them would say nothing. The mesh's own RPCs are all unary.
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        behavior = handler.unary_unary
        timer = self._timer(method)

        async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                response = await behavior(request, context)  # type: ignore[arg-type]
                code = _code_name(context.code(), "OK")
                return response
            except grpc.aio.AbortError:
                code = _code_name(context.code(), "UNKNOWN")
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                timer.observe(time.perf_counter() - started)
                self._count(method, code).inc()

        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_name(code: object, default: str) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else default


# ---- Kafka consumer lag -------------------------------------------------------------------


class ConsumerLag:
    """Consumer lag per partition (high watermark minus committed offset), from librdkafka's
    statistics: no extra request to the broker, and a JSON document every `interval_s`.

    Only the partitions assigned to this member are reported (a revoked one disappears at the
    next statistics), so the series are bounded by the topics' partition counts. The values
    are as fresh as the last statistics, which librdkafka emits while the consumer is polled:
    a consumer that stopped polling (back-pressure) keeps its last values until it polls again.
    """

    def __init__(self, registry: CollectorRegistry, group: str, interval_s: float = 5.0) -> None:
        self.group = group
        self.interval_ms = max(1, round(interval_s * 1000))
        self._lag: dict[tuple[str, int], int] = {}
        self.updates = 0
        registry.register(self)

    def consumer_factory(self) -> Callable[[dict[str, Any]], Consumer]:
        """A ConsumerRunner `consumer_factory` that asks librdkafka for statistics."""

        def build(config: dict[str, Any]) -> Consumer:
            return Consumer(
                {**config, "statistics.interval.ms": self.interval_ms, "stats_cb": self.on_stats}
            )

        return build

    def on_stats(self, raw: str) -> None:
        """librdkafka's stats callback (on the thread that polls the consumer)."""
        try:
            self._lag = dict(lag_by_partition(json.loads(raw)))
            self.updates += 1
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("unreadable kafka statistics", error=repr(e))

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for (topic, partition), lag in sorted(self._lag.items()):
            family.add_metric([self.group, topic, str(partition)], lag)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            f"{NAMESPACE}_kafka_consumer_lag",
            "Messages of a partition assigned here not yet committed by the group "
            "(high watermark - committed offset), from librdkafka statistics.",
            labels=["group", "topic", "partition"],
        )


def lag_by_partition(stats: dict[str, Any]) -> Iterator[tuple[tuple[str, int], int]]:
    """(topic, partition) -> lag from a librdkafka statistics document. Partition -1 is
    librdkafka's internal "unassigned" queue, and -1 a lag it does not know yet: both skipped."""
    for topic, about in (stats.get("topics") or {}).items():
        for number, partition in (about.get("partitions") or {}).items():
            index = int(number)
            lag = partition.get("consumer_lag", -1)
            if index >= 0 and isinstance(lag, int) and lag >= 0:
                yield (topic, index), lag


# ---- sampled gauges -----------------------------------------------------------------------


async def sample_every(
    interval_s: float, sample: Callable[[], Awaitable[None]], stop: asyncio.Event, what: str
) -> None:
    """Runs `sample` (a cheap query behind a gauge) every `interval_s` until `stop`; a failure
    (the database away) is logged and the gauge keeps its last value until the next one."""
    while not stop.is_set():
        try:
            await sample()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("metrics sample failed", sample=what, error=repr(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def gauge(registry: CollectorRegistry, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
    return Gauge(name, doc, list(labels), namespace=NAMESPACE, registry=registry)


def counter(
    registry: CollectorRegistry, name: str, doc: str, labels: Iterable[str] = ()
) -> Counter:
    return Counter(name, doc, list(labels), namespace=NAMESPACE, registry=registry)


def histogram(
    registry: CollectorRegistry,
    name: str,
    doc: str,
    buckets: tuple[float, ...],
    labels: Iterable[str] = (),
) -> Histogram:
    return Histogram(
        name, doc, list(labels), namespace=NAMESPACE, buckets=buckets, registry=registry
    )
