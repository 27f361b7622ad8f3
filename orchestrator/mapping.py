"""ALL of the orchestrator's mapping between protobuf and the domain; protobuf stops here.

- the public API: requests to submissions, queries and reschedules (with every bad field
  named), calls to `ServiceCall` messages, domain errors to status codes;
- Kafka: incoming envelopes to the commands they ask for (`decode_call_event`), and a
  decision's events to the outgoing envelopes committed with it (`outbox_messages`).

Used directly by the entry points (orchestrator/entrypoints/) and by main.py; the use cases
never see a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from mesh.errors import UNAVAILABLE_MESSAGE
from mesh.kafka import ReceivedMessage, UnreadableMessageError
from mesh.ports import OutgoingMessage
from mesh.redaction import is_secret_header, redact_headers
from mesh.secrets import sealed_bytes
from mesh.timeconv import from_duration, from_timestamp, to_duration, to_timestamp
from mesh.topics import Topics, call_key
from orchestrator.domain import events as ev
from orchestrator.domain.callbacks import callbacks_for, service_call_name
from orchestrator.domain.commands import (
    Command,
    FireTimer,
    RecordExecutionFailed,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    TimerPurpose,
)
from orchestrator.domain.errors import DomainError, ErrorKind, VersionMismatch
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    SEALED_PREFIX,
    Attempt,
    AttemptOutcome,
    ExecutionResult,
    HttpRequest,
    ResponseRules,
    RetryPolicy,
    ServiceCallSpec,
    StatusRange,
)
from orchestrator.domain.queues import (
    DEFAULT_QUEUE_ID,
    QUEUE_FIELDS,
    OrderingFailurePolicy,
    Queue,
    QueueState,
)
from orchestrator.domain.schedules import MissedOccurrencePolicy, Schedule, ScheduleState
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
from orchestrator.domain.validation import FieldViolation, validate_tags, validate_tenant_id
from orchestrator.ports import (
    SCHEDULE_FIELDS,
    Accepted,
    Completion,
    IncomingFact,
    Invalid,
    ListQuery,
    OrderBy,
    QueueExists,
    QueueNotEmpty,
    QueueNotFound,
    QueueRefusal,
    QueueVersionMismatch,
    Replay,
    ScheduleDraft,
    ScheduleEnded,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleRefusal,
    ScheduleVersionMismatch,
    Submission,
    template_field,
)
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import queue_pb2 as queue_pb
from servicecall.v1 import schedule_pb2 as sched
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc

DEFAULT_ATTEMPT_TIMEOUT = timedelta(seconds=30)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# The public API: calls out.

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
    return service_call_name(tenant_id, service_call_id)


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


def expected_version(etag: str, problems: list[FieldViolation], field: str) -> int | None:
    """The version an etag given on a schedule's or queue's change guards (None: unguarded);
    an etag this API never issued is a problem on `field`."""
    if not etag:
        return None
    version = version_from_etag(etag)
    if version is None:
        problems.append(FieldViolation(field, "is not an etag this API issued"))
    return version


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
    if spec.replay_of is not None:
        out.replay_of = resource_name(spec.tenant_id, spec.replay_of)
    _call_features_to_proto(spec, out)
    if spec.response_rules is not None:
        out.response_rules.CopyFrom(response_rules_to_proto(spec.response_rules))
    if full:
        out.attempts.extend(_attempt_to_proto(a) for a in state.attempts)
    match state:
        case Scheduled() | Dispatched() | Running():
            if isinstance(state, Scheduled) and state.held_reason is not None:
                out.held_reason = state.held_reason
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


def _call_features_to_proto(spec: ServiceCallSpec, out: api.ServiceCall) -> None:
    """#17's fields of a call: its callbacks and max_lateness as given, and the links the mesh
    set (the call a callback reports on, the schedule an occurrence belongs to)."""
    if spec.callback_url is not None:
        out.callback_url = spec.callback_url
    if spec.failure_callback_url is not None:
        out.failure_callback_url = spec.failure_callback_url
    if spec.max_lateness is not None:
        out.max_lateness.CopyFrom(to_duration(spec.max_lateness))
    if spec.callback_of is not None:
        out.callback_of = resource_name(spec.tenant_id, spec.callback_of)
    if spec.schedule_id is not None:
        out.schedule = f"tenants/{spec.tenant_id}/schedules/{spec.schedule_id}"
    out.queue = spec.queue_id or DEFAULT_QUEUE_ID
    if spec.ordering_key is not None:
        out.ordering_key = spec.ordering_key


def response_rules_to_proto(rules: ResponseRules) -> api.ResponseRules:
    """The rules as given; each range with its `last` spelled out, even when it is `first`."""
    return api.ResponseRules(
        success_statuses=_ranges_to_proto(rules.success_statuses),
        retryable_statuses=_ranges_to_proto(rules.retryable_statuses or ()),
    )


def _ranges_to_proto(ranges: tuple[StatusRange, ...]) -> list[api.StatusRange]:
    return [api.StatusRange(first=first, last=last) for first, last in ranges]


def _response_rules(call: api.ServiceCall) -> ResponseRules | None:
    """The call's response rules; None when it sets none (an empty message included: it
    means the defaults, and a call with the defaults is stored and fingerprinted as one that
    never named them). A range's `last` 0 is its `first` alone; bounds are validated later."""
    if not call.HasField("response_rules"):
        return None
    given = call.response_rules
    if not given.success_statuses and not given.retryable_statuses:
        return None
    return ResponseRules(
        success_statuses=_ranges_from_proto(given.success_statuses),
        # Empty is proto3's "unset": the default retryable statuses.
        retryable_statuses=_ranges_from_proto(given.retryable_statuses) or None,
    )


