"""Submission validation: a valid call passes, each bad field is reported under its path."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest, RetryPolicy
from orchestrator.domain.validation import (
    FieldViolation,
    Limits,
    validate_delay,
    validate_reason,
    validate_retry_policy,
    validate_submission,
)

from .builders import T0, http_request, retry_policy


def violations(
    *,
    tenant_id: str = "acme",
    request: HttpRequest | None = None,
    tags: Collection[str] = ("billing", "eu-west.1:a_b"),
    idempotency_key: str | None = "order-42",
    policy: RetryPolicy | None = None,
    due_at: datetime = T0 + timedelta(hours=1),
    limits: Limits | None = None,
) -> list[FieldViolation]:
    return validate_submission(
        tenant_id=tenant_id,
        request=request or http_request(),
        tags=tags,
        idempotency_key=idempotency_key,
        retry_policy=policy or retry_policy(),
        due_at=due_at,
        now=T0,
        limits=limits or Limits(),
    )


def fields(found: list[FieldViolation]) -> set[str]:
    return {violation.field for violation in found}


def test_a_valid_submission_has_no_violations() -> None:
    assert violations() == []


def test_optional_parts_may_be_absent() -> None:
    assert violations(idempotency_key=None, tags=(), request=http_request(headers=())) == []


def test_a_due_time_in_the_past_is_valid() -> None:
    assert violations(due_at=T0 - timedelta(days=3)) == []


R = "service_call.request"
P = "service_call.retry_policy"
CASES: list[tuple[str, dict[str, object]]] = [
    ("tenant_id", {"tenant_id": "Acme"}),
    ("tenant_id", {"tenant_id": "-acme"}),
    ("tenant_id", {"tenant_id": ""}),
    ("tenant_id", {"tenant_id": "a" * 64}),
    ("tenant_id", {"tenant_id": "acme\n"}),
    (f"{R}.method", {"request": http_request(method="TRACE")}),
    (f"{R}.method", {"request": http_request(method="get")}),
    (f"{R}.url", {"request": http_request(url="ftp://example.com/x")}),
    (f"{R}.url", {"request": http_request(url="/relative/path")}),
    (f"{R}.url", {"request": http_request(url="https:///no-host")}),
    (f"{R}.url", {"request": http_request(url="https://user:pw@example.com/")}),
    (f"{R}.url", {"request": http_request(url="https://example.com/#frag")}),
    (f"{R}.url", {"request": http_request(url="https://example.com/a b")}),
    (f"{R}.url", {"request": http_request(url="https://example.com:99999/")}),
    (f"{R}.url", {"request": http_request(url="https://example.com/" + "a" * 2048)}),
    (f"{R}.headers[0].name", {"request": http_request(headers=(("Bad Name", "x"),))}),
    (f"{R}.headers[0].name", {"request": http_request(headers=(("", "x"),))}),
    (f"{R}.headers[0].name", {"request": http_request(headers=(("Host", "evil"),))}),
    (f"{R}.headers[0].name", {"request": http_request(headers=(("Content-Length", "1"),))}),
    (f"{R}.headers[1].value", {"request": http_request(headers=(("a", "1"), ("b", "x\r\ny")))}),
    (f"{R}.body", {"limits": Limits(max_body_bytes=4)}),
    (f"{R}.attempt_timeout", {"request": http_request(attempt_timeout=timedelta(0))}),
    (f"{R}.attempt_timeout", {"request": http_request(attempt_timeout=timedelta(minutes=31))}),
    ("service_call.tags", {"tags": [f"t{n}" for n in range(33)]}),
    ("service_call.tags", {"tags": ["Upper"]}),
    ("service_call.tags", {"tags": ["_leading"]}),
    ("service_call.tags", {"tags": ["a" * 64]}),
    ("service_call.tags", {"tags": ["with space"]}),
    ("service_call.idempotency_key", {"idempotency_key": ""}),
    ("service_call.idempotency_key", {"idempotency_key": "k" * 257}),
    ("service_call.idempotency_key", {"idempotency_key": "line\nbreak"}),
    ("service_call.schedule_time", {"due_at": T0 + timedelta(days=30, seconds=1)}),
    ("service_call.schedule_time", {"due_at": (T0 + timedelta(hours=1)).replace(tzinfo=None)}),
    (f"{P}.max_attempts", {"policy": retry_policy(max_attempts=0)}),
    (f"{P}.max_attempts", {"policy": retry_policy(max_attempts=101)}),
    (f"{P}.max_retry_duration", {"policy": retry_policy(max_retry_duration=timedelta(0))}),
    (f"{P}.min_backoff", {"policy": retry_policy(min_backoff=timedelta(0))}),
    (f"{P}.max_backoff", {"policy": retry_policy(max_backoff=timedelta(milliseconds=500))}),
    (f"{P}.multiplier", {"policy": retry_policy(multiplier=0.5)}),
    (f"{P}.multiplier", {"policy": retry_policy(multiplier=float("nan"))}),
    (f"{P}.jitter", {"policy": retry_policy(jitter=1.5)}),
    (f"{P}.jitter", {"policy": retry_policy(jitter=-0.1)}),
    (
        f"{P}.retryable_status_codes",
        {"policy": retry_policy(retryable_status_codes=frozenset({600}))},
    ),
]


@pytest.mark.parametrize(("field", "changes"), CASES, ids=[f"{f}:{c}"[:80] for f, c in CASES])
def test_each_bad_field_is_named(field: str, changes: dict[str, object]) -> None:
    found = violations(**changes)  # type: ignore[arg-type]

    assert fields(found) == {field}
    assert all(violation.description for violation in found)


def test_all_violations_are_reported_at_once() -> None:
    found = violations(
        tenant_id="BAD",
        request=http_request(method="BREW", url="gopher://x"),
        policy=retry_policy(jitter=2.0),
    )

    assert fields(found) == {
        "tenant_id",
        f"{R}.method",
        f"{R}.url",
        f"{P}.jitter",
    }


def test_limits_are_parameters() -> None:
    roomy = Limits(max_schedule_ahead=timedelta(days=400), max_body_bytes=20)
    far = T0 + timedelta(days=365)

    assert violations(due_at=far, limits=roomy) == []
    assert fields(violations(request=replace(http_request(), body=b"x" * 21), limits=roomy)) == {
        f"{R}.body"
    }


def test_backoffs_and_retry_window_are_bounded_so_retry_times_stay_representable() -> None:
    huge = timedelta(days=3_652_000)  # what a fuzzer sends: ~10,000 years
    policy = replace(
        DEFAULT_RETRY_POLICY, min_backoff=huge, max_backoff=huge, max_retry_duration=huge
    )
    fields = {v.field for v in validate_retry_policy(policy)}
    assert fields == {
        "service_call.retry_policy.min_backoff",
        "service_call.retry_policy.max_backoff",
        "service_call.retry_policy.max_retry_duration",
    }


def test_delays_and_reasons_are_checked_before_use() -> None:
    assert validate_delay(timedelta(days=30), "delay") == []
    assert [v.field for v in validate_delay(timedelta(days=30, seconds=1), "delay")] == ["delay"]
    assert [v.field for v in validate_delay(timedelta(seconds=-1), "delay")] == ["delay"]
    assert validate_reason("no longer needed") == []
    assert [v.field for v in validate_reason("a\x00b")] == ["reason"]
    assert [v.field for v in validate_reason("x" * 1025)] == ["reason"]


def test_headers_are_capped_in_count() -> None:
    many = tuple((f"X-H{i}", "v") for i in range(101))
    found = violations(request=http_request(headers=many))
    assert found == [FieldViolation(f"{R}.headers", "101 headers; at most 100")]
    assert violations(request=http_request(headers=many[:100])) == []


def test_headers_are_capped_in_bytes_of_names_and_values() -> None:
    big = (("X-A", "a" * 40_000), ("X-B", "b" * 30_000))
    found = violations(request=http_request(headers=big))
    assert found == [
        FieldViolation(f"{R}.headers", "names and values are 70006 bytes; at most 65536")
    ]


def test_body_headers_and_url_must_fit_one_message_of_the_mesh() -> None:
    # The body alone is within its limit; with the envelope's margin the message would not be.
    limits = Limits(max_body_bytes=2000, max_message_bytes=3000, envelope_margin_bytes=1000)
    request = http_request(body=b"x" * 1950)
    url_and_headers = len(request.url) + sum(len(n) + len(v) for n, v in request.headers)
    found = violations(request=request, limits=limits)
    assert found == [
        FieldViolation(
            f"{R}.body",
            f"body plus headers and URL is {1950 + url_and_headers} bytes; at most 2000",
        )
    ]
    fits = http_request(body=b"x" * (2000 - url_and_headers))
    assert violations(request=fits, limits=limits) == []


def test_a_body_of_the_default_maximum_is_refused_as_too_large_for_a_message() -> None:
    """The 1 MiB body the issue found accepted, then refused by Kafka forever."""
    found = violations(request=http_request(body=b"x" * (1024 * 1024)))
    assert fields(found) == {f"{R}.body"}
    assert "body plus headers and URL is" in found[0].description
