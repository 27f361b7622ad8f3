"""ExecutorService over gRPC: what this process holds right now."""

from __future__ import annotations

import grpc

from executor.registry import Executions, ExecutionView, Stage
from mesh.timeconv import to_timestamp
from servicecall.internal.v1 import executor_service_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExecutorService"].full_name

_STATE = {Stage.WAITING: pb.Execution.WAITING, Stage.IN_FLIGHT: pb.Execution.IN_FLIGHT}


def execution_to_proto(view: ExecutionView) -> pb.Execution:
    execution = pb.Execution(
        tenant_id=view.tenant_id,
        service_call_id=view.service_call_id,
        attempt=view.attempt,
        state=_STATE[view.stage],
        not_before=to_timestamp(view.not_before),
    )
    if view.start_time is not None:
        execution.start_time.CopyFrom(to_timestamp(view.start_time))
    return execution


class ExecutorApi(pb_grpc.ExecutorServiceServicer):
    def __init__(self, executions: Executions, executor_id: str) -> None:
        self._executions = executions
        self._executor_id = executor_id

    async def ListExecutions(  # noqa: N802
        self,
        request: pb.ListExecutionsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.ListExecutionsResponse:
        views = sorted(
            self._executions.views(),
            key=lambda v: (v.not_before, v.tenant_id, v.service_call_id, v.attempt),
        )
        return pb.ListExecutionsResponse(
            executions=[execution_to_proto(v) for v in views], executor_id=self._executor_id
        )
