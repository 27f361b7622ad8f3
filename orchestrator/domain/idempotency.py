"""Idempotency: service_call_id derived from (tenant, key) and a fingerprint of the request."""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from orchestrator.domain.model import HttpRequest, ResponseRules, RetryPolicy, StatusRange

# Never change: the ids of every call submitted with an idempotency key depend on it.
# (uuid5(NAMESPACE_URL, "urn:servicecall-mesh:idempotency"))
SERVICE_CALL_NAMESPACE = uuid.UUID("5efac0d1-75c0-511f-b3c9-910dae0b786d")

# The due time as the client gave it: the same "in 10 s" sent twice is the same request,
# although the absolute due_at it resolves to differs.
DueSpec = datetime | timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def service_call_id_for(tenant_id: str, idempotency_key: str) -> str:
    # NUL cannot appear in a valid tenant id, so ("ab", "c") and ("a", "bc") stay apart.
    return str(uuid.uuid5(SERVICE_CALL_NAMESPACE, f"{tenant_id}\x00{idempotency_key}"))


def fingerprint(
    request: HttpRequest,
    tags: Iterable[str],
    retry_policy: RetryPolicy,
    due: DueSpec | None,
    *,
    key: bytes,
    replay_of: str | None = None,
    callback_url: str | None = None,
    failure_callback_url: str | None = None,
    max_lateness: timedelta | None = None,
    callback_of: str | None = None,
    schedule_id: str | None = None,
    response_rules: ResponseRules | None = None,
    queue_id: str | None = None,
    ordering_key: str | None = None,
) -> str:
    """A keyed hash (HMAC-SHA256) of the request as the client sent it.

    Keyed because the request holds secret header values in clear and the fingerprint is
    stored beside the call: a plain hash would let anyone who reads the row confirm a guessed
    password offline. The key is the mesh's (orchestrator/main.py); a different key gives
    different fingerprints, so a resubmit of a call stored under another key is a conflict.

    A replay (`replay_of`: the id of the call it was made from) adds that link, so one
    idempotency key used for a replay and for a submit of the very same request, or for
    replays of two different calls, is a conflict (ALREADY_EXISTS) rather than one silently
    answering with the other's call. A submit's fingerprint is unchanged by this (the link's
    fields are only added for a replay), so the fingerprints already stored still match.
    The fields of #17 follow the same rule: a completion callback, a failure callback, a
    max_lateness, the parent of a callback (`callback_of`) and the schedule of an occurrence
    (`schedule_id`) are each added, under a label of its own, only when set; so a keyed
    resubmit that changes one of them is a conflict, and a call without any of them keeps
    the fingerprint it always had. #18's response rules likewise (`response_rules`), their
    ranges in the order given.
    `due` None means "now" (no due time given): a submit or replay without a due time is the
    same request whenever it is repeated. (Until session 9 a submit's missing due time was
    fingerprinted as the instant it arrived, so its retry a moment later was a conflict.)
    """
    if not key:
        raise ValueError("the fingerprint key must not be empty")
    # Every field is length-prefixed, so no two different requests share an encoding.
    # Header names are case-insensitive in HTTP, so they are lowercased and sorted; the sort is
    # stable because the order of repeated names is meaningful. The URL is kept verbatim:
    # two spellings of one URL conflict rather than silently match.
    headers = sorted(((name.lower(), value) for name, value in request.headers), key=lambda h: h[0])
    sorted_tags = sorted(set(tags))
    hasher = hmac.new(key, digestmod=hashlib.sha256)
    parts: list[bytes] = [
        b"servicecall-fingerprint-v2",
        request.method.encode(),
        request.url.encode(),
        _int(len(headers)),
        *(field for name, value in headers for field in (name.encode(), value.encode())),
        request.body,
        _int(_micros(request.attempt_timeout)),
        _int(len(sorted_tags)),
        *(tag.encode() for tag in sorted_tags),
        *_retry_policy_fields(retry_policy),
        *_due_fields(due),
        *(() if replay_of is None else (b"replay-of", replay_of.encode())),
        *_optional(b"callback-url", None if callback_url is None else callback_url.encode()),
        *_optional(
            b"failure-callback-url",
            None if failure_callback_url is None else failure_callback_url.encode(),
        ),
        *_optional(b"max-lateness", None if max_lateness is None else _int(_micros(max_lateness))),
        *_optional(b"callback-of", None if callback_of is None else callback_of.encode()),
        *_optional(b"schedule", None if schedule_id is None else schedule_id.encode()),
        *_optional(
            b"response-rules", None if response_rules is None else _rules_field(response_rules)
        ),
        # #18's, by the same rule: only when set (the `default` queue named or not alike).
        *_optional(b"queue", None if queue_id is None else queue_id.encode()),
        *_optional(b"ordering-key", None if ordering_key is None else ordering_key.encode()),
    ]
    for part in parts:
        hasher.update(_int(len(part)))
        hasher.update(part)
    return hasher.hexdigest()


def _optional(label: bytes, value: bytes | None) -> tuple[bytes, ...]:
    # Nothing at all when unset: that is what keeps older fingerprints valid.
    return () if value is None else (label, value)


def _rules_field(rules: ResponseRules) -> bytes:
    # One field: fixed-width integers, each list prefixed by its length, so no two rules
    # share an encoding; "-" is retryable_statuses unset (the default), apart from any list.
    retryable = rules.retryable_statuses
    return b"".join(
        (
            _ranges(rules.success_statuses),
            b"-" if retryable is None else b"+" + _ranges(retryable),
        )
    )


def _ranges(ranges: tuple[StatusRange, ...]) -> bytes:
    return _int(len(ranges)) + b"".join(_int(a) + _int(b) for a, b in ranges)


def _retry_policy_fields(policy: RetryPolicy) -> list[bytes]:
    codes = sorted(policy.retryable_status_codes)
    duration = policy.max_retry_duration
    return [
        _int(policy.max_attempts),
        b"-" if duration is None else _int(_micros(duration)),
        _int(_micros(policy.min_backoff)),
        _int(_micros(policy.max_backoff)),
        struct.pack(">d", policy.multiplier),
        struct.pack(">d", policy.jitter),
        _int(len(codes)),
        *(_int(code) for code in codes),
    ]


def _due_fields(due: DueSpec | None) -> list[bytes]:
    if due is None:
        return [b"now"]
    if isinstance(due, datetime):
        # Instants, not wall times: the same moment in two time zones is the same due time.
        # A naive datetime raises here, as it should.
        return [b"at", _int(_micros(due - _EPOCH))]
    return [b"in", _int(_micros(due))]


def _micros(delta: timedelta) -> int:
    return delta // _ONE_MICROSECOND


def _int(value: int) -> bytes:
    return value.to_bytes(16, "big", signed=True)
