"""The public QueueService over gRPC (and JSON through Envoy's transcoder): who is calling
(grpc_common.py), request to use case (through orchestrator/mapping.py) and answer back."""

from __future__ import annotations

from google.protobuf import empty_pb2

from mesh.ports import IdGen
from orchestrator.domain.queues import Queue, validate_queue_id
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
    queue_draft_from_proto,
    queue_fields_from_mask,
    queue_name,
    queue_refusal_code,
    queue_to_proto,
)
from orchestrator.ports import Invalid, QueueNotFound, QueueRefusal
from orchestrator.service_layer.auth import Authenticator
from orchestrator.service_layer.queues import Queues
from servicecall.v1 import queue_pb2 as queue_pb
from servicecall.v1 import queue_service_pb2 as qsvc
from servicecall.v1 import queue_service_pb2_grpc as qsvc_grpc


class QueueApi(qsvc_grpc.QueueServiceServicer):
    def __init__(
        self, queues: Queues, ids: IdGen, page_tokens: PageTokens, authenticator: Authenticator
    ) -> None:
        self._queues = queues
        self._ids = ids
        self._pages = IdPageTokens(page_tokens, "queues")
        self._auth = authenticator

    async def CreateQueue(  # noqa: N802 - gRPC method name
        self, request: qsvc.CreateQueueRequest, context: Context
    ) -> queue_pb.Queue:
        tenant_id = request.tenant_id
        await authorize(self._auth, context, tenant_id, f"tenant {tenant_id} not found")
        draft = queue_draft_from_proto(
            tenant_id, request.queue if request.HasField("queue") else None
        )
        if isinstance(draft, list):
            await abort_invalid(context, draft)
        queue = await self._answer(await self._queues.create(draft), context)
        await context.send_initial_metadata(
            (
                ("location", f"/v1/{queue_name(tenant_id, queue.queue_id)}"),
                ("x-http-code", "201"),
            )
        )
        return queue_to_proto(queue)

    async def GetQueue(  # noqa: N802
        self, request: qsvc.GetQueueRequest, context: Context
    ) -> queue_pb.Queue:
        await self._authorized(request.tenant_id, request.queue_id, context)
        outcome = await self._queues.get(request.tenant_id, request.queue_id)
        return queue_to_proto(await self._answer(outcome, context))

    async def ListQueues(  # noqa: N802
        self, request: qsvc.ListQueuesRequest, context: Context
    ) -> qsvc.ListQueuesResponse:
        tenant_id = request.tenant_id
        await authorize(self._auth, context, tenant_id, f"tenant {tenant_id} not found")
        paging = self._pages.read(tenant_id, request.page_size, request.page_token)
        problems = [*validate_tenant_id(tenant_id), *paging.problems]
        if problems:
            await abort_invalid(context, problems)
        page = await self._queues.list(tenant_id, paging.page_size, paging.after)
        return qsvc.ListQueuesResponse(
            queues=[queue_to_proto(item) for item in page.items],
            next_page_token=self._pages.issue(tenant_id, page.next_after),
        )

    async def UpdateQueue(  # noqa: N802
        self, request: qsvc.UpdateQueueRequest, context: Context
    ) -> queue_pb.Queue:
        queue_id = request.queue_id
        await self._authorized(request.tenant_id, queue_id, context)
        fields = queue_fields_from_mask(list(request.update_mask.paths))
        if isinstance(fields, list):
            await abort_invalid(context, fields)
        problems: list[FieldViolation] = []
        expected = expected_version(request.queue.etag, problems, "queue.etag")
        draft = queue_draft_from_proto(
            request.tenant_id, request.queue if request.HasField("queue") else None, queue_id
        )
        if isinstance(draft, list):
            problems.extend(draft)
        if problems:
            await abort_invalid(context, problems)
        assert isinstance(draft, Queue)
        outcome = await self._queues.update(draft, fields, expected)
        return queue_to_proto(await self._answer(outcome, context))

    async def DeleteQueue(  # noqa: N802
        self, request: qsvc.DeleteQueueRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._authorized(request.tenant_id, request.queue_id, context)
        await self._answer(await self._queues.delete(request.tenant_id, request.queue_id), context)
        return empty_pb2.Empty()

    async def PauseQueue(  # noqa: N802
        self, request: qsvc.PauseQueueRequest, context: Context
    ) -> queue_pb.Queue:
        await self._authorized(request.tenant_id, request.queue_id, context)
        problems: list[FieldViolation] = []
        expected = expected_version(request.etag, problems, "etag")
        if problems:
            await abort_invalid(context, problems)
        outcome = await self._queues.pause(request.tenant_id, request.queue_id, expected)
        return queue_to_proto(await self._answer(outcome, context))

    async def ResumeQueue(  # noqa: N802
        self, request: qsvc.ResumeQueueRequest, context: Context
    ) -> queue_pb.Queue:
        await self._authorized(request.tenant_id, request.queue_id, context)
        problems: list[FieldViolation] = []
        expected = expected_version(request.etag, problems, "etag")
        if problems:
            await abort_invalid(context, problems)
        outcome = await self._queues.resume(request.tenant_id, request.queue_id, expected)
        return queue_to_proto(await self._answer(outcome, context))

    async def PurgeQueue(  # noqa: N802
        self, request: qsvc.PurgeQueueRequest, context: Context
    ) -> qsvc.PurgeQueueResponse:
        await self._authorized(request.tenant_id, request.queue_id, context)
        outcome = await self._queues.purge(
            request.tenant_id, request.queue_id, correlation_id(context, self._ids)
        )
        if isinstance(outcome, Invalid):
            await abort_invalid(context, outcome.violations)
        if isinstance(outcome, QueueNotFound):
            await abort_code(context, queue_refusal_code(outcome), outcome.message)
        return qsvc.PurgeQueueResponse(canceled_count=outcome)

    async def _authorized(self, tenant_id: str, queue_id: str, context: Context) -> None:
        """Another tenant's queue answers NOT_FOUND, as a missing one does; an id that no
        queue could have is INVALID_ARGUMENT, before any query."""
        await authorize(self._auth, context, tenant_id, QueueNotFound(tenant_id, queue_id).message)
        problems = list(validate_tenant_id(tenant_id))
        if not queue_id:
            problems.append(FieldViolation("queue_id", "is required"))
        else:
            problems.extend(validate_queue_id(queue_id, "queue_id"))
        if problems:
            await abort_invalid(context, problems)

    async def _answer(self, outcome: Queue | Invalid | QueueRefusal, context: Context) -> Queue:
        if isinstance(outcome, Queue):
            return outcome
        if isinstance(outcome, Invalid):
            await abort_invalid(context, outcome.violations)
        await abort_code(context, queue_refusal_code(outcome), outcome.message)
