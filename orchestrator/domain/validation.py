"""Validation of a submission: every bad field reported at once, named by its API path."""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from orchestrator.domain.model import HttpRequest, ResponseRules, RetryPolicy, StatusRange


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_schedule_ahead: timedelta = timedelta(days=30)
    max_attempt_timeout: timedelta = timedelta(minutes=30)
    max_url_length: int = 2048
    max_tags: int = 32
    max_idempotency_key_length: int = 256
    max_attempts: int = 100
    # Backoffs and retry windows are added to "now": they must stay far from datetime's
    # year-9999 limit, and a retry more than a month out is a misconfiguration anyway.
    max_backoff: timedelta = timedelta(days=30)
    max_retry_duration: timedelta = timedelta(days=365)
    max_reason_length: int = 1024
    # Ranges per list of a call's response rules: a handful says anything a tenant needs,
    # and the executor scans them on every response.
    max_status_ranges: int = 20
    # max_lateness: under a second is finer than the mesh's timers keep; over the furthest a
    # call may be scheduled ahead says nothing a tenant needs.
    min_max_lateness: timedelta = timedelta(seconds=1)
    max_max_lateness: timedelta = timedelta(days=30)
    # Headers are bounded like the body: in count, and in bytes of names plus values.
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024
    # The largest message the mesh's Kafka producers send (their message.max.bytes). A call's
    # execution request carries its body, headers and URL, so together they must fit, with
    # room for the rest of the envelope: ids, timestamps, and the growth of sealed header
    # values (29 bytes each) and protobuf framing (a few bytes per header). Measured at under
    # 4 KiB with 100 sealed headers (tests/unit/orchestrator/test_message_size.py).
    max_message_bytes: int = 1024 * 1024
    envelope_margin_bytes: int = 16 * 1024

    @property
    def max_request_bytes(self) -> int:
        """The most body, header and URL bytes one call may carry in total."""
        return self.max_message_bytes - self.envelope_margin_bytes


DEFAULT_LIMITS = Limits()

ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# The executor owns framing and routing: a caller choosing these could smuggle a second
# request or reach a host the egress policy did not check.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TAG = re.compile(r"[a-z0-9][a-z0-9._:-]{0,62}")
# RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_REQUEST = "service_call.request"
_POLICY = "service_call.retry_policy"


def validate_submission(
    *,
    tenant_id: str,
    request: HttpRequest,
    tags: Collection[str],
    idempotency_key: str | None,
    retry_policy: RetryPolicy,
    due_at: datetime,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
    callback_url: str | None = None,
    failure_callback_url: str | None = None,
    max_lateness: timedelta | None = None,
    response_rules: ResponseRules | None = None,
) -> list[FieldViolation]:
    return [
        *validate_tenant_id(tenant_id),
        *validate_request(request, limits),
        *validate_tags(tags, limits),
        *validate_idempotency_key(idempotency_key, limits),
        *validate_retry_policy(retry_policy, limits),
        *validate_due_at(due_at, now, limits),
        *validate_callback_url(callback_url, "service_call.callback_url", limits),
        *validate_callback_url(failure_callback_url, "service_call.failure_callback_url", limits),
        *validate_max_lateness(max_lateness, limits),
        *validate_response_rules(response_rules, limits),
    ]


def validate_tenant_id(tenant_id: str) -> list[FieldViolation]:
    if _TENANT_ID.fullmatch(tenant_id):
        return []
    return [FieldViolation("tenant_id", "must match [a-z0-9][a-z0-9-]{0,62}")]


def validate_request(request: HttpRequest, limits: Limits = DEFAULT_LIMITS) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if request.method not in ALLOWED_METHODS:
        allowed = ", ".join(sorted(ALLOWED_METHODS))
        violations.append(FieldViolation(f"{_REQUEST}.method", f"must be one of {allowed}"))
    if problem := _url_problem(request.url, limits):
        violations.append(FieldViolation(f"{_REQUEST}.url", problem))
    for index, (name, value) in enumerate(request.headers):
        field = f"{_REQUEST}.headers[{index}]"
        if not _HEADER_NAME.fullmatch(name):
            violations.append(FieldViolation(f"{field}.name", "must be an HTTP token"))
        elif name.lower() in FORBIDDEN_HEADERS:
            violations.append(
                FieldViolation(f"{field}.name", f"{name} is set by the executor, not the caller")
            )
        if any(char in value for char in "\r\n\x00"):
            violations.append(FieldViolation(f"{field}.value", "must not contain CR, LF or NUL"))
    violations.extend(_size_violations(request, limits))
    if not timedelta(0) < request.attempt_timeout <= limits.max_attempt_timeout:
        violations.append(
            FieldViolation(
                f"{_REQUEST}.attempt_timeout",
                f"must be positive and at most {limits.max_attempt_timeout}",
            )
        )
    return violations


