"""Timing benchmark of the whole mesh: lateness at a loopback target, bursts, kills, idle cost.

`make bench-scheduler` (or `python -m bench.scheduler --help`). By default it starts a mesh of
its own (Postgres with fsync ON as in production, Kafka, the three services, Envoy) on ports
and a run dir (.run/bench-scheduler) of its own, so it runs beside `make up` and `make test`; with
`--mesh dev` it measures the `make up` mesh instead. Calls are submitted over gRPC straight to
the orchestrator, all targeting a loopback sink in this process, which notes the wall-clock
arrival of each request: lateness = arrival − due_at. Calls pending far in the future are
seeded by COPY (bench/_seed.py explains why that is faithful). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from bench import _procs as procs
from bench._seed import pending_count, remove_pending, seed_pending
from bench._sink import FastSink
from meshctl import mesh
from meshctl.layout import ROOT, Layout
from meshctl.sink import Arrival
from orchestrator.adapters.tenants import TenantAdmin
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc

# Ports of its own, all 314xx (test meshes use 20xxx-29xxx, `make up` the defaults, the
# executor bench 313xx), and a run dir of its own. Below 32768, outside Linux's ephemeral range,
# so an outgoing connection can never be holding one when the mesh starts.
BENCH_LAYOUT = Layout(
    run_dir=ROOT / ".run" / "bench-scheduler",
    pg_port=31432,
    kafka_port=31492,
    kafka_controller_port=31493,
    orchestrator_port=31451,
    scheduler_port=31452,
    executor_port=31453,
    envoy_port=31480,
    envoy_admin_port=31481,
    pg_fsync=True,
)

SERVICES = ("scheduler", "executor", "orchestrator")
SUBMIT_CONCURRENCY = 48
# The backlog scenarios submit by batch: as many calls per request as the API takes, and
# enough requests in flight to keep the orchestrator's group commit busy.
BACKLOG_BATCH = 1000
BACKLOG_BATCHES_IN_FLIGHT = 4


@dataclass
class Result:
    scenario: str
    calls: int
    pending: int
    lateness_ms: list[float] = field(default_factory=list)
    lost: int = 0
    duplicates: int = 0
    drain_s: float | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    # A median row carries (p50, p99, max, early) instead of samples.
    summary: tuple[float, float, float, int] | None = None

    @property
    def early(self) -> int:
        if self.summary is not None:
            return self.summary[3]
        return sum(1 for x in self.lateness_ms if x < 0)

    def pct(self, q: float) -> float:
        if self.summary is not None:
            return self.summary[0] if q == 0.5 else self.summary[1]
        if not self.lateness_ms:
            return float("nan")
        ordered = sorted(self.lateness_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def worst(self) -> float:
        if self.summary is not None:
            return self.summary[2]
        return max(self.lateness_ms) if self.lateness_ms else float("nan")


@dataclass(frozen=True)
class Options:
    scale: float
    repeat: int
    lead_s: float
    # How early the scheduler may fire a crowd's hand-offs (HANDOFF_PULL_MAX_S).
    pull_s: float
    pending_levels: tuple[int, ...]
    downtime_s: float
    idle_s: float
    # Calls of an unmeasured burst run first: a freshly started broker (a JVM) is slower until
    # its JIT has compiled the hot paths, and the first heavy scenario paid for that.
    warmup: int = 0


class Bench:
    def __init__(self, layout: Layout, options: Options) -> None:
        self.layout = layout
        self.options = options
        self.sink = FastSink()
        self._expected: dict[str, datetime] = {}
        self._arrived: dict[str, list[Arrival]] = {}
        self._remaining = 0
        self._all_in = asyncio.Event()
        self.submit_rate = 500.0
        self.last_submit_rate = math.nan

    async def start(self) -> None:
        await self.sink.start()
        self.sink.on_arrival = self._on_arrival
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.layout.orchestrator_port}")
        self.api = svc_grpc.ServiceCallServiceStub(self.channel)

    async def stop(self) -> None:
        await self.channel.close()
        await self.sink.stop()

    def _on_arrival(self, arrival: Arrival) -> None:
        # The sink keeps every arrival too; only this run's are counted, without a scan.
        if arrival.path not in self._expected:
            return
        seen = self._arrived.setdefault(arrival.path, [])
        seen.append(arrival)
        if len(seen) == 1:
            self._remaining -= 1
            if self._remaining == 0:
                self._all_in.set()

    # -- submitting and collecting ---------------------------------------------------------

    async def submit(self, tenant: str, dues: Sequence[datetime]) -> dict[str, datetime]:
        """Submits one call per due time, earliest first; returns path -> due_at."""
        run = uuid.uuid4().hex[:8]
        calls = {f"/b/{run}/{i}": due for i, due in enumerate(dues)}
        self._expected = calls
        self._arrived = {}
        self._remaining = len(calls)
        self._all_in = asyncio.Event()
        slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
        admin = TenantAdmin(self.layout.database_url)
        admin.create_tenant(tenant)
        auth = (("authorization", f"Bearer {admin.create_key(tenant).text}"),)

        async def one(path: str, due: datetime) -> None:
            when = Timestamp()
            when.FromDatetime(due)
            request = svc.SubmitServiceCallRequest(
                tenant_id=tenant,
                service_call=api.ServiceCall(
                    request=api.HttpRequest(http_method=api.POST, url=self.sink.url(path)),
                    schedule_time=when,
                    retry_policy=api.RetryPolicy(max_attempts=1),
                ),
            )
            async with slots:
                await self.api.SubmitServiceCall(request, timeout=60, metadata=auth)

        began = time.monotonic()
        await asyncio.gather(*(one(p, d) for p, d in calls.items()))
        self.last_submit_rate = len(calls) / (time.monotonic() - began)
        self.submit_rate = min(self.submit_rate, self.last_submit_rate)
        return calls

    async def collect(self, calls: dict[str, datetime], result: Result, patience: float) -> None:
        last_due = max(calls.values())
        wait = (last_due - datetime.now(UTC)).total_seconds() + patience
        # No garbage collection in the sink while calls arrive: a full collection over what
        # this process holds took up to ~100 ms, and the sink would have noted the calls
        # that arrived meanwhile as that much later (its max was 5-10x the executor's own).
        gc.collect()
        gc.disable()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), max(wait, 1.0))
        finally:
            gc.enable()
        for path, due in calls.items():
            seen = self._arrived.get(path)
            if not seen:
                result.lost += 1
                continue
            result.duplicates += len(seen) - 1
            first = min(a.arrived_at for a in seen)
            result.lateness_ms.append((first - due.timestamp()) * 1000)
        self._expected = {}
        self.sink.arrivals.clear()  # counted above; the sink need not keep them

    async def settle(self, tenant: str, timeout: float = 120.0) -> None:
        """Waits until every call of the tenant ended and the outbox is drained, so one
        scenario's tail does not load the next one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.layout.database_url) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM orchestrator.service_calls WHERE tenant_id = %s"
                    "        AND status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')),"
                    "       (SELECT count(*) FROM orchestrator.outbox"
                    "         WHERE published_at IS NULL)",
                    (tenant,),
                ).fetchone()
            if row is not None and row[0] == 0 and row[1] == 0:
                return
            await asyncio.sleep(0.5)
        print(f"  (tenant {tenant} did not settle within {timeout:.0f}s)", file=sys.stderr)

    def start_margin(self, count: int) -> timedelta:
        # Submissions go first, so that the timed part is only firing and sending; every
        # call must be in before its own hand-off time, or it is dispatched on submission,
        # and a crowd's hand-offs may start up to the pull maximum before that.
        # The rate is what the submissions so far achieved (a pilot run, then each scenario).
        o = self.options
        return timedelta(seconds=count / (0.8 * self.submit_rate) + o.lead_s + o.pull_s + 3)

    async def pilot(self, count: int = 300) -> None:
        """Measures the submission rate with calls due far in the future (they stay pending,
        like the seeded ones, and are removed with them)."""
        far = datetime.now(UTC) + timedelta(days=30)
        self.submit_rate = math.inf
        await self.submit(f"bench-pilot-{uuid.uuid4().hex[:8]}", [far] * count)
        self._expected = {}
        print(f"  submission rate {self.submit_rate:.0f}/s", file=sys.stderr, flush=True)

    def _check_margin(self, result: Result, t0: datetime) -> None:
        result.extra["submit_per_s"] = self.last_submit_rate
        if datetime.now(UTC) > t0 - timedelta(seconds=self.options.lead_s + self.options.pull_s):
            result.note = "submission overran the start margin"

    # -- scenarios --------------------------------------------------------------------------

    async def spread(self, name: str, count: int, over_s: float, pending: int) -> Result:
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = datetime.now(UTC) + self.start_margin(count)
        rng = random.Random(count)
        dues = sorted(t0 + timedelta(seconds=rng.uniform(0, over_s)) for _ in range(count))
        result = Result(name, count, pending)
        calls = await self.submit(tenant, dues)
        self._check_margin(result, t0)
        await self.collect(calls, result, patience=30)
        await self.settle(tenant)
        return result

    async def burst(self, name: str, count: int, pending: int) -> Result:
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = datetime.now(UTC) + self.start_margin(count)
        calls = await self.submit(tenant, [t0] * count)
        result = Result(name, count, pending)
        self._check_margin(result, t0)
        await self.collect(calls, result, patience=60)
        if result.lateness_ms:
            result.drain_s = max(result.lateness_ms) / 1000
        await self.settle(tenant)
        return result

    async def kill_restart(self, name: str, service: str, count: int, over_s: float) -> Result:
        """Calls spread over `over_s`; a third of the way in, `service` is SIGKILLed and
        started again `downtime_s` later. "Affected" calls are those due from the kill until
        a lead after the restart: their hand-off or their send fell into the gap."""
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = datetime.now(UTC) + self.start_margin(count)
        rng = random.Random(count + 1)
        dues = sorted(t0 + timedelta(seconds=rng.uniform(0, over_s)) for _ in range(count))
        calls = await self.submit(tenant, dues)
        result = Result(name, count, pending_count(self.layout.database_url))
        self._check_margin(result, t0)
        loop = asyncio.get_running_loop()

        async def crash() -> tuple[datetime, datetime]:
            await asyncio.sleep(max(0.0, (t0 - datetime.now(UTC)).total_seconds() + over_s / 3))
            killed_at = datetime.now(UTC)
            await loop.run_in_executor(None, procs.kill, self.layout, service)
            await asyncio.sleep(self.options.downtime_s)
            await loop.run_in_executor(None, procs.restart, self.layout, service)
            return killed_at, datetime.now(UTC)

        crasher = asyncio.create_task(crash())
        # Patience: a held hand-off comes back only after the dispatch lease.
        await self.collect(calls, result, patience=90)
        killed_at, back_at = await crasher
        window_end = back_at + timedelta(seconds=self.options.lead_s + 1)
        affected = [
            (first - due.timestamp()) * 1000
            for path, due in calls.items()
            if killed_at <= due <= window_end
            for first in [min((a.arrived_at for a in self._arrived.get(path, [])), default=0)]
            if first
        ]
        result.extra["affected"] = len(affected)
        if affected:
            ordered = sorted(affected)
            result.extra["affected_p50_ms"] = statistics.median(ordered)
            result.extra["affected_max_ms"] = ordered[-1]
        result.extra["down_s"] = (back_at - killed_at).total_seconds()
        await self.settle(tenant, timeout=180)
        return result

    async def backlog(self, name: str, count: int) -> Result:
        """`count` calls due now, batch-submitted as fast as the mesh takes them (1,000 per
        request, a few requests in flight), so that they queue wherever the pipeline is
        slowest. Measures the drain: lateness (= time queued), the rate, whether calls left in
        order of due time, and each service's RSS while the backlog lasts against before it.

        Each call's due time is the client's clock when its batch is built (a due time in the
        past means "now"), one microsecond apart, so that due order is a total order.
        "Overtaken" is, for each call, how much later the latest-due call that reached the
        target before it was due: 0 for a strictly due-ordered drain; a drain in any other
        order shows up to the whole backlog's span."""
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        admin = TenantAdmin(self.layout.database_url)
        admin.create_tenant(tenant)
        auth = (("authorization", f"Bearer {admin.create_key(tenant).text}"),)
        run = uuid.uuid4().hex[:8]
        self._expected = {}
        self._arrived = {}
        self._remaining = count
        self._all_in = asyncio.Event()
        pids = {s: procs.pid_of(self.layout, s) for s in SERVICES}
        before = {s: procs.sample(p).rss_mb for s, p in pids.items()}
        peak = dict(before)
        sampling = True

        async def sample_rss() -> None:
            while sampling:
                for s, p in pids.items():
                    peak[s] = max(peak[s], procs.sample(p).rss_mb)
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample_rss())
        batches = asyncio.Queue[list[int]]()
        for start in range(0, count, BACKLOG_BATCH):
            batches.put_nowait(list(range(start, min(start + BACKLOG_BATCH, count))))
        rejected = 0

        async def submitter() -> None:
            nonlocal rejected
            while not batches.empty():
                indices = batches.get_nowait()
                now = datetime.now(UTC)
                items = []
                for j, i in enumerate(indices):
                    due = now + timedelta(microseconds=j)
                    path = f"/b/{run}/{i}"
                    self._expected[path] = due
                    when = Timestamp()
                    when.FromDatetime(due)
                    items.append(
                        svc.BatchSubmitServiceCallsRequest.Item(
                            service_call=api.ServiceCall(
                                request=api.HttpRequest(
                                    http_method=api.POST, url=self.sink.url(path)
                                ),
                                schedule_time=when,
                                retry_policy=api.RetryPolicy(max_attempts=1),
                            )
                        )
                    )
                answer = await self.api.BatchSubmitServiceCalls(
                    svc.BatchSubmitServiceCallsRequest(tenant_id=tenant, items=items),
                    timeout=120,
                    metadata=auth,
                )
                rejected += sum(1 for r in answer.results if r.WhichOneof("outcome") == "error")

        began = time.monotonic()
        await asyncio.gather(*(submitter() for _ in range(BACKLOG_BATCHES_IN_FLIGHT)))
        submit_s = time.monotonic() - began
        result = Result(name, count, 0)
        calls = dict(self._expected)
        await self.collect(calls, result, patience=600)
        sampling = False
        await sampler
        first_due = min(calls.values()).timestamp()
        arrivals = sorted(
            (min(a.arrived_at for a in seen), calls[path].timestamp())
            for path, seen in self._arrived.items()
        )
        overtaken, latest_due = [], -math.inf
        for _, due in arrivals:
            overtaken.append(max(0.0, latest_due - due) * 1000)
            latest_due = max(latest_due, due)
        overtaken.sort()
        if arrivals:
            result.drain_s = arrivals[-1][0] - first_due
        result.extra["submit_per_s"] = count / submit_s
        result.extra["drain_per_s"] = len(arrivals) / max(result.drain_s or 0, 1e-9)
        result.extra["rejected"] = rejected
        if overtaken:
            result.extra["overtaken_p99_ms"] = overtaken[
                min(len(overtaken) - 1, int(0.99 * len(overtaken)))
            ]
            result.extra["overtaken_max_ms"] = overtaken[-1]
        for s in SERVICES:
            result.extra[f"{s}_rss_before_mb"] = before[s]
            result.extra[f"{s}_rss_peak_mb"] = peak[s]
        await self.settle(tenant, timeout=300)
        return result

    async def idle(self, pending: int) -> Result:
        """RSS and CPU of each service while nothing is due (after `settle`)."""
        result = Result("idle", 0, pending)
        pids = {s: procs.pid_of(self.layout, s) for s in SERVICES}
        # Let post-seed work (ANALYZE, autovacuum wake-ups) pass before sampling.
        await asyncio.sleep(2)
        before = {s: procs.sample(p) for s, p in pids.items()}
        await asyncio.sleep(self.options.idle_s)
        after = {s: procs.sample(p) for s, p in pids.items()}
        for s in SERVICES:
            result.extra[f"{s}_rss_mb"] = after[s].rss_mb
            result.extra[f"{s}_cpu_pct"] = procs.cpu_percent(before[s], after[s])
        return result

    def ensure_pending(self, count: int) -> None:
        url = self.layout.database_url
        have = pending_count(url)
        if have > count:
            remove_pending(url)
            have = 0
        if have < count:
            began = time.monotonic()
            # Far enough out that nothing seeded comes due during a benchmark, spaced so
            # the whole range is one realistic, ever-growing index.
            first_due = datetime.now(UTC) + timedelta(days=1) + timedelta(seconds=have)
            seed_pending(
                url,
                count - have,
                self.sink.url("/pending"),
                timedelta(seconds=self.options.lead_s),
                first_due,
            )
            took = time.monotonic() - began
            print(f"  seeded {count - have} pending calls in {took:.1f}s", file=sys.stderr)


