"""ExecutorService over gRPC: what this process holds right now."""

from __future__ import annotations

import grpc

from executor.mapping import execution_to_proto
from executor.service_layer.registry import Executions
from servicecall.internal.v1 import executor_service_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExecutorService"].full_name


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
