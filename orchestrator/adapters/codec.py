"""The stored form of a call's state (the jsonb `state` column of service_calls), versioned.

Every name in the stored JSON is written here, by hand, once per state shape and value type:
none is derived from a Python attribute or class name, so renaming a field or a class in the
domain cannot change what is written or break what was. A change of the stored form is a new
format version: add it here, keep reading every older one, and add its golden files
(tests/golden/orchestrator/state_v<N>/, tests/unit/orchestrator/test_stored_state_golden.py).

Format versions:
- 1 (no "v" field): written by the reflective codec before the format was versioned. Every
  dataclass was a JSON object tagged with its class name under "kind", its fields under their
  attribute names.
- 2 ({"v": 2, ...}): the same names as version 1, so SQL that reads the state (the BASIC list
  view's projection, the hand-off backstop's backfill in store.py, migration 0005) reads both
  alike, and the previous release still reads a version-2 row during a rolling upgrade (it
  picks the state by "kind" and reads fields by name, ignoring "v"). Only the state carries
  "kind" (its values fixed in `_KINDS`), nested values carry none: their shape is known from
  where they are.
- 3 ({"v": 3, ...}): version 2 and, in the spec, "replay_of" (the id of the call a replay was
  made from, ReplayServiceCall), written only for a replay: the state of a call submitted as
  itself is version 2's, names and all, but for "v". Versions 1 and 2 read with no link.
  A release that reads only up to version 2 refuses a version-3 row: upgrade every replica
  before the first replay is made.
- 4 ({"v": 4, ...}): version 3 and, in the spec, #17's fields, each written only when set:
  "callback_url", "failure_callback_url" (strings), "max_lateness" (microseconds),
  "callback_of" (the id of the call a completion callback reports on) and "schedule_id"
  (the schedule an occurrence belongs to). A call with none of them is version 3's, names
  and all, but for "v". Versions 1 to 3 read with none of them. As for version 3, a release
  that reads only up to version 3 refuses a version-4 row: upgrade every replica first.
- 5 ({"v": 5, ...}): version 4 and #18's fields, each written only when set: in the spec
  "response_rules" ({"success_statuses": [[first, last], ...], "retryable_statuses": null
  (the default) or [[first, last], ...]}, each range inclusive and in the order given),
  "queue_id" (absent: the `default` queue) and "ordering_key" (`_encode_queue_fields`); in
  a Scheduled state "held_reason" (the call is held by its queue). A call with none of them
  is version 4's, names and all, but for "v". Versions 1 to 4 read with none of them. A
  release that reads only up to version 4 refuses a version-5 row: upgrade every replica
  first.

Values in all: datetimes as ISO 8601 with offset (SQL casts them with ::timestamptz),
durations as integer microseconds, bytes as base64, enums by value, sets as sorted lists,
header pairs as two-element lists in their order.

This runs on every fact the orchestrator applies (decode the state, encode the next), so it is
straight-line code: no reflection, no per-field dispatch.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any, assert_never

from orchestrator.domain.model import (
    Attempt,
    AttemptOutcome,
    HttpRequest,
    ResponseRules,
    RetryPolicy,
    ServiceCallSpec,
    StatusRange,
)
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Succeeded,
)

FORMAT_VERSION = 5

_MICROSECOND = timedelta(microseconds=1)
_b64encode = base64.b64encode
_b64decode = base64.b64decode
_fromisoformat = datetime.fromisoformat


class UnreadableStateError(ValueError):
    """A stored state that no known format version describes."""


# The stored "kind" of each state; also the class names version 1 wrote, which is why they
# are spelled like the classes today. They are stored values: never rename one.
_SCHEDULED = "Scheduled"
_DISPATCHED = "Dispatched"
_RUNNING = "Running"
_SUCCEEDED = "Succeeded"
_FAILED = "Failed"
_CANCELED = "Canceled"


def encode(state: ServiceCallState) -> dict[str, Any]:
    """The state in the newest format, as a JSON-ready dict."""
    out: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "kind": "",
        "spec": _encode_spec(state.spec),
        "version": state.version,
        "attempts": [_encode_attempt(a) for a in state.attempts],
    }
    match state:
        case Scheduled():
            out["kind"] = _SCHEDULED
            out["due_at"] = state.due_at.isoformat()
            out["attempt"] = state.attempt
            out["handoff_at"] = None if state.handoff_at is None else state.handoff_at.isoformat()
            if state.held_reason is not None:
                out["held_reason"] = state.held_reason
        case Dispatched():
            out["kind"] = _DISPATCHED
            out["due_at"] = state.due_at.isoformat()
            out["attempt"] = state.attempt
            out["dispatched_at"] = state.dispatched_at.isoformat()
            out["lease_expires_at"] = state.lease_expires_at.isoformat()
        case Running():
            out["kind"] = _RUNNING
            out["due_at"] = state.due_at.isoformat()
            out["attempt"] = state.attempt
            out["started_at"] = state.started_at.isoformat()
            out["deadline"] = state.deadline.isoformat()
        case Succeeded():
            out["kind"] = _SUCCEEDED
            out["completed_at"] = state.completed_at.isoformat()
        case Failed():
            out["kind"] = _FAILED
            out["completed_at"] = state.completed_at.isoformat()
            out["reason"] = state.reason
        case Canceled():
            out["kind"] = _CANCELED
            out["canceled_at"] = state.canceled_at.isoformat()
            out["reason"] = state.reason
        case _:
            assert_never(state)
    return out


def decode(data: Any) -> ServiceCallState:
    """The state stored as `data`, in any format version ever written."""
    try:
        version = data.get("v", 1)
        if version in (1, 2, 3, 4, 5):
            # Version 1 differs only by its nested "kind" tags, which say nothing a reader
            # of a fixed shape needs, and by having no "v"; versions 3 to 5 only by the
            # spec's optional fields, absent from the older ones.
            return _decode_state(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UnreadableStateError(f"stored state not readable: {e!r}") from e
    raise UnreadableStateError(f"unknown stored state format version {version!r}")


def _decode_state(data: dict[str, Any]) -> ServiceCallState:
    kind = data["kind"]
    spec = _decode_spec(data["spec"])
    version: int = data["version"]
    attempts = tuple([_decode_attempt(a) for a in data["attempts"]])
    if kind == _SCHEDULED:
        handoff_at = data["handoff_at"]
        return Scheduled(
            spec=spec,
            version=version,
            attempts=attempts,
            due_at=_fromisoformat(data["due_at"]),
            attempt=data["attempt"],
            handoff_at=None if handoff_at is None else _fromisoformat(handoff_at),
            held_reason=data.get("held_reason"),
        )
    if kind == _DISPATCHED:
        return Dispatched(
            spec=spec,
            version=version,
            attempts=attempts,
            due_at=_fromisoformat(data["due_at"]),
            attempt=data["attempt"],
            dispatched_at=_fromisoformat(data["dispatched_at"]),
            lease_expires_at=_fromisoformat(data["lease_expires_at"]),
        )
    if kind == _RUNNING:
        return Running(
            spec=spec,
            version=version,
            attempts=attempts,
            due_at=_fromisoformat(data["due_at"]),
            attempt=data["attempt"],
            started_at=_fromisoformat(data["started_at"]),
            deadline=_fromisoformat(data["deadline"]),
        )
    if kind == _SUCCEEDED:
        return Succeeded(
            spec=spec,
            version=version,
            attempts=attempts,
            completed_at=_fromisoformat(data["completed_at"]),
        )
    if kind == _FAILED:
        return Failed(
            spec=spec,
            version=version,
            attempts=attempts,
            completed_at=_fromisoformat(data["completed_at"]),
            reason=data["reason"],
        )
    if kind == _CANCELED:
        return Canceled(
            spec=spec,
            version=version,
            attempts=attempts,
            canceled_at=_fromisoformat(data["canceled_at"]),
            reason=data["reason"],
        )
    raise UnreadableStateError(f"unknown stored state kind {kind!r}")


def _encode_spec(spec: ServiceCallSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tenant_id": spec.tenant_id,
        "service_call_id": spec.service_call_id,
        "request": encode_request(spec.request),
        "tags": sorted(spec.tags),
        "idempotency_key": spec.idempotency_key,
        "retry_policy": encode_retry_policy(spec.retry_policy),
        "fingerprint": spec.fingerprint,
        "created_at": spec.created_at.isoformat(),
    }
    if spec.replay_of is not None:
        out["replay_of"] = spec.replay_of
    if spec.callback_url is not None:
        out["callback_url"] = spec.callback_url
    if spec.failure_callback_url is not None:
        out["failure_callback_url"] = spec.failure_callback_url
    if spec.max_lateness is not None:
        out["max_lateness"] = spec.max_lateness // _MICROSECOND
    if spec.callback_of is not None:
        out["callback_of"] = spec.callback_of
    if spec.schedule_id is not None:
        out["schedule_id"] = spec.schedule_id
    if spec.response_rules is not None:
        out["response_rules"] = encode_response_rules(spec.response_rules)
    _encode_queue_fields(spec, out)
    return out


def _encode_queue_fields(spec: ServiceCallSpec, out: dict[str, Any]) -> None:
    """#18's queue fields of the spec (format version 5), each only when set."""
    if spec.queue_id is not None:
        out["queue_id"] = spec.queue_id
    if spec.ordering_key is not None:
        out["ordering_key"] = spec.ordering_key


