"""Chaos suite: faults injected into a real local mesh while calls are due; pass/fail on safety.

`make chaos` (or `python -m bench.chaos --help`). It starts a mesh of its own (Postgres, Kafka,
the three services, Envoy; run dir .run/chaos, ports 315xx, loopback only) with the test mesh's
short leases, and for each scenario: submits N calls of three tenants to a loopback sink in this
process, due over the next `--span` seconds; injects the fault at a moment drawn from a seeded
RNG; waits (bounded) until every acknowledged call is terminal; then checks, from the API, the
sink's log and the call-events topic, that no call was lost, stuck, early or completed twice,
and that every delivery of a call carried its idempotency key. Duplicates are allowed (the wire
is at least once) and counted. Two scenarios check more: `stop-postgres` submits during the
outage and wants UNAVAILABLE (gRPC) / 503 (JSON) for each; `fairness` restarts the executor
with small held-request caps, floods a slow target from one tenant and wants another tenant's
calls on time. Exit status 1 when any safety figure is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from bench import _procs as procs
from mesh.topics import Topics
from meshctl import mesh, processes
from meshctl.layout import ROOT, Layout
from meshctl.sink import Arrival, Sink
from meshctl.topic_reader import read_whole_topic
from orchestrator.adapters.tenants import TenantAdmin
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc

# The header the executor puts on every request to a target, stable across redeliveries.
IDEMPOTENCY_HEADER = "Idempotency-Key"

# A run dir and ports of its own (315xx: the timing benches use 313xx and 314xx, test slots end
# in 032-193 of each thousand), so it runs beside `make up` and `make test`.
CHAOS_LAYOUT = Layout(
    run_dir=ROOT / ".run" / "chaos",
    pg_port=31532,
    kafka_port=31592,
    kafka_controller_port=31593,
    orchestrator_port=31551,
    scheduler_port=31552,
    executor_port=31553,
    envoy_port=31580,
    envoy_admin_port=31581,
    # Durable commits, as in production: with PG_FSYNC=off postgres.sh also turns
    # synchronous_commit off, and then an immediate stop loses the last ~200 ms of commits
    # that the services were told succeeded, while the relay had already published their
    # outbox rows (a call's ExecutionRequested sent, its Dispatched state gone). That is a
    # fault of its own (a failover to an async replica), not a Postgres crash.
    pg_fsync=True,
)

# The test mesh's short leases (tests/conftest.py): an executor lost mid-hand-off is replaced
# after 5 s, so recovery fits a bounded wait.
SERVICE_ENV = {
    "HANDOFF_LEAD_S": "1.0",
    "DISPATCH_LEASE_S": "5.0",
    "ATTEMPT_GRACE_S": "5.0",
    "CLAIM_LEASE_S": "3.0",
    "API_KEY_CACHE_S": "0",
    "LOG_LEVEL": "info",
}

SCENARIOS = (
    "kill-orchestrator",
    "kill-scheduler",
    "kill-executor",
    "kill-kafka",
    "stop-postgres",
    "sigstop-executor",
    "poison",
    "fairness",
)
# The full form: every scenario, the broker kill five times in a row (issue #12's acceptance).
# Poison last: on code that a poison input wedges, it would spoil the scenarios after it.
FULL_PLAN = (
    "kill-orchestrator",
    "kill-scheduler",
    "kill-executor",
    *["kill-kafka"] * 5,
    "stop-postgres",
    "sigstop-executor",
    "fairness",
    "poison",
)

# The fairness scenario's executor (restarted with these for the scenario, then without): a
# held-request cap small enough for one tenant's flood to fill it. The sink's one host takes
# every request, and the per-host cap is by design shared by whoever calls a host; it is set
# to the whole in-flight cap, so that what is measured is the held-request share alone.
FAIRNESS_ENV = {
    "MAX_IN_FLIGHT": "32",
    "MAX_IN_FLIGHT_PER_TENANT": "16",
    "MAX_IN_FLIGHT_PER_HOST": "32",
    "MAX_HELD": "64",  # at least MAX_IN_FLIGHT (executor/config.py)
}
FAIR_SHARE = 16  # MAX_HELD_PER_TENANT; --held-per-tenant 64 (= MAX_HELD) turns sharing off

NON_TERMINAL = (api.ServiceCall.SCHEDULED, api.ServiceCall.DISPATCHED, api.ServiceCall.RUNNING)
TERMINAL = (api.ServiceCall.SUCCEEDED, api.ServiceCall.FAILED, api.ServiceCall.CANCELED)
# A call later than this after its due time counts as "not yet recovered" (recovery time).
LATE_S = 1.0
SUBMIT_CONCURRENCY = 32
# stop-postgres: when (seconds into the outage) each round of submits is made, and how long
# each may take; all within Options.postgres_down_s.
OUTAGE_PROBE_AT = (0.2, 3.0)
OUTAGE_PROBE_TIMEOUT_S = 4.0
# What an outage must answer, per face.
OUTAGE_ANSWER = {"gRPC": "UNAVAILABLE", "JSON": "503"}


def chaos_layout_for_slot(slot: int) -> Layout:
    """A chaos mesh beside test slot `slot`'s mesh (tests/conftest.py holds the slot's lock):
    every port 500 below the slot's, so no two slots' chaos meshes collide either."""
    base = Layout.test(slot)
    return replace(
        base,
        run_dir=ROOT / ".run" / f"chaos-test-{slot}",
        pg_port=base.pg_port - 500,
        kafka_port=base.kafka_port - 500,
        kafka_controller_port=base.kafka_controller_port - 500,
        orchestrator_port=base.orchestrator_port - 500,
        scheduler_port=base.scheduler_port - 500,
        executor_port=base.executor_port - 500,
        envoy_port=base.envoy_port - 500,
        envoy_admin_port=base.envoy_admin_port - 500,
        pg_fsync=CHAOS_LAYOUT.pg_fsync,
        # No Prometheus and no /metrics ports: the slot's own mesh holds those.
        prometheus_port=0,
        orchestrator_metrics_port=0,
        scheduler_metrics_port=0,
        executor_metrics_port=0,
    )


def with_chaos_env(layout: Layout) -> Layout:
    return layout.with_service_env(**SERVICE_ENV)


@dataclass(frozen=True)
class Options:
    calls: int = 500
    span_s: float = 15.0  # calls are due over this many seconds
    patience_s: float = 90.0  # after the last due time, how long calls may take to end
    kafka_down_s: float = 15.0
    postgres_down_s: float = 8.0  # at least OUTAGE_PROBE_AT[-1] + OUTAGE_PROBE_TIMEOUT_S
    tenants: int = 3
    # fairness: the flooding tenant's calls (all due at once, to /slow/<fair_slow_s>), the
    # other tenant's calls (due 1-2 s after the flood is held) and their lateness bound.
    # Fewer of the other's calls than a share (FAIR_SHARE): a call counts against its tenant's
    # share from the moment the executor takes it until its result is reported, which is up
    # to REPORT_DEFER_MAX_S (2 s) after its reply while other requests are in flight, so 20
    # calls due within a second outran their own tenant's share of 16 (the last 4 ~1.1 s late).
    fair_flood: int = 200
    fair_slow_s: float = 3.0
    fair_calls: int = 12
    fair_bound_s: float = 1.0
    held_per_tenant: int = FAIR_SHARE


@dataclass
class Planned:
    tenant: str
    path: str
    due: datetime
    poison: str = ""  # which poison input, "" for an ordinary call
    flood: bool = False  # the fairness scenario's flood: late by design, lateness not judged
    service_call_id: str = ""  # set once acknowledged
    refused: str = ""  # the gRPC code when the submit was not acknowledged


@dataclass
class Result:
    scenario: str
    calls: int = 0
    refused: int = 0
    # Refusals other than a 400 (INVALID_ARGUMENT) of a poison input: an ordinary call
    # refused, or an answer like UNKNOWN (HTTP 500) that a client cannot act on.
    bad_refusals: int = 0
    lost: int = 0
    stuck: int = 0
    duplicates: int = 0
    early: int = 0
    key_mismatch: int = 0
    double_terminal: int = 0
    max_late_s: float = 0.0
    recovery_s: float = 0.0
    fault_at_s: float = 0.0  # seconds after the first due time
    # fairness: calls (not the flood) first arriving later than the bound (None: not judged).
    late_bound_s: float | None = None
    late: int = 0
    # stop-postgres: submits made during the outage, and those answered otherwise than
    # UNAVAILABLE (gRPC) / 503 (JSON), e.g. UNKNOWN / 500, a timeout, or accepted.
    outage_probes: int = 0
    bad_outage_answers: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.stuck or self.early or self.key_mismatch) or bool(
            self.double_terminal or self.bad_refusals or self.late or self.bad_outage_answers
        )


# -- the faults ----------------------------------------------------------------------------


def kill_service(layout: Layout, service: str) -> None:
    procs.kill(layout, service)


def restart_service(layout: Layout, service: str) -> None:
    procs.restart(layout, service)


def _kafka_pid_file(layout: Layout) -> Path:
    return layout.run_dir / "kafka" / "kafka.pid"


def kill_kafka(layout: Layout) -> None:
    """SIGKILL to the broker (its pid file, checked against this mesh's marker)."""
    pid = processes.running_pid(_kafka_pid_file(layout), str(layout.run_dir))
    if pid is None:
        raise RuntimeError(f"kafka is not running in {layout.run_dir}")
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, "kafka")