def _ranges_from_proto(ranges: Iterable[api.StatusRange]) -> tuple[StatusRange, ...]:
    return tuple([(r.first, r.last or r.first) for r in ranges])


def _last_change(state: Scheduled | Dispatched | Running) -> datetime:
    match state:
        case Dispatched():
            return state.dispatched_at
        case Running():
            return state.started_at
        case Scheduled():
            ended = [a.ended_at for a in state.attempts if a.ended_at is not None]
            return max(ended) if ended else state.spec.created_at


# The public API: refusals, as statuses (google.rpc.Code numbers are gRPC's status codes).

_KIND_TO_CODE = {
    ErrorKind.INVALID: code_pb2.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorKind.CONFLICT: code_pb2.ALREADY_EXISTS,
    ErrorKind.PRECONDITION: code_pb2.FAILED_PRECONDITION,
    ErrorKind.DUPLICATE: code_pb2.ALREADY_EXISTS,
    ErrorKind.STALE: code_pb2.FAILED_PRECONDITION,
}


def invalid_status(violations: Sequence[FieldViolation]) -> status_pb2.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest detail naming every bad field."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in violations
            ]
        )
    )
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=f"invalid request: {summary}", details=[detail]
    )


def domain_code(error: DomainError) -> int:
    """The status code (a google.rpc.Code number) a refused command answers with."""
    if isinstance(error, VersionMismatch):
        return int(code_pb2.ABORTED)
    return int(_KIND_TO_CODE[error.kind])


def domain_status(error: DomainError) -> status_pb2.Status:
    return status_pb2.Status(code=domain_code(error), message=error.message)


# The public API: requests in, every bad field named.


