"""Fair sharing between tenants, measured through the whole mesh: how late is one tenant's
single call when another tenant has 20,000 calls due at the same instant?

`make bench-fairness` (or `python -m bench.fairness --help`). Starts a mesh of its own (as
`make bench-scheduler` does: Postgres with fsync on, Kafka, the three services, Envoy; ports
316xx, run dir .run/bench-fairness; the executor at nice -10 under SCHED_FIFO 1, the sink
process likewise), then per run:

- tenant A batch-submits `--calls` calls (1,000 per request, a few requests in flight), all
  due at one instant T, well before T (T leaves room for the submission, the hand-off lead
  and the scheduler's pull-ahead of crowded hand-offs, so every call is in before its
  hand-off is due);
- tenant B submits one call, due at T (scenario `b-at-due`) or T + 1 s (`b-after-1s`, B's
  call falls due while A's backlog is draining; `b-after-30s`, asked for by name: after all
  of A's hand-offs have been fired); B's target is a host of its own (a second
  sink port: the executor's per-host cap is not shared with A), or A's own host with
  `b-same-host-*`.

`--executor-only`: the executor's share alone, in one process as `make bench-burst` measures
it (the real handler, H1Client and SendingSlots at the executor's defaults, 512 / 256 / 128;
every request handed over 3 s ahead, reports acknowledged at once, loopback sinks in processes
of their own); times are when each answer came. It adds `b-behind-three`: tenants A, C and D
with a third of the calls each, each over two hosts of its own, so that their per-tenant
caps together exceed the global one and B's attempt waits for a global slot.

Printed per run, for B: lateness (arrival − due), its rank among all arrivals after its due
time (1: nothing of A's arrived between B's due time and B), and the executor's view (its
attempt's start_time − due); for A: first / median / last arrival − T. Then the medians of
`--repeat` runs per scenario. Figures, not pass/fail (docs/timing.md, Fair sharing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from bench._sink import FastSink
from bench.executor import execution_request
from bench.executor_burst import _AckedAtOnce
from bench.scheduler import _raise_own_priority
from executor.adapters.h1_client import H1Client
from executor.adapters.signing_keys import SigningKeysFile
from executor.adapters.sleeper import LoopSleeper, PreciseSleeper
from executor.domain.egress import parse_allowlist
from executor.main import execution_handler, tune_gc
from executor.ports import HttpFailure, HttpRequest, HttpResponse, PreparedRequest
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots
from mesh.clock import SystemClock, Uuid7Gen
from mesh.kafka import ReceivedMessage
from mesh.logs import configure_logging
from mesh.secrets import SecretBox
from meshctl import mesh
from meshctl.layout import ROOT, Layout
from meshctl.sink import Arrival
from orchestrator.adapters.tenants import TenantAdmin
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc

# Ports of its own, 316xx (the scheduler bench 314xx, chaos 315xx and 310xx, the executor
# bench 313xx), below Linux's ephemeral range.
FAIRNESS_LAYOUT = Layout(
    run_dir=ROOT / ".run" / "bench-fairness",
    pg_port=31632,
    kafka_port=31692,
    kafka_controller_port=31693,
    orchestrator_port=31651,
    scheduler_port=31652,
    executor_port=31653,
    envoy_port=31680,
    envoy_admin_port=31681,
    pg_fsync=True,
)

EXECUTOR_LEAD_S = 3.0  # --executor-only: requests reach the handler this long before due
BATCH = 1000
BATCHES_IN_FLIGHT = 4
SCENARIOS = ("b-at-due", "b-after-1s", "b-same-host-at-due")
# Asked for by name only: B's call falls due after every one of A's hand-offs has been fired
# (A's crowd is still draining at the executor), the case a consumer's read-ahead limits.
LATE_SCENARIOS = ("b-after-30s",)
EXECUTOR_SCENARIOS = (*SCENARIOS, "b-behind-three")


def _b_after(scenario: str) -> timedelta:
    """How long after A's due time B's call is due."""
    for seconds in (1, 30):
        if scenario.endswith(f"after-{seconds}s"):
            return timedelta(seconds=seconds)
    return timedelta(0)


@dataclass
class Run:
    scenario: str
    b_late_ms: float = float("nan")
    b_rank: int = 0  # among arrivals at or after B's due time
    b_started_ms: float = float("nan")  # the executor's start_time of B's attempt − B's due
    a_first_ms: float = float("nan")
    a_median_ms: float = float("nan")
    a_last_ms: float = float("nan")
    a_arrived: int = 0
    note: str = ""


class FairnessBench:
    def __init__(self, layout: Layout, calls: int, lead_s: float, pull_s: float) -> None:
        self.layout = layout
        self.calls = calls
        self.lead_s = lead_s
        self.pull_s = pull_s
        self.sink_a = FastSink()
        self.sink_b = FastSink()
        # (arrived_at, path) of this run's calls, in the order the sinks saw them.
        self._arrivals: list[tuple[float, str]] = []
        self._expected: set[str] = set()
        self._all_in = asyncio.Event()
        self.submit_rate = 2000.0  # calls/s; updated from each run's submission

    async def start(self) -> None:
        for sink in (self.sink_a, self.sink_b):
            await sink.start()
            sink.on_arrival = self._on_arrival
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.layout.orchestrator_port}")
        self.api = svc_grpc.ServiceCallServiceStub(self.channel)

    async def stop(self) -> None:
        await self.channel.close()
        await self.sink_a.stop()
        await self.sink_b.stop()

    def _on_arrival(self, arrival: Arrival) -> None:
        if arrival.path in self._expected:
            self._expected.discard(arrival.path)
            self._arrivals.append((arrival.arrived_at, arrival.path))
            if not self._expected:
                self._all_in.set()

    def _tenant(self, name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        tenant = f"fair-{name}-{uuid.uuid4().hex[:8]}"
        admin = TenantAdmin(self.layout.database_url)
        admin.create_tenant(tenant)
        return tenant, (("authorization", f"Bearer {admin.create_key(tenant).text}"),)

    @staticmethod
    def _call(url: str, due: datetime) -> api.ServiceCall:
        when = Timestamp()
        when.FromDatetime(due)
        return api.ServiceCall(
            request=api.HttpRequest(http_method=api.POST, url=url),
            schedule_time=when,
            retry_policy=api.RetryPolicy(max_attempts=1),
        )

    async def run(self, scenario: str) -> Run:
        result = Run(scenario)
        run_id = uuid.uuid4().hex[:8]
        a_tenant, a_auth = self._tenant("a")
        b_tenant, b_auth = self._tenant("b")
        # Room for the submission at the rate seen so far, then the hand-off lead and the
        # scheduler's pull-ahead of a crowd's hand-offs, then 3 s.
        margin = self.calls / (0.7 * self.submit_rate) + self.lead_s + self.pull_s + 3
        due = datetime.now(UTC) + timedelta(seconds=margin)
        b_due = due + _b_after(scenario)
        b_sink = self.sink_a if "same-host" in scenario else self.sink_b
        a_paths = [f"/f/{run_id}/a/{i}" for i in range(self.calls)]
        b_path = f"/f/{run_id}/b"
        self._arrivals = []
        self._expected = {*a_paths, b_path}
        self._all_in = asyncio.Event()
        batches = [a_paths[i : i + BATCH] for i in range(0, len(a_paths), BATCH)]

        async def submitter() -> None:
            while batches:
                paths = batches.pop()
                items = [
                    svc.BatchSubmitServiceCallsRequest.Item(
                        service_call=self._call(self.sink_a.url(p), due)
                    )
                    for p in paths
                ]
                answer = await self.api.BatchSubmitServiceCalls(
                    svc.BatchSubmitServiceCallsRequest(tenant_id=a_tenant, items=items),
                    timeout=120,
                    metadata=a_auth,
                )
                if any(r.WhichOneof("outcome") == "error" for r in answer.results):
                    raise RuntimeError("a batch item was rejected")

        began = time.monotonic()
        await asyncio.gather(*(submitter() for _ in range(BATCHES_IN_FLIGHT)))
        self.submit_rate = self.calls / (time.monotonic() - began)
        b_answer = await self.api.SubmitServiceCall(
            svc.SubmitServiceCallRequest(
                tenant_id=b_tenant, service_call=self._call(b_sink.url(b_path), b_due)
            ),
            timeout=60,
            metadata=b_auth,
        )
        if datetime.now(UTC) > due - timedelta(seconds=self.lead_s + self.pull_s):
            result.note = "submission overran the start margin"
        # No collection in the sink process while calls arrive (as bench/scheduler.py).
        gc.collect()
        gc.disable()
        try:
            # Room for the whole crowd at ~500 a second (this machine's pace at one sink),
            # at least 2 minutes: a crowd still arriving at the end is cut off (A arrived).
            wait = (b_due - datetime.now(UTC)).total_seconds() + max(120, self.calls / 500)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), wait)
        finally:
            gc.enable()
        t = due.timestamp()
        a_times = sorted(at - t for at, path in self._arrivals if path != b_path)
        b_times = [at for at, path in self._arrivals if path == b_path]
        result.a_arrived = len(a_times)
        if a_times:
            result.a_first_ms = a_times[0] * 1000
            result.a_median_ms = statistics.median(a_times) * 1000
            result.a_last_ms = a_times[-1] * 1000
        if b_times:
            b_at = b_times[0]
            result.b_late_ms = (b_at - b_due.timestamp()) * 1000
            since = b_due.timestamp()
            result.b_rank = 1 + sum(
                1 for at, path in self._arrivals if path != b_path and since <= at < b_at
            )
        else:
            result.note = (result.note + "; " if result.note else "") + "B's call never arrived"
        await self.settle((a_tenant, b_tenant))
        # B's attempt as the executor recorded it, once its result was applied.
        for _ in range(60):
            call = await self.api.GetServiceCall(
                svc.GetServiceCallRequest(
                    tenant_id=b_tenant,
                    service_call_id=b_answer.service_call_id,
                    view=svc.FULL,
                ),
                timeout=30,
                metadata=b_auth,
            )
            if call.attempts:
                break
            await asyncio.sleep(0.5)
        if call.attempts and call.attempts[0].HasField("start_time"):
            started = call.attempts[0].start_time.ToDatetime(tzinfo=UTC)
            result.b_started_ms = (started - b_due).total_seconds() * 1000
        return result

    async def settle(self, tenants: Sequence[str] | None, timeout: float = 300.0) -> None:
        """Waits until every call of the run (None: every call at all, such as a stopped
        earlier run's) ended and the outbox is drained, so one run's tail (results being
        recorded and published) does not load the next run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.layout.database_url) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM orchestrator.service_calls"
                    "         WHERE (%s::text[] IS NULL OR tenant_id = ANY(%s::text[]))"
                    "           AND status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')),"
                    "       (SELECT count(*) FROM orchestrator.outbox"
                    "         WHERE published_at IS NULL)",
                    (None if tenants is None else list(tenants),) * 2,
                ).fetchone()
            if row is not None and row[0] == 0 and row[1] == 0:
                return
            await asyncio.sleep(0.5)
        print(f"  (the run did not settle within {timeout:.0f} s)", file=sys.stderr)