def start_kafka(layout: Layout) -> None:
    processes.run(
        [str(mesh.INFRA / "kafka.sh"), "start"], layout.infra_env(), "kafka.sh start (chaos)"
    )


def _postmaster_pid(layout: Layout) -> tuple[int, Path]:
    # postgres.sh may have put the instance elsewhere and linked run_dir/pg to it.
    data = (layout.run_dir / "pg").resolve() / "data"
    pid = int((data / "postmaster.pid").read_text().split()[0])
    if str(data).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        raise RuntimeError(f"pid {pid} is not the postmaster of {data}")
    return pid, data


def stop_postgres_immediately(layout: Layout) -> None:
    """What `pg_ctl stop -m immediate` does: SIGQUIT to the postmaster, which ends every
    backend at once with no checkpoint, so the next start runs crash recovery."""
    pid, _ = _postmaster_pid(layout)
    os.kill(pid, signal.SIGQUIT)
    _wait_gone(pid, "postgres")


def start_postgres(layout: Layout) -> None:
    processes.run(
        [str(mesh.INFRA / "postgres.sh"), "start"],
        layout.infra_env(),
        "postgres.sh start (chaos)",
    )


def _wait_gone(pid: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and procs._state(pid) != "Z":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} (pid {pid}) did not exit within {timeout:.0f}s")
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def restart_executor(layout: Layout) -> None:
    """Stops the executor (SIGTERM: it finishes what it holds) and starts it with `layout`'s
    service env; static membership gives it its partitions back at once."""
    component = next(c for c in mesh.components(layout) if c.name == "executor")
    processes.stop(component.pid_file, str(layout.run_dir))
    restart_service(layout, "executor")