def _decode_spec(data: dict[str, Any]) -> ServiceCallSpec:
    max_lateness = data.get("max_lateness")
    return ServiceCallSpec(
        tenant_id=data["tenant_id"],
        service_call_id=data["service_call_id"],
        request=decode_request(data["request"]),
        tags=frozenset(data["tags"]),
        idempotency_key=data["idempotency_key"],
        retry_policy=decode_retry_policy(data["retry_policy"]),
        fingerprint=data["fingerprint"],
        created_at=_fromisoformat(data["created_at"]),
        replay_of=data.get("replay_of"),
        callback_url=data.get("callback_url"),
        failure_callback_url=data.get("failure_callback_url"),
        max_lateness=None if max_lateness is None else timedelta(microseconds=max_lateness),
        callback_of=data.get("callback_of"),
        schedule_id=data.get("schedule_id"),
        response_rules=_decode_optional_rules(data.get("response_rules")),
        queue_id=data.get("queue_id"),
        ordering_key=data.get("ordering_key"),
    )


# #18's response rules (format version 5); shared with the stored schedule template.
def encode_response_rules(rules: ResponseRules) -> dict[str, Any]:
    retryable = rules.retryable_statuses
    return {
        "success_statuses": [[first, last] for first, last in rules.success_statuses],
        "retryable_statuses": (
            None if retryable is None else [[first, last] for first, last in retryable]
        ),
    }


