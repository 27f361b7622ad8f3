"""How fast ONE executor's handler gets a crowd of calls due at one instant onto the wire.

`make bench-burst` (or `python -m bench.executor_burst --help`). In one process: the real
Kafka handler and attempt use case (executor.main.execution_handler), H1Client, SendingSlots
(the executor's defaults: 512 in flight, 256 per tenant, 128 per host) and sleeper, fed
`--calls` execution requests all due at the same instant, each to its own URL (`/c/<uuid>`,
as the timing bench's calls are), sent to the bench's minimal loopback sink (bench/_sink.py)
in a process of its own. Kafka is left out on purpose: the requests are handed to the handler
a few seconds ahead, as crowded hand-offs reach a real executor, and reports are acknowledged
at once, so what is measured is the path from the due instant to the last answer, which is
where the timing bench's 10k burst spent its time.

Per run it prints when the first, 10th, 50th, 90th percentile and last answers came (ms after
the due instant) and the drain (last answer - due instant); then the median drain. Figures,
not pass/fail; runs vary by tens of percent on a busy machine, so compare medians of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bench.executor import execution_request
from executor.adapters.h1_client import H1Client
from executor.adapters.signing_keys import SigningKeysFile
from executor.adapters.sleeper import LoopSleeper, PreciseSleeper
from executor.domain.egress import parse_allowlist
from executor.main import execution_handler, tune_gc
from executor.ports import HttpFailure, HttpRequest, HttpResponse, PreparedRequest
from executor.service_layer.registry import Executions
from executor.service_layer.slots import SendingSlots
from mesh.clock import SystemClock, Uuid7Gen
from mesh.kafka import Handler, ReceivedMessage
from mesh.logs import configure_logging
from mesh.ports import OutgoingMessage
from mesh.secrets import SecretBox

LEAD_S = 3.0  # requests reach the handler this long before they are due
WARM_CALLS = 600  # due at once first, unmeasured: fills the connection pool


class _AckedAtOnce:
    """An EventQueue whose broker acknowledges everything at once."""

    def enqueue(self, messages: Sequence[OutgoingMessage]) -> asyncio.Future[None]:
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


class _Timed:
    """The H1Client, noting when each answer came."""

    def __init__(self, inner: H1Client) -> None:
        self._inner = inner
        self.answered_at: list[float] = []
        self.failures = 0

    def prepare(self, request: HttpRequest) -> PreparedRequest | HttpFailure:
        return self._inner.prepare(request)

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        reply = await self._inner.send(request)
        self.answered_at.append(time.time())
        if isinstance(reply, HttpFailure):
            self.failures += 1
        return reply


def _message(offset: int, url: str, due: datetime) -> ReceivedMessage:
    call_id = str(uuid.uuid4())
    value = execution_request(call_id, "bench", url, due)
    return ReceivedMessage("bench.execution-requests", 0, offset, call_id, value)


async def _crowd(handler: Handler, base_url: str, count: int, due: datetime) -> None:
    messages = [_message(i, f"{base_url}/c/{uuid.uuid4().hex}", due) for i in range(count)]
    await asyncio.gather(*(handler(m) for m in messages))


async def _run(sink_port: int, calls: int) -> tuple[list[float], int]:
    base_url = f"http://127.0.0.1:{sink_port}"
    http = _Timed(H1Client.create(parse_allowlist(["127.0.0.0/8"]), 1024 * 1024, 512))
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
    await _crowd(handler, base_url, WARM_CALLS, datetime.now(UTC))
    http.answered_at.clear()
    due = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    await _crowd(handler, base_url, calls, due)
    return sorted(t - due.timestamp() for t in http.answered_at), http.failures


async def _serve_sink() -> None:
    from bench._sink import FastSink  # noqa: PLC0415 - only the sink process needs it

    sink = FastSink()
    await sink.start()
    print(sink.port, flush=True)
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--serve-sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sink:
        asyncio.run(_serve_sink())
        return
    configure_logging("executor", "info")
    tune_gc(50_000)
    drains: list[float] = []
    for run in range(1, args.repeat + 1):
        # A fresh sink each run, in its own process: it stands for a target on another machine.
        sink = subprocess.Popen(
            [sys.executable, "-m", "bench.executor_burst", "--serve-sink"],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        try:
            assert sink.stdout is not None
            port = int(sink.stdout.readline())
            answered, failures = asyncio.run(_run(port, args.calls))
        finally:
            sink.terminate()
            sink.wait()
        n = len(answered)
        marks = " / ".join(
            f"{answered[int(q * (n - 1))] * 1000:.0f}" for q in (0, 0.1, 0.5, 0.9, 1)
        )
        print(
            f"run {run}: {n} answers ({failures} failed), first / p10 / p50 / p90 / last at "
            f"{marks} ms after due; drain {answered[-1]:.3f} s",
            flush=True,
        )
        drains.append(answered[-1])
    print(f"median drain of {len(drains)} runs: {statistics.median(drains):.3f} s")


if __name__ == "__main__":
    main()
