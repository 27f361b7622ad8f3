"""The public ScheduleService over gRPC (and JSON through Envoy's transcoder): who is calling
(as for ServiceCallService: grpc_common.py), request to use case (through
orchestrator/mapping.py) and answer back."""

from __future__ import annotations

from dataclasses import replace

from google.protobuf import empty_pb2

from mesh.ports import IdGen
from orchestrator.domain.schedules import Schedule, validate_schedule_id
from orchestrator.domain.validation import FieldViolation, validate_tenant_id
from orchestrator.entrypoints.grpc_common import (
    Context,
    abort_code,
    abort_invalid,
    authorize,
    correlation_id,
)
from orchestrator.entrypoints.page_tokens import IdPageTokens, PageTokens
from orchestrator.mapping import (
    expected_version,
    schedule_draft_from_proto,
    schedule_fields_from_mask,
    schedule_name,
    schedule_refusal_code,
    schedule_to_proto,
)
from orchestrator.ports import Invalid, ScheduleDraft, ScheduleNotFound, ScheduleRefusal
from orchestrator.service_layer.auth import Authenticator
from orchestrator.service_layer.schedules import Schedules
from servicecall.v1 import schedule_pb2 as sched
from servicecall.v1 import schedule_service_pb2 as ssvc
from servicecall.v1 import schedule_service_pb2_grpc as ssvc_grpc


class ScheduleApi(ssvc_grpc.ScheduleServiceServicer):
    def __init__(
        self,
        schedules: Schedules,
        ids: IdGen,
        page_tokens: PageTokens,
        authenticator: Authenticator,
    ) -> None:
        self._schedules = schedules
        self._ids = ids
        self._pages = IdPageTokens(page_tokens, "schedules")
        self._auth = authenticator

    async def CreateSchedule(  # noqa: N802 - gRPC method name
        self, request: ssvc.CreateScheduleRequest, context: Context
    ) -> sched.Schedule:
        tenant_id = request.tenant_id
        await authorize(self._auth, context, tenant_id, f"tenant {tenant_id} not found")
        draft = schedule_draft_from_proto(
            tenant_id, request.schedule if request.HasField("schedule") else None
        )
        if isinstance(draft, list):
            await abort_invalid(context, draft)
        outcome = await self._schedules.create(draft)
        schedule = await self._answer(outcome, context)
        await context.send_initial_metadata(
            (
                ("location", f"/v1/{schedule_name(tenant_id, schedule.schedule_id)}"),
                ("x-http-code", "201"),
            )
        )
        return schedule_to_proto(schedule)

    async def GetSchedule(  # noqa: N802
        self, request: ssvc.GetScheduleRequest, context: Context
    ) -> sched.Schedule:
        await self._authorized(request.tenant_id, request.schedule_id, context)
        schedule = await self._schedules.get(request.tenant_id, request.schedule_id)
        if schedule is None:
            missing = ScheduleNotFound(request.tenant_id, request.schedule_id)
            await abort_code(context, schedule_refusal_code(missing), missing.message)
        return schedule_to_proto(schedule)

    async def ListSchedules(  # noqa: N802
        self, request: ssvc.ListSchedulesRequest, context: Context
    ) -> ssvc.ListSchedulesResponse:
        tenant_id = request.tenant_id
        await authorize(self._auth, context, tenant_id, f"tenant {tenant_id} not found")
        paging = self._pages.read(tenant_id, request.page_size, request.page_token)
        problems = [*validate_tenant_id(tenant_id), *paging.problems]
        if problems:
            await abort_invalid(context, problems)
        page = await self._schedules.list(tenant_id, paging.page_size, paging.after)
        return ssvc.ListSchedulesResponse(
            schedules=[schedule_to_proto(item) for item in page.items],
            next_page_token=self._pages.issue(tenant_id, page.next_after),
        )

    async def UpdateSchedule(  # noqa: N802
        self, request: ssvc.UpdateScheduleRequest, context: Context
    ) -> sched.Schedule:
        schedule_id = request.schedule_id
        await self._authorized(request.tenant_id, schedule_id, context)
        fields = schedule_fields_from_mask(list(request.update_mask.paths))
        if isinstance(fields, list):
            await abort_invalid(context, fields)
        problems: list[FieldViolation] = []
        if request.schedule.schedule_id not in ("", schedule_id):
            problems.append(
                FieldViolation("schedule.schedule_id", "differs from the request's schedule_id")
            )
        expected = expected_version(request.schedule.etag, problems, "schedule.etag")
        draft = schedule_draft_from_proto(request.tenant_id, request.schedule, fields)
        if isinstance(draft, list):
            problems.extend(draft)
        if problems:
            await abort_invalid(context, problems)
        assert isinstance(draft, ScheduleDraft)
        outcome = await self._schedules.update(
            replace(draft, schedule_id=schedule_id), fields, expected
        )
        return schedule_to_proto(await self._answer(outcome, context))

    async def PauseSchedule(  # noqa: N802
        self, request: ssvc.PauseScheduleRequest, context: Context
    ) -> sched.Schedule:
        await self._authorized(request.tenant_id, request.schedule_id, context)
        problems: list[FieldViolation] = []
        expected = expected_version(request.etag, problems, "etag")
        if problems:
            await abort_invalid(context, problems)
        outcome = await self._schedules.pause(
            request.tenant_id, request.schedule_id, expected, correlation_id(context, self._ids)
        )
        return schedule_to_proto(await self._answer(outcome, context))

    async def ResumeSchedule(  # noqa: N802
        self, request: ssvc.ResumeScheduleRequest, context: Context
    ) -> sched.Schedule:
        await self._authorized(request.tenant_id, request.schedule_id, context)
        problems: list[FieldViolation] = []
        expected = expected_version(request.etag, problems, "etag")
        if problems:
            await abort_invalid(context, problems)
        outcome = await self._schedules.resume(request.tenant_id, request.schedule_id, expected)
        return schedule_to_proto(await self._answer(outcome, context))

    async def DeleteSchedule(  # noqa: N802
        self, request: ssvc.DeleteScheduleRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._authorized(request.tenant_id, request.schedule_id, context)
        outcome = await self._schedules.delete(
            request.tenant_id, request.schedule_id, correlation_id(context, self._ids)
        )
        if outcome is not None:
            await abort_code(context, schedule_refusal_code(outcome), outcome.message)
        return empty_pb2.Empty()

    async def _authorized(self, tenant_id: str, schedule_id: str, context: Context) -> None:
        """Another tenant's schedule answers NOT_FOUND, as a missing one does; an id that no
        schedule could have is INVALID_ARGUMENT."""
        await authorize(
            self._auth, context, tenant_id, ScheduleNotFound(tenant_id, schedule_id).message
        )
        problems = list(validate_tenant_id(tenant_id))
        if not schedule_id:
            problems.append(FieldViolation("schedule_id", "is required"))
        else:
            # Checked before any query: a NUL byte, say, is no id and Postgres refuses it.
            problems.extend(
                FieldViolation("schedule_id", v.description)
                for v in validate_schedule_id(schedule_id)
            )
        if problems:
            await abort_invalid(context, problems)

    async def _answer(
        self, outcome: Schedule | Invalid | ScheduleRefusal, context: Context
    ) -> Schedule:
        if isinstance(outcome, Schedule):
            return outcome
        if isinstance(outcome, Invalid):
            await abort_invalid(context, outcome.violations)
        await abort_code(context, schedule_refusal_code(outcome), outcome.message)