class _Violations:
    """Collects conversion problems so one response names every bad field."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))


def _duration(value: object, field: str, problems: _Violations) -> timedelta | None:
    delta = from_duration(value)  # type: ignore[arg-type]
    if delta < timedelta(0):
        problems.add(field, "must not be negative")
        return None
    return delta


def _retry_policy(policy: api.RetryPolicy, problems: _Violations) -> RetryPolicy:
    default = DEFAULT_RETRY_POLICY
    field = "service_call.retry_policy"

    def duration_or(name: str, fallback: timedelta) -> timedelta:
        # A field the client set is kept as given (0 s included), so validation can refuse it;
        # only an unset one takes the default.
        if not policy.HasField(name):  # type: ignore[arg-type]
            return fallback
        value = _duration(getattr(policy, name), f"{field}.{name}", problems)
        return fallback if value is None else value

    max_retry_duration = default.max_retry_duration
    if policy.HasField("max_retry_duration"):
        max_retry_duration = _duration(
            policy.max_retry_duration, f"{field}.max_retry_duration", problems
        )
    return RetryPolicy(
        max_attempts=policy.max_attempts or default.max_attempts,
        max_retry_duration=max_retry_duration,
        min_backoff=duration_or("min_backoff", default.min_backoff),
        max_backoff=duration_or("max_backoff", default.max_backoff),
        multiplier=policy.multiplier if policy.HasField("multiplier") else default.multiplier,
        jitter=policy.jitter if policy.HasField("jitter") else default.jitter,
        retryable_status_codes=(
            default.retryable_status_codes | frozenset(policy.retryable_status_codes)
        ),
    )


def submission_from_proto(
    tenant_id: str,
    service_call: api.ServiceCall | None,
    delay: duration_pb2.Duration | None,
    header_key: str | None,
) -> Submission | list[FieldViolation]:
    """One call to submit, from the fields a SubmitServiceCallRequest and a batch item share
    (`None`: the field is unset). Field paths are relative to that message."""
    problems = _Violations()
    call = api.ServiceCall() if service_call is None else service_call
    if service_call is None:
        problems.add("service_call", "is required")
    if not call.HasField("request"):
        problems.add("service_call.request", "is required")
    http = call.request
    method = METHOD_FROM_PROTO.get(http.http_method or api.POST)
    if method is None:
        problems.add("service_call.request.http_method", "is not a supported method")
    timeout = DEFAULT_ATTEMPT_TIMEOUT
    if http.HasField("attempt_timeout"):
        given = _duration(http.attempt_timeout, "service_call.request.attempt_timeout", problems)
        timeout = DEFAULT_ATTEMPT_TIMEOUT if given is None else given
    due: datetime | timedelta | None = None
    if call.HasField("schedule_time") and delay is not None:
        problems.add("delay", "give either service_call.schedule_time or delay, not both")
    elif call.HasField("schedule_time"):
        due = from_timestamp(call.schedule_time)
    elif delay is not None:
        due = _duration(delay, "delay", problems)
    key = call.idempotency_key or header_key or None
    if call.idempotency_key and header_key and call.idempotency_key != header_key:
        problems.add("service_call.idempotency_key", "differs from the Idempotency-Key header")
    policy = _retry_policy(call.retry_policy, problems)
    max_lateness = None
    if call.HasField("max_lateness"):
        max_lateness = _duration(call.max_lateness, "service_call.max_lateness", problems)
    if problems.items:
        return problems.items
    return Submission(
        tenant_id=tenant_id,
        request=HttpRequest(
            method=method or "POST",
            url=http.url,
            headers=tuple(sorted(http.headers.items())),
            body=http.body,
            attempt_timeout=timeout,
        ),
        tags=frozenset(call.tags),
        idempotency_key=key,
        retry_policy=policy,
        due=due,
        # Empty is proto3's "unset": no callback.
        callback_url=call.callback_url or None,
        failure_callback_url=call.failure_callback_url or None,
        max_lateness=max_lateness,
        response_rules=_response_rules(call),
        # Empty is "unset": the `default` queue, named or not, is one queue (and one
        # fingerprint). Validated by the use case (Orchestrator.submit).
        queue_id=None if call.queue in ("", DEFAULT_QUEUE_ID) else call.queue,
        ordering_key=call.ordering_key or None,
    )


def _submission_of(
    tenant_id: str,
    message: svc.SubmitServiceCallRequest | svc.BatchSubmitServiceCallsRequest.Item,
    header_key: str | None,
) -> Submission | list[FieldViolation]:
    return submission_from_proto(
        tenant_id,
        message.service_call if message.HasField("service_call") else None,
        message.delay if message.HasField("delay") else None,
        header_key,
    )


def submission_of_request(
    request: svc.SubmitServiceCallRequest, header_key: str | None
) -> Submission | list[FieldViolation]:
    """The call a SubmitServiceCallRequest asks for (`header_key`: the Idempotency-Key)."""
    return _submission_of(request.tenant_id, request, header_key)


def submission_of_item(
    tenant_id: str, item: svc.BatchSubmitServiceCallsRequest.Item
) -> Submission | list[FieldViolation]:
    # Each item carries its own idempotency key; the header names one call, not many.
    return _submission_of(tenant_id, item, header_key=None)


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A ListServiceCallsRequest as the store is asked it; `filter_key` is what a page token
    is bound to (the same filter and order, whatever the page)."""

    query: ListQuery
    filter_key: str


def list_request_from_proto(
    request: svc.ListServiceCallsRequest,
) -> tuple[ListRequest, list[FieldViolation]]:
    """The query (without its page token's cursor) and every problem with the request."""
    problems = _Violations()
    problems.items.extend(validate_tenant_id(request.tenant_id))
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        problems.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    order_field, _, direction = request.order_by.strip().partition(" ")
    order_by: OrderBy = "create_time"
    if order_field in ("", "create_time"):
        order_by = "create_time"
    elif order_field == "schedule_time":
        order_by = "schedule_time"
    else:
        problems.add("order_by", "must be create_time or schedule_time, optionally + ' desc'")
    if direction.strip() not in ("", "asc", "desc"):
        problems.add("order_by", "direction must be asc or desc")
    statuses = frozenset(STATUS_FROM_PROTO[s] for s in request.states if s in STATUS_FROM_PROTO)
    if len(statuses) != len(set(request.states)):
        problems.add("states", "contains an unknown state")
    # A tag that could never be stored can never match; say so rather than pass it to SQL.
    for violation in validate_tags(request.tags):
        problems.add("tags", violation.description)

    def ts(name: str) -> datetime | None:
        return from_timestamp(getattr(request, name)) if request.HasField(name) else None  # type: ignore[arg-type]

    query = ListQuery(
        tenant_id=request.tenant_id,
        page_size=request.page_size or DEFAULT_PAGE_SIZE,
        statuses=statuses,
        tags=frozenset(request.tags),
        created_from=ts("create_time_start"),
        created_before=ts("create_time_end"),
        due_from=ts("schedule_time_start"),
        due_before=ts("schedule_time_end"),
        order_by=order_by,
        descending=direction.strip() == "desc",
        full=request.view == svc.FULL,
    )
    filter_key = repr(
        (
            query.tenant_id,
            sorted(s.value for s in statuses),
            sorted(query.tags),
            query.created_from,
            query.created_before,
            query.due_from,
            query.due_before,
            order_by,
            query.descending,
        )
    )
    return ListRequest(query, filter_key), problems.items


