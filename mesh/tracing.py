"""Tracing: a TracerProvider from the standard OTEL_* variables, and W3C trace context carried
through Kafka headers, outbox rows and timers (docs/tracing.md).

Nothing happens on import: a composition root calls `configure` once. With the exporter off
(the default) no SDK provider is installed at all, so spans cost next to nothing, yet context
still propagates: the OpenTelemetry API's no-op tracer hands the parent's span context on, so a
caller's `traceparent` reaches the target unchanged.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesh.config import ConfigError, Env
from mesh.ports import OutgoingMessage
from mesh.redaction import redact_url

# Kafka message headers as the mesh carries them: (name, value) pairs.
Headers = tuple[tuple[str, bytes], ...]
# A W3C trace context as stored in Postgres (jsonb): {"traceparent": ..., "tracestate": ...}.
Carrier = dict[str, str]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
EXPORTERS = frozenset({"none", "otlp", "console"})

# Only W3C trace context crosses Kafka and reaches targets, whatever OTEL_PROPAGATORS says:
# baggage is caller-chosen data, and a target must not receive it from the mesh.
_W3C = TraceContextTextMapPropagator()
# A ProxyTracer: it follows whatever provider `configure` installs later.
_tracer = trace.get_tracer("servicecall.mesh")


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (none | otlp | console, comma-separated) and
    OTEL_SERVICE_NAME (default: the service's name). Everything else the SDK and the OTLP
    exporter read from the environment themselves (OTEL_EXPORTER_OTLP_*, OTEL_TRACES_SAMPLER,
    OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES)."""

    service_name: str
    exporters: tuple[str, ...] = ()
    disabled: bool = False

    @classmethod
    def from_env(cls, env: Env, service_name: str) -> TracingConfig:
        names = tuple(n.lower() for n in env.items("OTEL_TRACES_EXPORTER", ("none",)))
        unknown = sorted(set(names) - EXPORTERS)
        if unknown:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: unknown exporter(s) {', '.join(unknown)}; "
                f"use one of {', '.join(sorted(EXPORTERS))}"
            )
        return cls(
            service_name=env.values.get("OTEL_SERVICE_NAME") or service_name,
            exporters=tuple(n for n in names if n != "none"),
            disabled=env.flag("OTEL_SDK_DISABLED", False),
        )


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        # Imported here: only a process that exports pays for loading it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        return OTLPSpanExporter()
    # One JSON object per line on stderr, beside the JSON logs: greppable, never interleaved.
    return ConsoleSpanExporter(out=sys.stderr, formatter=_one_line)