# -- the plan ----------------------------------------------------------------------------------


def scaled(options: Options, count: int) -> int:
    return max(10, round(count * options.scale))


def scaled_s(options: Options, seconds: float) -> float:
    return max(5.0, seconds * options.scale)


SCENARIOS = ("spread2k", "spread10k", "burst10k", "kill-executor", "kill-scheduler", "idle")
# Not run unless named: issue 13's drain check (a 100k backlog of calls due now, with a 20k one
# to compare its memory with).
BACKLOG_SCENARIOS = ("backlog20k", "backlog100k")


async def run(layout: Layout, options: Options, chosen: Sequence[str]) -> list[Result]:
    bench = Bench(layout, options)
    await bench.start()
    results: list[Result] = []
    try:
        await bench.pilot()
        levels = sorted(options.pending_levels)
        if options.warmup:
            print(
                f"- warm-up burst of {options.warmup} (not counted) ...",
                file=sys.stderr,
                flush=True,
            )
            report_progress(await bench.burst("warm-up", options.warmup, 0))
        # Scenarios without a pending level run with the smallest one, before any seeding.
        bench.ensure_pending(levels[0])
        for name in chosen:
            if name not in ("spread10k", "idle"):
                for _ in range(options.repeat):
                    results.append(await one_scenario(bench, name, levels[0]))
                    report_progress(results[-1])
        for level in levels:
            if "spread10k" not in chosen and "idle" not in chosen:
                break
            bench.ensure_pending(level)
            if "spread10k" in chosen:
                for _ in range(options.repeat):
                    results.append(await one_scenario(bench, "spread10k", level))
                    report_progress(results[-1])
        if "idle" in chosen:
            results.append(await bench.idle(pending_count(layout.database_url)))
            report_progress(results[-1])
    finally:
        await bench.stop()
    return results