async def inject(
    layout: Layout, scenario: str, options: Options, rng: random.Random, run: Run
) -> str:
    """Runs the fault; returns what was done (for the notes)."""
    match scenario:
        case "kill-orchestrator" | "kill-scheduler" | "kill-executor":
            service = scenario.removeprefix("kill-")
            down = rng.uniform(0.0, 3.0)
            await asyncio.to_thread(kill_service, layout, service)
            await asyncio.sleep(down)
            await asyncio.to_thread(restart_service, layout, service)
            return f"{service} SIGKILLed, restarted after {down:.1f}s"
        case "kill-kafka":
            await asyncio.to_thread(kill_kafka, layout)
            await asyncio.sleep(options.kafka_down_s)
            await asyncio.to_thread(start_kafka, layout)
            return f"broker SIGKILLed, restarted after {options.kafka_down_s:.0f}s"
        case "stop-postgres":
            await asyncio.to_thread(stop_postgres_immediately, layout)
            probing = asyncio.create_task(run.probe_outage())
            await asyncio.sleep(options.postgres_down_s)
            await probing  # every probe answered (or timed out) while Postgres was down
            await asyncio.to_thread(start_postgres, layout)
            return f"postgres stopped (immediate), restarted after {options.postgres_down_s:.0f}s"
        case "sigstop-executor":
            env = dict(layout.service_env)
            # Past the dispatch lease and an attempt's grace: the watchdog acts meanwhile.
            hold = float(env["DISPATCH_LEASE_S"]) + float(env["ATTEMPT_GRACE_S"]) + 2.0
            pid = procs.pid_of(layout, "executor")
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(hold)
            finally:
                os.kill(pid, signal.SIGCONT)
            return f"executor SIGSTOPped for {hold:.0f}s, then SIGCONT"
        case "poison":
            return "poison inputs submitted among the ordinary calls"
        case _:
            raise ValueError(scenario)


# -- calls -----------------------------------------------------------------------------------

POISONS = ("sealed-header", "1MB-body", "300-headers")


def _poison_request(kind: str, url: str) -> api.HttpRequest:
    request = api.HttpRequest(http_method=api.POST, url=url)
    match kind:
        case "sealed-header":
            request.headers["X-Note"] = "sealed:abc"
        case "1MB-body":
            request.body = b"p" * 1_000_000
        case "300-headers":
            for i in range(300):
                request.headers[f"X-Chaos-{i}"] = f"value-{i}"
        case _:
            raise ValueError(kind)
    return request


def _timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _retry_policy() -> api.RetryPolicy:
    # Retries so that an attempt lost to a fault (timed out, connection reset) is made again.
    return api.RetryPolicy(max_attempts=5, min_backoff=Duration(nanos=500_000_000), jitter=0.0)


