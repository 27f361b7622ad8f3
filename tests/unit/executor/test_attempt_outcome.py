"""Classifying what came back: success, retryable, and the target's Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from executor.domain.outcome import (
    MAX_RETRY_AFTER,
    AttemptError,
    Failed,
    Succeeded,
    classify_error,
    classify_response,
    is_retryable_status,
    parse_retry_after,
)

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert classify_response(status, None, NOW) == Succeeded(status)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (100, False),
        (301, False),
        (302, False),
        (304, False),
        (307, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (410, False),
        (422, False),
    ],
)
def test_non_2xx_fails_and_is_retryable_only_when_transient(status: int, retryable: bool) -> None:
    outcome = classify_response(status, None, NOW)
    assert outcome == Failed(status, AttemptError.HTTP_STATUS, retryable, None)
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (AttemptError.TIMEOUT, True),
        (AttemptError.CONNECTION_ERROR, True),
        (AttemptError.TLS_ERROR, True),
        (AttemptError.EGRESS_DENIED, False),
        (AttemptError.INVALID_REQUEST, False),
        (AttemptError.SECRET_UNREADABLE, False),
        (AttemptError.MAX_LATENESS_EXCEEDED, False),
    ],
)
def test_transport_errors(error: AttemptError, retryable: bool) -> None:
    assert classify_error(error) == Failed(0, error, retryable)


def test_error_wire_values() -> None:
    assert {e.value for e in AttemptError} == {
        "http_status",
        "timeout",
        "connection_error",
        "tls_error",
        "egress_denied",
        "invalid_request",
        "secret_unreadable",
        "max_lateness_exceeded",
    }


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_read_on_429_and_503(status: int) -> None:
    outcome = classify_response(status, "120", NOW)
    assert isinstance(outcome, Failed)
    assert outcome.retry_after == timedelta(seconds=120)


@pytest.mark.parametrize("status", [500, 502, 404, 301])
def test_retry_after_is_ignored_elsewhere(status: int) -> None:
    outcome = classify_response(status, "120", NOW)
    assert isinstance(outcome, Failed)
    assert outcome.retry_after is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", timedelta(0)),
        ("5", timedelta(seconds=5)),
        (" 30 ", timedelta(seconds=30)),
        ("Sat, 01 Jun 2030 12:00:45 GMT", timedelta(seconds=45)),
        ("Sat, 01 Jun 2030 13:00:00 GMT", timedelta(hours=1)),
        ("Saturday, 01-Jun-30 12:01:00 GMT", timedelta(minutes=1)),  # RFC 850
        ("Sat Jun  1 12:00:10 2030", timedelta(seconds=10)),  # asctime
        ("Sat, 01 Jun 2030 11:00:00 GMT", timedelta(0)),  # in the past
        ("99999999999999999999999", MAX_RETRY_AFTER),
        ("Fri, 01 Jun 2040 12:00:00 GMT", MAX_RETRY_AFTER),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("٣", None),  # a non-ASCII digit
        ("Sat, 99 Jun 2030 12:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected
