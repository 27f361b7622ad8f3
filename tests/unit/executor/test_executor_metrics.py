"""The executor's metrics: lateness and attempts by response class as the handler reports them,
and the gauges read at scrape time (held attempts, in flight by host class)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prometheus_client import CollectorRegistry

from executor.adapters.metrics import ExecutorMetrics, host_class, response_class
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpResponse
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots as Limits
from tests.fakes.executor.ports import T0
from tests.fakes.executor.world import PORT, World, received, request_envelope

LATENESS = "servicecall_executor_lateness_seconds"


def measured_world() -> tuple[World, CollectorRegistry]:
    registry = CollectorRegistry()
    executions = Executions()
    limits = Limits(512, 512, 512)
    metrics = ExecutorMetrics(registry, executions, limits)
    return World(executions=executions, limits=limits, observer=metrics), registry


async def test_a_late_request_lands_in_its_lateness_bucket_and_its_class() -> None:
    world, registry = measured_world()
    # Handed over 3 ms after its due time: it goes out at once, 3 ms late.
    world.clock.current = T0 + timedelta(milliseconds=3)
    await world.handler(received(request_envelope(not_before=T0)))

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(f"{LATENESS}_bucket", {"le": le})

    assert registry.get_sample_value(f"{LATENESS}_count") == 1
    assert bucket("0.0025") == 0
    assert bucket("0.005") == 1
    assert registry.get_sample_value(f"{LATENESS}_sum") == 0.003
    durations = "servicecall_executor_attempt_duration_seconds_count"
    assert registry.get_sample_value(durations, {"response_class": "2xx"}) == 1


async def test_a_failing_target_is_counted_in_its_class() -> None:
    world, registry = measured_world()
    url = f"http://target.example:{PORT}/status/503"
    await world.handler(received(request_envelope(url=url)))
    durations = "servicecall_executor_attempt_duration_seconds_count"
    assert registry.get_sample_value(durations, {"response_class": "5xx"}) == 1
    assert (
        registry.get_sample_value(durations, {"response_class": "2xx"}) is None
    )  # a class never seen has no series


async def test_held_attempts_and_in_flight_by_host_class_are_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    limits = Limits(8, 8, 8)
    ExecutorMetrics(registry, Executions(), limits)
    gauge = "servicecall_executor_in_flight_by_host_class"
    async with (
        limits.slot("acme", "127.0.0.1:8080"),
        limits.slot("acme", "10.1.2.3:80"),
        limits.slot("zeta", "hooks.example.com:443"),
    ):
        assert registry.get_sample_value(gauge, {"host_class": "loopback"}) == 1
        assert registry.get_sample_value(gauge, {"host_class": "private"}) == 1
        assert registry.get_sample_value(gauge, {"host_class": "name"}) == 1
        assert registry.get_sample_value(gauge, {"host_class": "public"}) == 0
        assert registry.get_sample_value("servicecall_executor_in_flight") == 3
    await asyncio.sleep(0)
    assert registry.get_sample_value(gauge, {"host_class": "loopback"}) == 0
    assert registry.get_sample_value("servicecall_executor_held_attempts") == 0


def test_host_and_response_classes_are_closed_sets() -> None:
    assert host_class("localhost:80") == "loopback"
    assert host_class("::1:8080") == "loopback"
    assert host_class("192.168.0.4:") == "private"
    assert host_class("93.184.215.14:443") == "public"
    assert host_class("target.example:80") == "name"
    assert response_class(HttpResponse(204, (), b"")) == "2xx"
    assert response_class(HttpResponse(599, (), b"")) == "5xx"
    assert response_class(HttpFailure(AttemptError.TIMEOUT, "slow")) == "timeout"