class Run:
    """One scenario against a running mesh: its tenants, calls, sink log and verdict."""

    def __init__(
        self,
        layout: Layout,
        stub: svc_grpc.ServiceCallServiceAsyncStub,
        sink: Sink,
        scenario: str,
        options: Options,
        rng: random.Random,
    ) -> None:
        self.layout = layout
        self.stub = stub
        self.sink = sink
        self.scenario = scenario
        self.options = options
        self.rng = rng
        tag = uuid.uuid4().hex[:8]
        self.tenants = [f"chaos-{tag}-{chr(ord('a') + i)}" for i in range(options.tenants)]
        self.keys: dict[str, str] = {}
        self.arrivals: dict[str, list[Arrival]] = {}
        # In every path of this run's calls; a call to /slow/<ms> has it after that part.
        self.prefix = f"/chaos/{tag}/"
        self.flood_arrived = asyncio.Event()  # fairness: the flood's first request came in
        # stop-postgres: (face, answer) of each submit made during the outage.
        self.outage_answers: list[tuple[str, str]] = []

    def on_arrival(self, arrival: Arrival) -> None:
        if self.prefix in arrival.path:
            self.arrivals.setdefault(arrival.path, []).append(arrival)
            if f"{self.prefix}flood-" in arrival.path:
                self.flood_arrived.set()

    def _auth(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[tenant]}"),)

    def plan(self, t0: datetime) -> list[Planned]:
        o = self.options
        calls = [
            Planned(
                self.tenants[i % len(self.tenants)],
                f"{self.prefix}{i}",
                t0 + timedelta(seconds=self.rng.uniform(0, o.span_s)),
            )
            for i in range(o.calls)
        ]
        if self.scenario == "poison":
            # Due early in the window, so that ordinary calls due after them show whether
            # they stopped anything; the first tenant sends them.
            for j, kind in enumerate(POISONS):
                due = t0 + timedelta(seconds=o.span_s * (0.1 + 0.1 * j))
                calls.append(Planned(self.tenants[0], f"{self.prefix}poison-{kind}", due, kind))
        self.rng.shuffle(calls)  # poison inputs among the ordinary calls, in submit order
        return calls

    def create_tenants(self) -> None:
        admin = TenantAdmin(self.layout.database_url)
        for tenant in self.tenants:
            admin.create_tenant(tenant)
            self.keys[tenant] = admin.create_key(tenant).text

    async def submit(self, calls: list[Planned]) -> None:
        if not self.keys:
            self.create_tenants()
        slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def one(call: Planned) -> None:
            url = self.sink.url(call.path)
            request = (
                _poison_request(call.poison, url)
                if call.poison
                else api.HttpRequest(http_method=api.POST, url=url, body=b"{}")
            )
            request.attempt_timeout.FromSeconds(10)
            message = svc.SubmitServiceCallRequest(
                tenant_id=call.tenant,
                service_call=api.ServiceCall(
                    request=request,
                    schedule_time=_timestamp(call.due),
                    retry_policy=_retry_policy(),
                ),
            )
            async with slots:
                try:
                    answer = await self.stub.SubmitServiceCall(
                        message, timeout=30, metadata=self._auth(call.tenant)
                    )
                except grpc.aio.AioRpcError as e:
                    call.refused = e.code().name
                    return
            call.service_call_id = answer.service_call_id

        await asyncio.gather(*(one(c) for c in calls))

    async def probe_outage(self) -> None:
        """Submits while Postgres is down, through both faces: the orchestrator's gRPC port and
        Envoy's JSON; each must be refused as retryable, UNAVAILABLE / HTTP 503 (never UNKNOWN
        / 500, which a client cannot act on). Two rounds: at once (the pool's connections are
        broken) and a few seconds in (new connections are refused)."""
        # Due at the window's end, to the sink: a probe wrongly accepted then ends like any call.
        due = datetime.now(UTC) + timedelta(seconds=self.options.span_s)
        started = time.monotonic()
        for round_no, at in enumerate(OUTAGE_PROBE_AT):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            probes = []
            tenant = self.tenants[round_no % len(self.tenants)]
            for face in ("gRPC", "JSON"):
                path = f"{self.prefix}outage-{round_no}-{face}"
                probes.append(self._probe(face, tenant, self.sink.url(path), due))
            for face, answer in zip(("gRPC", "JSON"), await asyncio.gather(*probes), strict=True):
                self.outage_answers.append((face, answer))

    async def _probe(self, face: str, tenant: str, url: str, due: datetime) -> str:
        if face == "gRPC":
            message = svc.SubmitServiceCallRequest(
                tenant_id=tenant,
                service_call=api.ServiceCall(
                    request=api.HttpRequest(http_method=api.POST, url=url, body=b"{}"),
                    schedule_time=_timestamp(due),
                ),
            )
            try:
                await self.stub.SubmitServiceCall(
                    message, timeout=OUTAGE_PROBE_TIMEOUT_S, metadata=self._auth(tenant)
                )
            except grpc.aio.AioRpcError as e:
                return e.code().name
            return "OK (accepted)"
        return await asyncio.to_thread(self._json_submit, tenant, url, due)

    def _json_submit(self, tenant: str, url: str, due: datetime) -> str:
        body = {
            "serviceCall": {
                "request": {"httpMethod": "POST", "url": url},
                "scheduleTime": due.isoformat().replace("+00:00", "Z"),
            }
        }
        request = urllib.request.Request(
            f"{self.layout.public_url}/v1/tenants/{tenant}/service-calls",
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {self.keys[tenant]}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=OUTAGE_PROBE_TIMEOUT_S) as response:
                return f"{response.status} (accepted)"
        except urllib.error.HTTPError as e:
            return str(e.code)
        except OSError as e:  # a timeout, a reset: no answer at all
            return f"no answer ({type(e).__name__})"

    async def _non_terminal_left(self) -> int | None:
        """How many of this run's calls are not terminal (None: the API did not answer)."""
        left = 0
        for tenant in self.tenants:
            try:
                page = await self.stub.ListServiceCalls(
                    svc.ListServiceCallsRequest(
                        tenant_id=tenant, page_size=1000, states=NON_TERMINAL
                    ),
                    timeout=10,
                    metadata=self._auth(tenant),
                )
            except grpc.aio.AioRpcError:
                return None
            left += len(page.service_calls)
        return left

    async def wait_terminal(self, deadline: float) -> None:
        """Until every call is terminal or the bound passes; polls the API (no event says
        "all of a tenant's calls ended"), once a second."""
        while time.monotonic() < deadline:
            if await self._non_terminal_left() == 0:
                return
            await asyncio.sleep(1.0)

    async def final_states(self) -> dict[str, api.ServiceCall]:
        states: dict[str, api.ServiceCall] = {}
        for tenant in self.tenants:
            token = ""
            while True:
                for attempt in range(30):
                    try:
                        page = await self.stub.ListServiceCalls(
                            svc.ListServiceCallsRequest(
                                tenant_id=tenant, page_size=1000, page_token=token
                            ),
                            timeout=10,
                            metadata=self._auth(tenant),
                        )
                        break
                    except grpc.aio.AioRpcError:
                        if attempt == 29:
                            raise
                        await asyncio.sleep(1.0)
                for call in page.service_calls:
                    states[call.service_call_id] = call
                token = page.next_page_token
                if not token:
                    break
        return states