class _Noted:
    """The H1Client, noting when each answer came and for which URL."""

    def __init__(self, inner: H1Client) -> None:
        self._inner = inner
        self.answers: list[tuple[float, str]] = []

    def prepare(self, request: HttpRequest) -> PreparedRequest | HttpFailure:
        return self._inner.prepare(request)

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        reply = await self._inner.send(request)
        url = request.request.url if isinstance(request, PreparedRequest) else request.url
        self.answers.append((time.time(), url))
        return reply


def _received(offset: int, tenant: str, url: str, due: datetime) -> ReceivedMessage:
    call_id = str(uuid.uuid4())
    value = execution_request(call_id, tenant, url, due)
    return ReceivedMessage("bench.execution-requests", 0, offset, f"{tenant}/{call_id}", value)


async def executor_run(scenario: str, calls: int, ports: list[int]) -> Run:
    """One run of the executor's share: A's crowd (or A's, C's and D's) and B's one attempt,
    all handed to the handler EXECUTOR_LEAD_S ahead, B's last (as through the mesh, where B
    was submitted after A)."""
    http = _Noted(H1Client.create(parse_allowlist(["127.0.0.1/32"]), 1024 * 1024, 512))
    handler = execution_handler(
        bus=_AckedAtOnce(),
        http=http,
        clock=SystemClock(),
        ids=Uuid7Gen(),
        sleeper=PreciseSleeper(),
        coarse_sleeper=LoopSleeper(),
        limits=SendingSlots(512, 256, 128),
        secrets=SecretBox({1: bytes(32)}, 1),
        signing=SigningKeysFile(None),
        executions=Executions(),
        events_topic="bench.execution-events",
        executor_id="bench",
        started_after=timedelta(seconds=1),
        report_defer=timedelta(seconds=2),
    )
    url = "http://127.0.0.1:{port}{path}".format
    # Warm the connection pool to every sink (not counted).
    now = datetime.now(UTC)
    await asyncio.gather(
        *(handler(_received(i, "warm", url(port=p, path="/w"), now)) for i, p in enumerate(ports))
    )
    warm = [_received(i, "warm", url(port=ports[i % 2], path="/w"), now) for i in range(600)]
    await asyncio.gather(*(handler(m) for m in warm))
    http.answers.clear()
    due = datetime.now(UTC) + timedelta(seconds=EXECUTOR_LEAD_S)
    b_due = due + _b_after(scenario)
    messages: list[ReceivedMessage] = []
    if scenario == "b-behind-three":
        # Each of A, C, D over two hosts of its own; B on the seventh.
        for i in range(calls):
            tenant = ("a", "c", "d")[i % 3]
            port = ports[2 * (i % 3) + (i // 3) % 2]
            messages.append(_received(i, tenant, url(port=port, path=f"/a/{i}"), due))
        b_port = ports[6]
    else:
        for i in range(calls):
            messages.append(_received(i, "a", url(port=ports[0], path=f"/a/{i}"), due))
        b_port = ports[0] if "same-host" in scenario else ports[1]
    b_url = url(port=b_port, path="/b")
    messages.append(_received(calls, "b", b_url, b_due))
    await asyncio.gather(*(handler(m) for m in messages))
    result = Run(scenario)
    t = due.timestamp()
    a_times = sorted(at - t for at, u in http.answers if u != b_url)
    result.a_arrived = len(a_times)
    result.a_first_ms = a_times[0] * 1000
    result.a_median_ms = statistics.median(a_times) * 1000
    result.a_last_ms = a_times[-1] * 1000
    b_at = next(at for at, u in http.answers if u == b_url)
    result.b_late_ms = (b_at - b_due.timestamp()) * 1000
    since = b_due.timestamp()
    result.b_rank = 1 + sum(1 for at, u in http.answers if u != b_url and since <= at < b_at)
    return result


def measure_executor(calls: int, repeat: int, chosen: Sequence[str]) -> list[Run]:
    # Seven sinks, each a process of its own standing for a target host on another machine.
    sinks = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.executor_burst", "--serve-sink"],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        for _ in range(7)
    ]
    runs: list[Run] = []
    try:
        ports = []
        for sink in sinks:
            assert sink.stdout is not None
            ports.append(int(sink.stdout.readline()))
        for _ in range(repeat):
            for scenario in chosen:
                runs.append(asyncio.run(executor_run(scenario, calls, ports)))
                print(row(runs[-1]), file=sys.stderr, flush=True)
    finally:
        for sink in sinks:
            sink.terminate()
            sink.wait()
    return runs


def _f(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def row(r: Run) -> str:
    return (
        f"| {r.scenario} | {_f(r.b_late_ms)} | {r.b_rank} | {_f(r.b_started_ms)} | "
        f"{_f(r.a_first_ms)} | {_f(r.a_median_ms)} | {_f(r.a_last_ms)} | {r.a_arrived} | {r.note} |"
    )


HEADER = (
    "| scenario | B late ms | B rank | B started ms | A first ms | A median ms | A last ms "
    "| A arrived | note |\n|---|---|---|---|---|---|---|---|---|"
)


def medians(runs: list[Run]) -> Run:
    def med(values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else float("nan")

    return Run(
        scenario=f"{runs[0].scenario} (median of {len(runs)})",
        b_late_ms=med([r.b_late_ms for r in runs]),
        b_rank=round(med([float(r.b_rank) for r in runs])),
        b_started_ms=med([r.b_started_ms for r in runs]),
        a_first_ms=med([r.a_first_ms for r in runs]),
        a_median_ms=med([r.a_median_ms for r in runs]),
        a_last_ms=med([r.a_last_ms for r in runs]),
        a_arrived=round(med([float(r.a_arrived) for r in runs])),
        note="; ".join(sorted({r.note for r in runs if r.note})),
    )


async def measure(
    layout: Layout, calls: int, repeat: int, warmup: int, chosen: Sequence[str], pull_s: float
) -> list[Run]:
    lead = float(dict(layout.service_env).get("HANDOFF_LEAD_S", "2.0"))
    bench = FairnessBench(layout, calls, lead, pull_s)
    await bench.start()
    runs: list[Run] = []
    try:
        # The run dir (and its database) outlives a mesh: work left by a stopped run goes first.
        await bench.settle(None, timeout=600)
        if warmup:
            # Warms the fresh broker's JIT and measures the submission rate (not counted).
            bench.calls = warmup
            print(f"- warm-up ({warmup} calls, not counted) ...", file=sys.stderr, flush=True)
            print(row(await bench.run("b-at-due")), file=sys.stderr, flush=True)
            bench.calls = calls
        for _ in range(repeat):
            for scenario in chosen:
                print(f"- {scenario} ...", file=sys.stderr, flush=True)
                runs.append(await bench.run(scenario))
                print(row(runs[-1]), file=sys.stderr, flush=True)
    finally:
        await bench.stop()
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000, help="tenant A's calls due at T")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (medians)")
    parser.add_argument("--warmup", type=int, default=2000, help="calls of an unmeasured run")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma list of {', '.join(SCENARIOS)} (the default), {', '.join(LATE_SCENARIOS)}",
    )
    parser.add_argument(
        "--executor-only",
        action="store_true",
        help="the executor's share alone, in this process (no mesh; adds b-behind-three)",
    )
    parser.add_argument("--keep-mesh", action="store_true", help="leave the bench mesh running")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="service setting for the bench mesh (MAX_IN_FLIGHT, HANDOFF_PULL_MAX_S, ...)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.executor_only and args.scenarios == ",".join(SCENARIOS):
        chosen = list(EXECUTOR_SCENARIOS)
    known = EXECUTOR_SCENARIOS if args.executor_only else (*SCENARIOS, *LATE_SCENARIOS)
    if unknown := set(chosen) - set(known):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.executor_only:
        configure_logging("executor", "info")
        tune_gc(50_000)
        runs = measure_executor(args.calls, args.repeat, chosen)
        print()
        print(f"command: python -m bench.fairness {' '.join(argv or sys.argv[1:])}")
        print(f"executor only, SendingSlots(512, 256, 128); load average: {os.getloadavg()}")
        print(f"tenant A: {args.calls} attempts due at T; tenant B: 1 (times: answers)")
        _print_table(runs, chosen)
        return
    env = {"EXECUTOR_NICE": "-10", "EXECUTOR_RT_PRIORITY": "1"} | dict(
        item.split("=", 1) for item in args.env
    )
    layout = FAIRNESS_LAYOUT.with_service_env(**env)
    pull = float(env.get("HANDOFF_PULL_MAX_S", "10.0"))
    print(f"starting the bench mesh in {layout.run_dir} ...", file=sys.stderr, flush=True)
    mesh.stop_mesh_processes(layout)
    mesh.up(layout)
    sink_priority = _raise_own_priority()
    try:
        runs = asyncio.run(measure(layout, args.calls, args.repeat, args.warmup, chosen, pull))
    finally:
        if not args.keep_mesh:
            mesh.down(layout)
    print()
    print(f"command: python -m bench.fairness {' '.join(argv or sys.argv[1:])}")
    print(f"service env: {env}")
    print(f"sink (this process): {sink_priority}; load average: {os.getloadavg()}")
    print(f"tenant A: {args.calls} calls due at T; tenant B: 1 call")
    _print_table(runs, chosen)


def _print_table(runs: list[Run], chosen: Sequence[str]) -> None:
    print(HEADER)
    for r in runs:
        print(row(r))
    for scenario in chosen:
        print(row(medians([r for r in runs if r.scenario == scenario])))


if __name__ == "__main__":
    main()