def list_response(
    items: Iterable[ServiceCallState], view: svc.ServiceCallView.ValueType, next_page_token: str
) -> svc.ListServiceCallsResponse:
    return svc.ListServiceCallsResponse(
        service_calls=[service_call_to_proto(s, view) for s in items],
        next_page_token=next_page_token,
    )


@dataclass(frozen=True, slots=True)
class Reschedule:
    due: datetime | timedelta
    expected_version: int | None  # None: no etag given


def reschedule_from_proto(
    request: svc.RescheduleServiceCallRequest,
) -> Reschedule | list[FieldViolation]:
    problems = _Violations()
    due: datetime | timedelta | None = None
    if request.HasField("schedule_time") == request.HasField("delay"):
        problems.add("schedule_time", "give exactly one of schedule_time and delay")
    elif request.HasField("schedule_time"):
        due = from_timestamp(request.schedule_time)
    else:
        due = _duration(request.delay, "delay", problems)
    expected = None
    if request.etag:
        expected = version_from_etag(request.etag)
        if expected is None:
            problems.add("etag", "is not an etag this API issued")
    if problems.items or due is None:
        return problems.items
    return Reschedule(due, expected)


def replay_from_proto(
    request: svc.ReplayServiceCallRequest, header_key: str | None
) -> Replay | list[FieldViolation]:
    """The replay a ReplayServiceCallRequest asks for (`header_key`: the Idempotency-Key,
    read as on submit). The ids are checked by the entry point, as for every call's RPC."""
    problems = _Violations()
    due: datetime | timedelta | None = None
    if request.HasField("schedule_time") and request.HasField("delay"):
        problems.add("delay", "give either schedule_time or delay, not both")
    elif request.HasField("schedule_time"):
        due = from_timestamp(request.schedule_time)
    elif request.HasField("delay"):
        due = _duration(request.delay, "delay", problems)
    key = request.idempotency_key or header_key or None
    if request.idempotency_key and header_key and request.idempotency_key != header_key:
        problems.add("idempotency_key", "differs from the Idempotency-Key header")
    if problems.items:
        return problems.items
    return Replay(
        tenant_id=request.tenant_id,
        service_call_id=request.service_call_id,
        idempotency_key=key,
        due=due,
    )


BatchResult = svc.BatchSubmitServiceCallsResponse.Result


def batch_result(index: int, outcome: Accepted | Invalid | DomainError) -> BatchResult:
    """A batch item's answer: what SubmitServiceCall would have answered, as a value. The call
    is in the BASIC view (no request body) so that 1,000 answers stay small; field paths are
    prefixed with the item's place in the request."""
    if isinstance(outcome, Accepted):
        return BatchResult(
            service_call=service_call_to_proto(outcome.state, svc.BASIC), created=outcome.created
        )
    if isinstance(outcome, Invalid):
        return BatchResult(error=invalid_status(item_violations(index, outcome.violations)))
    return BatchResult(error=domain_status(outcome))


def item_violations(index: int, violations: Iterable[FieldViolation]) -> list[FieldViolation]:
    return [FieldViolation(f"items[{index}].{v.field}", v.description) for v in violations]


def failed_result(transient: bool) -> BatchResult:
    """An item whose submit raised: UNAVAILABLE (retry it) for an outage of Postgres or Kafka
    (`transient`), INTERNAL otherwise; the other items keep their own answers."""
    if transient:
        status = status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message=UNAVAILABLE_MESSAGE,
        )
    else:
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    return BatchResult(error=status)


# Kafka: facts in, envelopes out.

PURPOSE_TO_PROTO = {
    TimerPurpose.HANDOFF: pb.TIMER_PURPOSE_HANDOFF,
    TimerPurpose.DISPATCH_LEASE: pb.TIMER_PURPOSE_DISPATCH_LEASE,
    TimerPurpose.ATTEMPT_DEADLINE: pb.TIMER_PURPOSE_ATTEMPT_DEADLINE,
}
PURPOSE_FROM_PROTO = {v: k for k, v in PURPOSE_TO_PROTO.items()}

# Timers the orchestrator keeps itself (orchestrator/service_layer/watchdog.py sweeps the
# calls' `watchdog_at` column), so their TimerRequested never reaches the scheduler. Nearly every
# lease and deadline ends stale (the call moved on first), yet through the scheduler each
# cost an arm, a claim, two Kafka hops and an orchestrator transaction: the load that made
# the hand-offs late on 2 cores. They need no precision; a sweep once a second is enough.
# Only the hand-off, whose timing is the product, stays a durable scheduler timer.
KEPT_BY_ORCHESTRATOR = frozenset({TimerPurpose.DISPATCH_LEASE, TimerPurpose.ATTEMPT_DEADLINE})

