"""mesh/tracing.py: configuration from OTEL_* variables, W3C context through Kafka-style
headers and stored carriers, and the spans it records (in memory)."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from executor.domain.execution import TRACEPARENT
from mesh import tracing
from mesh.config import ConfigError, Env
from mesh.ports import OutgoingMessage
from mesh.redaction import redact_url
from tests.tracing_helpers import in_memory_spans

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = int("0af7651916cd43dd8448eb211c80319c", 16)
SPAN_ID = int("b7ad6b7169203331", 16)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return in_memory_spans()


def config(**env: str) -> tracing.TracingConfig:
    return tracing.TracingConfig.from_env(Env(env), "scheduler")


def test_the_exporter_is_off_by_default_and_the_service_names_the_resource() -> None:
    assert config() == tracing.TracingConfig("scheduler", (), False)
    assert config(OTEL_TRACES_EXPORTER="none").exporters == ()
    assert config(OTEL_SERVICE_NAME="timers-eu").service_name == "timers-eu"
    assert config(OTEL_TRACES_EXPORTER="OTLP, console").exporters == ("otlp", "console")
    assert config(OTEL_SDK_DISABLED="true").disabled


def test_an_unknown_exporter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="zipkin"):
        config(OTEL_TRACES_EXPORTER="zipkin")


def test_nothing_is_installed_when_off_or_disabled() -> None:
    assert tracing.configure(config()) is None
    assert tracing.configure(config(OTEL_TRACES_EXPORTER="otlp", OTEL_SDK_DISABLED="1")) is None


def test_exporters_are_built_from_their_names() -> None:
    assert isinstance(tracing._exporter("otlp"), OTLPSpanExporter)
    assert isinstance(tracing._exporter("console"), ConsoleSpanExporter)


def test_context_round_trips_through_kafka_headers() -> None:
    # A provider of the test's own: round trips need a real span id, not the global one.
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("submit") as span:
        headers = tracing.current_headers()
        sent = span.get_span_context()
    assert dict(headers)[tracing.TRACEPARENT].startswith(b"00-")
    assert all(isinstance(v, bytes) for _, v in headers)
    context = tracing.context_from_carrier(tracing.carrier_from_headers(headers))
    assert context is not None
    received = trace.get_current_span(context).get_span_context()
    assert (received.trace_id, received.span_id, received.is_remote) == (
        sent.trace_id,
        sent.span_id,
        True,
    )


def test_no_trace_means_no_headers_and_no_parent() -> None:
    assert tracing.current_carrier() is None
    assert tracing.current_headers() == ()
    assert tracing.carrier_from_headers([("other", b"x")]) is None
    assert tracing.context_from_carrier({"traceparent": "garbage"}) is None
    message = OutgoingMessage("t", "k", b"v")
    assert tracing.with_trace(message, None) is message


def test_a_stored_carrier_becomes_headers_and_nothing_else() -> None:
    carrier = {"traceparent": PARENT, "tracestate": "vendor=1", "baggage": "user=alice"}
    headers = tracing.headers_from_carrier(carrier)
    assert dict(headers) == {"traceparent": PARENT.encode(), "tracestate": b"vendor=1"}
    assert tracing.carrier_from_headers(headers) == {
        "traceparent": PARENT,
        "tracestate": "vendor=1",
    }


def test_a_consumed_message_continues_its_trace_in_a_consumer_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.consuming("t.timer-requests", [("traceparent", PARENT.encode())], 2, 41):
        inside = trace.get_current_span().get_span_context()
    (span,) = spans.get_finished_spans()
    assert span.name == "process t.timer-requests"
    assert span.kind is SpanKind.CONSUMER
    assert inside.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == SPAN_ID
    assert span.attributes is not None
    assert span.attributes["messaging.destination.name"] == "t.timer-requests"


def test_a_message_without_context_gets_no_span(spans: InMemorySpanExporter) -> None:
    with tracing.consuming("t", [], 0, 0):
        assert not trace.get_current_span().get_span_context().is_valid
    assert spans.get_finished_spans() == ()


def test_a_failing_handler_marks_its_span_with_the_error_type_only(
    spans: InMemorySpanExporter,
) -> None:
    with (
        pytest.raises(ValueError),
        tracing.consuming("t", [("traceparent", PARENT.encode())], 0, 0),
    ):
        raise ValueError("DETAIL: Key (tenant_id)=(secret-tenant)")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert span.events == ()  # no exception event: its message may quote data


def test_producer_spans_reparent_the_messages_that_carry_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    traced = OutgoingMessage("t.execution-requests", "a/1", b"x", ((TRACEPARENT, PARENT.encode()),))
    plain = OutgoingMessage("t.execution-requests", "a/2", b"y")
    batch = tracing.ProducerSpans("servicecall.relay publish", [traced, plain])
    assert batch.messages[1] is plain
    batch.end(failed={0})
    (span,) = spans.get_finished_spans()
    assert span.name == "servicecall.relay publish"
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.ERROR
    assert span.parent is not None and span.parent.span_id == SPAN_ID
    sent = tracing.context_from_carrier(tracing.carrier_from_headers(batch.messages[0].headers))
    assert sent is not None
    child = trace.get_current_span(sent).get_span_context()
    assert span.context is not None
    assert (child.trace_id, child.span_id) == (TRACE_ID, span.context.span_id)


def test_http_client_span_records_method_redacted_url_and_status(
    spans: InMemorySpanExporter,
) -> None:
    parent = tracing.context_from_carrier({"traceparent": PARENT})
    assert parent is not None
    outside = tracing.start_http_client_span("POST", "https://t.example/hook?token=s3cret")
    assert outside is None  # no trace here: nothing to record
    token = otel_context.attach(parent)
    try:
        span = tracing.start_http_client_span("post", "https://u:p@t.example/hook?token=s3cret")
        assert span is not None
        headers = dict(tracing.carrier_items(span))
        tracing.end_http_client_span(span, 503)
    finally:
        otel_context.detach(token)
    (recorded,) = spans.get_finished_spans()
    assert recorded.name == "POST"
    assert recorded.kind is SpanKind.CLIENT
    assert recorded.attributes == {
        "http.request.method": "POST",
        "url.full": "https://t.example/hook?token=[REDACTED]",
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert recorded.context is not None
    assert headers["traceparent"].split("-")[2] == f"{recorded.context.span_id:016x}"


def test_urls_are_recorded_without_secrets() -> None:
    assert redact_url("https://user:pw@Example.com:8443/a?sig=x&page=2&bare#frag") == (
        "https://example.com:8443/a?sig=[REDACTED]&page=[REDACTED]&[REDACTED]"
    )
    assert redact_url("http://[::1]:80/x") == "http://[::1]:80/x"
    assert redact_url("http://[bad") == "[REDACTED]"