async def one_scenario(bench: Bench, name: str, pending: int) -> Result:
    o = bench.options
    print(f"- {name} (pending {pending}) ...", file=sys.stderr, flush=True)
    match name:
        case "spread2k":
            return await bench.spread(name, scaled(o, 2000), scaled_s(o, 30), pending)
        case "spread10k":
            return await bench.spread(name, scaled(o, 10000), scaled_s(o, 60), pending)
        case "burst10k":
            return await bench.burst(name, scaled(o, 10000), pending)
        case "kill-executor":
            return await bench.kill_restart(name, "executor", scaled(o, 2000), scaled_s(o, 30))
        case "kill-scheduler":
            return await bench.kill_restart(name, "scheduler", scaled(o, 2000), scaled_s(o, 30))
        case "backlog20k":
            return await bench.backlog(name, scaled(o, 20000))
        case "backlog100k":
            return await bench.backlog(name, scaled(o, 100000))
        case _:
            raise ValueError(name)


def report_progress(r: Result) -> None:
    print(f"  {row(r)}", file=sys.stderr, flush=True)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def row(r: Result) -> str:
    extra = " ".join(f"{k}={_fmt(v)}" for k, v in r.extra.items())
    return (
        f"| {r.scenario} | {r.calls} | {r.pending} | {_fmt(r.pct(0.5), 2)} | {_fmt(r.pct(0.99), 2)}"
        f" | {_fmt(r.worst(), 1)} | {r.early} | {r.lost}"
        f" | {r.duplicates} | {_fmt(r.drain_s, 2)} | {extra} {r.note} |"
    )