_TERMINAL_STATE = {
    Status.SUCCEEDED: api.ServiceCall.SUCCEEDED,
    Status.FAILED: api.ServiceCall.FAILED,
    Status.CANCELED: api.ServiceCall.CANCELED,
}


def outbox_messages(
    before: ServiceCallState | None,
    after: ServiceCallState,
    events: Sequence[ev.Event],
    correlation_id: str,
    topics: Topics,
    max_snippet_bytes: int,
) -> tuple[OutgoingMessage, ...]:
    """One envelope per event that another service acts on or observers care about.

    Event ids are derived from (call, version, index) rather than drawn at random, so the
    same decision always yields the same ids and a consumer's inbox recognises repeats.
    """
    spec = after.spec
    key = call_key(spec.tenant_id, spec.service_call_id)
    base_version = 0 if before is None else before.version
    out: list[OutgoingMessage] = []

    def emit(topic: str, index: int, at: datetime, **payload: object) -> None:
        sequence = base_version + index + 1
        envelope = pb.Envelope(
            event_id=f"{spec.service_call_id}/{sequence}/{len(out)}",
            tenant_id=spec.tenant_id,
            service_call_id=spec.service_call_id,
            correlation_id=correlation_id,
            occurred_at=to_timestamp(at),
            sequence=sequence,
            **payload,  # type: ignore[arg-type]
        )
        out.append(OutgoingMessage(topic, key, envelope.SerializeToString()))

    for index, event in enumerate(events):
        match event:
            case ev.Submitted():
                emit(
                    topics.call_events,
                    index,
                    event.at,
                    submitted=pb.ServiceCallSubmitted(
                        due_time=to_timestamp(event.due_at), tags=sorted(spec.tags)
                    ),
                )
            case ev.TimerRequested() if event.purpose in KEPT_BY_ORCHESTRATOR:
                pass  # the store's watchdog_at column is this timer
            case ev.TimerRequested():
                emit(
                    topics.timer_requests,
                    index,
                    event.at,
                    timer_requested=pb.TimerRequested(
                        purpose=PURPOSE_TO_PROTO[event.purpose],
                        attempt=event.attempt,
                        fire_time=to_timestamp(event.fire_at),
                    ),
                )
            case ev.ExecutionRequested():
                clear, sealed = split_sealed(spec.request.headers)
                emit(
                    topics.execution_requests,
                    index,
                    event.at,
                    execution_requested=pb.ExecutionRequested(
                        attempt=event.attempt,
                        not_before=to_timestamp(event.not_before),
                        lease_expire_time=to_timestamp(event.lease_expires_at),
                        request=request_to_proto(replace(spec.request, headers=clear)),
                        sealed_headers=sealed,
                        # One key per call, so a retry of the same call is recognisable too.
                        idempotency_key=spec.service_call_id,
                        max_response_snippet_bytes=max_snippet_bytes,
                        # From the due time, not a queue's later send time (decide's bound).
                        send_deadline=_send_deadline(
                            after.due_at if isinstance(after, Dispatched) else event.not_before,
                            spec.max_lateness,
                        ),
                        success_statuses=_success_statuses(spec.response_rules),
                    ),
                )
            case ev.Canceled():
                emit(
                    topics.call_events,
                    index,
                    event.at,
                    canceled=pb.ServiceCallCanceled(reason=event.reason),
                )
            case ev.Rescheduled():
                emit(
                    topics.call_events,
                    index,
                    event.at,
                    rescheduled=pb.ServiceCallRescheduled(due_time=to_timestamp(event.due_at)),
                )
            case ev.Abandoned() | ev.TooLate():
                pass  # the terminal summary below says it
            case ev.Held():
                pass  # the queue's own affair: the state shows it (held_reason)
            case ev.ExecutionStarted() | ev.ExecutionSucceeded() | ev.ExecutionFailed():
                pass  # the executor already announced these; the terminal summary follows
    status = status_of(after)
    if status in _TERMINAL_STATE and (before is None or status_of(before) != status):
        reason = getattr(after, "reason", "")
        emit(
            topics.call_events,
            len(events) - 1,
            events[-1].at,
            completed=pb.ServiceCallCompleted(
                state=_TERMINAL_STATE[status],
                reason=reason,
                attempt_count=len(after.attempts),
                asks_callbacks=bool(callbacks_for(after)),
            ),
        )
    return tuple(out)


def _send_deadline(
    not_before: datetime, max_lateness: timedelta | None
) -> timestamp_pb2.Timestamp | None:
    """The last moment the executor may send: the attempt's due time plus max_lateness."""
    return None if max_lateness is None else to_timestamp(not_before + max_lateness)


