"""One in-memory span exporter per test process, installed through mesh.tracing.configure.

OpenTelemetry lets a process set its TracerProvider once, so every test that looks at spans
shares this one; `in_memory_spans()` empties it first."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh import tracing

_installed: list[InMemorySpanExporter] = []


def in_memory_spans() -> InMemorySpanExporter:
    if not _installed:
        exporter = InMemorySpanExporter()
        provider = tracing.configure(tracing.TracingConfig("tests"), exporter=exporter)
        assert provider is not None
        assert trace.get_tracer_provider() is provider, "another TracerProvider came first"
        _installed.append(exporter)
    _installed[0].clear()
    return _installed[0]