HEADER = (
    "| scenario | calls | pending | p50 ms | p99 ms | max ms | early | lost | dup | drain s"
    " | other |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def medians(results: list[Result]) -> list[Result]:
    """One row per (scenario, pending): the median of each figure over the repeats (lost,
    duplicates and early are the worst / the sum, never a median)."""
    groups: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.pending), []).append(r)
    out = []
    for (scenario, pending), rs in groups.items():
        if len(rs) == 1:
            out.append(rs[0])
            continue

        def med(f: Callable[[Result], float], rs: list[Result] = rs) -> float:
            return statistics.median(f(r) for r in rs)

        drains = [r.drain_s for r in rs if r.drain_s is not None]
        out.append(
            Result(
                f"{scenario} (median of {len(rs)})",
                rs[0].calls,
                pending,
                lost=max(r.lost for r in rs),
                duplicates=max(r.duplicates for r in rs),
                drain_s=statistics.median(drains) if drains else None,
                note=" ".join(sorted({r.note for r in rs if r.note})),
                extra={
                    k: statistics.median(r.extra.get(k, math.nan) for r in rs) for k in rs[0].extra
                },
                summary=(
                    med(lambda r: r.pct(0.5)),
                    med(lambda r: r.pct(0.99)),
                    med(lambda r: r.worst()),
                    sum(r.early for r in rs),
                ),
            )
        )
    return out