def _success_statuses(rules: ResponseRules | None) -> list[api.StatusRange]:
    """What the executor counts as success; empty: its default, 200-299."""
    return [] if rules is None else _ranges_to_proto(rules.success_statuses)


def split_sealed(
    headers: tuple[tuple[str, str], ...],
) -> tuple[tuple[tuple[str, str], ...], dict[str, bytes]]:
    """(clear headers, sealed headers by name) for the execution request.

    Never raises: this runs while the orchestrator applies a fact, where an exception would
    hold up the consumer's partition for every tenant.
    """
    clear: list[tuple[str, str]] = []
    sealed: dict[str, bytes] = {}
    for name, value in headers:
        # A secret-named header not sealed at submit (its name became secret after the
        # call was stored) holds the client's clear value: it is sent as it was before.
        opened = sealed_bytes(value, SEALED_PREFIX) if is_secret_header(name) else None
        if opened is None:
            clear.append((name, value))
        else:
            sealed[name] = opened
    return tuple(clear), sealed


def decode_call_event(message: ReceivedMessage) -> IncomingFact | None:
    """The fact an envelope on the timer or execution events topic reports; None for the
    payloads the orchestrator ignores. Raises for a message no retry can make readable (it
    does not decode, or names a timer purpose this version does not know): the consumer
    parks it at once (mesh.kafka.decoding)."""
    envelope = pb.Envelope.FromString(message.value)
    command = command_from_envelope(envelope)
    if command is None:
        return None
    return IncomingFact(
        tenant_id=envelope.tenant_id,
        service_call_id=envelope.service_call_id,
        event_id=envelope.event_id,
        correlation_id=envelope.correlation_id,
        command=command,
        payload=envelope.WhichOneof("payload") or "",
    )


def decode_completion(message: ReceivedMessage) -> Completion | None:
    """The ending a `completed` envelope on the call events topic reports; None for the
    topic's other payloads. Raises for a message that does not decode (parked at once)."""
    envelope = pb.Envelope.FromString(message.value)
    # Most calls ask for no callback: their summaries are passed over without reading the
    # call (one primary-key read per finished call saved).
    if envelope.WhichOneof("payload") != "completed" or not envelope.completed.asks_callbacks:
        return None
    return Completion(
        tenant_id=envelope.tenant_id,
        service_call_id=envelope.service_call_id,
        event_id=envelope.event_id,
        correlation_id=envelope.correlation_id,
    )


def command_from_envelope(envelope: pb.Envelope) -> Command | None:
    """The core command an incoming fact asks for; None for messages the orchestrator ignores."""
    match envelope.WhichOneof("payload"):
        case "due_time_reached":
            fired = envelope.due_time_reached
            purpose = PURPOSE_FROM_PROTO.get(fired.purpose)
            if purpose is None:
                raise UnreadableMessageError(f"unknown timer purpose {fired.purpose}")
            return FireTimer(
                purpose=purpose,
                attempt=fired.attempt,
                fire_at=from_timestamp(fired.fire_time),
            )
        case "execution_started":
            started = envelope.execution_started
            return RecordExecutionStarted(
                attempt=started.attempt, started_at=from_timestamp(started.start_time)
            )
        case "execution_succeeded":
            succeeded = envelope.execution_succeeded
            return RecordExecutionSucceeded(
                attempt=succeeded.attempt, result=_result(succeeded.result, False, None)
            )
        case "execution_failed":
            failed = envelope.execution_failed
            retry_after = (
                from_duration(failed.retry_after) if failed.HasField("retry_after") else None
            )
            return RecordExecutionFailed(
                attempt=failed.attempt, result=_result(failed.result, failed.retryable, retry_after)
            )
        case _:
            return None


def _result(
    result: pb.AttemptResult, retryable: bool, retry_after: timedelta | None
) -> ExecutionResult:
    return ExecutionResult(
        response_status=result.response_status or None,
        response_snippet=result.response_snippet,
        error=result.error,
        retryable=retryable,
        retry_after=retry_after,
        ended_at=from_timestamp(result.end_time),
        started_at=(
            from_timestamp(result.end_time) - from_duration(result.duration)
            if result.HasField("duration")
            else None
        ),
    )


# ---------------------------------------------------------------------------------------------
# Schedules (#17, ScheduleService): requests to drafts, schedules out, refusals to codes.
# ---------------------------------------------------------------------------------------------