def configure(config: TracingConfig, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Installs the process's TracerProvider when something is to be exported (an exporter
    named in the config, or `exporter`, which tests pass in memory, exported synchronously).
    Returns it (the caller shuts it down at exit, flushing spans), or None: tracing is off."""
    if config.disabled or (not config.exporters and exporter is None):
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: config.service_name}))
    for name in config.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def start(service_name: str, env: Mapping[str, str]) -> Callable[[], Awaitable[None]]:
    """For a composition root: configures tracing from `env` and returns the closer that
    flushes and stops it at exit (a no-op when tracing is off)."""
    provider = configure(TracingConfig.from_env(Env(env), service_name))

    async def close() -> None:
        if provider is not None:
            # Off the loop: a flush may wait on an OTLP endpoint.
            await asyncio.to_thread(provider.shutdown)

    return close


# --- carrying context ---------------------------------------------------------------------


def current_carrier(context: Context | None = None) -> Carrier | None:
    """The W3C trace context of the current (or given) span, or None when there is none; the
    fast path (no trace) costs one context lookup."""
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    carrier: Carrier = {}
    _W3C.inject(carrier, context)
    return carrier


def headers_from_carrier(carrier: Mapping[str, str] | None) -> Headers:
    if not carrier:
        return ()
    return tuple(
        (name, value.encode())
        for name, value in carrier.items()
        if name in (TRACEPARENT, TRACESTATE)
    )


def carrier_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> Carrier | None:
    """The trace context among Kafka message headers, or None when they carry none."""
    if not headers:
        return None
    carrier: Carrier = {}
    for name, value in headers:
        if name in (TRACEPARENT, TRACESTATE) and value is not None:
            try:
                carrier[name] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
    return carrier if TRACEPARENT in carrier else None


def current_headers() -> Headers:
    return headers_from_carrier(current_carrier())


def context_from_carrier(carrier: Mapping[str, str] | None) -> Context | None:
    """The remote parent a carrier names, or None when it names none (absent or malformed)."""
    if not carrier or TRACEPARENT not in carrier:
        return None
    context = _W3C.extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def with_trace(message: OutgoingMessage, carrier: Mapping[str, str] | None) -> OutgoingMessage:
    """`message` carrying `carrier` as its headers (unchanged when there is no context)."""
    if not carrier:
        return message
    return replace(message, headers=headers_from_carrier(carrier))


@contextmanager
def consuming(
    topic: str, headers: Sequence[tuple[str, bytes]] | None, partition: int, offset: int
) -> Iterator[None]:
    """Runs the handling of a Kafka message inside a CONSUMER span continuing the trace its
    headers carry; a message without trace context is handled with no span at all."""
    parent = context_from_carrier(carrier_from_headers(headers))
    if parent is None:
        yield
        return
    with _tracer.start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
        },
        # The exception's type only: its message may quote data (a database error's detail).
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as e:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise


class ProducerSpans:
    """PRODUCER spans for a batch of messages that carry trace context (outbox rows, fired
    timers): each message with a context gets a span whose parent is that context, and its
    headers then name the span, so the consumer's span is the span's child. Messages without
    context are sent as they are, spanless. `end` closes the spans, marking the undelivered."""

    def __init__(self, name: str, messages: Sequence[OutgoingMessage]) -> None:
        self._spans: list[tuple[int, Span]] = []
        self.messages: list[OutgoingMessage] = list(messages)
        for index, message in enumerate(self.messages):
            parent = context_from_carrier(carrier_from_headers(message.headers))
            if parent is None:
                continue
            span = _tracer.start_span(
                name,
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": message.topic,
                },
            )
            if span.is_recording():
                self._spans.append((index, span))
                carrier = current_carrier(trace.set_span_in_context(span))
                self.messages[index] = with_trace(message, carrier)
            # Not recording (no SDK): the headers already name the parent, which is what the
            # no-op span would inject too.

    def end(self, failed: Collection[int] = (), error: str = "not delivered") -> None:
        for index, span in self._spans:
            if index in failed:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()
        self._spans = []


# HTTP methods by name (semantic conventions); any other is recorded as `_OTHER`, so span names
# and attribute values stay a small set whatever a call spec says.
_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def start_http_client_span(method: str, url: str) -> Span | None:
    """A CLIENT span for a request to a target, child of the current span; None when it would
    record nothing (no trace here, or no SDK installed): then the current context, already on
    the request, is what the target must see. Records the method and the redacted URL only,
    never headers or bodies."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    name = method.upper()
    known = name in _HTTP_METHODS
    span = _tracer.start_span(
        name if known else "HTTP",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": name if known else "_OTHER",
            "url.full": redact_url(url),
        },
    )
    return span if span.is_recording() else None


def end_http_client_span(span: Span, status: int | None, error: str | None = None) -> None:
    """Ends a span of `start_http_client_span` with the response's status, or the error that
    left no response (an AttemptError's value, a small fixed set)."""
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
    elif error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def carrier_items(span: Span) -> tuple[tuple[str, str], ...]:
    """The W3C headers naming `span`, as (name, value) pairs for an HTTP request."""
    carrier = current_carrier(trace.set_span_in_context(span))
    return tuple(carrier.items()) if carrier else ()
