"""Throughput of ONE executor process: calls/s and its CPU% against a loopback sink.

`make bench-executor` (or `python -m bench.executor --help`). It starts a Kafka of its own
(.run/bench-executor, ports 313xx, so it runs beside `make up`, `make test` and the scheduler
bench) or uses `--bootstrap`; a loopback sink per answer delay, each its own process; and, per
measured cell, a fresh `python -m executor serve` on private topics (a new prefix each time),
with MAX_IN_FLIGHT (and the per-tenant and per-host caps) set to the cell's concurrency and
everything else at the executor's defaults (MAX_HELD = 4 × MAX_IN_FLIGHT, LOG_LEVEL=info).

Per cell: a warm-up batch fills the connection pool and proves the consumer joined; then the
measured batch of ExecutionRequested envelopes, all already due, is produced straight onto
the execution-requests topic, and the execution-events topic is read until every call has its
result. calls/s = calls / (last result's broker timestamp - first produce); CPU% is the
executor process's user+system time over that window (100% = one core). Figures, not pass/fail;
each cell is the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench import _procs as procs
from mesh.timeconv import to_timestamp
from mesh.topics import Topics, call_key
from meshctl import processes
from meshctl.layout import ROOT, Layout
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api

# Ports of its own, 313xx (the scheduler bench uses 314xx, test meshes 20xxx-29xxx), below
# Linux's ephemeral range so no outgoing connection holds one.
BENCH_LAYOUT = Layout(
    run_dir=ROOT / ".run" / "bench-executor",
    pg_port=31332,  # unused: the executor needs no database
    kafka_port=31392,
    kafka_controller_port=31393,
    orchestrator_port=31351,
    scheduler_port=31352,
    executor_port=31353,
    envoy_port=31380,
    envoy_admin_port=31381,
)
PARTITIONS = 12
TENANTS = 8
RESULT_PAYLOADS = ("execution_succeeded", "execution_failed")


# ---- the sink -------------------------------------------------------------------------------

_RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


class _SinkProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, 200 to everything, after `delay` seconds.

    Deliberately minimal (no framework): on a 2-core machine the sink shares the CPU with the
    executor and Kafka, and whatever it spends is taken from the executor's figure.
    """

    delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self._buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._reply)
            else:
                self._reply()

    def _reply(self) -> None:
        if not self._transport.is_closing():
            self._transport.write(_RESPONSE)


async def _serve_sink(port: int, delay_ms: float) -> None:
    _SinkProtocol.delay = delay_ms / 1000
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_SinkProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# ---- processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}


@contextlib.contextmanager
def _kafka(bootstrap: str | None, keep: bool) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    script = str(ROOT / "scripts" / "infra" / "kafka.sh")
    processes.run([script, "start"], BENCH_LAYOUT.infra_env(), "kafka.sh start")
    try:
        yield BENCH_LAYOUT.kafka_bootstrap
    finally:
        if not keep:
            processes.run([script, "stop"], BENCH_LAYOUT.infra_env(), "kafka.sh stop")


@contextlib.contextmanager
def _sink(delay_ms: float) -> Iterator[int]:
    port = _free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.executor", "sink", "--port", str(port), "--delay-ms",
         str(delay_ms)],
        env=_env(),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or sink.poll() is not None:
                raise RuntimeError("the sink did not start")
            time.sleep(0.05)
        yield port
    finally:
        sink.terminate()
        sink.wait(5)


@contextlib.contextmanager
def _executor(
    bootstrap: str, prefix: str, concurrency: int, log_level: str, log_file: Path
) -> Iterator[int]:
    env = {
        **_env(),
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "EXECUTOR_GROUP": f"{prefix}executor",
        "EXECUTOR_ID": f"{prefix}executor",
        "GRPC_PORT": str(_free_port()),
        "MAX_IN_FLIGHT": str(concurrency),
        "MAX_IN_FLIGHT_PER_TENANT": str(concurrency),
        "MAX_IN_FLIGHT_PER_HOST": str(concurrency),
        "EGRESS_ALLOW_CIDRS": "127.0.0.0/8",
        "MESH_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "LOG_LEVEL": log_level,
        "DRAIN_TIMEOUT_S": "2",
    }
    env.pop("MESH_RUN_DIR", None)
    env.pop("WEBHOOK_SIGNING_KEYS_FILE", None)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "executor", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- one cell -------------------------------------------------------------------------------


def execution_request(call_id: str, tenant: str, url: str, now: datetime) -> bytes:
    """An ExecutionRequested envelope for one attempt due at `now` (also bench.executor_burst's)."""
    return pb.Envelope(
        event_id=str(uuid.uuid4()),
        tenant_id=tenant,
        service_call_id=call_id,
        correlation_id=call_id,
        sequence=1,
        occurred_at=to_timestamp(now),
        execution_requested=pb.ExecutionRequested(
            attempt=1,
            not_before=to_timestamp(now),
            request=api.HttpRequest(
                http_method=api.POST,
                url=url,
                headers={"Content-Type": "application/json"},
                body=b'{"bench":true}',
            ),
            idempotency_key=call_id,
            max_response_snippet_bytes=64,
        ),
    ).SerializeToString()