def completed_states(
    layout: Layout, call_ids: set[str], timeout: float = 60.0
) -> dict[str, list[int]]:
    """Every ServiceCallCompleted on the call-events topic for these calls, read from the
    beginning to each partition's end, outside any consumer group."""
    topic = Topics.with_prefix(layout.topic_prefix).call_events
    found: dict[str, list[int]] = {}
    for value in read_whole_topic(layout.kafka_bootstrap, topic, timeout):
        envelope = pb.Envelope.FromString(value)
        if envelope.service_call_id in call_ids and envelope.WhichOneof("payload") == "completed":
            found.setdefault(envelope.service_call_id, []).append(envelope.completed.state)
    return found


def judge(
    run: Run,
    calls: list[Planned],
    states: dict[str, api.ServiceCall],
    completed: dict[str, list[int]],
    fault_at: datetime,
    late_bound_s: float | None = None,
) -> Result:
    result = Result(run.scenario, late_bound_s=late_bound_s)
    late_arrivals: list[float] = []
    flood_late_s = 0.0
    over_bound: list[tuple[str, float]] = []
    stuck_states: dict[str, int] = {}
    refusals: dict[str, int] = {}
    poison_outcomes: list[str] = []
    stuck_ids: list[str] = []
    for call in calls:
        if call.refused:
            result.refused += 1
            refusals[call.refused] = refusals.get(call.refused, 0) + 1
            if not call.poison or call.refused != "INVALID_ARGUMENT":
                result.bad_refusals += 1
            if call.poison:
                poison_outcomes.append(f"{call.poison}: refused {call.refused}")
            else:
                result.notes.append(f"ordinary call refused at submit: {call.refused}")
            continue
        result.calls += 1
        seen = run.arrivals.get(call.path, [])
        state = states.get(call.service_call_id)
        if state is None or state.state in NON_TERMINAL:
            name = (
                "unknown to the API" if state is None else api.ServiceCall.State.Name(state.state)
            )
            if state is None:
                result.lost += 1
            else:
                result.stuck += 1
            stuck_states[name] = stuck_states.get(name, 0) + 1
            if len(stuck_ids) < 3:
                stuck_ids.append(f"{call.tenant}/{call.service_call_id or call.path}")
        elif not seen and (not call.poison or state.state == api.ServiceCall.SUCCEEDED):
            # An ordinary call must reach its target; no call may say SUCCEEDED unsent.
            result.lost += 1
            result.notes.append(
                f"{call.path}: {api.ServiceCall.State.Name(state.state)} without arriving"
                f" ({state.status_reason})"
            )
        if call.poison and state is not None:
            reason = f" ({state.status_reason[:80]})" if state.status_reason else ""
            poison_outcomes.append(
                f"{call.poison}: {api.ServiceCall.State.Name(state.state)}{reason}"
            )
        if seen:
            result.duplicates += len(seen) - 1
            due = call.due.timestamp()
            if any(a.arrived_at < due for a in seen):
                result.early += 1
            keys = {a.header(IDEMPOTENCY_HEADER) for a in seen}
            if keys != {call.service_call_id}:
                result.key_mismatch += 1
            first = min(a.arrived_at for a in seen)
            lateness = first - due
            if call.flood:
                flood_late_s = max(flood_late_s, lateness)
            elif not call.poison:
                result.max_late_s = max(result.max_late_s, lateness)
                if lateness > LATE_S:
                    late_arrivals.append(first)
                if late_bound_s is not None and lateness > late_bound_s:
                    result.late += 1
                    over_bound.append((call.path, lateness))
        ends = set(completed.get(call.service_call_id, []))
        if state is not None and state.state in TERMINAL:
            ends.add(state.state)
        if len(ends) > 1:
            result.double_terminal += 1
            result.notes.append(
                f"{call.path}: terminal states "
                + ", ".join(sorted(api.ServiceCall.State.Name(s) for s in ends))  # type: ignore[arg-type]
            )
    if late_arrivals:
        result.recovery_s = max(0.0, max(late_arrivals) - fault_at.timestamp())
    if stuck_states:
        result.notes.append(
            "not terminal at the bound: "
            + ", ".join(f"{n}×{k}" for k, n in sorted(stuck_states.items()))
            + f" (e.g. {', '.join(stuck_ids)})"
        )
    if refusals:
        result.notes.append(
            "refused at submit: " + ", ".join(f"{k}×{n}" for k, n in sorted(refusals.items()))
        )
    result.notes.extend(f"poison {o}" for o in poison_outcomes)
    if any(c.flood for c in calls):
        result.notes.append(f"the flood's max lateness {flood_late_s:.2f}s (expected, not judged)")
    if late_bound_s is not None and result.late:
        result.notes.append(
            f"{result.late} calls more than {late_bound_s:.1f}s late: "
            + ", ".join(f"{path.rsplit('/', 1)[-1]} {s:.2f}s" for path, s in over_bound[:8])
        )
    result.outage_probes = len(run.outage_answers)
    result.bad_outage_answers = sum(
        answer != OUTAGE_ANSWER[face] for face, answer in run.outage_answers
    )
    if run.outage_answers:
        result.notes.append(
            "submits during the outage answered: "
            + ", ".join(f"{face} {answer}" for face, answer in run.outage_answers)
        )
    return result