_POLICY_TO_PROTO = {
    MissedOccurrencePolicy.FIRE_LATEST: sched.Schedule.FIRE_LATEST,
    MissedOccurrencePolicy.FIRE_ALL: sched.Schedule.FIRE_ALL,
    MissedOccurrencePolicy.SKIP: sched.Schedule.SKIP,
}
_POLICY_FROM_PROTO = {
    sched.Schedule.MISSED_OCCURRENCE_POLICY_UNSPECIFIED: MissedOccurrencePolicy.FIRE_LATEST,
    **{v: k for k, v in _POLICY_TO_PROTO.items()},
}
_SCHEDULE_STATE_TO_PROTO = {
    ScheduleState.ACTIVE: sched.Schedule.ACTIVE,
    ScheduleState.PAUSED: sched.Schedule.PAUSED,
    ScheduleState.ENDED: sched.Schedule.ENDED,
}


def schedule_name(tenant_id: str, schedule_id: str) -> str:
    return f"tenants/{tenant_id}/schedules/{schedule_id}"


def schedule_etag(schedule: Schedule) -> str:
    return f'W/"{schedule.version}"'


def schedule_to_proto(schedule: Schedule) -> sched.Schedule:
    """The schedule as the API shows it: its template's secret header values redacted, as a
    call's are."""
    recurrence, template = schedule.recurrence, schedule.template
    call = api.ServiceCall(
        request=request_to_proto(template.request, redact=True),
        tags=sorted(template.tags),
        retry_policy=retry_policy_to_proto(template.retry_policy),
        callback_url=template.callback_url or "",
        failure_callback_url=template.failure_callback_url or "",
        # As a call shows it: `default` when the template names none.
        queue=template.queue_id or DEFAULT_QUEUE_ID,
        ordering_key=template.ordering_key or "",
    )
    if template.max_lateness is not None:
        call.max_lateness.CopyFrom(to_duration(template.max_lateness))
    if template.response_rules is not None:
        call.response_rules.CopyFrom(response_rules_to_proto(template.response_rules))
    out = sched.Schedule(
        name=schedule_name(schedule.tenant_id, schedule.schedule_id),
        tenant_id=schedule.tenant_id,
        schedule_id=schedule.schedule_id,
        cron=recurrence.cron,
        time_zone=recurrence.time_zone,
        call_template=call,
        missed_occurrence_policy=_POLICY_TO_PROTO[schedule.missed_policy],
        description=schedule.description,
        state=_SCHEDULE_STATE_TO_PROTO[schedule.state],
        create_time=to_timestamp(schedule.created_at),
        update_time=to_timestamp(schedule.updated_at),
        etag=schedule_etag(schedule),
    )
    for field, value in (
        ("start_time", recurrence.start_at),
        ("end_time", recurrence.end_at),
        ("next_occurrence_time", schedule.next_occurrence_at),
        ("last_occurrence_time", schedule.last_occurrence_at),
    ):
        if value is not None:
            getattr(out, field).CopyFrom(to_timestamp(value))
    return out


def schedule_draft_from_proto(
    tenant_id: str, schedule: sched.Schedule | None, fields: frozenset[str] = SCHEDULE_FIELDS
) -> ScheduleDraft | list[FieldViolation]:
    """The definition a CreateSchedule or UpdateSchedule request gives, reading only `fields`
    (an update's mask; all of them on create). The call template is read as a submit's call
    (`submission_from_proto`, field paths under `schedule.call_template`); its schedule time
    and idempotency key are not the template's to set, and are ignored."""
    if schedule is None:
        return [FieldViolation("schedule", "is required")]
    problems = _Violations()
    template: Submission | None = None
    if "call_template" in fields and schedule.HasField("call_template"):
        call = api.ServiceCall()
        call.CopyFrom(schedule.call_template)
        call.ClearField("schedule_time")
        call.ClearField("idempotency_key")
        given = submission_from_proto(tenant_id, call, None, None)
        if isinstance(given, list):
            for v in given:
                problems.add(template_field(v.field), v.description)
        else:
            template = given
    policy = _POLICY_FROM_PROTO.get(schedule.missed_occurrence_policy)
    if policy is None and "missed_occurrence_policy" in fields:
        problems.add("schedule.missed_occurrence_policy", "is not a known policy")

    def ts(name: str) -> datetime | None:
        return from_timestamp(getattr(schedule, name)) if schedule.HasField(name) else None  # type: ignore[arg-type]

    if problems.items:
        return problems.items
    return ScheduleDraft(
        tenant_id=tenant_id,
        schedule_id=schedule.schedule_id,
        cron=schedule.cron.strip(),
        time_zone=schedule.time_zone,
        start_at=ts("start_time"),
        end_at=ts("end_time"),
        template=template,
        missed_policy=policy or MissedOccurrencePolicy.FIRE_LATEST,
        description=schedule.description,
    )


def schedule_fields_from_mask(paths: Sequence[str]) -> frozenset[str] | list[FieldViolation]:
    """The fields an UpdateSchedule's mask names (all of them when it names none)."""
    if not paths:
        return SCHEDULE_FIELDS
    unknown = sorted(set(paths) - SCHEDULE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(SCHEDULE_FIELDS))
        return [
            FieldViolation("update_mask", f"{path!r} is not a field to update (any of {allowed})")
            for path in unknown
        ]
    return frozenset(paths)


