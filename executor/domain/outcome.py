"""What an attempt's response or transport error means: success, retryable, Retry-After."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum


class AttemptError(StrEnum):
    """Error classes reported in AttemptResult.error (the wire values are the strings)."""

    HTTP_STATUS = "http_status"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    EGRESS_DENIED = "egress_denied"
    INVALID_REQUEST = "invalid_request"
    # A sealed secret header did not open (wrong mesh key, tampered, or bound to another
    # call): nothing was sent, and another attempt would fail the same way.
    SECRET_UNREADABLE = "secret_unreadable"
    # The call's max_lateness had passed when the request was about to go out (the hand-off
    # came late, or the attempt waited for a slot): nothing was sent, and a later attempt
    # would be later still.
    MAX_LATENESS_EXCEEDED = "max_lateness_exceeded"


# Transient by nature: another attempt may well get through.
_RETRYABLE_ERRORS = frozenset(
    {AttemptError.TIMEOUT, AttemptError.CONNECTION_ERROR, AttemptError.TLS_ERROR}
)
_RETRYABLE_STATUSES = frozenset({408, 429})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# Bounds what a target can ask for; the orchestrator caps it by the retry policy anyway.
MAX_RETRY_AFTER = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Succeeded:
    status: int


@dataclass(frozen=True, slots=True)
class Failed:
    status: int  # 0 when no response came back
    error: AttemptError
    retryable: bool
    retry_after: timedelta | None = None


Outcome = Succeeded | Failed


def is_success(status: int, success_statuses: tuple[tuple[int, int], ...] = ()) -> bool:
    """2xx, or exactly the call's own success statuses when it names any (a 200 outside them
    is then a failure, and a 3xx inside them a success)."""
    if not success_statuses:
        return 200 <= status <= 299
    return any(first <= status <= last for first, last in success_statuses)


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in _RETRYABLE_STATUSES


def classify_response(
    status: int,
    retry_after_header: str | None,
    now: datetime,
    success_statuses: tuple[tuple[int, int], ...] = (),
) -> Outcome:
    """A response that came back. A 3xx is a failure because redirects are not followed,
    unless the call counts it as success (`success_statuses`, ResponseRules); it is still
    not followed then. Whether a failing status is retried is the orchestrator's to say
    when the call names retryable statuses: `retryable` here is the default's judgement."""
    # Inline rather than is_success(): this runs on every response.
    if 200 <= status <= 299 if not success_statuses else is_success(status, success_statuses):
        return Succeeded(status)
    retry_after = None
    if status in _RETRY_AFTER_STATUSES and retry_after_header is not None:
        retry_after = parse_retry_after(retry_after_header, now)
    return Failed(
        status=status,
        error=AttemptError.HTTP_STATUS,
        retryable=is_retryable_status(status),
        retry_after=retry_after,
    )


def classify_error(error: AttemptError) -> Failed:
    """No usable response came back."""
    return Failed(status=0, error=error, retryable=error in _RETRYABLE_ERRORS)


def parse_retry_after(value: str, now: datetime) -> timedelta | None:
    """RFC 9110 Retry-After: delta-seconds or an HTTP-date; None when unreadable.

    A date in the past means "now" (zero); anything is capped at MAX_RETRY_AFTER.
    """
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # Compared as integers first: a huge value would overflow timedelta.
        return timedelta(seconds=min(int(text), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; parsedate_to_datetime leaves "-0000" naive.
        when = when.replace(tzinfo=UTC)
    return min(max(when - now, timedelta(0)), MAX_RETRY_AFTER)
