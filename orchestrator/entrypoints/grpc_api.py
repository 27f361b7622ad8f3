"""The public ServiceCallService over gRPC (and JSON through Envoy's transcoder): who is
calling, request to use case (through orchestrator/mapping.py) and answer back."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import NoReturn

import grpc

from mesh.errors import is_transient
from mesh.logs import get_logger
from mesh.ports import IdGen
from orchestrator.domain.errors import DomainError
from orchestrator.domain.states import ServiceCallState
from orchestrator.domain.validation import FieldViolation, validate_tenant_id
from orchestrator.entrypoints.grpc_common import (
    Context,
    abort_code,
    abort_invalid,
    authorize,
    correlation_id,
    metadata_of,
)
from orchestrator.entrypoints.page_tokens import BadPageTokenError, PageTokens
from orchestrator.mapping import (
    STATE_CLASSES,
    BatchResult,
    Reschedule,
    batch_result,
    domain_code,
    failed_result,
    invalid_status,
    item_violations,
    list_request_from_proto,
    list_response,
    replay_from_proto,
    reschedule_from_proto,
    service_call_to_proto,
    submission_of_item,
    submission_of_request,
)
from orchestrator.ports import Accepted, Invalid, Submission
from orchestrator.service_layer.auth import Authenticator
from orchestrator.service_layer.services import Orchestrator
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc

log = get_logger(__name__)

# Calls per BatchSubmitServiceCalls request (gateway/openapi.yaml says the same).
MAX_BATCH_ITEMS = 1000


async def _abort_domain(context: Context, error: DomainError) -> NoReturn:
    await abort_code(context, domain_code(error), error.message)


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

    async def _authorize(self, context: Context, tenant_id: str, not_found: str) -> None:
        await authorize(self._auth, context, tenant_id, not_found)

    def _correlation_id(self, context: Context) -> str:
        return correlation_id(context, self._ids)

    async def SubmitServiceCall(  # noqa: N802 - gRPC method name
        self,
        request: svc.SubmitServiceCallRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> api.ServiceCall:
        await self._authorize(context, request.tenant_id, _tenant_not_found(request.tenant_id))
        submission = submission_of_request(request, metadata_of(context).get("idempotency-key"))
        if isinstance(submission, list):
            await abort_invalid(context, submission)
        outcome = await self._orchestrator.submit(submission, self._correlation_id(context))
        if isinstance(outcome, Invalid):
            await abort_invalid(context, outcome.violations)
        if not isinstance(outcome, Accepted):
            await _abort_domain(context, outcome)
        return await self._created(outcome, context)

    async def _created(
        self, outcome: Accepted, context: grpc.aio.ServicerContext[object, object]
    ) -> api.ServiceCall:
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
            await abort_invalid(context, problems)
        correlation_id = self._correlation_id(context)
        results: list[BatchResult | None] = [None] * len(request.items)
        submissions: dict[int, Submission] = {}
        for index, item in enumerate(request.items):
            submission = submission_of_item(tenant_id, item)
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
                    results[index] = failed_result(is_transient(e))
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
        listing, problems = list_request_from_proto(request)
        query = listing.query
        if request.page_token:
            try:
                cursor = self._page_tokens.read(request.page_token, listing.filter_key)
                query = replace(query, after=cursor)
            except BadPageTokenError as e:
                problems.append(FieldViolation("page_token", str(e)))
        if problems:
            await abort_invalid(context, problems)
        page = await self._orchestrator.list(query)
        after = page.next_cursor
        next_token = self._page_tokens.issue(after, listing.filter_key) if after else ""
        return list_response(page.items, request.view, next_token)

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
        reschedule = reschedule_from_proto(request)
        if not isinstance(reschedule, Reschedule):
            await abort_invalid(context, reschedule)
        outcome = await self._orchestrator.reschedule(
            request.tenant_id,
            request.service_call_id,
            reschedule.due,
            reschedule.expected_version,
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

    async def ReplayServiceCall(  # noqa: N802
        self,
        request: svc.ReplayServiceCallRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> api.ServiceCall:
        # Another tenant's call answers NOT_FOUND, as GetServiceCall does.
        await self._existing(request.tenant_id, request.service_call_id, context)
        replay = replay_from_proto(request, metadata_of(context).get("idempotency-key"))
        if isinstance(replay, list):
            await abort_invalid(context, replay)
        outcome = await self._orchestrator.replay(replay, self._correlation_id(context))
        if isinstance(outcome, Invalid):
            await abort_invalid(context, outcome.violations)
        if not isinstance(outcome, Accepted):
            await _abort_domain(context, outcome)
        return await self._created(outcome, context)

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
            await abort_invalid(context, problems)
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
            await abort_invalid(context, outcome.violations)
        await _abort_domain(context, outcome)
