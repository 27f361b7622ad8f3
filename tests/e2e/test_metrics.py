"""Metrics move as the behaviour they count happens, read over HTTP from the running
processes' /metrics; and a real Prometheus started for the test mesh scrapes every one."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from meshctl import prometheus as prom
from meshctl.layout import Layout
from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.e2e.conftest import CallEvents

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually_scraped(
    port: int, condition: Callable[[Samples], bool], timeout: float = 30.0
) -> Samples:
    """Scrapes until `condition(samples)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, port)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, "metric did not move in time"
        await asyncio.sleep(0.1)


def tenant() -> str:
    return f"metrics-{uuid.uuid4().hex[:10]}"


async def test_a_submit_counts_one_and_its_late_send_lands_in_the_lateness_histogram(
    running_mesh: Layout,
    grpc_api: svc_grpc.ServiceCallServiceAsyncStub,
    sink: Sink,
    call_events: CallEvents,
) -> None:
    orchestrator = running_mesh.orchestrator_metrics_port
    executor = running_mesh.executor_metrics_port
    before = await asyncio.to_thread(scrape, orchestrator)
    sent_before = await asyncio.to_thread(scrape, executor)
    created = "servicecall_calls_submitted_total"
    lateness = "servicecall_executor_lateness_seconds"

    path = f"/metrics/{uuid.uuid4().hex}"
    # Due now: it is dispatched at once and goes out after the outbox, Kafka and the
    # executor's hops, so measurably after its due time.
    call = await grpc_api.SubmitServiceCall(
        svc.SubmitServiceCallRequest(
            tenant_id=tenant(),
            service_call=api.ServiceCall(
                request=api.HttpRequest(http_method=api.POST, url=sink.url(path), body=b"{}")
            ),
        )
    )
    after = await asyncio.to_thread(scrape, orchestrator)
    assert value(after, created, outcome="created") == value(before, created, outcome="created") + 1
    assert value(after, created, outcome="invalid") == value(before, created, outcome="invalid")
    # The RPC itself was counted, with its code.
    rpc = {"grpc_service": "servicecall.v1.ServiceCallService", "grpc_method": "SubmitServiceCall"}
    handled = "servicecall_grpc_server_handled_total"
    assert (
        value(after, handled, grpc_code="OK", **rpc)
        >= value(before, handled, grpc_code="OK", **rpc) + 1
    )

    completed = await call_events.completed(call.service_call_id)
    assert completed.completed.state == api.ServiceCall.SUCCEEDED
    assert sink.matching(path)

    def later_than_first_bucket(samples: Samples) -> float:
        return value(samples, f"{lateness}_count") - value(
            samples, f"{lateness}_bucket", le="0.00025"
        )

    def one_more_late_send(samples: Samples) -> bool:
        return later_than_first_bucket(samples) >= later_than_first_bucket(sent_before) + 1

    # Through Postgres and two Kafka hops no request goes out within 0.25 ms of its due time:
    # the new observation lands above the first bucket. The executor serves the whole test
    # session, so other tests' timed sends may land in the first bucket meanwhile: only
    # what is above it is compared.
    sent_after = await eventually_scraped(executor, one_more_late_send)
    assert value(sent_after, f"{lateness}_sum") > value(sent_before, f"{lateness}_sum")
    classes = "servicecall_executor_attempt_duration_seconds_count"
    assert (
        value(sent_after, classes, response_class="2xx")
        >= value(sent_before, classes, response_class="2xx") + 1
    )

    def finished(samples: Samples) -> bool:
        name = "servicecall_calls_finished_total"
        return (
            value(samples, name, outcome="SUCCEEDED")
            >= value(before, name, outcome="SUCCEEDED") + 1
        )

    await eventually_scraped(orchestrator, finished)


async def test_prometheus_scrapes_every_process_of_the_mesh(prometheus: Layout) -> None:
    expected = {
        f"http://127.0.0.1:{port}/metrics"
        for ports in prometheus.metrics_targets().values()
        for port in ports
    } | {f"http://127.0.0.1:{prometheus.envoy_admin_port}/stats/prometheus"}
    assert len(expected) == 4  # orchestrator, scheduler, executor, Envoy

    deadline = time.monotonic() + 40
    while True:
        health = await asyncio.to_thread(prom.target_health, prometheus)
        if expected <= {url for url, h in health.items() if h == "up"}:
            break
        assert time.monotonic() < deadline, f"targets not all up: {health}"
        await asyncio.sleep(0.5)

    result = await asyncio.to_thread(prom.api, prometheus, "query", query="up")
    by_job = {r["metric"]["job"]: float(r["value"][1]) for r in result["result"]}
    for job in ("orchestrator", "scheduler", "executor", "envoy"):
        assert by_job.get(job) == 1.0, by_job

    rules = await asyncio.to_thread(prom.api, prometheus, "rules", type="record")
    loaded = {r["name"]: r["health"] for g in rules["groups"] for r in g["rules"]}
    assert set(loaded) >= {
        "servicecall:lateness_seconds:p50_5m",
        "servicecall:lateness_seconds:p99_5m",
        "servicecall:calls_finished:rate1m",
        "servicecall:calls_submitted:rate1m",
        "servicecall:consumer_lag:sum",
    }