def validate_callback_url(
    url: str | None, field: str, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    """A completion callback's URL: it becomes the URL of a call of its own, so it obeys
    exactly the rules of a request's URL (the executor's egress policy applies when it is
    sent, as for every call)."""
    if url is None:
        return []
    if problem := _url_problem(url, limits):
        return [FieldViolation(field, problem)]
    return []


def validate_max_lateness(
    max_lateness: timedelta | None, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    if max_lateness is None:
        return []
    if not limits.min_max_lateness <= max_lateness <= limits.max_max_lateness:
        return [
            FieldViolation(
                "service_call.max_lateness",
                f"must be at least {limits.min_max_lateness.total_seconds():g} s and at most "
                f"{limits.max_max_lateness.days} days when set",
            )
        ]
    return []


_RULES = "service_call.response_rules"
# What success means when a call's rules name no success statuses (ResponseRules).
DEFAULT_SUCCESS_STATUSES: tuple[StatusRange, ...] = ((200, 299),)


def validate_response_rules(
    rules: ResponseRules | None, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    """Every range within 100..599 and in order, at most `max_status_ranges` per list, and no
    retryable status that also counts as success (the default 200-299 when no success
    statuses are given): such a status would never be retried, which says the rules are
    not what the tenant meant."""
    if rules is None:
        return []
    violations = [
        *_status_range_violations(rules.success_statuses, f"{_RULES}.success_statuses", limits),
        *_status_range_violations(
            rules.retryable_statuses or (), f"{_RULES}.retryable_statuses", limits
        ),
    ]
    if violations or not rules.retryable_statuses:
        return violations
    success = rules.success_statuses or DEFAULT_SUCCESS_STATUSES
    for index, (first, last) in enumerate(rules.retryable_statuses):
        overlapping = [r for r in success if first <= r[1] and r[0] <= last]
        if overlapping:
            which = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in overlapping)
            violations.append(
                FieldViolation(
                    f"{_RULES}.retryable_statuses[{index}]",
                    f"overlaps the success statuses ({which}): a success is never retried",
                )
            )
    return violations


def _status_range_violations(
    ranges: tuple[StatusRange, ...], field: str, limits: Limits
) -> list[FieldViolation]:
    if len(ranges) > limits.max_status_ranges:
        return [FieldViolation(field, f"{len(ranges)} ranges; at most {limits.max_status_ranges}")]
    violations: list[FieldViolation] = []
    for index, (first, last) in enumerate(ranges):
        if not 100 <= first <= 599:
            violations.append(
                FieldViolation(f"{field}[{index}].first", "must be an HTTP status, 100..599")
            )
        elif not first <= last <= 599:
            violations.append(
                FieldViolation(
                    f"{field}[{index}].last",
                    f"must be at least first ({first}) and at most 599, or 0 for first alone",
                )
            )
    return violations


def _size_violations(request: HttpRequest, limits: Limits) -> list[FieldViolation]:
    """Each part within its own limit, and all of them within one Kafka message: a call whose
    execution request the broker would refuse must be refused here, not after it is stored."""
    violations: list[FieldViolation] = []
    if len(request.headers) > limits.max_headers:
        violations.append(
            FieldViolation(
                f"{_REQUEST}.headers",
                f"{len(request.headers)} headers; at most {limits.max_headers}",
            )
        )
    header_bytes = sum(len(name.encode()) + len(value.encode()) for name, value in request.headers)
    if header_bytes > limits.max_header_bytes:
        violations.append(
            FieldViolation(
                f"{_REQUEST}.headers",
                f"names and values are {header_bytes} bytes; at most {limits.max_header_bytes}",
            )
        )
    body_bytes = len(request.body)
    if body_bytes > limits.max_body_bytes:
        violations.append(
            FieldViolation(f"{_REQUEST}.body", f"must be at most {limits.max_body_bytes} bytes")
        )
    total = body_bytes + header_bytes + len(request.url.encode())
    if not violations and total > limits.max_request_bytes:
        violations.append(
            FieldViolation(
                f"{_REQUEST}.body",
                f"body plus headers and URL is {total} bytes; at most {limits.max_request_bytes}",
            )
        )
    return violations


def _url_problem(url: str, limits: Limits) -> str | None:
    if len(url) > limits.max_url_length:
        return f"must be at most {limits.max_url_length} characters"
    if not url.isascii() or any(char.isspace() or not char.isprintable() for char in url):
        return "must be ASCII without whitespace or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError as error:
        return f"is not a valid URL: {error}"
    if parts.scheme not in ("http", "https"):
        return "must be an absolute http or https URL"
    if not parts.hostname:
        return "must have a host"
    if "@" in parts.netloc:
        return "must not contain user information; send credentials in a header"
    if "#" in url:
        return "must not contain a fragment"
    return None


def validate_tags(tags: Collection[str], limits: Limits = DEFAULT_LIMITS) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(tags) > limits.max_tags:
        violations.append(FieldViolation("service_call.tags", f"at most {limits.max_tags} tags"))
    violations.extend(
        FieldViolation("service_call.tags", f"{tag!r} must match [a-z0-9][a-z0-9._:-]{{0,62}}")
        for tag in sorted(tags)
        if not _TAG.fullmatch(tag)
    )
    return violations


def validate_idempotency_key(
    key: str | None, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    if key is None:
        return []
    if not key or len(key) > limits.max_idempotency_key_length or not key.isprintable():
        return [
            FieldViolation(
                "service_call.idempotency_key",
                f"must be 1 to {limits.max_idempotency_key_length} printable characters",
            )
        ]
    return []


def validate_retry_policy(
    policy: RetryPolicy, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not 1 <= policy.max_attempts <= limits.max_attempts:
        violations.append(
            FieldViolation(
                f"{_POLICY}.max_attempts", f"must be between 1 and {limits.max_attempts}"
            )
        )
    if policy.max_retry_duration is not None and not (
        timedelta(0) < policy.max_retry_duration <= limits.max_retry_duration
    ):
        violations.append(
            FieldViolation(
                f"{_POLICY}.max_retry_duration",
                f"must be positive and at most {limits.max_retry_duration.days} days when set",
            )
        )
    if not timedelta(0) < policy.min_backoff <= limits.max_backoff:
        violations.append(
            FieldViolation(
                f"{_POLICY}.min_backoff",
                f"must be positive and at most {limits.max_backoff.days} days",
            )
        )
    if not policy.min_backoff <= policy.max_backoff <= limits.max_backoff:
        violations.append(
            FieldViolation(
                f"{_POLICY}.max_backoff",
                f"must be at least min_backoff and at most {limits.max_backoff.days} days",
            )
        )
    if not (math.isfinite(policy.multiplier) and policy.multiplier >= 1):
        violations.append(FieldViolation(f"{_POLICY}.multiplier", "must be at least 1"))
    if not (math.isfinite(policy.jitter) and 0 <= policy.jitter <= 1):
        violations.append(FieldViolation(f"{_POLICY}.jitter", "must be between 0 and 1"))
    violations.extend(
        FieldViolation(f"{_POLICY}.retryable_status_codes", f"{code} is not an HTTP status code")
        for code in sorted(policy.retryable_status_codes)
        if not 100 <= code <= 599
    )
    return violations


def validate_due_at(
    due_at: datetime, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    if due_at.tzinfo is None or due_at.utcoffset() is None:
        return [FieldViolation("service_call.schedule_time", "must carry a time zone")]
    if due_at - now > limits.max_schedule_ahead:
        ahead = limits.max_schedule_ahead
        span = f"{ahead.days} days" if ahead % timedelta(days=1) == timedelta(0) else str(ahead)
        return [
            FieldViolation(
                "service_call.schedule_time",
                f"must be at most {span} from now (or use a delay within that)",
            )
        ]
    # A due time in the past is valid: the call runs at once.
    return []


def validate_reason(reason: str, limits: Limits = DEFAULT_LIMITS) -> list[FieldViolation]:
    if len(reason) > limits.max_reason_length or not reason.isprintable():
        return [
            FieldViolation(
                "reason", f"must be at most {limits.max_reason_length} printable characters"
            )
        ]
    return []


def validate_delay(
    delay: timedelta, field: str, limits: Limits = DEFAULT_LIMITS
) -> list[FieldViolation]:
    """A relative due time, checked before it is added to now (which could overflow)."""
    if not timedelta(0) <= delay <= limits.max_schedule_ahead:
        return [
            FieldViolation(field, f"must be between 0 and {limits.max_schedule_ahead.days} days")
        ]
    return []