def schedule_refusal_code(refusal: ScheduleRefusal) -> int:
    """The status code (a google.rpc.Code number) a refused schedule change answers with."""
    match refusal:
        case ScheduleNotFound():
            return int(code_pb2.NOT_FOUND)
        case ScheduleExists():
            return int(code_pb2.ALREADY_EXISTS)
        case ScheduleVersionMismatch():
            return int(code_pb2.ABORTED)
        case ScheduleEnded():
            return int(code_pb2.FAILED_PRECONDITION)


# ---------------------------------------------------------------------------------------------
# Queues (#18, QueueService): requests to drafts, queues out, refusals to codes.
# ---------------------------------------------------------------------------------------------

_ORDERING_TO_PROTO = {
    OrderingFailurePolicy.BLOCK: queue_pb.Queue.BLOCK,
    OrderingFailurePolicy.SKIP: queue_pb.Queue.SKIP,
}
_ORDERING_FROM_PROTO = {
    queue_pb.Queue.ORDERING_FAILURE_POLICY_UNSPECIFIED: OrderingFailurePolicy.BLOCK,
    **{v: k for k, v in _ORDERING_TO_PROTO.items()},
}
_QUEUE_STATE_TO_PROTO = {
    QueueState.RUNNING: queue_pb.Queue.RUNNING,
    QueueState.PAUSED: queue_pb.Queue.PAUSED,
}


def queue_name(tenant_id: str, queue_id: str) -> str:
    return f"tenants/{tenant_id}/queues/{queue_id}"


def queue_etag(queue: Queue) -> str:
    return f'W/"{queue.version}"'


def queue_to_proto(queue: Queue) -> queue_pb.Queue:
    out = queue_pb.Queue(
        name=queue_name(queue.tenant_id, queue.queue_id),
        tenant_id=queue.tenant_id,
        queue_id=queue.queue_id,
        max_dispatches_per_second=queue.max_dispatches_per_second,
        max_burst_size=queue.max_burst_size,
        max_concurrent_dispatches=queue.max_concurrent_dispatches,
        ordering_failure_policy=_ORDERING_TO_PROTO[queue.ordering_failure_policy],
        state=_QUEUE_STATE_TO_PROTO[queue.state],
        etag=queue_etag(queue),
    )
    if queue.created_at is not None:
        out.create_time.CopyFrom(to_timestamp(queue.created_at))
    if queue.updated_at is not None:
        out.update_time.CopyFrom(to_timestamp(queue.updated_at))
    return out


def queue_draft_from_proto(
    tenant_id: str, queue: queue_pb.Queue | None, queue_id: str | None = None
) -> Queue | list[FieldViolation]:
    """The settings a CreateQueue or UpdateQueue request gives (output-only fields ignored);
    `queue_id` is the update's, which the body's must be empty or equal to."""
    if queue is None:
        return [FieldViolation("queue", "is required")]
    problems = _Violations()
    if queue_id is not None and queue.queue_id not in ("", queue_id):
        problems.add("queue.queue_id", "differs from the request's queue_id")
    if queue_id is None and not queue.queue_id:
        problems.add("queue.queue_id", "is required")
    policy = _ORDERING_FROM_PROTO.get(queue.ordering_failure_policy)
    if policy is None:
        problems.add("queue.ordering_failure_policy", "is not a known policy")
    if problems.items:
        return problems.items
    return Queue(
        tenant_id=tenant_id,
        queue_id=queue_id if queue_id is not None else queue.queue_id,
        max_dispatches_per_second=queue.max_dispatches_per_second,
        max_burst_size=queue.max_burst_size,
        max_concurrent_dispatches=queue.max_concurrent_dispatches,
        ordering_failure_policy=policy or OrderingFailurePolicy.BLOCK,
    )


def queue_fields_from_mask(paths: Sequence[str]) -> frozenset[str] | list[FieldViolation]:
    """The fields an UpdateQueue's mask names (all of them when it names none)."""
    if not paths:
        return QUEUE_FIELDS
    unknown = sorted(set(paths) - QUEUE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(QUEUE_FIELDS))
        return [
            FieldViolation("update_mask", f"{path!r} is not a field to update (any of {allowed})")
            for path in unknown
        ]
    return frozenset(paths)


def queue_refusal_code(refusal: QueueRefusal) -> int:
    """The status code (a google.rpc.Code number) a refused queue change answers with."""
    match refusal:
        case QueueNotFound():
            return int(code_pb2.NOT_FOUND)
        case QueueExists():
            return int(code_pb2.ALREADY_EXISTS)
        case QueueVersionMismatch():
            return int(code_pb2.ABORTED)
        case QueueNotEmpty():
            return int(code_pb2.FAILED_PRECONDITION)
