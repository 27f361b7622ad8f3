"""The largest call that validation accepts still fits in one Kafka message of the mesh."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mesh.kafka import MAX_MESSAGE_BYTES
from mesh.secrets import SecretBox
from mesh.topics import Topics
from orchestrator.domain.commands import SubmitServiceCall
from orchestrator.domain.decide import decide, evolve
from orchestrator.domain.model import HttpRequest
from orchestrator.domain.validation import DEFAULT_LIMITS, validate_request
from orchestrator.mapping import outbox_messages
from orchestrator.service_layer.sealing import seal_secret_headers
from tests.unit.domain.builders import T0, TIMING, events_of, http_request, service_call_spec

ROOT = Path(__file__).resolve().parents[3]
# What a record costs on the wire beyond its key and value (record batch header, varints,
# timestamps): under 100 bytes; librdkafka counts this against message.max.bytes too.
RECORD_OVERHEAD = 256


def largest_valid_request() -> HttpRequest:
    limits = DEFAULT_LIMITS
    url = "https://api.example.com/" + "a" * (limits.max_url_length - 24)
    # Every header a secret (sealing makes each larger), names as long as the bytes allow.
    count = limits.max_headers
    value = "v" * 16
    name_length = limits.max_header_bytes // count - len(value)
    headers = tuple((f"X-Api-Key-{i:03d}-" + "n" * (name_length - 15), value) for i in range(count))
    header_bytes = sum(len(n) + len(v) for n, v in headers)
    body = b"b" * (limits.max_request_bytes - header_bytes - len(url))
    request = http_request(url=url, headers=headers, body=body)
    assert validate_request(request, limits) == []
    return request


def test_the_largest_valid_call_fits_one_message() -> None:
    spec = service_call_spec(request=largest_valid_request())
    box = SecretBox({1: os.urandom(32)}, current=1)
    sealed = seal_secret_headers(spec.request, spec.tenant_id, spec.service_call_id, box)
    spec = service_call_spec(request=sealed)
    events = events_of(decide(None, SubmitServiceCall(spec=spec, due_at=T0), T0, TIMING))
    after = None
    for event in events:
        after = evolve(after, event)
    assert after is not None
    out = outbox_messages(None, after, events, "c" * 64, Topics.with_prefix(), 64 * 1024)
    largest = max(len(m.key.encode()) + len(m.value) for m in out)
    assert largest + RECORD_OVERHEAD <= DEFAULT_LIMITS.max_message_bytes


def test_one_byte_more_is_refused() -> None:
    request = largest_valid_request()
    bigger = http_request(url=request.url, headers=request.headers, body=request.body + b"b")
    [violation] = validate_request(bigger, DEFAULT_LIMITS)
    assert violation.field == "service_call.request.body"
    assert "body plus headers and URL is" in violation.description


def test_producer_submit_and_broker_limits_agree() -> None:
    """The submit check uses the producers' limit, and every broker config accepts a little
    more than it, so a message the producer accepts is never refused for its size."""
    assert DEFAULT_LIMITS.max_message_bytes == MAX_MESSAGE_BYTES
    configs = {
        "scripts/infra/kafka.sh": r"^message\.max\.bytes=(\d+)$",
        "k8s/overlays/kind/kafka.yaml": r'KAFKA_MESSAGE_MAX_BYTES\s+value: "(\d+)"',
    }
    for path, pattern in configs.items():
        text = (ROOT / path).read_text()
        found = re.search(pattern, text, re.MULTILINE)
        assert found, f"{path} does not set the broker's message.max.bytes"
        assert int(found.group(1)) >= MAX_MESSAGE_BYTES + 64 * 1024, path