async def one_scenario(
    layout: Layout,
    stub: svc_grpc.ServiceCallServiceAsyncStub,
    sink: Sink,
    scenario: str,
    options: Options,
    rng: random.Random,
) -> Result:
    if scenario == "fairness":
        return await fairness(layout, stub, sink, options, rng)
    run = Run(layout, stub, sink, scenario, options, rng)
    sink.on_arrival = run.on_arrival
    # Room to submit everything before the first call is due (~200 submits/s at worst here).
    t0 = datetime.now(UTC) + timedelta(seconds=2.0 + options.calls / 200)
    calls = run.plan(t0)
    await run.submit(calls)
    fault_at = t0 + timedelta(seconds=options.span_s * rng.uniform(0.2, 0.6))
    await asyncio.sleep(max(0.0, (fault_at - datetime.now(UTC)).total_seconds()))
    fault_at = datetime.now(UTC)
    began = time.monotonic()
    done = await inject(layout, scenario, options, rng, run)
    print(f"  {done} ({time.monotonic() - began:.1f}s)", file=sys.stderr, flush=True)
    last_due = max(c.due for c in calls)
    bound = time.monotonic() + max(
        0.0, (last_due - datetime.now(UTC)).total_seconds() + options.patience_s
    )
    result = await conclude(run, calls, bound, fault_at)
    result.fault_at_s = (fault_at - t0).total_seconds()
    result.notes.insert(0, done)
    return result


