"""mesh/metrics.py: the config, the loop-served /metrics endpoint, the per-RPC metrics through a
real grpc.aio server, consumer lag from librdkafka statistics, and sampled gauges."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from mesh.config import ConfigError, Env
from mesh.grpc_server import GrpcServer
from mesh.metrics import (
    LATENESS_BUCKETS,
    ConsumerLag,
    GrpcMetrics,
    MetricsConfig,
    MetricsServer,
    lag_by_partition,
    new_registry,
    sample_every,
)


def test_metrics_are_off_unless_a_port_is_given() -> None:
    assert not MetricsConfig.from_env(Env({})).enabled
    config = MetricsConfig.from_env(Env({"METRICS_PORT": "9401"}))
    assert config.enabled and config.port == 9401 and config.host == "127.0.0.1"
    with pytest.raises(ConfigError):
        MetricsConfig.from_env(Env({"METRICS_PORT": "70000"}))
    with pytest.raises(ConfigError):
        MetricsConfig.from_env(Env({"METRICS_PORT": "lots"}))


def test_a_process_registry_is_its_own_not_the_global_default() -> None:
    registry = new_registry()
    Counter("only_here", "a test counter", registry=registry).inc()
    assert registry.get_sample_value("only_here_total") == 1
    assert REGISTRY.get_sample_value("only_here_total") is None
    # The standard process metrics come with it.
    assert registry.get_sample_value("process_cpu_seconds_total") is not None


def test_lateness_buckets_resolve_the_one_millisecond_goal() -> None:
    assert {0.0005, 0.001, 0.0015} <= set(LATENESS_BUCKETS)
    assert tuple(sorted(LATENESS_BUCKETS)) == LATENESS_BUCKETS
    assert LATENESS_BUCKETS[-1] >= 60


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


async def test_the_endpoint_serves_the_registry_in_the_text_format() -> None:
    registry = CollectorRegistry()
    hits = Counter("hits", "things that happened", registry=registry)
    server = MetricsServer(registry, "127.0.0.1", 0)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.bound_port}"
        hits.inc(3)
        status, content_type, body = await asyncio.to_thread(_get, url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        assert "hits_total 3.0" in body.splitlines()
        hits.inc()
        _, _, body = await asyncio.to_thread(_get, url + "/metrics")
        assert "hits_total 4.0" in body.splitlines()
        status, _, _ = await asyncio.to_thread(_get, url + "/elsewhere")
        assert status == 404
    finally:
        await server.close()


async def test_a_client_that_sends_nothing_does_not_hold_the_endpoint() -> None:
    registry = CollectorRegistry()
    server = MetricsServer(registry, "127.0.0.1", 0)
    await server.start()
    try:
        _, silent = await asyncio.open_connection("127.0.0.1", server.bound_port)
        status, _, _ = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{server.bound_port}/metrics"
        )
        assert status == 200
        silent.close()
    finally:
        await server.close()


async def test_every_rpc_is_counted_by_method_and_code_and_timed() -> None:
    registry = CollectorRegistry()
    server = GrpcServer("127.0.0.1", 0, [], ["test.Service"], interceptors=[GrpcMetrics(registry)])
    await server.start()
    labels = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            await health.Check(health_pb2.HealthCheckRequest(service=""))
            await health.Check(health_pb2.HealthCheckRequest(service=""))
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(grace=0.1)

    def handled(code: str) -> float | None:
        return registry.get_sample_value(
            "servicecall_grpc_server_handled_total", {**labels, "grpc_code": code}
        )

    assert handled("OK") == 2
    assert handled("NOT_FOUND") == 1
    assert registry.get_sample_value("servicecall_grpc_server_handling_seconds_count", labels) == 3


STATS = {
    "name": "rdkafka#consumer-1",
    "topics": {
        "servicecall.execution-requests": {
            "partitions": {
                "0": {"consumer_lag": 5, "hi_offset": 105, "committed_offset": 100},
                "1": {"consumer_lag": 0},
                "2": {"consumer_lag": -1},  # not known yet
                "-1": {"consumer_lag": 0},  # librdkafka's internal unassigned queue
            }
        }
    },
}


def test_lag_is_read_per_assigned_partition_from_librdkafka_statistics() -> None:
    assert dict(lag_by_partition(STATS)) == {
        ("servicecall.execution-requests", 0): 5,
        ("servicecall.execution-requests", 1): 0,
    }
    assert dict(lag_by_partition({})) == {}


def test_the_lag_gauge_follows_the_latest_statistics_only() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(registry, "executor", interval_s=5)
    assert lag.interval_ms == 5000
    lag.on_stats(json.dumps(STATS))
    labels = {"group": "executor", "topic": "servicecall.execution-requests"}
    sample = "servicecall_kafka_consumer_lag"
    assert registry.get_sample_value(sample, {**labels, "partition": "0"}) == 5
    # Partition 0 revoked: its series goes.
    lag.on_stats(json.dumps({"topics": {"servicecall.execution-requests": {"partitions": {}}}}))
    assert registry.get_sample_value(sample, {**labels, "partition": "0"}) is None
    lag.on_stats("not json")  # logged, never raised into librdkafka
    assert lag.updates == 2


async def test_a_sampler_survives_a_failing_sample_and_stops_when_asked() -> None:
    calls = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        if calls == 3:
            stop.set()

    await asyncio.wait_for(sample_every(0.001, sample, stop, "test"), 5)
    assert calls == 3