class _Results:
    """Reads the events topic from the start, outside any group; counts results by batch."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.seen: dict[str, int] = {}  # call id → result broker timestamp (ms)
        self.failed = 0

    def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= self.seen.keys():
            if time.monotonic() > deadline:
                missing = len(ids - self.seen.keys())
                raise TimeoutError(f"{missing} of {len(ids)} calls have no result")
            for message in self._consumer.consume(1000, 0.05):
                value = message.value()
                if message.error() is not None or not isinstance(value, bytes):
                    continue
                envelope = pb.Envelope.FromString(value)
                payload = envelope.WhichOneof("payload")
                if payload in RESULT_PAYLOADS:
                    self.seen.setdefault(envelope.service_call_id, message.timestamp()[1])
                    self.failed += payload == "execution_failed"

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True, slots=True)
class Cell:
    delay_ms: float
    concurrency: int
    calls: int
    calls_per_s: float
    cpu_percent: float
    failed: int


def _produce(producer: Producer, topic: str, ids: Sequence[str], url: str) -> None:
    now = datetime.now(UTC)
    for i, call_id in enumerate(ids):
        tenant = f"bench-{i % TENANTS}"
        value = execution_request(call_id, tenant, f"{url}/{call_id}", now)
        while True:
            try:
                producer.produce(topic, key=call_key(tenant, call_id), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(30)


def run_cell(
    bootstrap: str, sink_port: int, delay_ms: float, concurrency: int, calls: int, log_level: str
) -> Cell:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics(
        [
            NewTopic(t, num_partitions=PARTITIONS, replication_factor=1)
            for t in (topics.execution_requests, topics.execution_events)
        ]
    )
    for future in created.values():
        future.result(30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    results = _Results(bootstrap, topics.execution_events)
    url = f"http://127.0.0.1:{sink_port}/bench"
    log_file = BENCH_LAYOUT.run_dir / "logs" / "executor.log"
    try:
        with _executor(bootstrap, prefix, concurrency, log_level, log_file) as pid:
            warm = [f"w-{i}" for i in range(max(200, concurrency * 2))]
            _produce(producer, topics.execution_requests, warm, url)
            results.wait_for(set(warm), timeout=120)
            results.failed = 0
            measured = [f"m-{uuid.uuid4().hex}" for _ in range(calls)]
            before = procs.sample(pid)
            started_ms = time.time() * 1000
            _produce(producer, topics.execution_requests, measured, url)
            results.wait_for(set(measured), timeout=max(120.0, calls / 100))
            after = procs.sample(pid)
            last_ms = max(results.seen[c] for c in measured)
            window_s = max(last_ms - started_ms, 1.0) / 1000
            # CPU over the sampled span, which ends a consume round after the last result.
            return Cell(
                delay_ms,
                concurrency,
                calls,
                calls / window_s,
                procs.cpu_percent(before, after),
                results.failed,
            )
    finally:
        results.close()
        admin.delete_topics([topics.execution_requests, topics.execution_events])


def _default_calls(delay_ms: float, concurrency: int, seconds: float) -> int:
    # Enough for about `seconds` at the cell's ceiling (concurrency / delay), capped where the
    # executor's CPU, not the sink, is the limit.
    if delay_ms <= 0:
        return int(4000 * seconds)
    return max(500, min(int(4000 * seconds), int(concurrency / (delay_ms / 1000) * seconds)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sink = sub.add_parser("sink", help="serve the loopback sink (used by the bench itself)")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--keep-kafka", action="store_true", help="leave the bench Kafka running")
    parser.add_argument("--concurrency", default="16,128,512")
    parser.add_argument("--delays-ms", default="0,50")
    parser.add_argument("--calls", type=int, help="measured calls per run (default: by cell)")
    parser.add_argument("--seconds", type=float, default=10.0, help="target length of a run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--broker-warmup",
        type=int,
        default=20000,
        help="calls through one unmeasured run first, so the JVM broker's JIT is warm (0: none)",
    )
    parser.add_argument("--log-level", default="info", help="the executor's (info, as deployed)")
    args = parser.parse_args(argv)
    if args.command == "sink":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_sink(args.port, args.delay_ms))
        return

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    delays = [float(d) for d in args.delays_ms.split(",")]
    rows: list[Cell] = []
    with _kafka(args.bootstrap, args.keep_kafka) as bootstrap:
        warm_calls = args.broker_warmup
        for delay in delays:
            with _sink(delay) as port:
                if warm_calls > 0:
                    # A fresh broker spends its first minute compiling itself, on the cores the
                    # executor is measured on; the first cells measured that, not the executor.
                    warm = run_cell(bootstrap, port, delay, 128, warm_calls, args.log_level)
                    print(f"  broker warm-up: {warm.calls_per_s:,.0f} calls/s", file=sys.stderr)
                    warm_calls = 0
                for concurrency in concurrencies:
                    calls = args.calls or _default_calls(delay, concurrency, args.seconds)
                    runs = [
                        run_cell(bootstrap, port, delay, concurrency, calls, args.log_level)
                        for _ in range(args.repeats)
                    ]
                    for run in runs:
                        print(
                            f"  sink {delay:g} ms, concurrency {concurrency}: "
                            f"{run.calls_per_s:,.0f} calls/s, CPU {run.cpu_percent:.0f}%",
                            file=sys.stderr,
                            flush=True,
                        )
                    rows.append(
                        Cell(
                            delay,
                            concurrency,
                            calls,
                            statistics.median(r.calls_per_s for r in runs),
                            statistics.median(r.cpu_percent for r in runs),
                            sum(r.failed for r in runs),
                        )
                    )
    print(f"\nexecutor throughput, {os.cpu_count()} cores, medians of {args.repeats} runs\n")
    print("| sink answers after | concurrency | calls/run | calls/s | executor CPU% | failed |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.delay_ms:g} ms | {row.concurrency} | {row.calls} | "
            f"{row.calls_per_s:,.0f} | {row.cpu_percent:.0f} | {row.failed} |"
        )


if __name__ == "__main__":
    main()
