"""Intake benchmark: how fast calls get into the `make up` mesh, and how fast calls due now get
out of it to their target.

`make bench-submit` (or `python -m bench.submit --help`) after `make up`. It measures the dev
mesh as a user meets it (Postgres with fsync on, one process per service, Envoy with one
worker), as the `demo` tenant with the key `make up` wrote to .run/dev/demo.key:

- intake, closed loop: `--in-flight` requests always outstanding for `--duration` s, each
  submitting a call due in one hour (nothing fires while measuring), by gRPC straight to the
  orchestrator, by gRPC through Envoy (one HTTP/2 connection), and by JSON through Envoy over
  HTTP/1.1 keep-alive connections, one request at a time on each, as curl or a typical client
  library sends them. calls/s = acknowledged calls / window; p50/p99 = ack latency, request
  sent -> answer read.
- one sequential client (gRPC through Envoy, one call at a time): p50/p99 ack latency.
- batch submit, 1,000 calls per request (BatchSubmitServiceCalls).
- immediate calls at light load: a call due now, one at a time, submit start -> arrival at a
  loopback sink in this process.
- end-to-end sustained: calls due now, submitted at a steady rate (open loop) for
  `--e2e-window` s, the rate stepped up until a step fails. A step passes when the client kept
  the rate (>= 95 %), no submit failed, every call reached the sink, and the p99 of submit
  start -> arrival is at most 100 ms.
- RSS of each mesh process at the end.

The load comes from worker processes (`python -m bench.submit load`, spec on stdin), so the
sink in this process never shares an event loop or a core's time slice with the load; every
row says how much CPU its client used (100 % = one core). Before each measurement the outbox
is drained, so one measurement's tail does not load the next. Calls due in an hour are
canceled at the end (they carry the tag `bench-submit`) unless `--keep-calls`. Figures, not
pass/fail; each is the median of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httptools
import psycopg

from bench import _procs as procs
from bench._sink import FastSink
from meshctl import mesh, processes
from meshctl.layout import ROOT, SERVICES, Layout
from meshctl.sink import Arrival
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc

TAG = "bench-submit"
LATER_S = 3600  # intake calls are due in an hour: nothing fires while intake is measured
E2E_P99_LIMIT_MS = 100.0
RATE_KEPT = 0.95  # a step's client must have submitted at least this share of its rate
BATCH_METHOD = "BatchSubmitServiceCalls"
FACES = ("grpc-direct", "grpc-envoy", "json-envoy")
FACE_NAMES = {
    "grpc-direct": "gRPC straight to the orchestrator",
    "grpc-envoy": "gRPC through Envoy",
    "json-envoy": "JSON through Envoy",
}

# An acknowledged count, the failures (gRPC code or HTTP status, one per failed call) and the
# ids of the acknowledged calls.
Outcome = tuple[int, list[str], list[str]]
Submit = Callable[[str, int], Awaitable[Outcome]]


# ---- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


@dataclass(frozen=True, slots=True)
class StepRun:
    """One run of one end-to-end rate step."""

    rate: float
    sent: int
    acknowledged: int
    achieved_per_s: float
    arrived: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_pct: float
    ack_p99_ms: float = math.nan  # submit -> acknowledgement, at this rate
    mesh_cpu_pct: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.acknowledged - self.arrived

    def passed(self) -> bool:
        return (
            self.achieved_per_s >= RATE_KEPT * self.rate
            and self.errors == 0
            and self.lost == 0
            and self.p99_ms <= E2E_P99_LIMIT_MS
        )

    def why_not(self) -> str:
        reasons = []
        if self.achieved_per_s < RATE_KEPT * self.rate:
            reasons.append(f"rate not kept ({self.achieved_per_s:,.0f}/s)")
        if self.errors:
            reasons.append(f"{self.errors} submits failed")
        if self.lost:
            reasons.append(f"{self.lost} never arrived")
        if not self.p99_ms <= E2E_P99_LIMIT_MS:
            reasons.append(f"p99 {self.p99_ms:,.0f} ms > {E2E_P99_LIMIT_MS:.0f} ms")
        return ", ".join(reasons) or "passed"


def step_summary(runs: Sequence[StepRun]) -> StepRun:
    """The median run of a step's repeats, figure by figure; lost and failed calls summed, so
    that one run losing a call fails the step."""
    return StepRun(
        rate=runs[0].rate,
        sent=sum(r.sent for r in runs),
        acknowledged=sum(r.acknowledged for r in runs),
        achieved_per_s=median([r.achieved_per_s for r in runs]),
        arrived=sum(r.arrived for r in runs),
        duplicates=sum(r.duplicates for r in runs),
        p50_ms=median([r.p50_ms for r in runs]),
        p99_ms=median([r.p99_ms for r in runs]),
        errors=sum(r.errors for r in runs),
        client_cpu_pct=median([r.client_cpu_pct for r in runs]),
        ack_p99_ms=median([r.ack_p99_ms for r in runs]),
        mesh_cpu_pct=median_by_name([r.mesh_cpu_pct for r in runs]),
    )


def median_by_name(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    names = {name for run in runs for name in run}
    return {name: median([run[name] for run in runs if name in run]) for name in names}


# ---- the JSON face's client: HTTP/1.1 keep-alive, one request at a time per connection ------


class _HttpConnection(asyncio.Protocol):
    """A bare HTTP/1.1 client connection, parsed by llhttp (httptools): a Python client that
    costs little CPU, so that on a 2-core machine the figure is the server's, not the client's.
    It sends what curl sends for the same request; no pipelining."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body = bytearray()
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(ConnectionError(f"bad response: {error}"))
            self.close()

    # llhttp callbacks

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((status, bytes(self._body)))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self._transport is not None and not self.closed
        self._body = bytearray()
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class HttpClient:
    """A pool of keep-alive connections to one host: a request takes an idle one or opens one,
    so there are as many connections as requests in flight, as with a typical client's pool."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[_HttpConnection] = []
        self._all: list[_HttpConnection] = []

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        data = head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body
        connection = await self._connection()
        try:
            return await connection.request(data)
        finally:
            if not connection.closed:
                self._idle.append(connection)

    async def _connection(self) -> _HttpConnection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_HttpConnection, self.host, self.port)
        self._all.append(connection)
        return connection

    def close(self) -> None:
        for connection in self._all:
            connection.close()


# ---- the faces ------------------------------------------------------------------------------


def service_call(url: str) -> api.ServiceCall:
    return api.ServiceCall(
        request=api.HttpRequest(http_method=api.POST, url=url),
        tags=[TAG],
        retry_policy=api.RetryPolicy(max_attempts=1),
    )


class GrpcFace:
    """SubmitServiceCall over one grpc.aio channel (one HTTP/2 connection), as a client would."""

    def __init__(self, target: str, tenant: str, key: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = svc_grpc.ServiceCallServiceStub(self.channel)
        self.tenant = tenant
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def submit(self, url: str, delay_s: int) -> Outcome:
        request = svc.SubmitServiceCallRequest(
            tenant_id=self.tenant, service_call=service_call(url)
        )
        if delay_s:
            request.delay.FromSeconds(delay_s)
        try:
            reply = await self.stub.SubmitServiceCall(request, timeout=60, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            return 0, [error.code().name], []
        return 1, [], [reply.service_call_id]

    async def cancel(self, call_id: str) -> Outcome:
        request = svc.CancelServiceCallRequest(
            tenant_id=self.tenant, service_call_id=call_id, reason="bench-submit cleanup"
        )
        try:
            await self.stub.CancelServiceCall(request, timeout=60, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            return 0, [error.code().name], []
        return 1, [], [call_id]

    async def close(self) -> None:
        await self.channel.close()


class JsonFace:
    """POST /v1/tenants/{tenant}/service-calls through Envoy's JSON transcoding."""

    def __init__(self, host: str, port: int, tenant: str, key: str) -> None:
        self.client = HttpClient(host, port)
        self.path = f"/v1/tenants/{tenant}/service-calls"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def submit(self, url: str, delay_s: int) -> Outcome:
        payload: dict[str, Any] = {
            "serviceCall": {
                "request": {"httpMethod": "POST", "url": url},
                "tags": [TAG],
                "retryPolicy": {"maxAttempts": 1},
            }
        }
        if delay_s:
            payload["delay"] = f"{delay_s}s"
        try:
            status, body = await self.client.post(
                self.path, self.headers, json.dumps(payload).encode()
            )
        except (ConnectionError, OSError) as error:
            return 0, [type(error).__name__], []
        if 200 <= status < 300:
            return 1, [], [str(json.loads(body).get("serviceCallId", ""))]
        return 0, [f"HTTP {status}"], []

    async def close(self) -> None:
        self.client.close()