def decode_response_rules(data: dict[str, Any]) -> ResponseRules:
    retryable = data["retryable_statuses"]
    return ResponseRules(
        success_statuses=_decode_ranges(data["success_statuses"]),
        retryable_statuses=None if retryable is None else _decode_ranges(retryable),
    )


def _decode_optional_rules(data: dict[str, Any] | None) -> ResponseRules | None:
    return None if data is None else decode_response_rules(data)


def _decode_ranges(data: list[list[int]]) -> tuple[StatusRange, ...]:
    return tuple([(first, last) for first, last in data])


# The request and retry-policy documents are shared with the stored schedule template
# (orchestrator/adapters/schedules.py): changing them changes both stored formats.
def encode_request(request: HttpRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": request.url,
        "headers": [[name, value] for name, value in request.headers],
        "body": _b64encode(request.body).decode("ascii"),
        "attempt_timeout": request.attempt_timeout // _MICROSECOND,
    }


def decode_request(data: dict[str, Any]) -> HttpRequest:
    return HttpRequest(
        method=data["method"],
        url=data["url"],
        headers=tuple([(name, value) for name, value in data["headers"]]),
        body=_b64decode(data["body"]),
        attempt_timeout=timedelta(microseconds=data["attempt_timeout"]),
    )


def encode_retry_policy(policy: RetryPolicy) -> dict[str, Any]:
    budget = policy.max_retry_duration
    return {
        "max_attempts": policy.max_attempts,
        "max_retry_duration": None if budget is None else budget // _MICROSECOND,
        "min_backoff": policy.min_backoff // _MICROSECOND,
        "max_backoff": policy.max_backoff // _MICROSECOND,
        "multiplier": policy.multiplier,
        "jitter": policy.jitter,
        "retryable_status_codes": sorted(policy.retryable_status_codes),
    }


def decode_retry_policy(data: dict[str, Any]) -> RetryPolicy:
    budget = data["max_retry_duration"]
    return RetryPolicy(
        max_attempts=data["max_attempts"],
        max_retry_duration=None if budget is None else timedelta(microseconds=budget),
        min_backoff=timedelta(microseconds=data["min_backoff"]),
        max_backoff=timedelta(microseconds=data["max_backoff"]),
        # float(): JSON has one number type; a whole multiplier may come back as an int.
        multiplier=float(data["multiplier"]),
        jitter=float(data["jitter"]),
        retryable_status_codes=frozenset(data["retryable_status_codes"]),
    )


def _encode_attempt(attempt: Attempt) -> dict[str, Any]:
    ended_at = attempt.ended_at
    outcome = attempt.outcome
    retry_after = attempt.retry_after
    return {
        "number": attempt.number,
        "started_at": attempt.started_at.isoformat(),
        "ended_at": None if ended_at is None else ended_at.isoformat(),
        "outcome": None if outcome is None else outcome.value,
        "response_status": attempt.response_status,
        "response_snippet": attempt.response_snippet,
        "error": attempt.error,
        "retry_reason": attempt.retry_reason,
        "retry_after": None if retry_after is None else retry_after // _MICROSECOND,
    }


def _decode_attempt(data: dict[str, Any]) -> Attempt:
    ended_at = data["ended_at"]
    outcome = data["outcome"]
    retry_after = data["retry_after"]
    return Attempt(
        number=data["number"],
        started_at=_fromisoformat(data["started_at"]),
        ended_at=None if ended_at is None else _fromisoformat(ended_at),
        outcome=None if outcome is None else AttemptOutcome(outcome),
        response_status=data["response_status"],
        response_snippet=data["response_snippet"],
        error=data["error"],
        retry_reason=data["retry_reason"],
        retry_after=None if retry_after is None else timedelta(microseconds=retry_after),
    )