def print_table(results: list[Result]) -> None:
    print(HEADER)
    for r in medians(results):
        print(row(r))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scheduler", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma list of {', '.join(SCENARIOS + BACKLOG_SCENARIOS)} (default: all but the"
        " backlog ones)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply counts and spans")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario (medians)")
    parser.add_argument(
        "--pending",
        default="0,100000,1000000",
        help="pending-call levels for spread10k and idle (comma list)",
    )
    parser.add_argument("--downtime", type=float, default=3.0, help="seconds a killed one is down")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="calls of an unmeasured burst first, to warm a fresh broker (0: none)",
    )
    parser.add_argument(
        "--mesh",
        choices=("own", "dev"),
        default="own",
        help="own: a mesh of its own (.run/bench-scheduler); dev: the `make up` mesh",
    )
    parser.add_argument("--keep-mesh", action="store_true", help="leave the bench mesh running")
    parser.add_argument(
        "--default-priorities",
        action="store_true",
        help="executor and sink at the ordinary priority, as `make up` runs them (no nice -10,"
        " no SCHED_FIFO)",
    )
    parser.add_argument(
        "--executors",
        type=int,
        default=1,
        help="executor processes in the bench mesh (replicas in one consumer group)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="service setting for the bench mesh (HANDOFF_LEAD_S, CLAIM_LEASE_S, ...)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS) - set(BACKLOG_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    layout = BENCH_LAYOUT if args.mesh == "own" else Layout.dev()
    # The executor at a higher priority than the rest of the mesh, as docs/timing.md advises
    # for a host it shares with Kafka and Postgres: nice -10 and SCHED_FIFO 1 (needs root or
    # CAP_SYS_NICE, else it warns and runs without).
    raised = (
        {} if args.default_priorities else {"EXECUTOR_NICE": "-10", "EXECUTOR_RT_PRIORITY": "1"}
    )
    env = raised | dict(item.split("=", 1) for item in args.env)
    layout = layout.with_service_env(**env)
    lead = float(dict(layout.service_env).get("HANDOFF_LEAD_S", "2.0"))
    pull = float(dict(layout.service_env).get("HANDOFF_PULL_MAX_S", "10.0"))
    options = Options(
        scale=args.scale,
        repeat=args.repeat,
        lead_s=lead,
        pull_s=pull,
        pending_levels=tuple(int(x) for x in args.pending.split(",")),
        downtime_s=args.downtime,
        idle_s=args.idle_seconds,
        warmup=args.warmup,
    )
    if not 1 <= args.executors <= procs.MAX_EXECUTORS:
        parser.error(f"--executors must be between 1 and {procs.MAX_EXECUTORS}")
    if args.executors > 1 and args.mesh != "own":
        parser.error("--executors needs the bench's own mesh")
    if args.mesh == "own":
        print(f"starting the bench mesh in {layout.run_dir} ...", file=sys.stderr, flush=True)
        # Never measure services left by an older run.
        procs.stop_extra_executors(layout)
        mesh.stop_mesh_processes(layout)
        mesh.up(layout)
        procs.start_extra_executors(layout, args.executors)
    # After the mesh started: it must not inherit it.
    sink_priority = "nice 0 (default)" if args.default_priorities else _raise_own_priority()
    try:
        results = asyncio.run(run(layout, options, chosen))
    finally:
        if args.mesh == "own" and not args.keep_mesh:
            procs.stop_extra_executors(layout)
            mesh.down(layout)
    print()
    print(f"command: python -m bench.scheduler {' '.join(argv or sys.argv[1:])}")
    print(f"service env: {dict(layout.service_env) or '(defaults)'}")
    print(f"executor processes: {args.executors}")
    print(f"sink (this process): {sink_priority}")
    print_table(results)


def _raise_own_priority() -> str:
    """The sink stands for a target on another machine: it runs at the executor's priority so
    that a late arrival is the mesh's lateness, not the sink waiting for a CPU on a machine the
    whole mesh shares. Services it restarts start at the ordinary priority all the same
    (meshctl.processes). Returns the priority in effect."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    with contextlib.suppress(PermissionError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    fifo = os.sched_getscheduler(0) == os.SCHED_FIFO
    return f"nice {os.getpriority(os.PRIO_PROCESS, 0)}" + (", SCHED_FIFO 1" if fifo else "")


if __name__ == "__main__":
    main()