class BatchFace:
    """BatchSubmitServiceCalls: `size` calls per request, one answer per call."""

    def __init__(self, target: str, tenant: str, key: str, size: int) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = svc_grpc.ServiceCallServiceStub(self.channel)
        self.tenant = tenant
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.size = size

    def request(self, url: str, delay_s: int) -> svc.BatchSubmitServiceCallsRequest:
        item = svc.BatchSubmitServiceCallsRequest.Item(service_call=service_call(url))
        if delay_s:
            item.delay.FromSeconds(delay_s)
        return svc.BatchSubmitServiceCallsRequest(tenant_id=self.tenant, items=[item] * self.size)

    async def submit(self, url: str, delay_s: int) -> Outcome:
        try:
            reply = await self.stub.BatchSubmitServiceCalls(
                self.request(url, delay_s), timeout=120, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as error:
            return 0, [error.code().name] * self.size, []
        ok, errors, ids = 0, [], []
        for result in reply.results:
            if result.HasField("error"):
                errors.append(_code_name(result.error.code))
                continue
            ok += 1
            ids.append(result.service_call.service_call_id)
        return ok, errors, ids

    async def close(self) -> None:
        await self.channel.close()


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return f"code {code}"


# ---- the load worker (a process of its own) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadSpec:
    mode: str  # grpc-direct | grpc-envoy | json-envoy | batch | cancel
    host: str
    port: int
    tenant: str
    key: str
    url: str  # the calls' target; in paced mode a prefix, the call's index appended
    delay_s: int = LATER_S  # 0: due now
    in_flight: int = 64  # closed loop: requests outstanding; paced: the most outstanding
    duration_s: float = 10.0  # closed loop: the window; paced: the window of the rate
    rate: float = 0.0  # > 0: paced (open loop) at this many calls/s instead of a closed loop
    batch_size: int = 1000
    warm_up: bool = True
    ids: tuple[str, ...] = ()  # cancel: the calls to cancel


@dataclass(slots=True)
class LoadResult:
    acknowledged: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # the worker's own CPU (all its threads) over the measured window
    latencies_ms: list[float] = field(default_factory=list)
    sent: int = 0
    # paced: the path of each acknowledged call's URL -> wall-clock time its submit started
    starts: dict[str, float] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    # Set by the bench, not the worker: each mesh process's CPU over the window, % of a core.
    mesh_cpu_pct: dict[str, float] = field(default_factory=dict)

    @property
    def calls_per_s(self) -> float:
        return self.acknowledged / self.elapsed_s if self.elapsed_s > 0 else math.nan

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.elapsed_s if self.elapsed_s > 0 else math.nan


class Window:
    """How a load loop tells whoever runs it that its measured window opens and closes. Here
    (in-process, the tests): nothing. A worker process overrides both (_StdioWindow)."""

    async def open(self) -> None:
        return None

    def close(self) -> None:
        return None


class _StdioWindow(Window):
    """A worker says `ready` once connected and warmed up, and opens its window only when the
    bench answers `go`: all workers of a measurement start together, and the bench samples the
    mesh's CPU over exactly the window, not over the workers' start-up."""

    async def open(self) -> None:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    def close(self) -> None:
        print("window-end", flush=True)


async def _closed_loop(submit: Submit, spec: LoadSpec, window: Window) -> LoadResult:
    result = LoadResult()
    errors: Counter[str] = Counter()
    if spec.warm_up:
        # Connections open and the server's paths run once before the clock starts.
        await asyncio.gather(*(submit(spec.url, spec.delay_s) for _ in range(spec.in_flight)))
    await window.open()
    started, cpu_before = time.perf_counter(), time.process_time()
    deadline = started + spec.duration_s

    async def slot() -> None:
        while time.perf_counter() < deadline:
            sent_at = time.perf_counter()
            ok, failed, ids = await submit(spec.url, spec.delay_s)
            result.sent += 1
            if failed:
                errors.update(failed)
            if ok:
                result.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
                result.acknowledged += ok
                result.ids.extend(ids)
            if failed and not ok:
                await asyncio.sleep(0.01)  # a failing server is not hammered in a tight loop

    await asyncio.gather(*(slot() for _ in range(spec.in_flight)))
    result.elapsed_s = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu_before
    window.close()
    result.errors = dict(errors)
    return result


async def _paced(submit: Submit, spec: LoadSpec, window: Window) -> LoadResult:
    """Open loop: call i is submitted at t0 + i / rate, whether or not earlier ones were
    answered, with at most `in_flight` outstanding. Sending stops at the window's end, so a
    server that cannot keep up shows as a rate not kept rather than an ever longer run.
    `starts` keys each acknowledged call by its URL's path."""
    result = LoadResult()
    errors: Counter[str] = Counter()
    total = max(1, round(spec.rate * spec.duration_s))
    if spec.warm_up:
        warm = [submit(f"{spec.url}warm-{i}", spec.delay_s) for i in range(min(16, total))]
        await asyncio.gather(*warm)
    outstanding: set[asyncio.Task[None]] = set()
    # Counted in the call itself: a task's done callbacks run a loop turn after it ends, so
    # `outstanding` alone would still look full to a sender woken by `room`.
    in_flight = 0
    room = asyncio.Event()
    last_ack = 0.0

    async def one(index: int) -> None:
        nonlocal last_ack, in_flight
        url = f"{spec.url}{index}"
        started_wall, sent_at = time.time(), time.perf_counter()
        try:
            ok, failed, ids = await submit(url, spec.delay_s)
        finally:
            in_flight -= 1
            room.set()
        if failed:
            errors.update(failed)
        if ok:
            last_ack = time.perf_counter()
            result.latencies_ms.append((last_ack - sent_at) * 1000)
            result.acknowledged += ok
            result.starts[urlsplit(url).path] = started_wall
            result.ids.extend(ids)

    await window.open()
    started, cpu_before = time.perf_counter(), time.process_time()
    index = 0
    while index < total:
        elapsed = time.perf_counter() - started
        if elapsed >= spec.duration_s:
            break
        due = min(total, int(elapsed * spec.rate) + 1)
        while index < due and in_flight < spec.in_flight:
            in_flight += 1
            task = asyncio.create_task(one(index))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
            index += 1
        if in_flight >= spec.in_flight:
            room.clear()
            await room.wait()
        elif index < total:
            await asyncio.sleep(max(0.0, index / spec.rate - (time.perf_counter() - started)))
    result.sent = index
    if outstanding:
        await asyncio.gather(*outstanding)
    result.elapsed_s = max(last_ack - started, spec.duration_s)
    result.cpu_s = time.process_time() - cpu_before
    window.close()
    result.errors = dict(errors)
    return result


async def _cancel_all(face: GrpcFace, spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    errors: Counter[str] = Counter()
    queue = list(spec.ids)
    started = time.perf_counter()

    async def slot() -> None:
        while queue:
            ok, failed, _ = await face.cancel(queue.pop())
            result.acknowledged += ok
            errors.update(failed)

    await asyncio.gather(*(slot() for _ in range(spec.in_flight)))
    result.elapsed_s = time.perf_counter() - started
    result.errors = dict(errors)
    return result


async def run_load(spec: LoadSpec, window: Window | None = None) -> LoadResult:
    window = window or Window()
    target = f"{spec.host}:{spec.port}"
    face: GrpcFace | JsonFace | BatchFace
    if spec.mode == "json-envoy":
        face = JsonFace(spec.host, spec.port, spec.tenant, spec.key)
    elif spec.mode == "batch":
        face = BatchFace(target, spec.tenant, spec.key, spec.batch_size)
    else:
        face = GrpcFace(target, spec.tenant, spec.key)
    try:
        if spec.mode == "cancel":
            assert isinstance(face, GrpcFace)
            return await _cancel_all(face, spec)
        if spec.rate > 0:
            return await _paced(face.submit, spec, window)
        return await _closed_loop(face.submit, spec, window)
    finally:
        await face.close()


def _load_main() -> None:
    raw = json.loads(sys.stdin.readline())
    raw["ids"] = tuple(raw.get("ids", ()))
    result = asyncio.run(run_load(LoadSpec(**raw), _StdioWindow()))
    json.dump(
        {
            "acknowledged": result.acknowledged,
            "errors": result.errors,
            "elapsed_s": result.elapsed_s,
            "cpu_s": result.cpu_s,
            "latencies_ms": result.latencies_ms,
            "sent": result.sent,
            "starts": result.starts,
            "ids": result.ids,
        },
        sys.stdout,
    )
    print(flush=True)


def split(spec: LoadSpec, workers: int) -> list[LoadSpec]:
    """One measurement's load shared by `workers` processes: each its share of the requests in
    flight and of the rate, and (paced) a URL prefix of its own so that paths stay unique."""
    shares = [spec.in_flight // workers + (i < spec.in_flight % workers) for i in range(workers)]
    return [
        replace(
            spec,
            in_flight=share,
            rate=spec.rate / workers,
            url=f"{spec.url}w{i}-" if spec.rate > 0 and workers > 1 else spec.url,
        )
        for i, share in enumerate(shares)
        if share > 0
    ]


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """The workers' results as one client's: their calls and CPU summed over the longest
    window."""
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return LoadResult(
        acknowledged=sum(r.acknowledged for r in results),
        errors=dict(errors),
        elapsed_s=max(r.elapsed_s for r in results),
        cpu_s=sum(r.cpu_s for r in results),
        latencies_ms=[v for r in results for v in r.latencies_ms],
        sent=sum(r.sent for r in results),
        starts={path: t for r in results for path, t in r.starts.items()},
        ids=[i for r in results for i in r.ids],
    )


async def run_workers(
    specs: Sequence[LoadSpec], on_mark: Callable[[str], None] | None = None
) -> LoadResult:
    """Runs each spec in a fresh worker process and merges their results. A spec (API key
    included) goes on stdin, not on the command line, where `ps` would show it. Once every
    worker is ready, `on_mark("window-start")` is called and all are told to go; when the last
    one's window ends, `on_mark("window-end")`."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.submit",
            "load",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 30,  # the result is one JSON line: every latency, start time and id
        )
        for _ in specs
    ]
    ready, ended = 0, 0
    all_ready = asyncio.Event()
    mark = on_mark or (lambda name: None)

    async def drive(worker: asyncio.subprocess.Process, spec: LoadSpec) -> LoadResult:
        nonlocal ready, ended
        assert worker.stdin is not None and worker.stdout is not None
        spec_json = json.dumps({k: getattr(spec, k) for k in LoadSpec.__slots__})
        worker.stdin.write(spec_json.encode() + b"\n")
        await worker.stdin.drain()
        raw: dict[str, Any] | None = None
        while line := await worker.stdout.readline():
            text = line.strip()
            if text == b"ready":
                ready += 1
                if ready == len(specs):
                    mark("window-start")
                    all_ready.set()
                await all_ready.wait()
                worker.stdin.write(b"go\n")
                await worker.stdin.drain()
            elif text == b"window-end":
                ended += 1
                if ended == len(specs):
                    mark("window-end")
            elif text:
                raw = json.loads(text)
        worker.stdin.close()
        if await worker.wait() != 0 or raw is None:
            raise RuntimeError(f"load worker ({spec.mode}) exited with {worker.returncode}")
        return LoadResult(**raw)

    try:
        return merge(
            await asyncio.gather(*(drive(w, s) for w, s in zip(workers, specs, strict=True)))
        )
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()


# ---- the mesh -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    name: str
    rss_mb: float
    processes: int = 1


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[-1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def _pid_in(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


MESH_PROCESSES = (*SERVICES, "envoy", "postgres", "kafka")


def mesh_pids(layout: Layout) -> dict[str, list[int]]:
    """The pids of each mesh process: the services and Envoy by their pid files, Kafka's JVM,
    and Postgres as its postmaster and the backends it has now."""
    found: dict[str, list[int]] = {}
    for name in (*SERVICES, "envoy"):
        pid = processes.running_pid(layout.run_dir / f"{name}.pid", str(layout.run_dir))
        if pid is not None:
            found[name] = [pid, *_children(pid)]  # the orchestrator's API workers
    postmaster = _pid_in(layout.run_dir / "pg" / "data" / "postmaster.pid")
    if postmaster is not None:
        found["postgres"] = [postmaster, *_children(postmaster)]
    kafka = _pid_in(layout.run_dir / "kafka" / "kafka.pid")
    if kafka is not None:
        found["kafka"] = [kafka]
    return found


def _samples(pids: list[int]) -> list[procs.Sample]:
    taken = []
    for pid in pids:
        try:
            taken.append(procs.sample(pid))
        except OSError:
            continue  # a backend that ended meanwhile
    return taken


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU time so far of each process of each group, by pid."""
    taken: dict[str, dict[int, float]] = {}
    for name, group in pids.items():
        taken[name] = {}
        for pid in group:
            try:
                taken[name][pid] = procs.sample(pid).cpu_s
            except OSError:
                continue  # a backend that ended meanwhile
    return taken


def cpu_percent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], seconds: float
) -> dict[str, float]:
    """Each group's CPU between two samples, counting only processes alive at both (a
    Postgres backend that ended in between took its CPU time with it)."""
    return {
        name: 100
        * sum(after[name][pid] - cpu for pid, cpu in pids.items() if pid in after.get(name, {}))
        / max(seconds, 1e-9)
        for name, pids in before.items()
    }


def mesh_memory(layout: Layout) -> list[ProcessMemory]:
    """RSS of each mesh process; Postgres's processes summed (shared buffers count in each)."""
    return [
        ProcessMemory(name, sum(s.rss_mb for s in _samples(group)), len(group))
        for name, group in mesh_pids(layout).items()
    ]


def database_settings(layout: Layout) -> str:
    with psycopg.connect(layout.database_url) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
    return f"fsync={fsync[0] if fsync else '?'}, synchronous_commit={commit[0] if commit else '?'}"


async def settle(layout: Layout, timeout: float = 120.0) -> None:
    """Waits until the outbox is published, so that relaying one measurement's calls does not
    load the next measurement."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(layout.database_url, autocommit=True) as c:
        while time.monotonic() < deadline:
            cursor = await c.execute(
                "SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NULL"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                return
            await asyncio.sleep(0.2)
    print(f"  (outbox not drained after {timeout:.0f} s)", file=sys.stderr)


# ---- the bench ------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One intake figure: the medians of its runs."""

    name: str
    what: str
    goal: str
    runs: list[LoadResult] = field(default_factory=list)
    note: str = ""

    @property
    def calls_per_s(self) -> float:
        return median([r.calls_per_s for r in self.runs])

    @property
    def p50(self) -> float:
        return median([percentile(r.latencies_ms, 50) for r in self.runs])

    @property
    def p99(self) -> float:
        return median([percentile(r.latencies_ms, 99) for r in self.runs])

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in self.runs:
            total.update(r.errors)
        return total

    @property
    def client_cpu(self) -> float:
        return median([r.cpu_pct for r in self.runs])

    @property
    def mesh_cpu(self) -> dict[str, float]:
        return median_by_name([r.mesh_cpu_pct for r in self.runs])


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    in_flight: int
    repeat: int
    e2e_window_s: float
    e2e_rates: tuple[float, ...]
    e2e_max_outstanding: int
    immediate_calls: int
    batch_size: int
    batch_in_flight: int
    warm_up_s: float
    keep_calls: bool
    clients: int = 1


class Bench:
    def __init__(self, layout: Layout, tenant: str, key: str, options: Options) -> None:
        self.layout = layout
        self.tenant = tenant
        self.key = key
        self.options = options
        self.sink = FastSink()
        self.later_ids: list[str] = []
        # Arrivals being waited for: path -> first arrival time; the paths still missing.
        self._prefix = "/unused/"
        self._first: dict[str, float] = {}
        self._duplicates = 0
        self._missing: set[str] = set()
        self._all_in = asyncio.Event()

    # -- the sink ----------------------------------------------------------------------------

    def _on_arrival(self, arrival: Arrival) -> None:
        if not arrival.path.startswith(self._prefix):
            return
        if arrival.path in self._first:
            self._duplicates += 1
            return
        self._first[arrival.path] = arrival.arrived_at
        self._missing.discard(arrival.path)
        if not self._missing:
            self._all_in.set()

    def _expect(self, prefix: str) -> None:
        self._prefix = prefix
        self._first = {}
        self._duplicates = 0
        self._missing = set()
        self._all_in = asyncio.Event()
        self.sink.arrivals.clear()  # counted by _on_arrival; the sink need not keep them

    async def _wait_for(self, paths: set[str], timeout: float) -> None:
        self._missing = paths - self._first.keys()
        if not self._missing:
            return
        self._all_in.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_in.wait(), timeout)

    # -- the load ----------------------------------------------------------------------------

    def spec(self, mode: str, **changes: Any) -> LoadSpec:
        port = self.layout.orchestrator_port if mode == "grpc-direct" else self.layout.envoy_port
        if mode == "cancel":
            port = self.layout.orchestrator_port
        values: dict[str, Any] = {
            "mode": mode,
            "host": "127.0.0.1",
            "port": port,
            "tenant": self.tenant,
            "key": self.key,
            # Nothing fires within the hour; should the cleanup be skipped, the call fails
            # fast then (nothing listens on the discard port) instead of reaching anything.
            "url": "http://127.0.0.1:9/bench-submit/later",
            "in_flight": self.options.in_flight,
            "duration_s": self.options.duration_s,
            "batch_size": self.options.batch_size,
        }
        values.update(changes)
        return LoadSpec(**values)

    async def run_sampled(self, spec: LoadSpec) -> LoadResult:
        """Runs a worker and notes each mesh process's CPU over its measured window."""
        pids = mesh_pids(self.layout)
        marks: dict[str, tuple[float, dict[str, dict[int, float]]]] = {}

        def on_mark(name: str) -> None:
            marks[name] = (time.monotonic(), cpu_seconds(pids))

        result = await run_workers(split(spec, self.options.clients), on_mark)
        if "window-start" in marks and "window-end" in marks:
            (t0, before), (t1, after) = marks["window-start"], marks["window-end"]
            result.mesh_cpu_pct = cpu_percent(before, after, t1 - t0)
        return result

    async def measure(self, spec: LoadSpec) -> LoadResult:
        await settle(self.layout)
        result = await self.run_sampled(spec)
        if spec.delay_s:
            self.later_ids.extend(result.ids)
        result.ids = []
        return result

    async def intake(self) -> list[Row]:
        o = self.options
        rows = {
            face: Row(
                f"{FACE_NAMES[face]}, {o.in_flight} in flight",
                "SubmitServiceCall, a call due in 1 h; latency = ack"
                if face != "json-envoy"
                else f"POST /v1/tenants/{self.tenant}/service-calls, a call due in 1 h, "
                f"{o.in_flight} HTTP/1.1 keep-alive connections; latency = ack",
                "≥ 3,000/s" if face == "grpc-envoy" else "",
            )
            for face in FACES
        }
        sequential = Row(
            "one sequential client",
            "gRPC through Envoy, one call at a time; latency = ack",
            "p50 ≤ 3 ms",
        )
        batch = Row(
            f"batch submit, {o.batch_size:,} per request",
            f"{BATCH_METHOD}, {o.batch_in_flight} requests in flight; latency = a request's ack",
            "≥ 10,000 calls/s",
        )
        if o.warm_up_s > 0:
            await self.measure(self.spec("grpc-direct", duration_s=o.warm_up_s))
            print(f"  warm-up: {o.warm_up_s:g} s of gRPC direct (not counted)", file=sys.stderr)
        for run in range(1, o.repeat + 1):
            for face in FACES:
                result = await self.measure(self.spec(face))
                rows[face].runs.append(result)
                _progress(f"run {run}/{o.repeat} {face}", result)
            result = await self.measure(self.spec("grpc-envoy", in_flight=1))
            sequential.runs.append(result)
            _progress(f"run {run}/{o.repeat} sequential", result)
            if not batch.note:
                result = await self.measure(
                    self.spec("batch", in_flight=o.batch_in_flight, warm_up=False)
                )
                if result.errors.get("UNIMPLEMENTED") and not result.acknowledged:
                    batch.note = "n/a (no batch RPC: the server answers UNIMPLEMENTED)"
                else:
                    batch.runs.append(result)
                    _progress(f"run {run}/{o.repeat} batch", result)
        return [*rows.values(), sequential, batch]

    async def cleanup(self) -> None:
        if not self.later_ids or self.options.keep_calls:
            return
        started = time.monotonic()
        cancel = self.spec("cancel", ids=tuple(self.later_ids), in_flight=64)
        result = await run_workers([cancel])
        print(
            f"  canceled {result.acknowledged:,} of {len(self.later_ids):,} calls due in an hour "
            f"in {time.monotonic() - started:.0f} s {_errors(result.errors)}",
            file=sys.stderr,
        )
        self.later_ids = []
        await settle(self.layout)

    async def immediate(self) -> Row:
        """Calls due now, one at a time at light load: submit start -> arrival at the sink."""
        row = Row(
            "immediate call, light load",
            "due now, one at a time, gRPC via Envoy; latency = submit start → arrival at sink",
            "p50 ≤ 10 ms, p99 ≤ 30 ms",
        )
        face = GrpcFace(f"127.0.0.1:{self.layout.envoy_port}", self.tenant, self.key)
        try:
            await face.submit(self.sink.url("/immediate/warm"), 0)
            for _ in range(self.options.repeat):
                await settle(self.layout)
                run = LoadResult()
                prefix = f"/immediate/{uuid.uuid4().hex[:8]}/"
                self._expect(prefix)
                cpu_before, began = time.process_time(), time.perf_counter()
                for i in range(self.options.immediate_calls):
                    path = f"{prefix}{i}"
                    started = time.time()
                    ok, failed, _ = await face.submit(self.sink.url(path), 0)
                    run.sent += 1
                    if not ok:
                        for failure in failed:
                            run.errors[failure] = run.errors.get(failure, 0) + 1
                        continue
                    await self._wait_for({path}, timeout=10)
                    if path in self._first:
                        run.acknowledged += 1
                        run.latencies_ms.append((self._first[path] - started) * 1000)
                    else:
                        lost = "not arrived in 10 s"
                        run.errors[lost] = run.errors.get(lost, 0) + 1
                run.elapsed_s = time.perf_counter() - began
                run.cpu_s = time.process_time() - cpu_before
                row.runs.append(run)
                _progress("immediate", run)
        finally:
            await face.close()
        return row

    async def e2e_step(self, rate: float) -> StepRun:
        o = self.options
        await settle(self.layout)
        prefix = f"/e2e/{uuid.uuid4().hex[:8]}/"
        self._expect(prefix)
        spec = self.spec(
            "grpc-envoy",
            url=self.sink.url(prefix),
            delay_s=0,
            rate=rate,
            duration_s=o.e2e_window_s,
            in_flight=o.e2e_max_outstanding,
        )
        # No collection in the sink while calls arrive: a pause would be noted as lateness.
        gc.collect()
        gc.disable()
        try:
            result = await self.run_sampled(spec)
            expected = set(result.starts)
            await self._wait_for(expected, timeout=30)
        finally:
            gc.enable()
        latencies = [
            (self._first[path] - started) * 1000
            for path, started in result.starts.items()
            if path in self._first
        ]
        return StepRun(
            rate=rate,
            sent=result.sent,
            acknowledged=result.acknowledged,
            achieved_per_s=result.calls_per_s,
            arrived=len(latencies),
            duplicates=self._duplicates,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            errors=sum(result.errors.values()),
            client_cpu_pct=result.cpu_pct,
            ack_p99_ms=percentile(result.latencies_ms, 99),
            mesh_cpu_pct=result.mesh_cpu_pct,
        )

    async def e2e(self) -> list[StepRun]:
        steps = []
        for rate in self.options.e2e_rates:
            runs = []
            for run in range(1, self.options.repeat + 1):
                step = await self.e2e_step(rate)
                runs.append(step)
                print(
                    f"  e2e {rate:g}/s run {run}: {step.achieved_per_s:,.0f}/s achieved, "
                    f"p99 {step.p99_ms:,.1f} ms, {step.why_not()}",
                    file=sys.stderr,
                    flush=True,
                )
                # More runs cannot make the step pass: lost and failed calls are summed, and
                # the median fails once more than half the runs did.
                failed = sum(not r.passed() for r in runs)
                if step.lost or step.errors or failed > self.options.repeat // 2:
                    break
            summary = step_summary(runs)
            steps.append(summary)
            if not summary.passed():
                break
        return steps