async def conclude(
    run: Run,
    calls: list[Planned],
    bound: float,
    fault_at: datetime,
    late_bound_s: float | None = None,
) -> Result:
    """Waits (until the monotonic `bound`) for every call to end, then reads and judges."""
    await run.wait_terminal(bound)
    # A late duplicate of a completion would show up now, if ever.
    await asyncio.sleep(2.0)
    states = await run.final_states()
    ids = {c.service_call_id for c in calls if c.service_call_id}
    completed = await asyncio.to_thread(completed_states, run.layout, ids)
    run.sink.on_arrival = None
    return judge(run, calls, states, completed, fault_at, late_bound_s)


async def fairness(
    layout: Layout,
    stub: svc_grpc.ServiceCallServiceAsyncStub,
    sink: Sink,
    options: Options,
    rng: random.Random,
) -> Result:
    """Issue #12: one tenant at its cap never stops the others' calls. Tenant a floods a slow
    target with calls all due at once; while the executor holds that flood (its first request
    came in), tenant b submits calls due 1-2 s later to a fast path. Each of b's calls must
    arrive within `fair_bound_s` of its due time; a's calls need only end (they drain at its
    share's pace, late by design). The executor runs with small caps for this scenario only."""
    env = FAIRNESS_ENV | {"MAX_HELD_PER_TENANT": str(options.held_per_tenant)}
    await asyncio.to_thread(restart_executor, layout.with_service_env(**env))
    try:
        run = Run(layout, stub, sink, "fairness", replace(options, tenants=2), rng)
        sink.on_arrival = run.on_arrival
        run.create_tenants()
        flooder, other = run.tenants
        slow_ms = round(options.fair_slow_s * 1000)
        t0 = datetime.now(UTC) + timedelta(seconds=1.0 + options.fair_flood / 200)
        flood = [
            Planned(flooder, f"/slow/{slow_ms}{run.prefix}flood-{i}", t0, flood=True)
            for i in range(options.fair_flood)
        ]
        await run.submit(flood)
        # The flood is held once its first request went out: the executor took what its caps
        # let it, the rest waits (in its share's queue, or in Kafka without sharing).
        try:
            await asyncio.wait_for(run.flood_arrived.wait(), timeout=30.0)
        except TimeoutError:
            run.sink.on_arrival = None
            raise RuntimeError("fairness: no call of the flood arrived within 30 s") from None
        held_at = datetime.now(UTC)
        on_time = [
            Planned(
                other,
                f"{run.prefix}on-time-{i}",
                held_at + timedelta(seconds=1.0 + i / max(1, options.fair_calls - 1)),
            )
            for i in range(options.fair_calls)
        ]
        await run.submit(on_time)
        calls = flood + on_time
        # The flood drains at its in-flight cap's pace: the held share, or without it the
        # tenant's in-flight cap.
        drain_s = (
            options.fair_flood
            * options.fair_slow_s
            / min(options.held_per_tenant, int(FAIRNESS_ENV["MAX_IN_FLIGHT_PER_TENANT"]))
        )
        last_due = max(c.due for c in calls)
        wait_s = max(0.0, (last_due - datetime.now(UTC)).total_seconds())
        bound = time.monotonic() + wait_s + drain_s + options.patience_s
        result = await conclude(run, calls, bound, held_at, options.fair_bound_s)
    finally:
        await asyncio.to_thread(restart_executor, layout)
    result.fault_at_s = (held_at - t0).total_seconds()
    caps = ", ".join(f"{k}={v}" for k, v in env.items())
    result.notes.insert(
        0,
        f"executor restarted with {caps}; tenant a: {options.fair_flood} calls due at once to"
        f" /slow/{slow_ms}; tenant b: {options.fair_calls} calls due 1-2 s after a's first"
        f" arrival, max lateness {result.max_late_s:.2f}s (bound {options.fair_bound_s:.1f}s)",
    )
    return result


def fresh_mesh(layout: Layout) -> None:
    """Stops whatever runs in the chaos run dir, deletes it, and starts a mesh from nothing:
    a scenario that wedged the mesh (a poison row stays in the outbox, a poison message on its
    partition) would otherwise be blamed on the next fault, even across restarts."""
    mesh.down(layout)
    pg = layout.run_dir / "pg"
    if pg.is_symlink():  # postgres.sh put the instance elsewhere (see there): delete it too
        shutil.rmtree(pg.resolve(), ignore_errors=True)
    shutil.rmtree(layout.run_dir, ignore_errors=True)
    mesh.up(layout)


def keep_logs(layout: Layout, label: str) -> Path:
    """A copy of the mesh's logs beside its run dir, which a fresh mesh deletes: what made a
    scenario's calls stuck or lost is read there."""
    kept = layout.run_dir.with_name(f"{layout.run_dir.name}.logs") / label
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(layout.run_dir / "logs", kept)
    return kept


