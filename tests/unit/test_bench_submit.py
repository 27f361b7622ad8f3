"""The intake bench's own parts: its HTTP/1.1 client, its load loops and its verdicts (loopback
sinks only; the mesh itself is measured by `make bench-submit`, not tested here)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import grpc
from google.rpc import status_pb2

from bench._sink import FastSink
from bench.submit import (
    HttpClient,
    JsonFace,
    LoadSpec,
    Outcome,
    StepRun,
    Window,
    _children,
    _closed_loop,
    _paced,
    cpu_percent,
    percentile,
    run_load,
    run_workers,
    split,
    step_summary,
)
from meshctl.sink import Sink
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def _step(**changes: float) -> StepRun:
    values: dict[str, float] = {
        "rate": 500,
        "sent": 1000,
        "acknowledged": 1000,
        "achieved_per_s": 499,
        "arrived": 1000,
        "duplicates": 0,
        "p50_ms": 10,
        "p99_ms": 40,
        "errors": 0,
        "client_cpu_pct": 20,
    }
    values.update(changes)
    return StepRun(**values)  # type: ignore[arg-type]


def test_a_step_passes_only_when_rate_kept_nothing_lost_and_p99_within_100_ms() -> None:
    assert _step().passed()
    assert not _step(achieved_per_s=400).passed()  # the mesh did not take the rate
    assert not _step(arrived=999).passed()  # a call never reached the sink
    assert not _step(errors=1).passed()
    assert not _step(p99_ms=101).passed()
    assert not _step(p99_ms=math.nan).passed()  # nothing arrived at all
    assert "p99 101 ms" in _step(p99_ms=101).why_not()


def test_a_steps_summary_takes_medians_but_keeps_every_lost_call() -> None:
    summary = step_summary([_step(p99_ms=30), _step(p99_ms=90, arrived=999), _step(p99_ms=50)])
    assert summary.p99_ms == 50
    assert summary.lost == 1 and not summary.passed()


async def test_http_client_keeps_one_connection_alive_across_requests() -> None:
    sink = FastSink()
    await sink.start()
    client = HttpClient("127.0.0.1", sink.port)
    try:
        for i in range(3):
            assert await client.post(f"/p/{i}", {"X-Test": "1"}, b"{}") == (200, b"{}")
    finally:
        client.close()
        await sink.stop()
    assert [a.path for a in sink.arrivals] == ["/p/0", "/p/1", "/p/2"]
    assert len(client._all) == 1


async def test_json_face_sends_what_curl_would() -> None:
    sink = Sink()
    await sink.start()
    face = JsonFace("127.0.0.1", sink.port, "demo", "k3y")
    try:
        outcome = await face.submit("http://127.0.0.1:9/later", 3600)
    finally:
        await face.close()
        await sink.stop()
    assert outcome == (1, [], [""])  # 2xx; this sink's answer names no call id
    [arrival] = sink.arrivals
    assert (arrival.method, arrival.path) == ("POST", "/v1/tenants/demo/service-calls")
    assert arrival.header("Authorization") == "Bearer k3y"
    assert arrival.header("Content-Type") == "application/json"
    assert json.loads(arrival.body) == {
        "serviceCall": {
            "request": {"httpMethod": "POST", "url": "http://127.0.0.1:9/later"},
            "tags": ["bench-submit"],
            "retryPolicy": {"maxAttempts": 1},
        },
        "delay": "3600s",
    }


def _spec(**changes: object) -> LoadSpec:
    values: dict[str, object] = {
        "mode": "json-envoy",
        "host": "127.0.0.1",
        "port": 9,
        "tenant": "demo",
        "key": "k",
        "url": "http://s/u/",
        "in_flight": 4,
        "duration_s": 0.2,
        "warm_up": False,
    }
    values.update(changes)
    return LoadSpec(**values)  # type: ignore[arg-type]


async def test_closed_loop_keeps_its_slots_busy_and_counts_failures() -> None:
    busy = 0
    most = 0
    calls = 0

    async def submit(url: str, delay_s: int) -> Outcome:
        nonlocal busy, most, calls
        busy += 1
        most = max(most, busy)
        calls += 1
        await asyncio.sleep(0)
        busy -= 1
        if calls % 2:
            return 1, [], [f"id-{calls}"]
        return 0, ["UNAVAILABLE"], []

    result = await _closed_loop(submit, _spec(), Window())
    assert most == 4
    assert result.sent == calls and result.acknowledged + result.errors["UNAVAILABLE"] == calls
    assert len(result.latencies_ms) == result.acknowledged == len(result.ids)


async def test_paced_loop_holds_no_more_than_its_cap_outstanding() -> None:
    release, capped = asyncio.Event(), asyncio.Event()
    started = 0

    async def submit(url: str, delay_s: int) -> Outcome:
        nonlocal started
        started += 1
        if started == 5:
            capped.set()
        await release.wait()
        return 1, [], [url]

    run = asyncio.create_task(
        _paced(submit, _spec(rate=10_000.0, in_flight=5, duration_s=0.2), Window())
    )
    await capped.wait()
    await asyncio.sleep(0.05)  # a quarter of the window, at a rate that wants 500 more calls
    assert not run.done() and started == 5  # the cap is reached; nothing more is sent
    release.set()
    result = await run
    assert result.sent >= 5 and result.acknowledged == result.sent
    assert set(result.starts) == {f"/u/{i}" for i in range(result.sent)}


async def test_worker_processes_run_a_load_together_and_report_it_as_one() -> None:
    sink = FastSink()
    await sink.start()
    try:
        spec = _spec(port=sink.port, in_flight=3, duration_s=0.3)
        marks: list[str] = []
        result = await run_workers(split(spec, 2), marks.append)
    finally:
        await sink.stop()
    assert result.acknowledged > 0 and not result.errors
    assert result.cpu_s > 0 and result.elapsed_s >= 0.3
    assert marks == ["window-start", "window-end"]  # once, for both workers
    assert {a.path for a in sink.arrivals} == {"/v1/tenants/demo/service-calls"}


def test_a_load_split_over_workers_keeps_its_total_and_unique_paths() -> None:
    specs = split(_spec(in_flight=5, rate=300.0, url="http://s/e2e/"), 2)
    assert [s.in_flight for s in specs] == [3, 2]
    assert [s.rate for s in specs] == [150.0, 150.0]
    assert [s.url for s in specs] == ["http://s/e2e/w0-", "http://s/e2e/w1-"]
    assert [s.url for s in split(_spec(in_flight=1), 2)] == ["http://s/u/"]  # one worker


def test_children_finds_a_process_started_here() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in _children(os.getpid())
    finally:
        child.kill()
        child.wait()


async def test_grpc_faces_submit_with_the_key_and_cancel_what_they_submitted() -> None:
    submitted: list[svc.SubmitServiceCallRequest] = []
    canceled: list[str] = []

    async def submit(
        request: svc.SubmitServiceCallRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ServiceCall:
        if ("authorization", "Bearer k") not in tuple(context.invocation_metadata() or ()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad key")
        submitted.append(request)
        return api.ServiceCall(service_call_id=f"id-{len(submitted)}")

    async def cancel(
        request: svc.CancelServiceCallRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ServiceCall:
        canceled.append(request.service_call_id)
        return api.ServiceCall(service_call_id=request.service_call_id)

    # An in-memory stand-in for the orchestrator's public API, on loopback.
    handler = grpc.method_handlers_generic_handler(
        "servicecall.v1.ServiceCallService",
        {
            "SubmitServiceCall": grpc.unary_unary_rpc_method_handler(
                submit,
                request_deserializer=svc.SubmitServiceCallRequest.FromString,
                response_serializer=api.ServiceCall.SerializeToString,
            ),
            "CancelServiceCall": grpc.unary_unary_rpc_method_handler(
                cancel,
                request_deserializer=svc.CancelServiceCallRequest.FromString,
                response_serializer=api.ServiceCall.SerializeToString,
            ),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        grpc_spec = _spec(mode="grpc-direct", port=port, key="k", url="http://127.0.0.1:9/x")
        result = await run_load(grpc_spec)
        refused = await run_load(replace(grpc_spec, key="wrong", duration_s=0.05))
        paced = await run_load(replace(grpc_spec, url="http://s/e2e/", delay_s=0, rate=200.0))
        cleanup = await run_load(replace(grpc_spec, mode="cancel", ids=tuple(result.ids)))
    finally:
        await server.stop(None)
    assert result.acknowledged > 0 and not result.errors
    assert sorted(canceled) == sorted(result.ids) and cleanup.acknowledged == len(result.ids)
    assert refused.acknowledged == 0 and set(refused.errors) == {"UNAUTHENTICATED"}
    later = submitted[0]
    assert later.tenant_id == "demo" and later.delay.seconds == 3600
    assert list(later.service_call.tags) == ["bench-submit"]
    assert later.service_call.retry_policy.max_attempts == 1
    now = [r for r in submitted if r.service_call.request.url.startswith("http://s/e2e/")]
    assert set(paced.starts) == {r.service_call.request.url[len("http://s") :] for r in now}
    assert len(now) == paced.sent == paced.acknowledged and not any(
        r.HasField("delay") for r in now
    )


async def test_the_batch_face_sends_items_and_counts_each_answer() -> None:
    received: list[svc.BatchSubmitServiceCallsRequest] = []
    result_of = svc.BatchSubmitServiceCallsResponse.Result

    async def batch(
        request: svc.BatchSubmitServiceCallsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> svc.BatchSubmitServiceCallsResponse:
        received.append(request)
        refused = result_of(error=status_pb2.Status(code=grpc.StatusCode.ALREADY_EXISTS.value[0]))
        accepted = [
            result_of(service_call=api.ServiceCall(service_call_id=f"id-{i}"), created=True)
            for i in range(1, len(request.items))
        ]
        return svc.BatchSubmitServiceCallsResponse(results=[refused, *accepted])

    handler = grpc.method_handlers_generic_handler(
        "servicecall.v1.ServiceCallService",
        {
            "BatchSubmitServiceCalls": grpc.unary_unary_rpc_method_handler(
                batch,
                request_deserializer=svc.BatchSubmitServiceCallsRequest.FromString,
                response_serializer=svc.BatchSubmitServiceCallsResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        result = await run_load(_spec(mode="batch", port=port, batch_size=3, in_flight=1))
    finally:
        await server.stop(None)
    assert received and result.acknowledged == 2 * len(received)
    assert result.errors == {"ALREADY_EXISTS": len(received)}
    assert set(result.ids) == {"id-1", "id-2"}
    first = received[0]
    assert first.tenant_id == "demo" and len(first.items) == 3
    assert first.items[0].delay.seconds == 3600
    assert list(first.items[0].service_call.tags) == ["bench-submit"]


def test_cpu_of_a_group_counts_only_processes_alive_at_both_samples() -> None:
    before = {"postgres": {1: 10.0, 2: 5.0}, "envoy": {3: 1.0}}
    after = {"postgres": {1: 10.5, 4: 0.2}, "envoy": {3: 1.25}}  # 2 ended, 4 started
    assert cpu_percent(before, after, 1.0) == {"postgres": 50.0, "envoy": 25.0}
