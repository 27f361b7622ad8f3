"""CPU per call of the tracing on the mesh's hot paths, in process: `python -m bench.tracing_cost`.

One call crosses, where tracing does work: the gRPC server span (interceptor), 4 outbox writes
that capture the context, 3 relay publishes (timer request, execution request, call event),
4 consumed messages (timer request, timer event, execution request, execution events; the
executor's Started and result are batched into one here), 1 timer fire, 1 HTTP client span.
Each primitive is timed alone (CPU time, best of 5 rounds) and summed with those counts, in
three modes, each in a fresh process (a process sets its TracerProvider once):
- off/no-trace: exporter none, the client sent no traceparent (the default, the common case);
- off/traced: exporter none, the client sent one (it is only propagated);
- on/in-memory: an SDK provider exporting to memory (what OTLP export adds is not counted).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mesh import tracing
from mesh.ports import OutgoingMessage

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ROUNDS, N = 5, 20_000
PER_CALL = {"server span": 1, "capture": 4, "relay publish": 3, "consume": 4, "fire": 1, "http": 1}


def per_op(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        for _ in range(N):
            fn()
        best = min(best, (time.process_time() - start) / N)
    return best * 1e6


def measure(mode: str) -> dict[str, float]:
    exporter = InMemorySpanExporter()
    if mode == "on":
        tracing.configure(tracing.TracingConfig("bench"), exporter=exporter)
    traced = mode != "off-untraced"
    headers = ((tracing.TRACEPARENT, PARENT.encode()),) if traced else ()
    parent = tracing.context_from_carrier({"traceparent": PARENT}) if traced else None
    tracer = trace.get_tracer("bench")
    message = OutgoingMessage("t", "k", b"v", headers)

    def server_span() -> None:
        # What the gRPC interceptor does: extract from metadata, a SERVER span around the call.
        token = otel_context.attach(tracing._W3C.extract({"traceparent": PARENT} if traced else {}))
        with tracer.start_as_current_span("rpc", kind=SpanKind.SERVER):
            pass
        otel_context.detach(token)

    def in_trace(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            token = otel_context.attach(parent) if parent is not None else None
            try:
                return fn()
            finally:
                if token is not None:
                    otel_context.detach(token)

        return run

    def consume() -> None:
        with tracing.consuming("t", headers, 0, 0):
            pass

    def publish() -> None:
        tracing.ProducerSpans("servicecall.relay publish", [message]).end()

    def http() -> None:
        span = tracing.start_http_client_span("POST", "http://t/x?a=1")
        if span is not None:
            tracing.carrier_items(span)
            tracing.end_http_client_span(span, 200)

    def clearing(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            result = fn()
            if len(exporter.get_finished_spans()) > 10_000:
                exporter.clear()
            return result

        return run

    return {
        "server span": per_op(clearing(server_span)),
        "capture": per_op(in_trace(tracing.current_carrier)),
        "relay publish": per_op(clearing(publish)),
        "consume": per_op(clearing(consume)),
        "fire": per_op(clearing(publish)),
        "http": per_op(in_trace(clearing(http))),
    }


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1])))
        return
    modes = ("off-untraced", "off-traced", "on")
    results = {}
    for mode in modes:
        out = subprocess.run(
            [sys.executable, "-m", "bench.tracing_cost", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[mode] = json.loads(out)
    print(f"# python -m bench.tracing_cost  (µs CPU; best of {ROUNDS} x {N})")
    print("| primitive | per call | " + " | ".join(modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    for name, count in PER_CALL.items():
        cells = " | ".join(f"{results[m][name]:.2f}" for m in modes)
        print(f"| {name} | x{count} | {cells} |")
    totals = " | ".join(
        f"**{sum(results[m][n] * c for n, c in PER_CALL.items()):.1f}**" for m in modes
    )
    print(f"| **per call** | | {totals} |")


if __name__ == "__main__":
    main()