def _errors(errors: dict[str, int] | Counter[str]) -> str:
    if not errors:
        return ""
    return "(errors: " + ", ".join(f"{k} ×{v}" for k, v in sorted(errors.items())) + ")"


def _progress(what: str, result: LoadResult) -> None:
    print(
        f"  {what}: {result.calls_per_s:,.0f} calls/s, p50 "
        f"{percentile(result.latencies_ms, 50):.1f} ms, p99 "
        f"{percentile(result.latencies_ms, 99):.1f} ms, client CPU {result.cpu_pct:.0f}% "
        f"{_errors(result.errors)}",
        file=sys.stderr,
        flush=True,
    )


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.1f}"


def _rate(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.0f}"


def report(
    header: str,
    rows: list[Row],
    immediate: Row | None,
    steps: list[StepRun],
    o: Options,
    memory: list[ProcessMemory],
) -> str:
    lines = [header, ""]
    lines.append(
        "| measurement | what it measures | calls/s | p50 ms | p99 ms | errors "
        "| client CPU | goal (issue 13) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    by_face = {r.name.split(",")[0]: r for r in rows}
    grpc_envoy = by_face.get(FACE_NAMES["grpc-envoy"])
    json_envoy = by_face.get(FACE_NAMES["json-envoy"])
    for row in [*rows, *([immediate] if immediate else [])]:
        if row.note and not row.runs:
            lines.append(f"| {row.name} | {row.what} | {row.note} | | | | | {row.goal} |")
            continue
        calls = "–" if row is immediate else _rate(row.calls_per_s)
        lines.append(
            f"| {row.name} | {row.what} | {calls} | {_ms(row.p50)} | {_ms(row.p99)} "
            f"| {sum(row.errors.values())} | {row.client_cpu:.0f}% | {row.goal} |"
        )
        if row is json_envoy and grpc_envoy is not None and grpc_envoy.calls_per_s > 0:
            ratio = json_envoy.calls_per_s / grpc_envoy.calls_per_s
            lines.append(
                f"| JSON / gRPC via Envoy | ratio of the two calls/s above | {ratio:.2f} "
                "| | | | | ≥ 0.9 |"
            )
    errors: Counter[str] = Counter()
    for row in rows:
        errors.update(row.errors)
    if errors:
        lines += ["", f"errors by kind: {_errors(errors)}"]

    lines += [
        "",
        f"end-to-end sustained: calls due now, gRPC via Envoy, a steady rate for "
        f"{o.e2e_window_s:g} s (at most {o.e2e_max_outstanding} submits outstanding); a step "
        f"passes when ≥ {RATE_KEPT:.0%} of the rate was acknowledged, no submit failed, every "
        f"call reached the sink, and p99 of submit start → arrival ≤ {E2E_P99_LIMIT_MS:.0f} ms. "
        "Goal: ≥ 1,000 calls/s.",
        "",
        "| rate asked | achieved calls/s | sent | arrived | p50 ms | p99 ms | ack p99 ms "
        "| failed submits | duplicates | client CPU | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        lines.append(
            f"| {step.rate:,.0f}/s | {_rate(step.achieved_per_s)} | {step.sent:,} "
            f"| {step.arrived:,} | {_ms(step.p50_ms)} | {_ms(step.p99_ms)} "
            f"| {_ms(step.ack_p99_ms)} | {step.errors} "
            f"| {step.duplicates} | {step.client_cpu_pct:.0f}% | {step.why_not()} |"
        )
    passed = [s.rate for s in steps if s.passed()]
    if steps:
        best = f"{max(passed):,.0f} calls/s" if passed else f"below {steps[0].rate:,.0f}/s"
        lines += ["", f"highest sustained rate that passed: {best}"]

    lines += [
        "",
        "CPU of each mesh process over each measured window (median of the runs; 100% = one "
        "core; postgres = all its processes)",
        "",
        "| measurement | " + " | ".join(MESH_PROCESSES) + " | client |",
        "|---|" + "---|" * (len(MESH_PROCESSES) + 1),
    ]
    sampled = [(row.name, row.mesh_cpu, row.client_cpu) for row in rows if row.runs]
    sampled += [(f"end-to-end {s.rate:,.0f}/s", s.mesh_cpu_pct, s.client_cpu_pct) for s in steps]
    for name, cpu, client in sampled:
        cells = [f"{cpu[p]:.0f}%" if p in cpu else "–" for p in MESH_PROCESSES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {client:.0f}% |")

    lines += ["", "RSS at the end", "", "| process | RSS MB |", "|---|---|"]
    for m in memory:
        name = m.name if m.processes == 1 else f"{m.name} ({m.processes} processes, summed)"
        lines.append(f"| {name} | {m.rss_mb:,.0f} |")
    return "\n".join(lines)


def _load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


async def run_bench(layout: Layout, tenant: str, key: str, o: Options, e2e: bool) -> str:
    bench = Bench(layout, tenant, key, o)
    await bench.sink.start()
    bench.sink.on_arrival = bench._on_arrival
    load_before = _load_average()
    try:
        rows = await bench.intake()
        await bench.cleanup()
        immediate = await bench.immediate() if o.immediate_calls > 0 else None
        steps = await bench.e2e() if e2e else []
    finally:
        await bench.cleanup()
        await bench.sink.stop()
    header = (
        f"bench-submit against the `make up` mesh ({layout.run_dir}, Postgres "
        f"{database_settings(layout)}), tenant {tenant}; {os.cpu_count()} cores, load average "
        f"{load_before} before, {_load_average()} after. Medians of {o.repeat} runs; intake "
        f"windows {o.duration_s:g} s; {o.clients} load worker process(es) per measurement. "
        "Client CPU: the load workers' own CPU (all threads) over their window, 100% = one "
        "core; for the immediate calls, this process's (client and sink)."
    )
    return report(header, rows, immediate, steps, o, mesh_memory(layout))


def main(argv: Sequence[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["load"]:
        _load_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per intake measurement (10)")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight (64)")
    parser.add_argument("--repeat", type=int, help="runs per figure, medians printed (3)")
    parser.add_argument("--e2e-window", type=float, help="seconds per end-to-end rate step (60)")
    parser.add_argument("--e2e-rates", help="calls/s per step, comma-separated (250,500,1000,2000)")
    parser.add_argument(
        "--e2e-max-outstanding", type=int, default=1000, help="end-to-end submits in flight (1000)"
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end steps")
    parser.add_argument("--immediate-calls", type=int, help="calls one at a time (200)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-in-flight", type=int, default=4)
    parser.add_argument("--warm-up", type=float, help="unmeasured seconds of load first (3)")
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="load worker processes per measurement, each with its share of the requests in "
        "flight and of the rate (1)",
    )
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--key-file", type=Path, help="API key file (.run/dev/demo.key)")
    parser.add_argument(
        "--keep-calls", action="store_true", help="do not cancel the calls due in an hour"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 s windows, 1 run, 5 s end-to-end steps, 30 immediate calls",
    )
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, normal: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else normal)

    rates = pick(args.e2e_rates, "250,500,1000,2000", "250,500,1000,2000")
    options = Options(
        duration_s=pick(args.duration, 10.0, 3.0),
        in_flight=args.in_flight,
        repeat=pick(args.repeat, 3, 1),
        e2e_window_s=pick(args.e2e_window, 60.0, 5.0),
        e2e_rates=tuple(float(r) for r in rates.split(",")),
        e2e_max_outstanding=args.e2e_max_outstanding,
        immediate_calls=pick(args.immediate_calls, 200, 30),
        batch_size=args.batch_size,
        batch_in_flight=args.batch_in_flight,
        warm_up_s=pick(args.warm_up, 3.0, 1.0),
        keep_calls=args.keep_calls,
        clients=args.clients,
    )
    layout = Layout.dev()
    down = [s for s in SERVICES if not mesh.service_healthy(layout.port_of(s))]
    if down or not mesh.envoy_ready(layout):
        sys.exit(f"the `make up` mesh is not running or not healthy ({', '.join(down) or 'envoy'})")
    key_file = args.key_file or layout.run_dir / "demo.key"
    key = key_file.read_text().strip()
    table = asyncio.run(run_bench(layout, args.tenant, key, options, e2e=not args.no_e2e))
    print()
    print(table)


if __name__ == "__main__":
    main()