async def run_suite(
    layout: Layout, plan: Sequence[str], options: Options, seed: int
) -> list[Result]:
    rng = random.Random(seed)
    sink = Sink()
    await sink.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{layout.orchestrator_port}")
    stub: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(channel)
    results: list[Result] = []
    try:
        for index, scenario in enumerate(plan):
            count = (
                options.fair_flood + options.fair_calls if scenario == "fairness" else options.calls
            )
            print(f"- {scenario} ({count} calls) ...", file=sys.stderr, flush=True)
            result = await one_scenario(layout, stub, sink, scenario, options, rng)
            results.append(result)
            print(f"  {row(result)}", file=sys.stderr, flush=True)
            if (result.stuck or result.lost) and index < len(plan) - 1:
                kept = keep_logs(layout, f"{index + 1}-{scenario}")
                print(
                    f"  a fresh mesh for the next scenario (this one's logs: {kept}) ...",
                    file=sys.stderr,
                    flush=True,
                )
                result.notes.append(f"logs kept in {kept}")
                await asyncio.to_thread(fresh_mesh, layout)
    finally:
        await channel.close()
        await sink.stop()
    return results


# -- the table ---------------------------------------------------------------------------------

HEADER = (
    "| scenario | calls | refused | lost | stuck | duplicates | early | key≠ | double-terminal"
    " | max lateness s | late > bound | outage ≠ 503 | recovery s | fault at s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(r: Result) -> str:
    bad = f" ({r.bad_refusals} not 400)" if r.bad_refusals else ""
    # Scenario-specific checks: "-" where the scenario does not make them.
    late = "-" if r.late_bound_s is None else f"{r.late} (bound {r.late_bound_s:g})"
    outage = f"{r.bad_outage_answers} of {r.outage_probes}" if r.outage_probes else "-"
    return (
        f"| {r.scenario} | {r.calls} | {r.refused}{bad} | {r.lost} | {r.stuck} | {r.duplicates}"
        f" | {r.early} | {r.key_mismatch} | {r.double_terminal} | {r.max_late_s:.2f}"
        f" | {late} | {outage} | {r.recovery_s:.1f} | {r.fault_at_s:.1f} |"
    )


def report(results: list[Result]) -> str:
    lines = [HEADER, *(row(r) for r in results), ""]
    for i, r in enumerate(results, 1):
        shown = r.notes[:12] + ([f"... {len(r.notes) - 12} more"] if len(r.notes) > 12 else [])
        lines.append(f"{i}. {r.scenario}: " + "; ".join(shown))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument(
        "--scenarios",
        default="",
        help=f"comma list of {', '.join(SCENARIOS)} (default: the full plan, broker kill x5)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each listed scenario")
    parser.add_argument("--calls", type=int, default=500, help="ordinary calls per scenario")
    parser.add_argument("--span", type=float, default=15.0, help="seconds the calls are due over")
    parser.add_argument("--patience", type=float, default=90.0, help="bound after the last due")
    parser.add_argument(
        "--held-per-tenant",
        type=int,
        default=FAIR_SHARE,
        help=f"fairness: the executor's MAX_HELD_PER_TENANT (default {FAIR_SHARE}; "
        f"{FAIRNESS_ENV['MAX_HELD']}, = MAX_HELD, turns fair sharing off)",
    )
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--keep-mesh", action="store_true", help="leave the chaos mesh running")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    plan = [s for s in chosen for _ in range(args.repeat)] if chosen else list(FULL_PLAN)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    options = Options(
        calls=args.calls,
        span_s=args.span,
        patience_s=args.patience,
        held_per_tenant=args.held_per_tenant,
    )
    layout = with_chaos_env(CHAOS_LAYOUT)
    print(f"seed {seed}; mesh in {layout.run_dir}", file=sys.stderr, flush=True)
    fresh_mesh(layout)  # never judge services, or a wedge, that an older run left
    try:
        results = asyncio.run(run_suite(layout, plan, options, seed))
    finally:
        if not args.keep_mesh:
            mesh.down(layout)
    print()
    print(f"command: python -m bench.chaos {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"seed: {seed}")
    print(f"service env: {dict(layout.service_env)}")
    print(report(results))
    if any(r.failed for r in results):
        print(
            "\nFAILED: some call was lost, stuck, early, sent with another key, completed twice,"
            " or refused otherwise than a poison input's 400; or (fairness) the other tenant's"
            " call came later than the bound; or (stop-postgres) a submit during the outage was"
            " answered otherwise than UNAVAILABLE / 503"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
