"""Maps between the public protobuf messages and the domain; protobuf stops here."""

from __future__ import annotations

from datetime import datetime

from mesh.redaction import redact_headers
from mesh.timeconv import to_duration, to_timestamp
from orchestrator.domain.model import Attempt, AttemptOutcome, HttpRequest, RetryPolicy
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Status,
    Succeeded,
    status_of,
)
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc

STATE_CLASSES = (Scheduled, Dispatched, Running, Succeeded, Failed, Canceled)

METHOD_TO_PROTO = {
    "POST": api.POST,
    "GET": api.GET,
    "HEAD": api.HEAD,
    "PUT": api.PUT,
    "DELETE": api.DELETE,
    "PATCH": api.PATCH,
    "OPTIONS": api.OPTIONS,
}
METHOD_FROM_PROTO = {v: k for k, v in METHOD_TO_PROTO.items()}

STATUS_TO_PROTO = {
    Status.SCHEDULED: api.ServiceCall.SCHEDULED,
    Status.DISPATCHED: api.ServiceCall.DISPATCHED,
    Status.RUNNING: api.ServiceCall.RUNNING,
    Status.SUCCEEDED: api.ServiceCall.SUCCEEDED,
    Status.FAILED: api.ServiceCall.FAILED,
    Status.CANCELED: api.ServiceCall.CANCELED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}

_OUTCOME_TO_PROTO = {
    AttemptOutcome.SUCCEEDED: api.Attempt.SUCCEEDED,
    AttemptOutcome.FAILED: api.Attempt.FAILED,
    AttemptOutcome.TIMED_OUT: api.Attempt.TIMED_OUT,
}


def resource_name(tenant_id: str, service_call_id: str) -> str:
    return f"tenants/{tenant_id}/service-calls/{service_call_id}"


def request_to_proto(request: HttpRequest, redact: bool = False) -> api.HttpRequest:
    headers = redact_headers(request.headers) if redact else request.headers
    return api.HttpRequest(
        http_method=METHOD_TO_PROTO[request.method],
        url=request.url,
        # The proto map keeps one value per name; repeated names are joined as HTTP allows.
        headers=_join_headers(headers),
        body=request.body,
        attempt_timeout=to_duration(request.attempt_timeout),
    )


def _join_headers(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in headers:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def retry_policy_to_proto(policy: RetryPolicy) -> api.RetryPolicy:
    out = api.RetryPolicy(
        max_attempts=policy.max_attempts,
        min_backoff=to_duration(policy.min_backoff),
        max_backoff=to_duration(policy.max_backoff),
        multiplier=policy.multiplier,
        jitter=policy.jitter,
        retryable_status_codes=sorted(policy.retryable_status_codes),
    )
    if policy.max_retry_duration is not None:
        out.max_retry_duration.CopyFrom(to_duration(policy.max_retry_duration))
    return out


def _attempt_to_proto(attempt: Attempt) -> api.Attempt:
    out = api.Attempt(
        attempt_number=attempt.number,
        start_time=to_timestamp(attempt.started_at),
        response_status=attempt.response_status or 0,
        response_snippet=attempt.response_snippet,
        error=attempt.error,
        retry_reason=attempt.retry_reason,
    )
    if attempt.ended_at is not None:
        out.end_time.CopyFrom(to_timestamp(attempt.ended_at))
    if attempt.outcome is not None:
        out.outcome = _OUTCOME_TO_PROTO[attempt.outcome]
    if attempt.retry_after is not None:
        out.retry_after.CopyFrom(to_duration(attempt.retry_after))
    return out


def etag_of(state: ServiceCallState) -> str:
    return f'W/"{state.version}"'


def version_from_etag(etag: str) -> int | None:
    digits = etag.removeprefix("W/").strip('"')
    # isascii: '²'.isdigit() is True but int('²') fails.
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 19 else None


def service_call_to_proto(
    state: ServiceCallState, view: svc.ServiceCallView.ValueType = svc.BASIC
) -> api.ServiceCall:
    spec = state.spec
    request = request_to_proto(spec.request, redact=True)
    full = view == svc.FULL
    if not full:
        request.ClearField("body")
    out = api.ServiceCall(
        name=resource_name(spec.tenant_id, spec.service_call_id),
        tenant_id=spec.tenant_id,
        service_call_id=spec.service_call_id,
        request=request,
        tags=sorted(spec.tags),
        idempotency_key=spec.idempotency_key or "",
        retry_policy=retry_policy_to_proto(spec.retry_policy),
        state=STATUS_TO_PROTO[status_of(state)],
        create_time=to_timestamp(spec.created_at),
        etag=etag_of(state),
    )
    if full:
        out.attempts.extend(_attempt_to_proto(a) for a in state.attempts)
    match state:
        case Scheduled() | Dispatched() | Running():
            out.schedule_time.CopyFrom(to_timestamp(state.due_at))
            out.attempt_count = state.attempt
            out.update_time.CopyFrom(to_timestamp(_last_change(state)))
        case Succeeded() | Failed():
            out.attempt_count = len(state.attempts)
            out.complete_time.CopyFrom(to_timestamp(state.completed_at))
            out.update_time.CopyFrom(to_timestamp(state.completed_at))
            if isinstance(state, Failed):
                out.status_reason = state.reason
        case Canceled():
            out.attempt_count = len(state.attempts)
            out.complete_time.CopyFrom(to_timestamp(state.canceled_at))
            out.update_time.CopyFrom(to_timestamp(state.canceled_at))
            out.status_reason = state.reason
    return out


def _last_change(state: Scheduled | Dispatched | Running) -> datetime:
    match state:
        case Dispatched():
            return state.dispatched_at
        case Running():
            return state.started_at
        case Scheduled():
            ended = [a.ended_at for a in state.attempts if a.ended_at is not None]
            return max(ended) if ended else state.spec.created_at
