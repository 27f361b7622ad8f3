"""The public ServiceCallService over gRPC (and JSON through Envoy's transcoder)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from mesh.errors import UNAVAILABLE_MESSAGE, is_transient
from mesh.logs import get_logger
from mesh.ports import IdGen
from mesh.timeconv import from_duration, from_timestamp
from orchestrator.auth import Authenticator, key_from_metadata
from orchestrator.domain.errors import DomainError, ErrorKind, VersionMismatch
from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest, RetryPolicy
from orchestrator.domain.states import ServiceCallState
from orchestrator.domain.validation import FieldViolation, validate_tags, validate_tenant_id
from orchestrator.mapping import (
    METHOD_FROM_PROTO,
    STATE_CLASSES,
    STATUS_FROM_PROTO,
    service_call_to_proto,
    version_from_etag,
)
from orchestrator.page_tokens import BadPageTokenError, PageTokens
from orchestrator.ports import ListQuery, OrderBy
from orchestrator.service import Accepted, Invalid, Orchestrator, Submission
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc

log = get_logger(__name__)

DEFAULT_ATTEMPT_TIMEOUT = timedelta(seconds=30)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Calls per BatchSubmitServiceCalls request (gateway/openapi.yaml says the same).
MAX_BATCH_ITEMS = 1000

_KIND_TO_CODE = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.DUPLICATE: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.STALE: grpc.StatusCode.FAILED_PRECONDITION,
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


def _domain_code(error: DomainError) -> grpc.StatusCode:
    return (
        grpc.StatusCode.ABORTED if isinstance(error, VersionMismatch) else _KIND_TO_CODE[error.kind]
    )


def domain_status(error: DomainError) -> status_pb2.Status:
    return status_pb2.Status(code=_code_number(_domain_code(error)), message=error.message)


def _code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


async def _abort_invalid(
    context: grpc.aio.ServicerContext[object, object], violations: Sequence[FieldViolation]
) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(invalid_status(violations)))
    raise AssertionError("unreachable")


async def _abort_domain(
    context: grpc.aio.ServicerContext[object, object], error: DomainError
) -> NoReturn:
    await context.abort(_domain_code(error), error.message)
    raise AssertionError("unreachable")


def _metadata(context: grpc.aio.ServicerContext[object, object]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else value.decode()
        for key, value in context.invocation_metadata() or ()
    }


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


def failed_result(error: Exception) -> BatchResult:
    """An item whose submit raised: UNAVAILABLE (retry it) for an outage of Postgres or Kafka,
    INTERNAL otherwise; the other items keep their own answers."""
    if is_transient(error):
        status = status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message=UNAVAILABLE_MESSAGE,
        )
    else:
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    return BatchResult(error=status)


def same_key_runs(submissions: dict[int, Submission]) -> list[list[int]]:
    """The items' indexes, in runs that may be submitted concurrently with each other: items
    sharing an idempotency key (one call id) form one run, in request order, so that the first
    creates the call and later ones answer as they would after it (same request: not created;
    different: ALREADY_EXISTS) instead of whichever wins a race. Items without a key stand alone."""
    runs: list[list[int]] = []
    by_key: dict[str, list[int]] = {}
    for index, submission in submissions.items():
        key = submission.idempotency_key
        if key is None:
            runs.append([index])
        elif key in by_key:
            by_key[key].append(index)
        else:
            by_key[key] = [index]
            runs.append(by_key[key])
    return runs


def _tenant_not_found(tenant_id: str) -> str:
    return f"tenant {tenant_id} not found"


def _check_ids(tenant_id: str, service_call_id: str) -> list[FieldViolation]:
    problems = list(validate_tenant_id(tenant_id))
    try:
        uuid.UUID(service_call_id)
    except ValueError:
        problems.append(FieldViolation("service_call_id", "must be a UUID"))
    return problems


class ServiceCallApi(svc_grpc.ServiceCallServiceServicer):
    def __init__(
        self,
        orchestrator: Orchestrator,
        ids: IdGen,
        page_tokens: PageTokens,
        authenticator: Authenticator,
    ) -> None:
        self._orchestrator = orchestrator
        self._ids = ids
        self._page_tokens = page_tokens
        self._auth = authenticator

    async def _authorize(
        self, context: grpc.aio.ServicerContext[object, object], tenant_id: str, not_found: str
    ) -> None:
        """Every RPC runs as the tenant its API key belongs to. Another tenant's resources
        answer exactly like missing ones (`not_found`), so nothing tells them apart."""
        caller = await self._auth.tenant_for(key_from_metadata(_metadata(context)))
        if caller is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid API key is required: 'Authorization: Bearer sck_...'",
            )
        if caller != tenant_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, not_found)

    def _correlation_id(self, context: grpc.aio.ServicerContext[object, object]) -> str:
        return _metadata(context).get("x-request-id") or self._ids.new_id()

    async def SubmitServiceCall(  # noqa: N802 - gRPC method name
        self,
        request: svc.SubmitServiceCallRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> api.ServiceCall:
        await self._authorize(context, request.tenant_id, _tenant_not_found(request.tenant_id))
        submission = _submission_of(
            request.tenant_id, request, _metadata(context).get("idempotency-key")
        )
        if isinstance(submission, list):
            await _abort_invalid(context, submission)
        outcome = await self._orchestrator.submit(submission, self._correlation_id(context))
        if isinstance(outcome, Invalid):
            await _abort_invalid(context, outcome.violations)
        if not isinstance(outcome, Accepted):
            await _abort_domain(context, outcome)
        spec = outcome.state.spec
        await context.send_initial_metadata(
            (
                ("location", f"/v1/tenants/{spec.tenant_id}/service-calls/{spec.service_call_id}"),
                ("x-http-code", "201" if outcome.created else "200"),
            )
        )
        return service_call_to_proto(outcome.state, svc.FULL)

    async def BatchSubmitServiceCalls(  # noqa: N802
        self,
        request: svc.BatchSubmitServiceCallsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> svc.BatchSubmitServiceCallsResponse:
        tenant_id = request.tenant_id
        await self._authorize(context, tenant_id, _tenant_not_found(tenant_id))
        problems = list(validate_tenant_id(tenant_id))
        if not request.items:
            problems.append(FieldViolation("items", "give at least one call"))
        elif len(request.items) > MAX_BATCH_ITEMS:
            problems.append(
                FieldViolation(
                    "items",
                    f"at most {MAX_BATCH_ITEMS} calls per request, got {len(request.items)}",
                )
            )
        if problems:
            await _abort_invalid(context, problems)
        correlation_id = self._correlation_id(context)
        results: list[BatchResult | None] = [None] * len(request.items)
        submissions: dict[int, Submission] = {}
        for index, item in enumerate(request.items):
            # Each item carries its own idempotency key; the header names one call, not many.
            submission = _submission_of(tenant_id, item, header_key=None)
            if isinstance(submission, list):
                results[index] = BatchResult(
                    error=invalid_status(item_violations(index, submission))
                )
            else:
                submissions[index] = submission

        async def submit_run(indexes: list[int]) -> None:
            for index in indexes:
                try:
                    outcome = await self._orchestrator.submit(submissions[index], correlation_id)
                except Exception as e:  # one item's failure is that item's answer only
                    if is_transient(e):
                        log.warning("batch item failed: a dependency is unavailable", item=index)
                    else:
                        log.exception("batch item failed", tenant_id=tenant_id, item=index)
                    results[index] = failed_result(e)
                else:
                    results[index] = batch_result(index, outcome)

        # Concurrent submits, so that the store can write them together.
        await asyncio.gather(*(submit_run(run) for run in same_key_runs(submissions)))
        answered = [r for r in results if r is not None]
        assert len(answered) == len(results)
        return svc.BatchSubmitServiceCallsResponse(results=answered)

    async def GetServiceCall(  # noqa: N802
        self, request: svc.GetServiceCallRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> api.ServiceCall:
        state = await self._existing(request.tenant_id, request.service_call_id, context)
        return service_call_to_proto(state, request.view)

    async def ListServiceCalls(  # noqa: N802
        self,
        request: svc.ListServiceCallsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> svc.ListServiceCallsResponse:
        await self._authorize(context, request.tenant_id, _tenant_not_found(request.tenant_id))
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
        if request.page_token:
            try:
                cursor = self._page_tokens.read(request.page_token, filter_key)
                query = replace(query, after=cursor)
            except BadPageTokenError as e:
                problems.add("page_token", str(e))
        if problems.items:
            await _abort_invalid(context, problems.items)
        page = await self._orchestrator.list(query)
        return svc.ListServiceCallsResponse(
            service_calls=[service_call_to_proto(s, request.view) for s in page.items],
            next_page_token=(
                self._page_tokens.issue(page.next_cursor, filter_key) if page.next_cursor else ""
            ),
        )

    async def CancelServiceCall(  # noqa: N802
        self,
        request: svc.CancelServiceCallRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> api.ServiceCall:
        await self._existing(request.tenant_id, request.service_call_id, context)
        outcome = await self._orchestrator.cancel(
            request.tenant_id,
            request.service_call_id,
            request.reason or "canceled by the client",
            self._correlation_id(context),
        )
        return await self._answer(outcome, context)

    async def RescheduleServiceCall(  # noqa: N802
        self,
        request: svc.RescheduleServiceCallRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> api.ServiceCall:
        await self._existing(request.tenant_id, request.service_call_id, context)
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
            await _abort_invalid(context, problems.items)
        outcome = await self._orchestrator.reschedule(
            request.tenant_id,
            request.service_call_id,
            due,
            expected,
            self._correlation_id(context),
        )
        return await self._answer(outcome, context)

    async def RunServiceCall(  # noqa: N802
        self, request: svc.RunServiceCallRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> api.ServiceCall:
        await self._existing(request.tenant_id, request.service_call_id, context)
        outcome = await self._orchestrator.run_now(
            request.tenant_id, request.service_call_id, self._correlation_id(context)
        )
        return await self._answer(outcome, context)

    async def _existing(
        self,
        tenant_id: str,
        service_call_id: str,
        context: grpc.aio.ServicerContext[object, object],
    ) -> ServiceCallState:
        not_found = f"service call tenants/{tenant_id}/service-calls/{service_call_id} not found"
        await self._authorize(context, tenant_id, not_found)
        problems = _check_ids(tenant_id, service_call_id)
        if problems:
            await _abort_invalid(context, problems)
        state = await self._orchestrator.get(tenant_id, service_call_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, not_found)
        return state

    async def _answer(
        self,
        outcome: ServiceCallState | DomainError | Invalid,
        context: grpc.aio.ServicerContext[object, object],
    ) -> api.ServiceCall:
        if isinstance(outcome, STATE_CLASSES):
            return service_call_to_proto(outcome, svc.BASIC)
        if isinstance(outcome, Invalid):
            await _abort_invalid(context, outcome.violations)
        await _abort_domain(context, outcome)
